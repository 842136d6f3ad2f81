"""A Hydra multirun of two tiny jobs through an ablation preset, as a user runs it, then the
Figure 3 analogue made from its directory."""

import csv
import os
import subprocess
import sys

import pytest

from dftlab.evaluation.report import HEADLINE
from dftlab.reporting.ablation import main
from dftlab.reporting.runs import find_runs
from tests.conftest import FAST, ROOT

# two whole runs in a subprocess, each evaluated: about a minute on 2 CPU cores
pytestmark = pytest.mark.slow
LRS = ["0.001", "0.002"]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory):
    root = tmp_path_factory.mktemp("multirun")
    args = ["-m", "hparams_search=lr_cpu", "loss=dft", f"optim.lr={','.join(LRS)}", *FAST, "logger=wandb",
            "logger.wandb.group=lr_cpu", f"hydra.sweep.dir={root / 'sweep'}"]
    env = {**os.environ, "DFTLAB_CACHE": str(root / "cache"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "sweep"


def test_jobs_are_named_by_their_parameters(multirun):
    jobs = sorted(p.name for p in multirun.iterdir() if p.is_dir())
    assert jobs == [f"{i}_dft_lr{lr}_seed0" for i, lr in enumerate(LRS)]
    runs = find_runs(multirun)
    assert [r.get("optim.lr") for r in runs] == [float(lr) for lr in LRS]
    for run in runs:
        assert run.get("data.batch_size") == 16 and run.summary["steps"] == 2  # the command line wins over the preset
        assert HEADLINE in run.summary["eval"]
        assert any(HEADLINE in row for row in run.metrics())  # logged, as the sweep's metric must be


def test_wandb_runs_carry_the_name_group_and_config(multirun):
    for job in sorted(p for p in multirun.iterdir() if p.is_dir()):
        (log,) = (job / "wandb").glob("offline-run-*/*.wandb")
        data = log.read_bytes()  # wandb has no reader for its offline log: the keys are in its bytes
        for key in (job.name.split("_", 1)[1], "lr_cpu", "optim.lr", "data.batch_size", "loss.name", HEADLINE):
            assert key.encode() in data, key


def test_figure_and_tables_from_the_multirun(multirun, tmp_path):
    out = tmp_path / "fig3"
    main([str(multirun), "--out", str(out)])
    assert (tmp_path / "fig3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "fig3.csv") as f:
        points = list(csv.DictReader(f))
    expected = [("lr", float(lr), "dft", "1") for lr in LRS]
    assert [(p["axis"], float(p["x"]), p["loss"], p["n"]) for p in points] == expected
    with open(tmp_path / "fig3_runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    table = (tmp_path / "fig3.md").read_text()
    assert "![](fig3.png)" in table and "## Learning rate (global batch size 16)" in table
    assert "| 0.001 |" in table and "| 0.002 |" in table
    main([str(multirun), "--out", str(tmp_path / "id"), "--split", "test_id"])
    assert "`test_id/acc`" in (tmp_path / "id.md").read_text()
