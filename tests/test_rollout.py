"""GRPO's online rollout in the training step: the token batches it builds from its samples, its
counts and logs, PPO epochs on the same samples, and (slow) a run on the game that learns."""

import math
import zlib

import pytest
import torch

from dftlab.losses import IGNORE_INDEX
from dftlab.reporting.runs import load_run
from dftlab.rl.rollout import group_advantages
from dftlab.run import run, setup
from tests.conftest import fast_cfg
from tests.helpers.rl import COIN

GRPO = ["loss=grpo", "rollout=grpo", COIN, "rollout.max_new_tokens=12", "~callbacks", "+trainer.limit_val_batches=0"]


def _fit(tmp_path, *extra):
    s = setup(fast_cfg(tmp_path, *GRPO, *extra))
    s.trainer.fit(s.module, datamodule=s.datamodule)
    return s


def test_the_token_batches_are_the_samples_with_their_group_advantages(tmp_path):
    s = _fit(tmp_path, "trainer.max_steps=1", "data.batch_size=8", "data.micro_batch_size=4", "rollout.n=3")
    rollout = s.module.rollout
    batches = rollout._batches
    assert len(batches) == 2  # two micro-batches of 4 prompts, 3 completions each
    total = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)
    assert all(b["step_tokens"] == total for b in batches)  # the step's completion tokens, for the normaliser
    for b in batches:
        assert b["labels"].shape[0] == 12
        for row in range(12):
            mask = b["labels"][row] != IGNORE_INDEX
            # the targets are the completion: after the prompt, up to the end token or the cut
            assert mask.sum() >= 1 and (b["labels"][row][mask] == b["input_ids"][row][1:][mask[:-1]]).all()
            assert b["advantage"][row][mask].unique().numel() == 1  # one advantage per completion
        # each group of 3 rows (one prompt): its advantages are the group-normalised rewards
        adv = torch.stack([b["advantage"][r][b["labels"][r] != IGNORE_INDEX][0] for r in range(12)]).view(4, 3)
        assert torch.allclose(adv.sum(1), torch.zeros(4), atol=1e-5)  # (r - mean) sums to 0 within a group
    sums = rollout._sums
    assert sums["zero_variance_groups"][1] == 8 and sums["reward"][1] == 24


def test_group_advantages_of_coin_rewards_are_what_the_batches_carry(tmp_path):
    s = _fit(tmp_path, "trainer.max_steps=1", "data.batch_size=4", "rollout.n=4")
    b = s.module.rollout._batches[0]
    first = [b["advantage"][r][b["labels"][r] != IGNORE_INDEX][0].item() for r in range(16)]
    # the targets are the sampled ids: their text is what the grader saw
    texts = [s.tokenizer.decode(b["labels"][r][b["labels"][r] != IGNORE_INDEX].tolist(), skip_special_tokens=True)
             for r in range(16)]
    rewards = torch.tensor([[float(zlib.crc32(t.encode()) % 2 == 0) for t in texts[g * 4:(g + 1) * 4]]
                            for g in range(4)])
    expected, _, _ = group_advantages(rewards, True, 1e-4)
    torch.testing.assert_close(torch.tensor(first).view(4, 4), expected.float(), atol=1e-5, rtol=1e-5)


def test_a_grpo_run_counts_and_logs_its_samples(tmp_path):
    summary = run(fast_cfg(tmp_path, *GRPO[:3], "rollout.max_new_tokens=2", "+rollout.grader.nan_every=5",
                           "trainer.max_steps=2", "data.batch_size=8"))
    totals = summary["totals"]
    assert totals["rollout/nonfinite_rewards"] == 2 * 8 * 4 // 5  # every fifth reward is nan: counted, no crash
    assert totals["rollout/truncated"] > 0 and totals["rollout/all_truncated_groups_count"] == 16
    assert totals["rollout/completion_tokens"] <= 2 * totals["rollout/completion_tokens_count"]
    header = set().union(*(row.keys() for row in load_run(tmp_path).metrics()))
    for key in ("train/rollout/reward", "train/rollout/zero_variance_groups", "train/rollout/completion_tokens",
                "train/rollout/truncated", "train/rollout/nonfinite_rewards", "train/loss", "train/ce"):
        assert key in header, key
    assert math.isfinite(summary["val_ce"])


def test_ppo_epochs_reuse_the_samples_with_their_old_log_probs(tmp_path, monkeypatch):
    calls = []
    from dftlab.rl import rollout as module

    real = module.sample_and_grade
    monkeypatch.setattr(module, "sample_and_grade", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = _fit(tmp_path, "trainer.max_steps=4", "data.batch_size=4", "rollout.ppo_epochs=2")
    assert s.trainer.global_step == 4 and len(calls) == 2  # sampled once per two optimizer steps
    b = s.module.rollout._batches[0]
    mask = b["labels"] != IGNORE_INDEX
    assert "old_logp" in b and (b["old_logp"][mask] < 0).all() and (b["old_logp"][~mask] == 0).all()


@pytest.mark.slow
def test_grpo_on_the_game_raises_the_training_reward(tmp_path):
    """From the embedded base (built if missing), 100 GRPO steps on the game's verifier: the mean
    reward of the last 25 steps is above that of the first 25."""
    from dftlab.cli import train

    summary = train(fast_cfg(tmp_path / "run", "experiment=rl_grpo", "trainer.max_steps=100", "data.batch_size=16",
                             "eval.enabled=false", "callbacks={}", "+trainer.limit_val_batches=0",
                             "trainer.log_every_n_steps=1", fast=False))
    rewards = [v for _, v in load_run(tmp_path / "run").history("train/rollout/reward")]
    assert summary["steps"] == 100 and len(rewards) == 100
    first, last = sum(rewards[:25]) / 25, sum(rewards[-25:]) / 25
    assert last > first + 0.05, (first, last)
