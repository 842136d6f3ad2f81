"""One training run from a composed config: fit, export, evaluate, summarise."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from dftlab import checkpoints, checks, locks, resume, stopping
from dftlab.callbacks.preemption import Preempted, Preemption
from dftlab.callbacks.progress import progress_bar
from dftlab.checkpoints import AtomicCheckpointIO
from dftlab.config import instantiate, validate
from dftlab.errors import CheckpointError, ConfigError
from dftlab.evaluation.report import evaluate_run
from dftlab.loggers import build_logger
from dftlab.models import EMBEDDED_BASE, load_tokenizer
from dftlab.module import FineTuneModule
from dftlab.rl.checks import check_sources
from dftlab.rl.prompts import PromptDataModule
from dftlab.settings import EngineSettings
from dftlab.sharing import share
from dftlab.strategies import FSDP2Strategy

log = logging.getLogger(__name__)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_logs() -> None:
    """One copy of each message (Lightning's handlers would repeat Hydra's), no advertising,
    no download progress bars."""
    import transformers

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*treespec.*LeafSpec.*")


@dataclass
class Setup:
    """Everything a run trains with, built from the config (shared by runs, tests and benchmarks)."""

    module: FineTuneModule
    datamodule: object
    trainer: L.Trainer
    tokenizer: object
    base_path: str | None


def build_trainer(cfg: DictConfig, extra_callbacks=()) -> L.Trainer:
    logger_cfgs = list((cfg.get("logger") or {}).values())
    loggers = [build_logger(c, cfg) for c in logger_cfgs]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] + list(extra_callbacks)
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(progress_bar())
    if cfg.trainer.get("fast_dev_run") and any("wandb" in str(c.get("_target_", "")) for c in logger_cfgs):
        log.warning("trainer.fast_dev_run: Lightning turns every logger off, so nothing goes to W&B; to smoke-test "
                    "W&B, run a couple of steps instead: trainer.max_steps=2 trainer.max_epochs=-1")
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # saved whole or not at all, beside the run
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return trainer


def setup(cfg: DictConfig, extra_callbacks=(), model_cfg: DictConfig | None = None) -> Setup:
    """Validate and build the objects. `model_cfg`: `cfg.model` with `name_or_path` resolved to a
    loadable model (the entry points resolve the embedded base: `dftlab.cli.train`)."""
    quiet_logs()
    validate(cfg)
    loss = instantiate(cfg.loss)
    if model_cfg is None:
        model_cfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    if model_cfg.name_or_path == EMBEDDED_BASE:
        raise ConfigError(f"model.name_or_path={EMBEDDED_BASE}: resolve it first (dftlab.cli.train builds or finds it)")
    base_path = model_cfg.name_or_path  # None: fresh weights

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(model_cfg)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer)
    label = model_cfg.name_or_path or "model.arch (fresh weights)"
    eval_task = getattr(datamodule.task, "eval_task", None)
    for key, task in (("data.task", datamodule.task), ("data.task.eval_task", eval_task)):
        checks.tokenizer_chat_template(task, tokenizer, key, label)
    datamodule.setup("fit")  # read and tokenised now: a data error is refused before the model and trainer
    rollout = instantiate(cfg.rollout) if cfg.get("rollout") else None  # online sampling (GRPO)
    if rollout is not None:
        datamodule = PromptDataModule(datamodule, rollout.ppo_epochs)
    engine = EngineSettings.from_cfg(cfg.engine)
    module = FineTuneModule(model_cfg, loss, cfg.optim, engine, tokenizer, rollout)
    trainer = build_trainer(cfg, extra_callbacks)
    check_sources(loss, datamodule, rollout, engine.reduction, isinstance(trainer.strategy, FSDP2Strategy))
    plan = datamodule.plan(trainer.world_size)
    trainer.accumulate_grad_batches = plan.accumulation
    module.run_record = resume.record(cfg, plan.accumulation)
    log.info(
        "loss %r; global batch %d = %d rank(s) x %d micro-batch(es) x %d rows",
        loss, plan.global_batch, plan.world_size, plan.accumulation, plan.micro,
    )
    return Setup(module, datamodule, trainer, tokenizer, base_path)


def run(cfg: DictConfig, model_cfg: DictConfig | None = None, resume_hint: str | None = None) -> dict:
    """Train as configured; returns the summary that is also written to `summary.json`. The run directory
    is locked for the run's duration: a second run with the same `run_id` is refused.

    With the preemption callback configured, its signals stop the run anywhere (training, the final
    validation, the export, the end-of-run evaluation) at the next batch boundary; what is finished
    is kept, the summary says `"preempted": true`, and `ckpt_path=last` in the same directory goes on
    from there. `resume_hint`: what the warning tells the user to run then (default: the resume
    command of this run directory)."""
    out = Path(cfg.paths.output_dir)
    lock = locks.exclusive(out, f"another run with run_id={out.name} is running; two runs in one directory overwrite "
                                "each other's checkpoints: wait for it to end, or choose another run_id")
    preemption = (cfg.get("callbacks") or {}).get("preemption")
    signals = list(preemption.get("signals", stopping.DEFAULT_SIGNALS)) if preemption else []
    with stopping.on_signals(signals) if signals else contextlib.nullcontext():
        with lock if locks.launch_rank() == 0 else contextlib.nullcontext():
            return _run(cfg, model_cfg, out, resume_hint)


def _run(cfg: DictConfig, model_cfg: DictConfig | None, out: Path, resume_hint: str | None) -> dict:
    if locks.launch_rank() == 0:
        checkpoints.remove_partial_saves(out / "checkpoints")
    ckpt = resume.checkpoint_path(cfg, out)
    resumed = resume.Resume.read(ckpt) if ckpt is not None else None
    if resumed is not None:
        cfg = resumed.apply(cfg)
    s = setup(cfg, model_cfg=model_cfg)
    module, datamodule, trainer, tokenizer, base_path = s.module, s.datamodule, s.trainer, s.tokenizer, s.base_path
    if resumed is not None:
        resumed.check(cfg, datamodule, trainer.accumulate_grad_batches)
    resumes = resume.previous_resumes(out) + [resumed.entry()] if resumed is not None else []
    loss = module.loss
    earlier = _stopped_summary(out)  # what an interrupted run of this directory had finished
    if trainer.is_global_zero:  # the resolved config: every value as this run used it, and its resumes
        out.mkdir(parents=True, exist_ok=True)
        used = {**OmegaConf.to_container(cfg, resolve=True), **({"resumes": resumes} if resumes else {})}
        (out / "config.yaml").write_text(OmegaConf.to_yaml(used))
    stage, stopped = "training", None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    except (Preempted, SIGTERMException):  # Lightning's: a SIGTERM before training started
        stopped = stopping.requested() or "SIGTERM"
    except RuntimeError as err:  # weights of another model (a checkpoint from before runs recorded their config)
        if ckpt is None or "Error(s) in loading state_dict" not in str(err):
            raise
        detail = (str(err).splitlines()[1:] or [""])[0].strip()
        raise CheckpointError(f"ckpt_path={ckpt}: its weights do not fit this model ({detail})") from None

    _report_data(trainer, datamodule.skipped)
    export = out / "export"
    step = trainer.global_step
    summary = {
        "run_dir": str(out),
        "loss": repr(loss),
        "label": loss.label,
        "steps": step,
        "val_ce": None,
        "data_skipped": datamodule.skipped,
        **({"resumes": resumes} if resumes else {}),
    }
    if module.totals:
        summary["totals"] = module.totals  # counts summed over the run (the rollout's, ...)
    if hasattr(datamodule.task, "sample_counts"):  # trained on rejection samples: how they came out
        summary["samples"] = datamodule.task.sample_counts()
    try:
        if stopped is None:
            stage = "validation"
            if earlier.get("steps") == step and earlier.get("val_ce_at") == step:
                summary["val_ce"] = earlier["val_ce"]  # validated before the interruption
            else:
                if module.validated_at != step and trainer.limit_val_batches:
                    stopping.check()
                    trainer.validate(module, datamodule=datamodule, verbose=False)  # the final model's CE
                summary["val_ce"] = _metric(trainer, "val/ce")
            summary["val_ce_at"] = step
            _warn_non_finite(summary["val_ce"])
            stage = "export"
            stopping.check()
            if not (earlier.get("exported_at") == step and (export / "config.json").exists()):
                module.export(export, tokenizer)
            summary["exported_at"] = step
            if trainer.is_global_zero and cfg.eval.enabled and datamodule.task.eval_task is not None:
                stage = "evaluation"
                summary["eval"] = evaluate_run(cfg, datamodule.task.eval_task, tokenizer, export, base_path,
                                               trainer.loggers, step=step)
            if trainer.is_global_zero:
                stage = "sharing"
                stopping.check()
                summary["export"] = share(cfg, export, summary, base_path)  # the model card; the hub upload when asked
    except (stopping.StopRequested, SIGTERMException):
        stopped = stopping.requested() or "SIGTERM"
    if stopped is not None:
        summary.update(preempted=True, stopped_by=stopped, stopped_in=stage)
        if stage == "training" and summary["val_ce"] is None:
            summary["val_ce"] = _metric(trainer, "val/ce")
        saved = any(getattr(cb, "saved", False) for cb in trainer.callbacks if isinstance(cb, Preemption))
        kept = {"training": "its checkpoint saved" if saved else "nothing new to save",
                "validation": "training finished", "export": "training finished",
                "evaluation": "training finished; finished generate batches kept in eval/partial",
                "sharing": "training and evaluation finished"}
        log.warning("stopped by %s during %s at step %d (%s); %s", stopped, stage, step, kept[stage],
                    resume_hint or f"resume with ckpt_path=last run_id={out.name}")
    if trainer.is_global_zero:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for lg in trainer.loggers:
        lg.finalize("success")
        if type(lg).__name__ == "WandbLogger":
            import wandb

            wandb.finish()
    return summary


def _stopped_summary(out: Path) -> dict:
    """The summary of an interrupted run in `out` (empty when there is none)."""
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if summary.get("preempted") else {}


def _warn_non_finite(val_ce: float | None) -> None:
    if val_ce is not None and not math.isfinite(val_ce):
        log.error("the final validation cross-entropy is %s: the trained weights are not finite (see README, "
                  "'Numerics')", val_ce)


def _report_data(trainer: L.Trainer, skipped: dict[str, dict[str, int]]) -> None:
    """Rows skipped or cut, per split and reason: printed, and logged as `data/<split>/<reason>`."""
    counts = {f"data/{split}/{reason}": n for split, reasons in skipped.items() for reason, n in reasons.items() if n}
    if not counts or not trainer.is_global_zero:
        return
    log.warning("data rows skipped or cut (see README, 'Bad input'): %s",
                ", ".join(f"{k.removeprefix('data/')} {n}" for k, n in counts.items()))
    for lg in trainer.loggers:
        lg.log_metrics({k: float(n) for k, n in counts.items()}, step=trainer.global_step)


def _metric(trainer: L.Trainer, key: str) -> float | None:
    value = trainer.callback_metrics.get(key)
    return None if value is None else float(value)
