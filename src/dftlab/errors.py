"""The one error a user sees for bad input: it names the config key, the file or the line."""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate


class ConfigError(ValueError):
    pass


def build(node, **kwargs):
    """`hydra.utils.instantiate`, re-raising our own errors as they are (not wrapped by Hydra)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, (ConfigError, FileNotFoundError)):
            raise cause from None
        raise
