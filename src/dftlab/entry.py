"""What `train.py` and `eval.py` share around their Hydra task: a mistake a user can make is one
line naming the key or the file, with exit status 2 (the traceback with `HYDRA_FULL_ERROR=1`); a
run stopped by a signal exits with 0 after saving (130 after Ctrl-C).

Light on purpose (no torch, no Lightning): imported before Hydra parses the command line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from dftlab import stopping
from dftlab.errors import ConfigError, printable, safe_name

log = logging.getLogger("dftlab")
USER_ERROR = 2  # a configuration or data error: the message names what to change
_started = {"task": False}
NAMES = ("run_id", "run_name")  # the run directory is logs/runs/<run_id>, by default <date>_<time>_<run_name>


class _Printable(logging.Filter):
    """Control characters in a message (from a data file's names or text) escaped before it reaches
    the terminal or the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = printable(record.getMessage(), keep_newlines=True), None
        return True


def run_task(task: Callable, cfg) -> object:
    """Run `task(cfg)` as an entry point's Hydra task."""
    _started["task"] = True
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _Printable) for f in handler.filters):
            handler.addFilter(_Printable())
    try:
        result = task(cfg)
    except (ConfigError, FileNotFoundError) as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", printable(err))
        sys.exit(USER_ERROR)
    except stopping.StopRequested as stop:  # a step before the run itself (the base build) was stopped
        _exit_now(stopping.exit_status(stop.signame))
    except KeyboardInterrupt:  # the second Ctrl-C: stopped where it was
        log.error("interrupted: stopped at once, without saving")
        sys.exit(stopping.INTERRUPTED)
    if isinstance(result, dict) and result.get("preempted"):
        _exit_now(stopping.exit_status(result.get("stopped_by")))
    return result


def _exit_now(status: int) -> None:
    """Exit once everything is saved, without the interpreter's teardown of torch and its
    libraries (seconds on a busy machine, which a job stopped by its scheduler may not have)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(hydra_main: Callable[[], object]) -> None:
    """An entry point's `__main__`: `hydra_main` (its `@hydra.main` function) with the command line
    checked first for what Hydra would act on before the task starts, and Hydra's own exit status 1
    for a command line or config that does not compose (an unknown key or choice; its message names
    it) turned into 2, the status of every configuration error."""
    for arg in sys.argv[1:]:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+~") in NAMES:  # they name the run directory, which Hydra creates
            try:
                safe_name(value.strip("'\""), key.lstrip("+~"))
            except ConfigError as err:
                print(f"error: {err}", file=sys.stderr)
                sys.exit(USER_ERROR)
    try:
        hydra_main()
    except SystemExit as done:
        if done.code == 1 and not _started["task"]:
            sys.exit(USER_ERROR)
        raise
