"""Signals sent to real `python train.py` processes: during evaluation during training, during the
end-of-run evaluation, during the build of the embedded base (and kill -9 there); two processes that
need the same base at once. Each stopped process exits within 10 s of the signal, and the command
run again finishes with the results of an uninterrupted run. (A signal during training steps:
`tests/test_reliability.py::test_sigterm_mid_epoch_in_a_real_process_then_resume`.)"""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tests.conftest import FAST, ROOT
from tests.test_signals import _results, _same, same_weights, uninterrupted_run

pytestmark = pytest.mark.slow

# 2 steps; 100 test problems evaluated at steps 0 and 2 and at the end, 2 sequences a generate batch
SUB = ["data.task.n_test=20", "trainer.max_steps=2", "trainer.max_epochs=-1", "eval.base=false", "eval.batch_size=2",
       "callbacks.eval_during_training.every_n_steps=2", "callbacks.eval_during_training.batch_size=2",
       "callbacks.eval_during_training.max_problems=null", "callbacks.model_checkpoint.every_n_train_steps=1"]


def _start(run_dir, *args, env):
    """`python train.py *args` in `run_dir`, its output in `<run_dir>.log`."""
    log = open(f"{run_dir}.log", "w")
    proc = subprocess.Popen([sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = f"{run_dir}.log"
    return proc


def _output(proc) -> str:
    with open(proc.log) as f:
        return f.read()


def _signal_when(proc, ready, sig, timeout=600) -> tuple[float, str]:
    """Send `sig` once `ready(output so far)` holds; (seconds from the signal to the exit, output)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready(_output(proc)):
        time.sleep(0.02)
    assert proc.poll() is None, _output(proc)[-3000:]
    sent = time.perf_counter()
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return time.perf_counter() - sent, _output(proc)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals_subprocess")
    full = uninterrupted_run(root, SUB)
    env = {**os.environ, "DFTLAB_CACHE": str(root / "cache"), "PYTHONUNBUFFERED": "1"}
    return root, env, full


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_during_the_final_evaluation(reference, sig, status):
    root, env, full = reference
    cut = root / f"final_{sig.name}"
    proc = _start(cut, *FAST, *SUB, env=env)
    took, out = _signal_when(proc, lambda _: bool(glob.glob(f"{cut}/eval/partial/*")), sig)
    assert took < 10 and proc.returncode == status, (took, proc.returncode, out[-3000:])
    assert f"stopped by {sig.name} during evaluation at step 2" in out
    proc = subprocess.run([sys.executable, "train.py", *FAST, *SUB, f"hydra.run.dir={cut}", "ckpt_path=last"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming a stopped generation" in proc.stdout + proc.stderr
    _same(_results(cut), full)


def test_a_signal_during_evaluation_during_training(reference):
    root, env, full = reference
    cut = root / "during"
    proc = _start(cut, *FAST, *SUB, env=env)
    took, out = _signal_when(proc, lambda text: "measuring step 2" in text, signal.SIGTERM)
    assert took < 10 and proc.returncode == 0, (took, out[-3000:])
    assert "preempted at step 2" in out
    done = subprocess.run([sys.executable, "train.py", *FAST, *SUB, f"hydra.run.dir={cut}", "ckpt_path=last"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "measuring step 0" not in done.stdout + done.stderr
    _same(_results(cut), full)


# --- the embedded base ----------------------------------------------------------------------

BASE = ("model.base_overrides=['model.arch.hidden_size=32','model.arch.intermediate_size=64',"
        "'model.arch.num_hidden_layers=1','trainer.max_steps=200','data.task.n_train=256','data.task.n_val=16',"
        "'data.task.n_test=4','trainer.val_check_interval=10','eval.batch_size=64',"
        "'callbacks.model_checkpoint.every_n_train_steps=1','callbacks.eval_during_training.every_n_steps=10',"
        "'data.batch_size=16','trainer.enable_progress_bar=false']")
FINE_TUNE = [BASE, "data.task.n_train=64", "data.task.n_val=16", "data.task.n_test=4", "trainer.max_steps=1",
             "trainer.max_epochs=-1", "data.batch_size=16", "eval.enabled=false", "trainer.enable_progress_bar=false",
             "~callbacks.eval_during_training", "~callbacks.token_histograms"]


def _base_weights(cache) -> dict:
    (path,) = glob.glob(f"{cache}/base-*/model.safetensors")
    return load_file(path)


@pytest.fixture(scope="module")
def built_twice_at_once(tmp_path_factory):
    """Two processes that need the same base, started together: one builds it, the other waits."""
    root = tmp_path_factory.mktemp("base")
    env = {**os.environ, "DFTLAB_CACHE": str(root / "cache"), "PYTHONUNBUFFERED": "1"}
    procs = [_start(root / f"run{i}", *FINE_TUNE, env=env) for i in range(2)]
    codes = [p.wait(timeout=900) for p in procs]
    return root, codes, [_output(p) for p in procs]


def test_two_processes_one_build(built_twice_at_once):
    root, codes, outs = built_twice_at_once
    assert codes == [0, 0], [o[-2000:] for o in outs]
    assert sum("building the embedded base" in o for o in outs) == 1
    assert sum("is being built; waiting for it" in o for o in outs) == 1
    (base,) = (root / "cache").glob("base-*")
    assert {p.name for p in (root / "cache").iterdir()} - {"tokenized"} == {base.name, f".{base.name}.lock"}
    assert (base / "config.json").exists() and (base / "build" / "summary.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_build_is_resumed_by_the_next_command(built_twice_at_once, tmp_path, sig):
    root, _, _ = built_twice_at_once
    env = {**os.environ, "DFTLAB_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    leftover = tmp_path / "cache" / ".base-0123456789.building-999999999"  # an earlier version's abandoned build
    leftover.mkdir(parents=True)
    checkpoint = f"{tmp_path}/cache/.base-*.build/checkpoints/last.ckpt"  # saved at every step
    proc = _start(tmp_path / "cut", *FINE_TUNE, env=env)
    took, out = _signal_when(proc, lambda _: bool(glob.glob(checkpoint)), sig)
    if sig == signal.SIGTERM:
        assert took < 10 and proc.returncode == 0, (took, out[-3000:])
        assert "run the same command again to resume the build of the embedded base" in out
        assert "preempted at step" in out  # saved at the step the signal arrived in, not at the last checkpoint
        assert "run_id=" not in out  # no temporary directory offered as a run to resume
    assert not glob.glob(f"{tmp_path}/cache/base-*/config.json")
    done = subprocess.run([sys.executable, "train.py", *FINE_TUNE, f"hydra.run.dir={tmp_path}/again"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the build of the embedded base from" in done.stdout + done.stderr
    assert not leftover.exists() and not glob.glob(f"{tmp_path}/cache/.base-*.build")
    same_weights(_base_weights(root / "cache"), _base_weights(tmp_path / "cache"))
