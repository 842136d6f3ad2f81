"""A real install: the package (not editable) in a fresh virtual environment, its commands run from an empty
directory, far from the checkout. torch and the other dependencies come from this environment (a .pth file),
so that nothing is downloaded."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    source = base / "source"  # a copy: building in the checkout would leave build/ and egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for name in ("src", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "shared-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "DFTLAB_ROOT", "DFTLAB_CACHE", "VIRTUAL_ENV")}
    env.update(XDG_CACHE_HOME=str(base / "user-cache"), OMP_NUM_THREADS="1", WANDB_MODE="offline")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed",
          str(source)], base, env)
    empty = base / "empty"
    empty.mkdir()
    return venv, empty, env, Path(site)


def test_the_package_carries_its_configs_and_license(installed):
    venv, empty, env, site = installed
    code = "import dftlab.config as c; print(c.__file__); print(c.CONFIG_DIR)"
    out = _run([str(venv / "bin" / "python"), "-c", code], empty, env).stdout.split()
    assert Path(out[0]).is_relative_to(site) and Path(out[1]) == site / "dftlab" / "configs"
    shipped = {p.relative_to(site / "dftlab" / "configs") for p in (site / "dftlab" / "configs").rglob("*.yaml")}
    assert shipped == {p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml")}
    assert list(site.glob("dftlab-*.dist-info/licenses/LICENSE"))


def test_dftlab_train_and_eval_from_an_empty_directory(installed):
    venv, empty, env, site = installed
    _run([str(venv / "bin" / "dftlab-train"), "loss=dft", "trainer.fast_dev_run=true"], empty, env)
    (run,) = (empty / "logs" / "runs").iterdir()  # under the working directory's logs/
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 1 and (run / "export" / "config.json").is_file() and summary["eval"]
    config = (run / "config.yaml").read_text()
    assert f"cache_dir: {env['XDG_CACHE_HOME']}/dftlab" in config  # the base is cached per user, not per folder
    _run([str(venv / "bin" / "dftlab-eval"), f"run={run}", "eval.max_problems=2"], empty, env)
    (evaluation,) = (empty / "logs" / "evals").iterdir()
    assert (evaluation / "summary.csv").read_text().count("\n") == 1 + 5  # header + one row per split
    bad = subprocess.run([str(venv / "bin" / "dftlab-train"), "data=jsonl"], cwd=empty, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "data.task.path is required" in bad.stdout + bad.stderr
