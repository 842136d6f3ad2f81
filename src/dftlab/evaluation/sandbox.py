"""Running model-written programs: one process per program, locked down, in parallel.

Each program runs in a fresh interpreter (`python -I -c <sandbox_harness.py>`) in its own session and
process group, in a fresh temporary working directory, with an environment that holds none of the
caller's variables, stdin at /dev/null and stdout/stderr in files (capped by the file-size limit,
kept truncated in the result). Layered, each layer where the platform has it:

- **Limits** (always): wall clock (the whole process group is killed when it runs out, and after
  every program), CPU time, address space, file size (stdout and stderr included: printing more
  kills the program), number of processes, open files, no core dumps.
- **An unprivileged user** (when the caller is root): the program runs as `user` (65534, nobody),
  so the process limit holds (Linux does not enforce it for root), root-owned files are read-only
  and the caller's processes cannot be signalled.
- **Namespaces** (`unshare`, util-linux): a new network namespace (no interface but a downed
  loopback: no network at all), a new PID namespace with its own /proc (no other process is
  visible; when the program's first process ends, the kernel kills every process left in it). As
  root directly; otherwise inside a new user namespace where the kernel allows one.
- **Landlock** (Linux >= 5.13 with Landlock enabled): writing, creating, removing or renaming
  anything outside the working directory is refused by the kernel, as are TCP connections and
  signals to processes outside the sandbox (newer ABIs).
- **An in-process guard** (always; an audit hook installed before the program runs): refuses
  writes outside the working directory, sockets, starting other programs, signalling other
  processes, other processes' /proc entries, and ctypes. On its own it is a best effort (code
  that runs in the same interpreter can be clever); with the layers above it is a second wall.

`isolation()` says which layers apply on this machine. The module imports nothing from the rest of
dftlab, so that it runs under any interpreter an unprivileged user can run. A program passes only when the harness
reports that it ran to its end (a per-run nonce on the last line of stdout, exit status 0).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# given with -c, not as a path: the package may lie where the sandbox's user cannot read
HARNESS = Path(__file__).with_name("sandbox_harness.py").read_text()
NOBODY = 65534
_NAMESPACES = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_SIGNAL_STATUS = {signal.SIGXCPU: "cpu_limit", signal.SIGXFSZ: "output_limit", signal.SIGKILL: "killed"}


class SandboxUnavailable(RuntimeError):
    """A layer that was required (or an interpreter that works) is not available here."""


@dataclass(frozen=True)
class Limits:
    """What one program may use. `timeout_s`: wall clock; `cpu_s`: CPU seconds (default: the wall
    clock, rounded up); `memory_mb`: address space; `output_kb`: each file it writes, stdout and
    stderr included; `processes`: processes and threads of its own (the kernel counts them per
    user: other programs running as the same user at the same time are added on top);
    `keep_bytes`: how much of stdout and stderr the result keeps (None: all)."""

    timeout_s: float = 5.0
    cpu_s: float | None = None
    memory_mb: int = 4096
    output_kb: int = 1024
    processes: int = 16
    open_files: int = 256
    keep_bytes: int | None = 4096

    def __post_init__(self):
        checks = {
            "timeout_s": self.timeout_s > 0,
            "memory_mb": self.memory_mb >= 64,
            "output_kb": self.output_kb >= 1,
            "processes": self.processes >= 1,
            "open_files": self.open_files >= 16,
            "cpu_s": self.cpu_s is None or self.cpu_s > 0,
        }
        if bad := [k for k, ok in checks.items() if not ok]:
            raise ValueError(f"sandbox limits {', '.join(f'{k}={getattr(self, k)}' for k in bad)} are not allowed")


@dataclass
class Result:
    """`status`: passed | failed | syntax_error | timeout | cpu_limit | output_limit | killed | error;
    `error`: the last line of stderr (the exception) when it failed."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    error: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Isolation:
    """Which layers apply: `uid` the program runs as (None: the caller's own), `namespaces` (the
    `unshare` arguments, empty: none), `landlock` (its ABI, 0: none), and `python`, the
    interpreter the programs run on."""

    uid: int | None
    namespaces: tuple[str, ...]
    landlock: int
    python: str = sys.executable
    guard: bool = True

    def describe(self) -> str:
        parts = [f"uid {self.uid}" if self.uid is not None else f"the caller's uid {os.getuid()}"]
        parts.append(
            "network+PID namespaces" + (" (in a user namespace)" if "--user" in self.namespaces else "")
            if self.namespaces
            else "no namespaces (sockets refused in-process only)"
        )
        parts.append(f"Landlock ABI {self.landlock}" if self.landlock else "no Landlock")
        parts += ["resource limits", *(["audit-hook guard"] if self.guard else []), f"python {self.python}"]
        return ", ".join(parts)


