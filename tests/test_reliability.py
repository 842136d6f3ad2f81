"""Nothing lost: exact resume, preemption, atomic checkpoints, non-finite guards, secrets kept out."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch

from dftlab.callbacks.preemption import Preempted
from dftlab.errors import CheckpointError
from dftlab.module import NonFiniteError
from dftlab.run import run, setup
from tests.conftest import ROOT, fast_cfg

# 64 examples, a global batch of 16 in 2 micro-batches: 4 steps an epoch, 10 steps over 3 epochs
RESUMABLE = ["data.batch_size=16", "data.micro_batch_size=8", "trainer.max_steps=10", "trainer.max_epochs=-1",
             "trainer.log_every_n_steps=1", "eval.enabled=false", "~callbacks.token_histograms"]


class StepLosses(L.Callback):
    """The logged loss of every optimizer step; optionally signals itself after a given step."""

    def __init__(self, signal_after: int | None = None):
        self.losses: dict[int, float] = {}
        self.signal_after = signal_after

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step + 1 == self.signal_after:  # arrives during the step, before its end
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if "train/loss" in trainer.callback_metrics and step not in self.losses:
            self.losses[step] = float(trainer.callback_metrics["train/loss"])


def _fit(cfg, callback):
    s = setup(cfg, extra_callbacks=[callback])
    try:
        s.trainer.fit(s.module, datamodule=s.datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except Preempted:
        pass
    return s


@pytest.mark.parametrize("stop_after", [2, 5])  # inside the first epoch; inside the second
def test_resume_after_a_signal_is_exact(tmp_path, stop_after):
    full = StepLosses()
    _fit(fast_cfg(tmp_path / "full", "loss=dft", *RESUMABLE), full)
    assert sorted(full.losses) == list(range(1, 11))

    first = StepLosses(signal_after=stop_after)
    s = _fit(fast_cfg(tmp_path / "cut", "loss=dft", *RESUMABLE), first)
    assert s.trainer.global_step == stop_after  # stopped at the step boundary, checkpoint saved
    ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)  # loadable without unpickling arbitrary objects
    assert state["global_step"] == stop_after

    rest = StepLosses()
    _fit(fast_cfg(tmp_path / "cut", "loss=dft", *RESUMABLE, "ckpt_path=last"), rest)
    assert sorted(rest.losses) == list(range(stop_after + 1, 11))
    for step, loss in rest.losses.items():
        assert loss == pytest.approx(full.losses[step], rel=1e-6, abs=1e-7), step


def test_sigterm_mid_epoch_in_a_real_process_then_resume(tmp_path):
    """A training subprocess is killed with SIGTERM mid-epoch, resumed, and compared step by step."""
    common = [sys.executable, "train.py", *_fast_cli(), "loss=dft", "data.task.n_train=2048", "data.batch_size=16",
              "trainer.max_steps=40", "trainer.max_epochs=-1", "trainer.log_every_n_steps=1", "eval.enabled=false",
              "~callbacks.token_histograms"]
    env = {**os.environ, "DFTLAB_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}

    def losses(run_dir, version):
        rows = (run_dir / "csv" / version / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        out = {}
        for row in rows[1:]:
            values = dict(zip(header, row.split(",")))
            if values.get("train/loss"):
                out[int(values["step"])] = float(values["train/loss"])
        return out

    full_dir = tmp_path / "full"
    subprocess.run([*common, f"hydra.run.dir={full_dir}", "logger.csv.version=a"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=600)
    cut_dir = tmp_path / "cut"
    proc = subprocess.Popen([*common, f"hydra.run.dir={cut_dir}", "logger.csv.version=a"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = cut_dir / "csv" / "a" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) > 8:
            break
        time.sleep(0.05)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()[-3000:]
    assert time.perf_counter() - sent < 10  # the step finished, the checkpoint saved, the process gone
    summary = json.loads((cut_dir / "summary.json").read_text())
    stopped = summary["steps"]
    assert summary.get("preempted") and 0 < stopped < 40
    subprocess.run([*common, f"hydra.run.dir={cut_dir}", "logger.csv.version=b", "ckpt_path=last"], cwd=ROOT,
                   env=env, check=True, capture_output=True, timeout=600)
    full, resumed = losses(full_dir, "a"), losses(cut_dir, "b")
    assert sorted(resumed) == list(range(stopped, 40))  # logged at step index (global_step - 1)
    for step in resumed:
        assert resumed[step] == pytest.approx(full[step], rel=1e-6, abs=1e-7), step


def _fast_cli():
    from tests.conftest import FAST

    return [o for o in FAST if not o.startswith("trainer.max_steps")]


def test_checkpoints_are_kept_to_a_number(tmp_path):
    run(fast_cfg(tmp_path, "loss=sft", *RESUMABLE, "callbacks.model_checkpoint.every_n_train_steps=2",
                 "callbacks.model_checkpoint.save_top_k=2"))
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["last.ckpt", "step000008.ckpt", "step000010.ckpt"]


class FailWritesAfter(L.Callback):
    """From a given step on, every checkpoint write stops halfway with a full disk (ENOSPC)."""

    def __init__(self, step, monkeypatch):
        self.step, self.monkeypatch = step, monkeypatch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            import io

            import dftlab.checkpoints

            real_save = torch.save

            def save(obj, f):
                buffer = io.BytesIO()
                real_save(obj, buffer)
                f.write(buffer.getvalue()[: buffer.tell() // 2])
                raise OSError(errno.ENOSPC, "No space left on device")

            self.monkeypatch.setattr(dftlab.checkpoints.torch, "save", save)


def test_a_full_disk_while_saving_leaves_the_last_checkpoint_whole(tmp_path, monkeypatch):
    cfg = fast_cfg(tmp_path, "loss=sft", *RESUMABLE, "callbacks.model_checkpoint.every_n_train_steps=2")
    s = setup(cfg, extra_callbacks=[FailWritesAfter(3, monkeypatch)])
    with pytest.raises(CheckpointError) as err:
        s.trainer.fit(s.module, datamodule=s.datamodule)
    monkeypatch.undo()
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "checkpoints" / "step000004.ckpt"))
    assert "no space left on its disk" in message and "ckpt_path=last" in message
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt", "step000002.ckpt"]  # nothing half-written, no empty step000004.ckpt
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 2


class NaNAt(L.Callback):
    """Poisons one weight after a given optimizer step, so the next step's loss is NaN."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.policy.lm.parameters()).view(-1)[0] = float("nan")


