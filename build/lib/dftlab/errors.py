"""The one error a user sees for bad input: it names the config key, the file or the line."""

from __future__ import annotations


class ConfigError(ValueError):
    pass
