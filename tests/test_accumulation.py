"""One normalisation everywhere: the gradients of an optimizer step do not depend on how the
step is split into micro-batches and ranks; `reduction: official` reproduces the public code."""

import os
import subprocess
import sys

import pytest
import torch

from dftlab.losses import IGNORE_INDEX
from tests.conftest import PYTHONPATH, ROOT
from tests.helpers.step_gradients import LOSSES, RANK_INVARIANT, step_gradients


def _close(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("loss", LOSSES + ["dft_sequence"])
@pytest.mark.parametrize("path", ["naive", "chunked"])
def test_micro_batches_do_not_change_the_step(loss, path, tmp_path):
    extra = []
    if loss == "dft_sequence":
        loss, extra = "dft", ["loss.level=sequence"]
    whole, s = step_gradients(loss, micro=4, path=path, run_dir=tmp_path / "a", extra=extra)
    split, _ = step_gradients(loss, micro=1, path=path, run_dir=tmp_path / "b", extra=extra)
    # the step really has sequences with different numbers of target tokens
    counts = [e.n_targets for e in s.datamodule.datasets["train"].rows]
    assert len(set(counts)) > 1
    _close(whole, split)


def test_official_reduction_reproduces_the_public_code(tmp_path):
    """Official: each micro-batch's token mean, summed over the step's micro-batches, no division."""
    grads, s = step_gradients("dft", micro=1, reduction="official", run_dir=tmp_path / "a")
    policy, data = s.module.policy, s.datamodule
    with torch.no_grad():  # back to the weights the captured gradients were taken at
        for name, p in policy.lm.named_parameters():
            p.copy_(s.capture.weights[name])
    policy.zero_grad()
    loader = s.trainer.train_dataloader
    for i in loader.batch_sampler.steps(0)[0]:  # one micro-batch per example
        batch = loader.collate_fn([data.datasets["train"][(i, 0)]])
        loss, _ = policy(batch, normaliser=int((batch["labels"] != IGNORE_INDEX).sum()))
        loss.backward()
    _close(grads, {n: p.grad for n, p in policy.lm.named_parameters()})
    token, _ = step_gradients("dft", micro=1, reduction="token", run_dir=tmp_path / "b")
    assert max((grads[k] - token[k]).abs().max() for k in grads) > 1e-3  # and it is not the token reduction


@pytest.mark.slow
def test_two_ranks_equal_one(tmp_path):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.step_gradients", str(out), "2", "1", "token", *RANK_INVARIANT],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = torch.load(out)
    for loss in RANK_INVARIANT:
        one, _ = step_gradients(loss, micro=4, run_dir=tmp_path / loss)
        _close(ranks[loss], one)