def test_non_finite_stops_with_the_step_and_rows(tmp_path):
    s = setup(fast_cfg(tmp_path, "loss=dft", *RESUMABLE), extra_callbacks=[NaNAt(3)])
    with pytest.raises(NonFiniteError, match="at step 4"):
        s.trainer.fit(s.module, datamodule=s.datamodule)
    (report,) = (tmp_path / "non_finite").glob("*.json")
    data = json.loads(report.read_text())
    assert data["step"] == 4 and len(data["row_ids"]) == 16
    rows = set(data["row_ids"])
    assert len(rows) == 16 and rows <= set(range(64))


def test_non_finite_skip_counts_and_does_not_update(tmp_path):
    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                self.after = {n: p.detach().clone() for n, p in pl_module.policy.lm.named_parameters()}

    watch = Watch()
    cfg = fast_cfg(tmp_path, "loss=dft", *RESUMABLE, "engine.on_non_finite=skip")
    s = setup(cfg, extra_callbacks=[NaNAt(3), watch])
    s.trainer.fit(s.module, datamodule=s.datamodule)
    assert s.trainer.global_step == 10
    assert s.module.skipped_steps == 7  # the poisoned weight makes every later step non-finite
    for name, p in s.module.policy.lm.named_parameters():  # skipped steps change nothing
        torch.testing.assert_close(p, watch.after[name], equal_nan=True, rtol=0, atol=0, msg=name)


def test_no_secrets_in_saved_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sekrit-wandb-key-0123456789")
    monkeypatch.setenv("HF_TOKEN", "hf_sekrit_token_0123456789")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run(fast_cfg(tmp_path, "loss=sft", "logger=wandb"))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"sekrit" not in data, path
