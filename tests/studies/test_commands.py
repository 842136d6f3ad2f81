"""The three studies as a user runs them, shrunk: the multiruns of their experiments from tiny bases,
then each report over the directories they leave."""

import os
import subprocess
import sys

import pytest

from dftlab.reporting import diversity, prior, temperature
from tests.conftest import FAST_ON_BASE, ROOT

TINY_BASE = [
    "model.arch.hidden_size=32",
    "model.arch.intermediate_size=64",
    "model.arch.num_hidden_layers=1",
    "data.task.n_train=64",
    "data.task.n_val=16",
    "data.task.n_test=4",
    "trainer.val_check_interval=2",
    "eval.enabled=false",
]


def _multirun(tmp_path, name, *overrides, base=()):
    base_overrides = "model.base_overrides=[" + ",".join(f"'{o}'" for o in (*base, *TINY_BASE)) + "]"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DFTLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            f"experiment={name}",
            "seed=0,1",
            *FAST_ON_BASE,
            *overrides,
            base_overrides,
            "eval.samples.n=2",
            f"hydra.sweep.dir={tmp_path / name}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp_path / name


@pytest.mark.slow
def test_the_three_studies(tmp_path, capsys):
    default = _multirun(tmp_path, "study_temperature", "loss=sft,dft", base=["trainer.max_steps=2"])
    stronger = _multirun(tmp_path, "study_prior", "+prior=default", "loss=sft,dft", base=["trainer.max_steps=4"])
    frozen = _multirun(tmp_path, "study_frozen", "loss=sft,dft", base=["data=game24_frozen", "trainer.max_steps=2"])
    assert len(list(default.glob("*/summary.json"))) == len(list(stronger.glob("*/summary.json"))) == 4

    temperature.main(
        [
            str(default),
            "--k",
            "2",
            "--temperatures",
            "0",
            "1",
            "--top-p",
            "1",
            "0.9",
            "--tune-grid",
            "0.5",
            "1",
            "--out",
            str(tmp_path / "t"),
        ]
    )
    text = (tmp_path / "t.md").read_text()
    assert "| sft (2 seeds) |" in text and "### sft with its temperature tuned on the validation split" in text

    prior.main([str(default), str(stronger), "--out", str(tmp_path / "p")])
    greedy = (tmp_path / "p.md").read_text().split("### ")[1]
    rows = [line.split(" | ")[:2] for line in greedy.splitlines() if line.startswith("| ")][1:]
    assert rows == [
        [f"| {steps}", who] for steps in (2, 4) for who in ("base", "sft (2 seeds)", "dft (2 seeds)", "**dft − sft**")
    ]

    diversity.main([str(default), str(frozen), "--out", str(tmp_path / "d")])
    text = (tmp_path / "d.md").read_text()
    assert "| 1 rule | dft (2 seeds) |" in text and "| 15 rules | **dft − sft** |" in text
    assert "optimizer steps of the fine-tunes: 1 rule: 2; 15 rules: 2" in text
    for out in ("t", "p", "d"):
        assert (tmp_path / f"{out}.png").stat().st_size > 10_000
    capsys.readouterr()
