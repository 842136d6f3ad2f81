"""Composing and validating configs: a bad value fails before any model loads, naming its key."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from dftlab.errors import ConfigError, safe_name
from dftlab.settings import BatchPlan, EngineSettings, require


def _config_dir() -> Path:
    """The checkout's `configs/` (a source tree or an editable install), else the installed package's copy."""
    checkout = Path(__file__).resolve().parents[2] / "configs"
    return checkout if (checkout / "train.yaml").is_file() else Path(__file__).resolve().parent / "configs"


CONFIG_DIR = _config_dir()


def package_dir(name: str) -> str:
    """Where an installed package's files are, without importing it (for models shipped in a wheel)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the package {name!r} is not installed (model files are read from it)")
    return str(Path(list(spec.submodule_search_locations)[0]))


def job_dirname(num, overrides: str, limit: int = 150) -> str:
    """A multirun job's directory name from its overrides, cut to a length file systems accept."""
    name = f"{num}_{overrides}" if overrides else str(num)
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}-{hashlib.sha1(overrides.encode()).hexdigest()[:8]}"


for _name, _fn in (("package_dir", package_dir), ("job_dirname", job_dirname), ("safe_name", safe_name)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
# typed groups: their keys, types and defaults are the dataclasses'
ConfigStore.instance().store(group="engine", name="default", node=EngineSettings)


def compose_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The composed config, inside a running Hydra app or outside one (tests, scripts)."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=list(overrides or []))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))


def instantiate(node, **kwargs):
    """`hydra.utils.instantiate`, re-raising our own errors as they are (not wrapped by Hydra)."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, (ConfigError, FileNotFoundError)):
            raise cause from None
        raise


def world_size(trainer: DictConfig) -> int:
    """The number of ranks a trainer config asks for (1 when it is left to Lightning: `auto`)."""
    devices = trainer.get("devices")
    return devices * trainer.get("num_nodes", 1) if isinstance(devices, int) and devices > 0 else 1


def validate(cfg: DictConfig) -> None:
    """Range checks of what Hydra's schema cannot know; the loss checks its own parameters."""
    from dftlab import checks

    checks.values(cfg)  # finiteness and ranges of single values (optim.lr, seed, ...)
    checks.types(cfg)  # the arguments of every _target_ object (a loss, a callback)
    d = cfg.data
    BatchPlan(d.batch_size, world_size(cfg.trainer), d.get("micro_batch_size"))
    accumulate = cfg.trainer.get("accumulate_grad_batches", 1)
    require(accumulate == 1, "trainer.accumulate_grad_batches", accumulate,
             "accumulation is derived from data.batch_size and data.micro_batch_size; leave it at 1")
    EngineSettings.from_cfg(cfg.engine)
    if cfg.get("eval"):  # checked now, not after training
        from dftlab.evaluation.settings import EvalSettings

        EvalSettings.from_cfg(cfg.eval, cfg.seed)
    instantiate(cfg.loss)  # a loss checks its own parameters when it is built: cheap, and before any model
    if HydraConfig.initialized():
        check_launcher(HydraConfig.get().launcher, cfg.trainer)


def check_launcher(launcher: DictConfig, trainer: DictConfig) -> None:
    """A SLURM launcher starts one process per task, and Lightning expects one per device."""
    tasks = launcher.get("tasks_per_node")
    if tasks is None or "submitit" not in str(launcher.get("_target_", "")).lower():
        return
    devices = trainer.get("devices")
    if tasks != devices:
        raise ConfigError(
            f"hydra.launcher.tasks_per_node={tasks} must equal trainer.devices={devices!r}: Lightning runs one "
            f"process per device, and SLURM starts one per task"
        )


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)
