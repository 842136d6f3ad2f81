"""The batch-size ablation's unit, `data.batch_size`, is the global batch: a value that does not split
into the micro-batch or over the ranks stops the run at start-up, before any model is built, naming
the numbers to change."""

import os
import subprocess
import sys

import pytest

from dftlab.config import compose_config, validate
from dftlab.errors import ConfigError
from tests.conftest import ROOT


def test_indivisible_global_batch_fails_from_the_command_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "data.batch_size=48", "data.micro_batch_size=32", f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "DFTLAB_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 2
    message = ("data.micro_batch_size=32 is not allowed: must divide the 48 rows a rank "
               "(data.batch_size=48 over 1 rank(s))")
    assert message in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "cache").exists()


def test_global_batch_must_divide_over_the_ranks():
    message = r"data.batch_size=32 is not allowed: the global batch must divide over 3 rank"
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(["trainer.devices=3"]))
    validate(compose_config(["trainer.devices=4", "data.batch_size=256", "data.micro_batch_size=16"]))