def _works(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, check=False, capture_output=True, timeout=30, env=_ENV).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# what the interpreter must be able to import as the sandbox's user (its standard library may lie
# in a folder only the caller can read, e.g. /root/.pyenv)
_PROBE = "import collections, decimal, fractions, functools, hashlib, heapq, itertools, json, math, re, string"


@functools.lru_cache(maxsize=8)
def isolation(
    user: int = NOBODY,
    namespaces: bool | None = None,
    landlock: bool | None = None,
    python: str | None = None,
    guard: bool = True,
) -> Isolation:
    """What this machine allows (probed once): `namespaces` / `landlock` None use them when they
    work, False never, True requires them. `python`: the interpreter of the programs (None: this
    one, else `python3` on the PATH, the first whose standard library the sandbox's user can
    read). `guard=False` leaves the kernel's layers alone (to test them)."""
    uid = user if os.getuid() == 0 else None
    ns: tuple[str, ...] = ()
    if namespaces is not False and (unshare := shutil.which("unshare")):
        # root makes the namespaces itself; anyone else needs a user namespace to make them in
        argv = [unshare, *([] if uid is not None else ["--user"]), *_NAMESPACES]
        if _works([*argv, sys.executable, "-I", "-c", "pass"]):
            ns = tuple(argv)
    if namespaces and not ns:
        raise SandboxUnavailable(
            "sandbox namespaces=true: `unshare --net --pid` does not work here (util-linux, privileges)"
        )
    abi = 0
    if landlock is not False:
        probe = (
            "import ctypes; libc = ctypes.CDLL(None); libc.syscall.restype = ctypes.c_long; "
            "print(max(0, libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))))"
        )
        out = subprocess.run([sys.executable, "-I", "-c", probe], check=False, capture_output=True, text=True, env=_ENV)
        abi = int(out.stdout.strip() or 0) if out.returncode == 0 else 0
    if landlock and not abi:
        raise SandboxUnavailable("sandbox landlock=true: this kernel has no Landlock")
    candidates = (
        [python]
        if python
        else list(dict.fromkeys(p for p in (sys.executable, shutil.which("python3", path=_ENV["PATH"])) if p))
    )
    for candidate in candidates:
        iso = Isolation(uid, ns, abi, candidate, guard)
        result = run(_PROBE, Limits(timeout_s=30), iso)
        if result.passed:
            return iso
        log.info("sandbox: %s does not work as uid %s: %s", candidate, uid, result.error)
    raise SandboxUnavailable(
        f"sandbox: no interpreter among {candidates} runs as uid {uid} ({result.error}); "
        f"give one whose standard library that user can read"
    )


_COUNT_LOCK = threading.Lock()
_COUNT: dict[int, tuple[float, int]] = {}


def _tasks_of(uid: int) -> int:
    """Processes and threads of `uid` now (what the kernel's process limit counts), cached 1 s."""
    with _COUNT_LOCK:
        stamp, count = _COUNT.get(uid, (0.0, 0))
        if time.monotonic() - stamp < 1.0:
            return count
        count = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields.get("Uid", "-1").split()[0]) == uid:
                count += int(fields.get("Threads", "1"))
        _COUNT[uid] = (time.monotonic(), count)
        return count


