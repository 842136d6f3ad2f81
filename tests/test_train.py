"""Whole runs: one per loss, the end-to-end artifacts, the embedded base, W&B offline."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from dftlab.cli import train
from dftlab.config import CONFIG_DIR
from dftlab.reporting.runs import load_run
from dftlab.run import run
from tests.conftest import fast_cfg
from tests.helpers import rl

CLASSES = {"sft": "SFT", "dft": "DFT", "focal": "Focal", "iw_sft": "IWSFT", "asft": "ASFT", "mixce": "MixCE",
           "prob_power": "ProbPower", "eaft": "EAFT", "anti_dft": "Focal", "dpo": "DPO", "grpo": "GRPO"}


@pytest.mark.parametrize("loss", sorted(p.stem for p in (CONFIG_DIR / "loss").glob("*.yaml")))
def test_one_fast_run_per_loss(run_dir, loss):
    summary = run(fast_cfg(run_dir, f"loss={loss}", *rl.overrides(loss, run_dir.parent / "samples")))
    assert summary["steps"] == 2
    assert summary["loss"].startswith(CLASSES[loss])
    assert summary["label"] == loss
    assert set(summary["eval"]["finetuned"]) == {
        "test_id", "test_ood_rule_all5", "test_ood_rule_all7", "test_ood_rule_faces11_13", "test_ood_cards"
    }
    header = set().union(*(row.keys() for row in load_run(run_dir).metrics()))
    for key in ("train/loss", "train/ce", "train/acc", "train/p_mean", "train/lr", "train/tokens_per_s", "val/ce",
                "val/acc"):
        assert key in header, key


def test_end_to_end_checkpoint_export_and_resume(run_dir, tmp_path):
    summary = run(fast_cfg(run_dir, "loss=dft", "trainer.max_steps=3", "trainer.max_epochs=-1"))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    assert (run_dir / ".." / "run" / "summary.json").exists() and json.loads((run_dir / "summary.json").read_text())
    export = AutoModelForCausalLM.from_pretrained(run_dir / "export")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 3
    weights = {k.removeprefix("policy.lm."): v for k, v in state["state_dict"].items() if k.startswith("policy.lm.")}
    for name, tensor in export.state_dict().items():
        torch.testing.assert_close(tensor, weights[name], msg=name)
    assert not any("_reference" in k for k in state["state_dict"])
    # the greedy accuracy was computed from the export
    assert summary["eval"]["finetuned"]["test_id"]["n"] == 4
    # resume: two more steps from the checkpoint
    resumed = run(fast_cfg(tmp_path / "resumed", "loss=dft", "trainer.max_steps=5", "trainer.max_epochs=-1",
                           f"ckpt_path={ckpt}"))
    assert resumed["steps"] == 5


def test_fast_dev_run_with_missing_base_stays_fast(run_dir):
    """The default model is the embedded base; under fast_dev_run a one-step stand-in is built."""
    cfg = fast_cfg(run_dir, "trainer.fast_dev_run=true", fast=False)
    summary = train(cfg)
    assert summary["steps"] == 1
    assert (run_dir / "base-fast-dev-run" / "export" / "config.json").exists()
    assert not (run_dir.parent / "cache").exists()  # nothing half-built is cached


def test_embedded_base_is_built_once_and_cached(run_dir, tmp_path):
    from dftlab.embedded_base import ensure_base

    small = [
        "model.base_overrides=['model.arch.hidden_size=32','model.arch.intermediate_size=64',"
        "'model.arch.num_hidden_layers=1','trainer.max_steps=3','data.task.n_train=64','data.task.n_val=16',"
        "'data.task.n_test=4','trainer.val_check_interval=3','eval.batch_size=64']"
    ]
    cfg = fast_cfg(run_dir, *small, fast=False)
    path = ensure_base(cfg)
    assert path.parent == tmp_path / "cache" and (path / "config.json").exists()
    assert (path / "build" / "summary.json").exists()
    mtime = (path / "config.json").stat().st_mtime
    assert ensure_base(cfg) == path and (path / "config.json").stat().st_mtime == mtime
    # the fine-tune starts from it and evaluates it side by side
    cfg = fast_cfg(run_dir, *small, "data.task.n_train=64", "data.task.n_val=16", "data.task.n_test=4",
                   "trainer.max_steps=2", "data.batch_size=16", "trainer.enable_progress_bar=false", fast=False)
    summary = train(cfg)
    assert set(summary["eval"]["base"]) == set(summary["eval"]["finetuned"])
    assert list(path.glob("eval-*.json"))  # the base's results are cached beside it


def test_wandb_offline_never_prompts(run_dir, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(run_dir.parent / "no-netrc"))
    monkeypatch.setattr("sys.stdin", None)  # a prompt would fail
    run(fast_cfg(run_dir, "logger=wandb", "loss=dft"))
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
