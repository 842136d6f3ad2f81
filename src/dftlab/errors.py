"""The one error a user sees for bad input: it names the config key, the file or the line."""

from __future__ import annotations


class ConfigError(ValueError):
    pass


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read (truncated, not a checkpoint, of another run) or written (disk full):
    one line naming the file and what to do."""
