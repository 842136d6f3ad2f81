"""The one error a user sees for bad input: it names the config key, the file or the line; and how
text from outside (data files, file names) is shown in messages and tables."""

from __future__ import annotations

import re
import unicodedata


class ConfigError(ValueError):
    """Its message is `printable` (newlines kept): text from a data file cannot rewrite the terminal."""

    def __init__(self, message: object = "", *args):
        super().__init__(printable(message, keep_newlines=True), *args)


# bidirectional overrides and isolates: they reorder what a terminal shows
_BIDI = {chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with control characters (terminal escape sequences, carriage returns, bidirectional
    overrides) written as escapes (`\\x1b`), so that text from a data file cannot rewrite the terminal."""

    def escape(ch: str) -> str:
        if (ch == "\n" and keep_newlines) or not (unicodedata.category(ch) == "Cc" or ch in _BIDI):
            return ch
        return ch.encode("unicode_escape").decode("ascii")

    return "".join(map(escape, str(text)))


SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def safe_name(value, key: str = "run_id") -> str:
    """`value` if it can name one directory (letters, digits, `-`, `_`, `.`; not `.` or `..`), else a
    ConfigError naming `key`."""
    name = str(value)
    if not SAFE_NAME.fullmatch(name) or set(name) == {"."}:
        raise ConfigError(f"{key}={printable(name)!r} is not allowed: a run directory's name, of letters, digits, "
                          f"'-', '_' and '.' (no '/', not '.' or '..')")
    return name


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read (truncated, not a checkpoint, of another run) or written (disk full):
    one line naming the file and what to do."""
