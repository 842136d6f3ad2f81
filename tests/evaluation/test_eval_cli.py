"""eval.py: a finished run's export, a checkpoint, greedy and Average@k, per-problem results and a
summary; bad input refused with the key or path named."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from dftlab.config import compose_config
from dftlab.errors import ConfigError
from dftlab.eval_run import RESULTS, SUMMARY, evaluate_from_config
from dftlab.run import run
from tests.conftest import PYTHONPATH, ROOT, fast_cfg

SPLITS = ["test_id", "test_ood_rule_all5", "test_ood_rule_all7", "test_ood_rule_faces11_13", "test_ood_cards"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run: its export, its last checkpoint, and its end-of-run evaluation."""
    root = tmp_path_factory.mktemp("eval_cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFTLAB_CACHE", str(root / "cache"))
        summary = run(fast_cfg(root / "run", "loss=dft", "eval.base=false", "~callbacks.eval_during_training"))
    return root / "run", summary


def _evaluate(out, *overrides):
    return evaluate_from_config(compose_config([f"paths.output_dir={out}", *overrides], config_name="eval"))


def _summary(out) -> list[dict]:
    with open(out / SUMMARY, newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_directory(finished, tmp_path):
    run_dir, summary = finished
    table = _evaluate(tmp_path, f"run={run_dir}", "eval.samples={n: 2}")
    rows = _summary(tmp_path)
    assert [(r["mode"], r["split"]) for r in rows] == [("greedy", s) for s in SPLITS] + [("avg@2", s) for s in SPLITS]
    for r in rows:
        assert r["model"] == run_dir.name and int(r["n"]) == 4
        assert (r["pass_at_k"] == "") == (r["mode"] == "greedy")
    # the same model, problems and decoding as the run's own end-of-run evaluation
    for split, expected in summary["eval"]["finetuned"].items():
        assert table["greedy"][split]["acc"] == expected["acc"]
    records = [json.loads(line) for line in (tmp_path / RESULTS).read_text().splitlines()]
    assert len(records) == 2 * 4 * len(SPLITS)
    sampled = [r for r in records if r["mode"] == "avg@2"]
    assert all(len(r["completions"]) == len(r["scores"]) == 2 for r in sampled)
    assert (tmp_path / "config.yaml").exists()


def test_a_run_from_a_gguf_base_evaluates_its_export(finished, tmp_path):
    """A run that started from a GGUF file (model=smollm2-135m) exported a plain model: run= loads the export."""
    from omegaconf import OmegaConf

    from dftlab.eval_run import target

    run_dir, _ = finished
    gguf_run = tmp_path / "gguf_run"
    gguf_run.mkdir()
    (gguf_run / "export").symlink_to(run_dir / "export")
    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    run_cfg.model.gguf_file = "model.Q4_1.gguf"
    OmegaConf.save(run_cfg, gguf_run / "config.yaml")
    t = target(compose_config([f"run={gguf_run}"], config_name="eval"))
    assert t.model_cfg.name_or_path == str(gguf_run / "export") and t.model_cfg.gguf_file is None
    table = _evaluate(tmp_path / "out", f"run={gguf_run}")
    assert table["greedy"] == _evaluate(tmp_path / "plain", f"run={run_dir}")["greedy"]


def test_a_checkpoint_through_eval_py(finished, tmp_path):
    """The command line itself, on the run's last checkpoint: the same weights as its export."""
    run_dir, summary = finished
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    proc = subprocess.run(
        [sys.executable, "eval.py", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path}",
         "eval.splits=[test_id,test_ood_cards]"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "greedy accuracy (%)" in proc.stdout and "test_ood_cards" in proc.stdout
    rows = {r["split"]: r for r in _summary(tmp_path)}
    assert list(rows) == ["test_id", "test_ood_cards"]
    for split, r in rows.items():
        assert float(r["acc"]) == summary["eval"]["finetuned"][split]["acc"]
        assert r["model"] == f"{run_dir.name}/last.ckpt"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["run=/no/such/run"], "run=/no/such/run: not a run directory"),
        (["ckpt=/no/such.ckpt"], "ckpt=/no/such.ckpt: no such file"),
        (["run=/a", "ckpt=/b"], "give one of them"),
        (["model=scratch"], "model.name_or_path is null"),
        (["model.name_or_path=./no/such/model"], "model.name_or_path='./no/such/model'"),
        (["eval.samples={n: 0}"], "eval.samples.n=0"),
        (["eval.samples={n: 4, temperature: 0}"], "eval.samples.temperature=0.0"),
        (["eval.backend=tpu"], "eval.backend='tpu'"),
    ],
)
def test_bad_input_is_refused_naming_it(tmp_path, overrides, message):
    with pytest.raises((ConfigError, FileNotFoundError), match=message.replace("[", r"\[")):
        _evaluate(tmp_path, *overrides)


def test_bad_split_and_unfinished_run(finished, tmp_path):
    run_dir, _ = finished
    with pytest.raises(ConfigError, match=r"eval.splits: \['nope'\] are not test splits of game24"):
        _evaluate(tmp_path, f"run={run_dir}", "eval.splits=[nope]")
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    with pytest.raises(ConfigError, match="holds no exported model"):
        _evaluate(tmp_path, f"run={tmp_path / 'unfinished'}")
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, bogus)
    with pytest.raises(ConfigError, match="not a Lightning checkpoint"):
        _evaluate(tmp_path, f"ckpt={bogus}")
    torch.save({"global_step": 1, "state_dict": {"x": torch.zeros(1)}}, bogus)
    with pytest.raises(ConfigError, match="not a dftlab checkpoint"):
        _evaluate(tmp_path, f"ckpt={bogus}")


def test_the_embedded_base_is_built_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    tiny_base = (
        "model.base_overrides=['model.arch.hidden_size=32','model.arch.intermediate_size=64',"
        "'model.arch.num_hidden_layers=1','trainer.max_steps=2','data.task.n_train=64','data.task.n_val=16',"
        "'data.task.n_test=4','trainer.val_check_interval=2','eval.enabled=false']"
    )
    table = _evaluate(tmp_path / "out", tiny_base, "data.task.n_test=3", "eval.splits=[test_id]")
    assert list((tmp_path / "cache").glob("base-*/config.json"))
    assert table["greedy"]["test_id"]["n"] == 3 and _summary(tmp_path / "out")[0]["model"] == "embedded-base"
