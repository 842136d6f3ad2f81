"""Stopping on a signal, anywhere in a run: SIGTERM, SIGUSR1 (what SLURM sends before it stops a job)
and SIGINT (Ctrl-C) only set a flag; every long pass (training steps, generation, token statistics,
the end-of-run evaluation) looks at it between its batches and stops, keeping what a resume needs.

A second Ctrl-C interrupts at once (KeyboardInterrupt), for when saving takes too long.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C (128 + SIGINT), after it has saved


class StopRequested(Exception):
    """Raised between the batches of a long pass once a stop signal has arrived."""

    def __init__(self, signame: str):
        super().__init__(f"stopped by {signame}")
        self.signame = signame


_state: dict = {"signal": None, "depth": 0}


def request(signame: str) -> None:
    """Ask every long pass to stop at its next batch boundary (what the signal handlers do)."""
    if _state["signal"] is None:
        _state["signal"] = signame


def requested() -> str | None:
    """The name of the signal that asked to stop, or None."""
    return _state["signal"]


def check() -> None:
    """Raise StopRequested if a stop signal has arrived: called between batches."""
    if _state["signal"] is not None:
        raise StopRequested(_state["signal"])


def exit_status(signame: str | None) -> int:
    """What the process exits with after saving: 130 after Ctrl-C, else 0 (a SLURM job stopped by
    SIGTERM or SIGUSR1 that saved its state has not failed: it is requeued and resumed)."""
    return INTERRUPTED if signame == "SIGINT" else 0


def _handler(signum, frame) -> None:
    name = signal.Signals(signum).name
    if name == "SIGINT" and _state["signal"] is not None:
        raise KeyboardInterrupt  # the second Ctrl-C: stop now, whatever is lost
    if _state["signal"] is None:
        hint = " (Ctrl-C again to stop at once)" if name == "SIGINT" else ""
        log.warning("received %s: saving what a resume needs, then stopping%s", name, hint)
    request(name)


@contextmanager
def on_signals(names: Sequence[str] = DEFAULT_SIGNALS) -> Iterator[None]:
    """Within the block, `names` set the stop flag instead of ending the process; the handlers
    found on entry are restored on exit. A nested block installs them again (Lightning puts its own
    SIGTERM handler in place when `fit` starts, which would stop inside an accumulation window); the
    outermost clears the flag on entry, so that each run of a process (a multirun job, a test)
    starts without a stale request."""
    if _state["depth"] == 0:
        _state["signal"] = None
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, _handler) for s in (getattr(signal, n) for n in names)}
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
