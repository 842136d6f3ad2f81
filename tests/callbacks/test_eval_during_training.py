"""Evaluation during training: a point per measured step and split in the CSV, the metrics in every
logger, the plot, no evaluation time in the throughput, and the same verdicts as the end-of-run
evaluation of the exported model (on one rank and, gathered, on two)."""

import csv
import os
import subprocess
import sys

import pytest

from dftlab.callbacks.eval_during_training import EvalDuringTraining
from dftlab.errors import ConfigError
from dftlab.formats.eval_points import DIR, PLOT, POINTS, read_points
from dftlab.reporting.runs import load_run
from dftlab.run import run
from tests.conftest import PYTHONPATH, ROOT, fast_cfg
from tests.helpers.eval_progress_run import N_TEST, progress_run

SPLITS = {"test_id", "test_ood_rule_all5", "test_ood_rule_all7", "test_ood_rule_faces11_13", "test_ood_cards"}


@pytest.fixture(scope="module")
def greedy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFTLAB_CACHE", str(root / "cache"))
        summary = progress_run(root / "run")
    return root / "run", summary


def _final_points(run_dir) -> dict[str, dict]:
    points = read_points(run_dir / DIR / POINTS)
    last = max(p["step"] for p in points)
    return {p["split"]: p for p in points if p["step"] == last}


def test_a_point_per_step_and_split(greedy_run):
    run_dir, _ = greedy_run
    points = read_points(run_dir / DIR / POINTS)
    assert {(p["step"], p["split"]) for p in points} == {(s, split) for s in range(4) for split in SPLITS}
    for p in points:
        assert p["metric"] == "acc" and p["n"] == N_TEST and p["k"] == 1 and p["pass_at_k"] is None
        assert 0 <= p["ci95_lo"] <= p["value"] <= p["ci95_hi"] <= 1 and p["seconds"] > 0
    assert (run_dir / DIR / PLOT).stat().st_size > 1000


def test_logged_to_the_loggers_and_kept_out_of_the_throughput(greedy_run):
    run_dir, _ = greedy_run
    rows = load_run(run_dir).metrics()
    header = set().union(*rows)
    for key in ("eval/test_id/acc", "eval/test_ood_cards/well_formed", "eval/mean_acc"):
        assert key in header, key
    assert sorted(step for step, _ in load_run(run_dir).history("eval/mean_acc")) == [0, 1, 2, 3]
    # an evaluation follows every step here: no tokens/s may span one
    assert "train/tokens_per_s" not in header and "train/loss" in header


def test_the_last_point_agrees_with_the_end_of_run_evaluation(greedy_run):
    """The model in training (in memory) and its export, on the same problems, greedily."""
    run_dir, summary = greedy_run
    final = _final_points(run_dir)
    for split, r in summary["eval"]["finetuned"].items():
        assert final[split]["value"] == r["acc"] and final[split]["well_formed"] == r["well_formed"], split


def _spy_on_generation(monkeypatch) -> list[dict]:
    import dftlab.callbacks.eval_during_training as module

    calls, real = [], module.generate_and_score

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "generate_and_score", spy)
    return calls


def test_greedy_unless_sampling_is_asked_for(run_dir, monkeypatch):
    calls = _spy_on_generation(monkeypatch)
    run(fast_cfg(run_dir, "trainer.max_steps=1", "eval.enabled=false", "callbacks.eval_during_training.max_problems=1"))
    assert len(calls) == 2 and all(c["temperature"] == 0.0 and c["n_samples"] == 1 for c in calls)


def test_sampled_points_and_metrics(run_dir, monkeypatch):
    calls = _spy_on_generation(monkeypatch)
    cfg = fast_cfg(run_dir, "trainer.max_steps=1", "eval.enabled=false", "callbacks.eval_during_training.n_samples=2",
                   "callbacks.eval_during_training.max_problems=3", "callbacks.eval_during_training.splits=[test_id]")
    run(cfg)
    points = read_points(run_dir / DIR / POINTS)
    assert sorted((p["step"], p["split"]) for p in points) == [(0, "test_id"), (1, "test_id")]
    assert all(p["metric"] == "avg@2" and p["k"] == 2 and p["pass_at_k"] >= p["value"] for p in points)
    assert all(c["temperature"] == 1.0 and c["n_samples"] == 2 for c in calls)
    header = set().union(*load_run(run_dir).metrics())
    assert {"eval/test_id/avg@2", "eval/test_id/pass@2", "eval/mean_avg@2"} <= header


def test_fast_dev_run_is_harmless(run_dir):
    run(fast_cfg(run_dir, "trainer.fast_dev_run=true", "eval.enabled=false"))
    points = read_points(run_dir / DIR / POINTS)
    assert {p["step"] for p in points} == {0, 1} and all(p["n"] == 2 for p in points)


def test_a_resumed_step_keeps_its_latest_measurement(tmp_path):
    path = tmp_path / POINTS
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "split", "metric", "value", "ci95_lo", "ci95_hi", "pass_at_k", "well_formed", "n", "k",
                    "seconds"])
        w.writerow([50, "test_id", "acc", 0.25, 0.1, 0.4, "", 1.0, 100, 1, 2.0])
        w.writerow([50, "test_id", "acc", 0.5, 0.4, 0.6, "", 1.0, 100, 1, 2.0])
    assert [p["value"] for p in read_points(path)] == [0.5]


def test_bad_settings_name_their_key(run_dir):
    with pytest.raises(ConfigError, match="callbacks.eval_during_training.every_n_steps=0"):
        EvalDuringTraining(every_n_steps=0)
    with pytest.raises(ConfigError, match="callbacks.eval_during_training.top_p=1.5"):
        EvalDuringTraining(top_p=1.5)
    with pytest.raises(ConfigError, match=r"callbacks.eval_during_training.splits: \['nope'\]"):
        run(fast_cfg(run_dir, "callbacks.eval_during_training.splits=[nope]"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_count_every_problem_once(tmp_path, strategy):
    """DDP: shares of 3 and 2 problems, gathered; FSDP2: every rank every problem, in lockstep.
    Either way the verdicts are the ones rank 0 alone finds on the export at the end."""
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "DFTLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.eval_progress_run", str(tmp_path / "run"), "2", strategy],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = {p["step"] for p in read_points(tmp_path / "run" / DIR / POINTS)}
    assert steps == ({0, 1, 2, 3} if strategy == "ddp" else {1, 2, 3})  # FSDP2: none before its first step
    summary = load_run(tmp_path / "run").summary
    final = _final_points(tmp_path / "run")
    for split, r in summary["eval"]["finetuned"].items():
        assert final[split]["n"] == N_TEST
        assert final[split]["value"] == r["acc"] and final[split]["well_formed"] == r["well_formed"], split
