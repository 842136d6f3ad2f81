"""Resuming a run: which checkpoint, and what a resume takes from it and what from the command line.

- From the checkpoint, always: the weights, the optimizer's and the schedule's states, the RNG states,
  the step and the position in the epoch; and the settings those states are only valid with, `optim.*`
  (learning rate, betas, schedule...) and `data.batch_size` (the steps, the position and the schedule
  are counted in it). A command line that sets them otherwise is ignored, and says so in one line.
- From the command line: everything else. `loss` may change (the steps after the resume use the new
  one), and so may the run's length (`trainer.max_steps`, `trainer.max_epochs`: the schedule's length
  follows it); either change is said in one line.
- Refused, naming what changed, unless `resume_allow_changes=true`: other training data (the tokenised
  rows differ: the source's content, the tokenizer, `data.task.*`, `data.max_length`,
  `data.truncation`), another data order (`data.seed`), another model (`model.*` but its dtype,
  attention implementation and gradient checkpointing), another number of micro-batches per step
  (`data.micro_batch_size` with the number of ranks: the position in the epoch is counted in them).

Each resume is recorded in the run's `config.yaml` and `summary.json` (`resumes`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dftlab import checkpoints
from dftlab.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

FROM_CHECKPOINT = ("optim", "data.batch_size")
NOTED = ("loss", "trainer.max_steps", "trainer.max_epochs")
REFUSED = ("data.task", "data.max_length", "data.truncation", "data.seed", "model")
NOT_THE_MODEL = ("model.dtype", "model.attn_implementation", "model.gradient_checkpointing")
RUN_DIR_KEYS = ("run_id", "hydra.run.dir", "paths.output_dir")  # overrides that name an existing run directory
ABSENT = "<absent>"


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _short(digest: str | None) -> str:
    return "none" if digest is None else f"sha256 {digest[:12]}"


def _flat(node, prefix: str = "") -> dict:
    if not isinstance(node, dict) or not node:
        return {prefix.rstrip("."): node}
    out = {}
    for k, v in node.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _named_by_command_line() -> bool | None:
    """Whether this start's overrides name its run directory (None: not started by Hydra's `train.py`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return None
    overrides = HydraConfig.get().overrides  # hydra.* overrides are kept apart from the others
    keys = [o.split("=", 1)[0].lstrip("+~") for o in [*overrides.task, *overrides.hydra]]
    return any(k in RUN_DIR_KEYS for k in keys)


