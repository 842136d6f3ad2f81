"""An exclusive lock on a directory, held by one process while it works there.

The lock is `fcntl.flock` on `<dir>/.lock`: the kernel releases it when its holder exits, however it
exits (an exception, a crash, `kill -9`), so a dead process never keeps it. The file records who holds
it, for the message of whoever is refused (or waits). On a file system without `flock` (some network
file systems) the lock is `<dir>/.lock.pid`, created exclusively; one whose process no longer runs on this
host is stale, and is taken over with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dftlab.errors import ConfigError

log = logging.getLogger(__name__)

LOCK, PID_LOCK = ".lock", ".lock.pid"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def launch_rank() -> int:
    """This process's rank as its launcher set it (torchrun, SLURM, Lightning's own launcher), before
    any process group exists; 0 for a process started by hand."""
    env = os.environ
    for key in ("RANK", "SLURM_PROCID"):
        if env.get(key, "").isdigit():
            return int(env[key])
    node, local = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0"))), int(env.get("LOCAL_RANK", "0"))
    return 0 if node == local == 0 else 1 + local


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return f"process {holder.get('pid')} on {holder.get('host')} (since {holder.get('since')})"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host may still run (certainly not once its pid is gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _alive(holder: dict | None) -> bool:
    """Whether the holder may still run: certainly not when it was on this host and its pid is gone."""
    if not holder or holder.get("host") != socket.gethostname():
        return True
    try:
        return pid_alive(int(holder["pid"]))
    except (ValueError, KeyError):
        return True


@contextmanager
def exclusive(folder: str | Path, refusal: str, *, name: str = LOCK, wait: bool = False) -> Iterator[None]:
    """Hold `folder`'s lock (the file `<folder>/<name>`) for the block. Held by another process: raise
    ConfigError at once ("<folder> is in use by <process> on <host> (since ...): <refusal>"), or, with
    `wait`, say so once ("<lock file> is held by <process> ...: <refusal>; waiting for it") and wait
    for its release (the holder ending, however it ends, releases it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise ConfigError(f"{folder} is in use by {_describe(_read(path))}: {refusal}") from None
            log.warning("%s is held by %s: %s; waiting for it", path, _describe(_read(path)), refusal)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as err:
        os.close(fd)
        if err.errno not in _UNSUPPORTED:
            raise
        with _pid_lock(folder, refusal, path.with_name(name + ".pid"), wait):
            yield
        return
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_me()).encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def _pid_lock(folder: Path, refusal: str, path: Path, wait: bool) -> Iterator[None]:
    tries, said = 0, False
    while tries < 2:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            holder = _read(path)
            if _alive(holder) and wait:
                if not said:
                    log.warning("%s is held by %s: %s; waiting for it", path, _describe(holder), refusal)
                    said = True
                time.sleep(1)
                continue
            tries += 1
            if _alive(holder):
                raise ConfigError(f"{folder} is in use by {_describe(holder)}: {refusal} (if that process is gone, "
                                  f"delete {path})") from None
            log.warning("%s: a stale lock of %s, which no longer runs: taken over", path, _describe(holder))
            path.unlink(missing_ok=True)
    else:
        raise ConfigError(f"{folder}: could not take its lock {path}: {refusal}")
    me = _me()
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    try:
        yield
    finally:
        if _read(path) == me:
            path.unlink(missing_ok=True)