def _read(path: Path, keep: int | None) -> tuple[str, bytes]:
    """(the first `keep` bytes decoded, the last bytes) of a captured stream."""
    with open(path, "rb") as f:
        head = f.read() if keep is None else f.read(keep)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 256))
        tail = f.read()
    return head.decode("utf-8", errors="replace"), tail


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove(path: Path) -> None:
    for root, dirs, _ in os.walk(path):  # a program may leave directories without permissions
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o700)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def run(program: str, limits: Limits = Limits(), iso: Isolation | None = None) -> Result:
    """Run `program` (Python source) in a sandbox; see the module's docstring."""
    iso = iso or isolation()
    nonce = secrets.token_hex(16)
    base = Path(tempfile.mkdtemp(prefix="dftlab-sandbox-"))
    started = time.monotonic()
    try:
        os.chmod(base, 0o711)  # the program may reach its directory, not list or read what is beside it
        work = base / "work"
        work.mkdir(mode=0o700)
        uid = iso.uid
        if uid is not None:
            os.chown(work, uid, uid)
        cpu = math.ceil(limits.cpu_s or limits.timeout_s)
        processes = _tasks_of(uid if uid is not None else os.getuid()) + limits.processes
        job = {
            "program": program,
            "nonce": nonce,
            "cwd": str(work),
            "uid": uid,
            "gid": uid,
            "landlock": bool(iso.landlock),
            "guard": iso.guard,
            "limits": {
                "memory_bytes": limits.memory_mb << 20,
                "cpu_s": cpu,
                "file_bytes": limits.output_kb << 10,
                "processes": processes,
                "open_files": limits.open_files,
            },
        }
        argv = [*iso.namespaces, iso.python, "-I", "-B", "-c", HARNESS]
        with open(base / "stdout", "w+b") as out, open(base / "stderr", "w+b") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work, env=_ENV, start_new_session=True
            )
            timed_out = False
            try:
                try:
                    proc.stdin.write(json.dumps(job).encode())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                proc.wait(limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)  # whatever it left running
                proc.wait()
        stdout, tail = _read(base / "stdout", limits.keep_bytes)
        stderr, _ = _read(base / "stderr", limits.keep_bytes)
    finally:
        _remove(base)
    seconds = time.monotonic() - started
    code = proc.returncode
    sentinel = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1] == nonce.encode()
    if timed_out:
        status = "timeout"
    elif code == 0 and sentinel:
        status = "passed"
        stdout = stdout.rsplit(f"\n{nonce}\n", 1)[0]
    elif code == 3:
        status = "syntax_error"
    elif code is not None and (code < 0 or code > 128):
        status = _SIGNAL_STATUS.get(-code if code < 0 else code - 128, "killed")
    else:
        status = "failed"
    lines = [line for line in stderr.splitlines() if line.strip()]
    error = lines[-1][:300] if status in ("failed", "syntax_error") and lines else ""
    if status == "failed" and code == 0:
        error = "it exited before running to its end (no end-of-program mark)"
    elif status not in ("passed", "failed", "syntax_error"):
        error = f"{status} (exit status {code})"
    return Result(status, code, stdout, stderr, seconds, error)


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_many(
    programs: Sequence[str],
    limits: Limits | Sequence[Limits] = Limits(),
    workers: int | None = None,
    iso: Isolation | None = None,
) -> list[Result]:
    """`run` for many programs, `workers` at a time (default: one per CPU core); in order."""
    iso = iso or isolation()
    per = list(limits) if isinstance(limits, Sequence) else [limits] * len(programs)
    if len(per) != len(programs):
        raise ValueError(f"{len(programs)} programs and {len(per)} limits")
    if not programs:
        return []
    with ThreadPoolExecutor(max_workers=min(workers or default_workers(), len(programs))) as pool:
        return list(pool.map(lambda p_l: run(*p_l, iso=iso), zip(programs, per)))
