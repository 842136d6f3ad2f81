"""The loss comparison: the table's cells (mean +- std over seeds, pooled Wilson interval) from
hand-made runs, and the whole command (a shrunken multirun of experiment=compare, then the
aggregation)."""

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from dftlab.evaluation.stats import wilson
from dftlab.formats.eval_points import COLUMNS, DIR, POINTS
from dftlab.reporting.compare import main
from tests.conftest import FAST_ON_BASE, PYTHONPATH, ROOT

SPLITS = ("test_id", "test_ood_cards")


def _row(acc: float, n: int = 10, **extra) -> dict:
    return {"n": n, "acc": acc, "ci95": list(wilson(acc * n, n)), "well_formed": 1.0, **extra}


def _fake_run(root, job: int, loss: str, seed: int, accs: tuple[float, float], sampled: tuple[float, float]):
    path = root / f"{job}_loss={loss},seed={seed}"
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"run_name": loss, "seed": seed, "loss": {"name": loss}}))
    base = {s: _row(0.2) for s in SPLITS}
    summary = {"eval": {
        "finetuned": {s: _row(a) for s, a in zip(SPLITS, accs)},
        "base": base,
        "sampled": {"k": 4, "temperature": 1.0, "top_p": 1.0,
                    "finetuned": {s: _row(a, **{"pass": 1.0}) for s, a in zip(SPLITS, sampled)},
                    "base": {s: _row(0.1) for s in SPLITS}},
    }}
    (path / "summary.json").write_text(json.dumps(summary))
    (path / DIR).mkdir()
    with open(path / DIR / POINTS, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for step, scale in ((0, 0.0), (50, 1.0)):
            for s, a in zip(SPLITS, accs):
                value = 0.2 + scale * (a - 0.2)
                w.writerow([step, s, "acc", value, 0.0, 1.0, "", 1.0, 10, 1, 1.0])


def test_cells_are_mean_std_and_pooled_interval(tmp_path, capsys):
    _fake_run(tmp_path, 0, "sft", 0, (0.5, 0.3), (0.4, 0.2))
    _fake_run(tmp_path, 1, "sft", 1, (0.7, 0.3), (0.6, 0.2))
    _fake_run(tmp_path, 2, "dft", 0, (0.4, 0.5), (0.3, 0.4))
    _fake_run(tmp_path, 3, "dft", 1, (0.4, 0.7), (0.3, 0.6))
    main([str(tmp_path), "--out", str(tmp_path / "out" / "table")])
    text = (tmp_path / "out" / "table.md").read_text()
    assert capsys.readouterr().out == text
    greedy, sampled = text.split("### ")[1:3]
    lines = greedy.strip().splitlines()
    assert lines[2] == "| | test_id | test_ood_cards | mean |"
    assert [line.split(" | ")[0] for line in lines[4:]] == ["| base", "| sft (2 seeds)", "| dft (2 seeds)"]
    # sft on test_id: 0.5 and 0.7 on 10 problems each: 60.0 +- 14.1, Wilson of 12 of 20 pooled
    lo, hi = wilson(12, 20)
    assert f"| 60.0 ± 14.1 [{100 * lo:.1f}, {100 * hi:.1f}] |" in lines[5]
    # its mean over splits: (0.4, 0.5) per seed; pooled 18 of 40
    lo, hi = wilson(18, 40)
    assert lines[5].endswith(f"| 45.0 ± 7.1 [{100 * lo:.1f}, {100 * hi:.1f}] |")
    # the base, shared by every run, is one measurement: no spread
    lo, hi = wilson(2, 10)
    assert lines[4].startswith(f"| base | 20.0 [{100 * lo:.1f}, {100 * hi:.1f}] |")
    # Average@4 pools the samples: 0.4 and 0.6 of 10 problems x 4 samples
    assert sampled.startswith("Average@4 (%), temperature 1, top_p 1")
    lo, hi = wilson(40, 80)
    assert f"| 50.0 ± 14.1 [{100 * lo:.1f}, {100 * hi:.1f}] |" in sampled.splitlines()[5]
    with open(tmp_path / "out" / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = {(m, r) for m in ("greedy", "avg@4") for r in ("base", "sft", "dft")}
    assert {(r["mode"], r["row"]) for r in rows} == expected
    with open(tmp_path / "out" / "table_progress.csv", newline="") as f:
        progress = list(csv.DictReader(f))
    sft_id_50 = next(r for r in progress if (r["row"], r["split"], r["step"]) == ("sft", "test_id", "50"))
    assert float(sft_id_50["mean"]) == pytest.approx(0.6) and sft_id_50["seeds"] == "2"
    assert (tmp_path / "out" / "table_progress.png").stat().st_size > 1000


def test_a_seed_run_twice_is_refused(tmp_path):
    _fake_run(tmp_path, 0, "sft", 0, (0.5, 0.3), (0.4, 0.2))
    _fake_run(tmp_path, 1, "sft", 0, (0.7, 0.3), (0.6, 0.2))
    with pytest.raises(SystemExit, match="both run_name=sft, seed=0"):
        main([str(tmp_path)])


@pytest.mark.slow
def test_the_comparison_command(tmp_path):
    """`train.py -m experiment=compare` shrunk to two tiny jobs from a tiny base, then the table."""
    tiny_base = (
        "model.base_overrides=['model.arch.hidden_size=32','model.arch.intermediate_size=64',"
        "'model.arch.num_hidden_layers=1','trainer.max_steps=2','data.task.n_train=64','data.task.n_val=16',"
        "'data.task.n_test=4','trainer.val_check_interval=2','eval.enabled=false']"
    )
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "DFTLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "experiment=compare", "loss=sft,dft", "seed=0", *FAST_ON_BASE, tiny_base,
         "eval.samples.n=2", "callbacks.eval_during_training.every_n_steps=1",
         "callbacks.eval_during_training.max_problems=2", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    main([str(tmp_path / "multirun"), "--out", str(tmp_path / "table")])
    text = (tmp_path / "table.md").read_text()
    assert "### Greedy accuracy (%)" in text and "### Average@2 (%), temperature 1, top_p 1" in text
    for row in ("| base |", "| sft (1 seed) |", "| dft (1 seed) |"):
        assert text.count(row) == 2, row  # in both tables
    header = ("| | test_id | test_ood_rule_all5 | test_ood_rule_all7 | test_ood_rule_faces11_13 | test_ood_cards "
              "| mean |")
    assert header in text
    assert (tmp_path / "table_progress.png").stat().st_size > 1000
    with open(tmp_path / "table_progress.csv", newline="") as f:
        steps = {(r["row"], int(r["step"])) for r in csv.DictReader(f)}
    assert steps == {(loss, s) for loss in ("sft", "dft") for s in (0, 1, 2)}