def checkpoint_path(cfg: DictConfig, out: Path) -> Path | None:
    """The checkpoint `ckpt_path` asks for: `last` is this run directory's `checkpoints/last.ckpt` (none
    yet: a first start, from scratch); a path must be a whole checkpoint. One-line errors otherwise."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return None
    if str(ckpt) != "last":
        return checkpoints.check(ckpt, "ckpt_path")
    if _named_by_command_line() is False:
        runs = out.parent
        recent = sorted((p for p in runs.iterdir() if (p / "checkpoints").is_dir()), key=lambda p: p.stat().st_mtime,
                        reverse=True)[:3] if runs.is_dir() else []
        listed = f"; recent runs with checkpoints: {', '.join(p.name for p in recent)}" if recent else ""
        raise ConfigError(f"ckpt_path=last needs run_id=<the run's directory name in {runs}>: without it this start "
                          f"is a new run, {out.name}, which has no checkpoint{listed}")
    last = out / "checkpoints" / "last.ckpt"
    if not last.exists():
        log.info("ckpt_path=last: no checkpoint in %s yet: starting from scratch", last.parent)
        return None
    return checkpoints.check(last, "ckpt_path")


@dataclass
class Resume:
    path: Path
    step: int
    record: dict | None  # what the checkpoint's run recorded of itself (None: a checkpoint written before records)
    kept: dict = field(default_factory=dict)  # key -> [checkpoint's value, command line's value, ignored]
    changed: dict = field(default_factory=dict)  # key -> [checkpoint's value, command line's value, used]
    allowed: dict = field(default_factory=dict)  # what resume_allow_changes let through

    @classmethod
    def read(cls, path: Path) -> Resume:
        state = checkpoints.read(path, "ckpt_path")
        return cls(path, int(state["global_step"]), state.get("dftlab", {}).get("run"))

    def _differences(self, cfg: DictConfig, prefixes: tuple[str, ...]) -> dict:
        old = {k: v for k, v in _flat(self.record["config"]).items() if _under(k, prefixes)}
        new = {k: v for k, v in _flat(OmegaConf.to_container(cfg, resolve=True)).items() if _under(k, prefixes)}
        return {k: [old.get(k, ABSENT), new.get(k, ABSENT)] for k in sorted(old.keys() | new.keys())
                if old.get(k, ABSENT) != new.get(k, ABSENT)}

    def apply(self, cfg: DictConfig) -> DictConfig:
        """`cfg` with what a resume takes from the checkpoint; says what it ignores and what changes."""
        log.info("resuming from %s (step %d)", self.path, self.step)
        if self.record is None:
            log.warning("%s records no config (an older checkpoint): what the command line changes is not checked",
                        self.path)
            return cfg
        cfg = copy.deepcopy(cfg)
        diff = self._differences(cfg, FROM_CHECKPOINT)
        old = self.record["config"]
        with open_dict(cfg):
            cfg.optim = OmegaConf.create(old["optim"])
            cfg.data.batch_size = old["data"]["batch_size"]
        # what the user set, not the values derived from it (optim.optimizer.lr follows optim.lr)
        self.kept = {k: v for k, v in diff.items() if not k.startswith(("optim.optimizer.", "optim.schedule."))} or diff
        if self.kept:
            log.warning("resume: kept from the checkpoint, the command line's ignored: %s (a resume continues the "
                        "checkpoint's optimizer, schedule and data order; start a new run to change them)",
                        ", ".join(f"{k}={old_v} (not {new_v})" for k, (old_v, new_v) in self.kept.items()))
        self.changed = self._differences(cfg, NOTED)
        if self.changed:
            log.warning("resume: from the command line, used from step %d on: %s", self.step + 1,
                        ", ".join(f"{k}={new_v} (was {old_v})" for k, (old_v, new_v) in self.changed.items()
                                  if ABSENT not in (old_v, new_v)))
        return cfg

    def check(self, cfg: DictConfig, datamodule, accumulation: int) -> None:
        """Refuse other data, model or micro-batches per step than the checkpoint's, naming what changed,
        unless `resume_allow_changes=true`."""
        if self.record is None:
            return
        diff = {k: v for k, v in self._differences(cfg, REFUSED).items() if not _under(k, NOT_THE_MODEL)}
        data_keys = ("data.task", "data.max_length", "data.truncation")
        what = {k: v for k, v in diff.items() if not _under(k, data_keys)}  # the model, the data order
        old_data, new_data = self.record.get("data"), datamodule.identity()
        if old_data is None or old_data["rows"] != new_data["rows"]:  # the examples differ: say why
            what.update({k: v for k, v in diff.items() if _under(k, data_keys)})
            for part, name in (("source", "the data source's content"), ("tokenizer", "the tokenizer")):
                if old_data is not None and old_data.get(part) != new_data.get(part):
                    what[name] = [_short(old_data.get(part)), _short(new_data.get(part))]
            if old_data is not None and not any(_under(k, data_keys) or k.startswith("the ") for k in what):
                what["the tokenised rows (same settings: the task's code changed?)"] = [
                    _short(old_data["rows"]), _short(new_data["rows"])]
        if (old := self.record.get("accumulation")) not in (None, accumulation):
            what["micro-batches per step (data.micro_batch_size, ranks)"] = [old, accumulation]
        if not what:
            return
        listed = "; ".join(f"{k}: {old_v} in the checkpoint, {new_v} now" for k, (old_v, new_v) in what.items())
        if not cfg.get("resume_allow_changes"):
            raise CheckpointError(f"ckpt_path={self.path} was trained with other data or another model: {listed}. "
                                  f"Resume with the checkpoint's, or set resume_allow_changes=true")
        log.warning("resume_allow_changes=true: resuming although %s", listed)
        self.allowed = what

    def entry(self) -> dict:
        """What the run's config.yaml and summary.json record of this resume."""
        return {"from": str(self.path), "step": self.step,
                "kept_from_checkpoint": {k: {"checkpoint": a, "command_line": b} for k, (a, b) in self.kept.items()},
                "changed": {k: {"checkpoint": a, "now": b} for k, (a, b) in {**self.changed, **self.allowed}.items()}}


def record(cfg: DictConfig, accumulation: int) -> dict:
    """What a run's checkpoints record of it, for a resume to compare (the module adds the data's identity)."""
    return {"config": OmegaConf.to_container(cfg, resolve=True), "accumulation": accumulation}


def previous_resumes(out: Path) -> list[dict]:
    """The resumes recorded in the run directory's config.yaml (a resume keeps its predecessors')."""
    config = out / "config.yaml"
    if not config.is_file():
        return []
    try:
        return list(OmegaConf.to_container(OmegaConf.load(config)).get("resumes") or [])
    except Exception:  # noqa: BLE001  (an unreadable old config: the history starts again)
        return []
