"""The run directory's lock: a second run with the same run_id is refused at once, naming the process
that holds it; the lock goes with its process, however that process ends."""

import errno
import os
import subprocess
import sys
import threading
import time

import pytest

from dftlab import locks
from dftlab.errors import ConfigError
from dftlab.run import run
from tests.conftest import ROOT, fast_cfg

HOLD = "import sys, time; from dftlab.locks import exclusive\nwith exclusive(sys.argv[1], 'x'):\n" \
       "    print('held', flush=True); time.sleep(120)"


def _holder(folder):
    """A process that takes `folder`'s lock and keeps it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_in_a_locked_directory_is_refused_before_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        with pytest.raises(ConfigError, match=f"^{run_dir} is in use by process {holder.pid} on .*: another run "
                                              f"with run_id=run is running"):
            run(fast_cfg(run_dir, "loss=sft", "eval.enabled=false"))
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_goes_with_its_process_even_after_sigkill(tmp_path):
    holder = _holder(tmp_path)
    with pytest.raises(ConfigError, match="is in use by process"):
        with locks.exclusive(tmp_path, "x"):
            pass
    holder.kill()  # SIGKILL: no cleanup runs; the kernel releases the lock
    holder.wait()
    with locks.exclusive(tmp_path, "x"):
        with pytest.raises(ConfigError, match=f"in use by process {os.getpid()}"):  # and it is held again
            with locks.exclusive(tmp_path, "x"):
                pass
    with locks.exclusive(tmp_path, "x"):  # released at the end of the block
        pass


def test_without_flock_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, monkeypatch, caplog):
    """A file system without flock: the lock is a file naming its process, stale once that process is gone."""
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / locks.PID_LOCK).write_text(f'{{"pid": {dead.pid}, "host": "{locks.socket.gethostname()}", '
                                           f'"since": "earlier"}}')
    with caplog.at_level("WARNING"), locks.exclusive(tmp_path, "x"):
        assert f"a stale lock of process {dead.pid}" in caplog.text
        with pytest.raises(ConfigError, match=f"in use by process {os.getpid()} .* delete "):
            with locks.exclusive(tmp_path, "x"):
                pass
    assert not (tmp_path / locks.PID_LOCK).exists()  # removed on exit


def test_a_waiting_lock_says_so_once_and_is_taken_when_its_holder_ends(tmp_path, caplog):
    """What the embedded base's build uses: a second process waits for the first instead of being refused."""
    holder = _holder(tmp_path)
    threading.Timer(1.0, holder.kill).start()
    started = time.monotonic()
    with caplog.at_level("WARNING"), locks.exclusive(tmp_path, "the base is being built", wait=True):
        waited = time.monotonic() - started
        with pytest.raises(ConfigError, match=f"in use by process {os.getpid()}"):  # held by this process now
            with locks.exclusive(tmp_path, "x"):
                pass
    holder.wait()
    assert waited >= 0.9
    assert caplog.text.count("waiting for it") == 1
    assert f"{tmp_path / locks.LOCK} is held by process {holder.pid} on " in caplog.text
    assert "the base is being built; waiting for it" in caplog.text


def test_locks_of_one_folder_with_other_names_are_independent(tmp_path):
    with locks.exclusive(tmp_path, "x"), locks.exclusive(tmp_path, "x", name=".base-a.lock"):
        with locks.exclusive(tmp_path, "x", name=".base-b.lock"):
            with pytest.raises(ConfigError, match="in use by process"):
                with locks.exclusive(tmp_path, "x", name=".base-a.lock"):
                    pass
    assert {p.name for p in tmp_path.iterdir()} == {locks.LOCK, ".base-a.lock", ".base-b.lock"}


def test_without_flock_a_waiting_lock_waits_for_its_holder_to_end(tmp_path, monkeypatch, caplog):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (tmp_path / ".base-a.lock.pid").write_text(f'{{"pid": {alive.pid}, "host": "{locks.socket.gethostname()}", '
                                               f'"since": "earlier"}}')
    threading.Timer(1.0, lambda: (alive.kill(), alive.wait())).start()  # reaped: a zombie's pid still answers
    started = time.monotonic()
    with caplog.at_level("WARNING"), locks.exclusive(tmp_path, "building", name=".base-a.lock", wait=True):
        assert time.monotonic() - started >= 0.9
        assert f"is held by process {alive.pid}" in caplog.text and "building; waiting for it" in caplog.text
    assert not (tmp_path / ".base-a.lock.pid").exists()


@pytest.mark.parametrize("env, rank", [({}, 0), ({"RANK": "3"}, 3), ({"LOCAL_RANK": "1"}, 2),
                                       ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, 1), ({"SLURM_PROCID": "0"}, 0)])
def test_only_the_first_process_of_a_run_takes_the_lock(monkeypatch, env, rank):
    for key in ("RANK", "SLURM_PROCID", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert locks.launch_rank() == rank


@pytest.mark.slow
def test_two_train_commands_with_one_run_id(tmp_path):
    """As a user meets it: the second `train.py` exits with status 2 and one line, the first runs on."""
    env = {**os.environ, "DFTLAB_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "train.py", "debug=tiny", "trainer.max_steps=100000", "trainer.max_epochs=-1",
            "eval.enabled=false", f"hydra.run.dir={tmp_path / 'run'}"]
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (tmp_path / "run" / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    running = first.poll() is None
    first.kill()
    first.wait()
    assert running
    out = second.stdout + second.stderr
    errors = [line.split("[ERROR] - ", 1)[1] for line in out.splitlines() if "[ERROR] - " in line]
    assert errors, out[-3000:]
    print(f"second run: exit status {second.returncode}: {errors[0]}")
    assert second.returncode == 2 and errors[0].startswith(f"{tmp_path / 'run'} is in use by process {first.pid}")
