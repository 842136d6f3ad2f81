"""Worker processes for the symbolic stage of answer checking, each answer under a hard time limit.

Why processes: `math_verify` bounds its own work with `signal.alarm`, which exists only in a
process's main thread and cannot interrupt a long computation in C (sympy evaluating
`9^{9^{9^{9}}}` never returns). A worker that is killed when its time is up bounds every item
whatever it does and wherever the caller runs (a thread, a Lightning callback, CUDA initialised).

Why `subprocess` rather than `multiprocessing`: a fresh interpreter (`python -m
dftlab.evaluation.symbolic_worker`) inherits no threads, locks or CUDA state of the caller and does
not re-import the caller's `__main__`; it speaks JSON lines over pipes and exits when its stdin
closes, that is when the caller closes the pool, exits, or dies (one killed with SIGKILL in the
middle of a hanging item leaves that worker computing until the item ends).

Workers are started once and reused: a check costs a pipe round trip, not an interpreter start.
Their start (importing sympy and math_verify and warming them up, a few seconds) is awaited before
any item's clock starts. A worker that runs out of time is killed and replaced the next time one
is needed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0


class _Worker:
    def __init__(self):
        package_root = str(Path(__file__).resolve().parents[2])  # the folder holding `dftlab`
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the worker: see kill)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dftlab.evaluation.symbolic_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self.fd = self.proc.stdout.fileno()
        self._buffer = b""

    def await_ready(self, timeout: float) -> None:
        if not wait([self.fd], timeout) or self.receive() is not True:
            self.stderr.seek(0)
            detail = self.stderr.read().decode(errors="replace")[-2000:]
            self.kill()
            raise RuntimeError(f"the symbolic-check worker did not start within {timeout:.0f}s:\n{detail}")

    def send(self, gold: str, pred: str) -> bool:
        try:
            self.proc.stdin.write((json.dumps([gold, pred]) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def receive(self) -> bool | None:
        """The worker's verdict (it starts with `1` when ready), None when it died."""
        while b"\n" not in self._buffer:
            chunk = os.read(self.fd, 64)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.strip() == b"1"

    def stop(self, grace: float = 1.0) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(grace)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                stream.close()
            except OSError:
                pass


class SymbolicPool:
    """Up to `workers` worker processes (started on demand) that check `(gold, pred)` pairs with
    `symbolic_worker.symbolic_equal`. `timeouts` counts items that ran out of time, `crashes`
    items whose worker died; both count as not equivalent. Safe to share between threads."""

    def __init__(self, workers: int | None = None):
        # two at least, so that one hanging item does not hold up the rest of a batch
        self.size = max(1, workers or max(2, min(4, os.cpu_count() or 1)))
        self.timeouts = 0
        self.crashes = 0
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def _start(self, n: int) -> None:
        """Bring the idle workers up to `n`, starting the missing ones side by side."""
        fresh = []
        try:
            fresh.extend(_Worker() for _ in range(n - len(self._idle)))
            for w in fresh:
                w.await_ready(STARTUP_TIMEOUT_S)
        except BaseException:  # a failed start, or Ctrl-C: leave no process behind
            for w in fresh:
                w.kill()
            raise
        self._idle.extend(fresh)

    def run(self, jobs: Sequence[tuple[str, str]], timeout: float) -> list[bool]:
        """Whether each `(gold, pred)` is equivalent, each decided within `timeout` seconds of
        reaching a worker (a late verdict already waiting in the pipe still counts)."""
        results = [False] * len(jobs)
        with self._lock:
            pending = deque(enumerate(jobs))
            busy: dict[int, tuple[_Worker, int, float]] = {}
            try:
                self._dispatch(jobs, timeout, pending, busy, results)
            except BaseException:  # Ctrl-C while waiting: stop what is still computing
                for w, _, _ in busy.values():
                    w.kill()
                raise
        return results

    def _dispatch(
        self,
        jobs: Sequence[tuple[str, str]],
        timeout: float,
        pending: deque[tuple[int, tuple[str, str]]],
        busy: dict[int, tuple[_Worker, int, float]],
        results: list[bool],
    ) -> None:
        """Keep up to `size` workers busy until every job has a verdict or ran out of time;
        `busy` maps a worker's pipe to (worker, job index, deadline)."""
        while pending or busy:
            if pending and len(busy) < self.size:
                self._start(min(self.size - len(busy), len(pending)))
            while pending and self._idle:
                w = self._idle.pop()
                if w.proc.poll() is not None:  # died while idle (OOM killer, ...): replace it
                    w.kill()
                    continue
                i, (gold, pred) = pending.popleft()
                if w.send(gold, pred):
                    busy[w.fd] = (w, i, time.monotonic() + timeout)
                else:
                    self.crashes += 1
                    w.kill()
            if not busy:
                continue
            nearest = min(deadline for _, _, deadline in busy.values())
            for fd in wait(list(busy), max(0.0, nearest - time.monotonic())):
                w, i, _ = busy.pop(fd)
                verdict = w.receive()
                if verdict is None:
                    self.crashes += 1
                    w.kill()
                else:
                    results[i] = verdict
                    self._idle.append(w)
            now = time.monotonic()
            for fd, (w, i, deadline) in list(busy.items()):
                if deadline <= now:
                    del busy[fd]
                    self.timeouts += 1
                    log.warning("answer check timed out after %.1fs: %.200r", timeout, jobs[i])
                    w.kill()

    def close(self) -> None:
        with self._lock:
            for w in self._idle:
                w.stop()
            self._idle.clear()
