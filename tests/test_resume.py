"""Exact resume from every checkpoint a run writes: the periodic step checkpoints, `last.ckpt` at any
moment (a process killed with SIGKILL), the end-of-run one; under both ways of bounding a run, with
accumulation, packing and the callbacks on. Compared step by step with an uninterrupted run: the same
rows, the same learning rate, the same loss to 1e-6 (fp32)."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from dftlab.run import run
from tests.conftest import ROOT, fast_cfg
from tests.helpers import step_record

# 64 examples, a global batch of 16 in 2 micro-batches: 4 steps an epoch; a step checkpoint every 2 steps
RUN = ["loss=dft", "data.batch_size=16", "data.micro_batch_size=8", "trainer.log_every_n_steps=1",
       "eval.enabled=false", "callbacks.model_checkpoint.every_n_train_steps=2",
       "callbacks.model_checkpoint.save_top_k=-1"]
NO_CALLBACKS = ["~callbacks.token_histograms", "~callbacks.eval_during_training"]
CALLBACKS = ["callbacks.token_histograms.every_n_steps=3", "callbacks.token_histograms.n_examples=16",
             "callbacks.eval_during_training.every_n_steps=3", "callbacks.eval_during_training.max_problems=2"]
BOUNDS = {"epochs": ["trainer.max_epochs=3", "trainer.max_steps=-1"],  # the default trainer's way
          "steps": ["trainer.max_steps=10", "trainer.max_epochs=-1"],
          "both": ["trainer.max_steps=10", "trainer.max_epochs=3"]}
RECORD = "+callbacks.record._target_=tests.helpers.step_record.StepRecord"


def _run(run_dir, *overrides):
    record = run_dir / "steps.jsonl"
    run(fast_cfg(run_dir, *RUN, RECORD, f"+callbacks.record.path={record}", *overrides))
    return step_record.read(record)


@pytest.mark.parametrize("bounds", sorted(BOUNDS))
def test_resume_from_each_kept_step_checkpoint(tmp_path, bounds):
    """Step 2: inside the first epoch; step 4: exactly at its end; step 6: inside the second."""
    full = _run(tmp_path / "full", *BOUNDS[bounds], *NO_CALLBACKS)
    assert len(full) == (12 if bounds == "epochs" else 10)
    for step in (2, 4, 6):
        ckpt = tmp_path / "full" / "checkpoints" / f"step{step:06d}.ckpt"
        resumed = _run(tmp_path / f"from{step}", *BOUNDS[bounds], *NO_CALLBACKS, f"ckpt_path={ckpt}")
        assert sorted(resumed) == list(range(step + 1, len(full) + 1))
        assert step_record.largest_difference(full, resumed) <= 1e-6, step


@pytest.mark.parametrize("variant", ["callbacks", "packing"])
def test_resume_with_callbacks_and_packing(tmp_path, variant):
    """Evaluation and histograms during training (they run the model in between steps), or packed rows."""
    extra = CALLBACKS if variant == "callbacks" else [*NO_CALLBACKS, "data.packing=true", "data.pack_length=256"]
    full = _run(tmp_path / "full", *BOUNDS["epochs"], *extra)
    resumed = _run(tmp_path / "cut", *BOUNDS["epochs"], *extra,
                   f"ckpt_path={tmp_path / 'full' / 'checkpoints' / 'step000006.ckpt'}")
    assert sorted(resumed) == list(range(7, 13))
    assert step_record.largest_difference(full, resumed) <= 1e-6


def test_sigkill_at_a_random_moment_then_resume_from_last(tmp_path):
    """A training process killed with SIGKILL (no signal handler runs: a lost node, the OOM killer) at a
    random moment after its first periodic checkpoint, perhaps while saving one; `ckpt_path=last` then
    continues from the newest whole checkpoint exactly."""
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    # 256 examples: 16 steps an epoch; 3 epochs; a checkpoint every 4 steps
    overrides = [*RUN, *NO_CALLBACKS, *BOUNDS["epochs"], "data.task.n_train=256",
                 "callbacks.model_checkpoint.every_n_train_steps=4", "callbacks.model_checkpoint.save_top_k=2"]
    full = _run(tmp_path / "full", *overrides)
    assert len(full) == 48

    cut = tmp_path / "cut"
    env = {**os.environ, "DFTLAB_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "train.py", "debug=tiny", *overrides, RECORD, f"hydra.run.dir={cut}"]
    proc = subprocess.Popen([*cmd, f"+callbacks.record.path={cut / 'first'}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last, record = cut / "checkpoints" / "last.ckpt", cut / "first.rank0"
    target = rnd.randrange(5, 40)  # the step after which the kill comes, at a random delay (a few steps at most)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        steps = record.read_text().count("\n") if record.exists() else 0
        if last.exists() and steps >= target:
            break
        time.sleep(0.01)
    time.sleep(rnd.uniform(0, 0.05))
    assert proc.poll() is None, f"seed {seed}: the run ended before it was killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_after = max(step_record.read(cut / "first"))
    leftovers = [p.name for p in (cut / "checkpoints").glob("*.partial*")]
    print(f"seed {seed}: killed after step {killed_after}; left by the kill: {leftovers or 'nothing'}")

    resumed_proc = subprocess.run([*cmd, f"+callbacks.record.path={cut / 'second'}", "ckpt_path=last"], cwd=ROOT,
                                  env=env, capture_output=True, text=True, timeout=600)
    assert resumed_proc.returncode == 0, f"seed {seed}: " + resumed_proc.stderr[-3000:]
    assert not list((cut / "checkpoints").glob("*.partial*")), seed  # an interrupted save's leftovers are gone
    resumed = step_record.read(cut / "second")
    start = min(resumed) - 1  # the step of the checkpoint it resumed from
    assert 4 <= start <= killed_after and sorted(resumed) == list(range(start + 1, 49)), (seed, start, killed_after)
    assert step_record.largest_difference(full, resumed) <= 1e-6, seed


@pytest.mark.parametrize("stop_after", [2, 4, 6])  # inside the first epoch, at its end, inside the second
def test_resume_from_the_preemption_checkpoint_with_the_default_bounds(tmp_path, stop_after):
    """The checkpoint a signal makes (SIGTERM, SIGUSR1), in a run bounded by epochs as the default trainer."""
    full = _run(tmp_path / "full", *BOUNDS["epochs"], *NO_CALLBACKS)
    stop = ["+callbacks.stop._target_=tests.helpers.stop_at.StopAt", f"+callbacks.stop.step={stop_after}"]
    first = _run(tmp_path / "cut", *BOUNDS["epochs"], *NO_CALLBACKS, *stop)
    assert max(first) == stop_after
    resumed = _run(tmp_path / "cut", *BOUNDS["epochs"], *NO_CALLBACKS, "ckpt_path=last")
    resumed = {step: r for step, r in resumed.items() if step > stop_after}  # the file holds both starts
    assert sorted(resumed) == list(range(stop_after + 1, 13))
    assert step_record.largest_difference(full, resumed) <= 1e-6


@pytest.mark.parametrize("first_bounds, bounds", [
    (["trainer.max_epochs=1", "trainer.max_steps=-1"], BOUNDS["epochs"]),  # saved at an epoch's end
    (["trainer.max_steps=6", "trainer.max_epochs=-1"], BOUNDS["steps"]),  # saved inside an epoch
])
def test_resume_from_the_end_of_run_checkpoint(tmp_path, first_bounds, bounds):
    """A finished run continued for longer: with a schedule that does not depend on the run's length
    (constant after no warm-up), the same as one longer run."""
    constant = ["optim.warmup_ratio=0", "optim.min_lr_ratio=1"]
    full = _run(tmp_path / "full", *bounds, *constant, *NO_CALLBACKS)
    first = _run(tmp_path / "cut", *first_bounds, *constant, *NO_CALLBACKS)
    resumed = _run(tmp_path / "cut", *bounds, *constant, *NO_CALLBACKS, "ckpt_path=last")
    resumed = {step: r for step, r in resumed.items() if step > max(first)}
    assert sorted(resumed) == list(range(max(first) + 1, max(full) + 1))
    assert step_record.largest_difference(full, resumed) <= 1e-6


@pytest.mark.slow
def test_resume_under_ddp(tmp_path):
    """2 processes (gloo), 2 micro-batches per rank per step, bounded by epochs: from the step checkpoint at
    an epoch's end, from one inside an epoch, and from the preemption checkpoint; every rank compared."""
    env = {**os.environ, "DFTLAB_CACHE": str(tmp_path / "cache")}
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.micro_batch_size=4"]

    def train(run_dir, *extra):
        args = [sys.executable, "train.py", "debug=tiny", *RUN, *NO_CALLBACKS, *BOUNDS["epochs"], *ddp, RECORD,
                f"+callbacks.record.path={run_dir / 'steps'}", f"hydra.run.dir={run_dir}", *extra]
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return [step_record.read(run_dir / "steps", rank) for rank in (0, 1)]

    full = train(tmp_path / "full")
    assert len(full[0]) == len(full[1]) == 12
    for step in (4, 6):
        resumed = train(tmp_path / f"from{step}", f"ckpt_path={tmp_path / 'full' / 'checkpoints'}/step{step:06d}.ckpt")
        for rank in (0, 1):
            assert sorted(resumed[rank]) == list(range(step + 1, 13))
            assert step_record.largest_difference(full[rank], resumed[rank]) <= 1e-6, (step, rank)
    train(tmp_path / "cut", "+callbacks.stop._target_=tests.helpers.stop_at.StopAt", "+callbacks.stop.step=5")
    resumed = train(tmp_path / "cut", "ckpt_path=last")
    for rank in (0, 1):
        after = {step: r for step, r in resumed[rank].items() if step > 5}
        assert sorted(after) == list(range(6, 13))
        assert step_record.largest_difference(full[rank], after) <= 1e-6, rank
