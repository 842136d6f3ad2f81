"""Loggers built from the config: Weights & Biases that never blocks or prompts (online when it can be,
offline otherwise), TensorBoard and MLflow, each given the run's resolved config."""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import socket
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from dftlab.config import instantiate

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
# loggers given the run's resolved config (`build_logger`)
CONFIGURED = {f"{__name__}.{name}" for name in ("wandb_logger", "tensorboard_logger", "mlflow_logger")}


def _has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _reachable(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode(requested: str | None = None) -> str:
    """WANDB_MODE, else the requested mode, else online only with a key and a reachable server."""
    mode = os.environ.get("WANDB_MODE") or requested
    if mode in ("dryrun",):
        mode = "offline"
    if mode is None:
        if not _has_key():
            log.info("W&B: no API key found, logging offline")
            return "offline"
        if not _reachable():
            log.warning("W&B: server unreachable, logging offline")
            return "offline"
        return "online"
    if mode not in MODES:
        raise ValueError(f"logger.wandb.mode={mode!r}: choose one of {', '.join(MODES)} or null")
    return mode


def run_id(save_dir: str) -> str:
    """The run's W&B id, kept in its directory: a resumed run logs to the same W&B run."""
    path = os.path.join(save_dir, "wandb_run_id")
    if os.path.exists(path):
        return open(path).read().strip()
    new = secrets.token_hex(4)  # W&B ids are short lower-case strings
    with open(path, "w") as f:
        f.write(new)
    return new


def flat_config(cfg: DictConfig) -> dict:
    """The resolved config with dotted keys (`optim.lr`): the keys a W&B sweep's parameters have."""
    flat = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def build_logger(node: DictConfig, cfg: DictConfig):
    """A logger from its config; W&B also gets the run's resolved config, so that its runs table and
    `wandb.Api()` show every setting (under a sweep the sweep's own values take precedence)."""
    if node.get("_target_") in CONFIGURED:
        # a partial, so that the dict reaches the logger as it is (instantiate would wrap it in a DictConfig)
        return instantiate(node, _partial_=True)(run_config=flat_config(cfg))
    return instantiate(node)


def tensorboard_logger(save_dir: str, name: str = "tensorboard", run_config: dict | None = None, **kwargs):
    """Lightning's TensorBoard logger, with the run's resolved config as its hyperparameters."""
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=save_dir, name=name, default_hp_metric=False, **kwargs)
    if run_config:
        logger.log_hyperparams({k: str(v) if isinstance(v, (list, dict)) else v for k, v in run_config.items()})
    return logger


def mlflow_logger(experiment_name: str, run_name: str, tracking_uri: str, run_config: dict | None = None, **kwargs):
    """Lightning's MLflow logger (a local `file:` store by default), with the run's resolved config as params."""
    from lightning.pytorch.loggers import MLFlowLogger

    if tracking_uri.startswith("file:"):  # MLflow 3 refuses its file store unless it is asked for by name
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    logger = MLFlowLogger(experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri, **kwargs)
    if run_config:
        logger.log_hyperparams(run_config)
    return logger


def wandb_logger(project: str, name: str, save_dir: str, group: str | None = None, tags=(), mode=None,
                 run_config: dict | None = None, **kwargs):
    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode(mode)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        project=project,
        name=name,
        group=group,
        tags=list(tags),
        save_dir=save_dir,
        mode=mode,
        # a sweep agent names the run itself (WANDB_RUN_ID); otherwise the id kept in the run directory
        id=kwargs.pop("id", None) or os.environ.get("WANDB_RUN_ID") or run_id(save_dir),
        resume="allow",
        config=run_config,
        **kwargs,
    )
