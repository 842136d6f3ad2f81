"""Accuracy on the test splits during training: the DFT paper's Figure 1 (accuracy against step).

Before training, every `every_n_steps` optimizer steps and at the end, the model being trained
completes the first `max_problems` problems of each test split of the task's `eval_task` (greedy,
or `n_samples` samples each: Average@k and pass@k), and the completions are scored. Logged to every
logger as `eval/<split>/acc` (greedy) or `eval/<split>/avg@<k>` and `eval/<split>/pass@<k>`, with
`eval/<split>/well_formed` and the mean over splits `eval/mean_acc` (`eval/mean_avg@<k>`). Each
point is appended to `<run dir>/eval_progress/points.csv` as it is measured (a resumed run adds to
it); at the end of training the curves are drawn to `<run dir>/eval_progress/accuracy_vs_step.png`.

Distributed: with a replicated model (one device, DDP) rank r completes problems r::world_size of
each split (no padding, no repeats: a DistributedSampler would add some) and the verdicts are
gathered to rank 0, so an evaluation takes 1/world_size of the time. A sharded model (FSDP2) needs
every rank in every forward pass: each rank completes every problem, in lockstep (`synced_gpus`),
and rank 0 keeps its own verdicts; its first point is after the first step (FSDP2 initialises
through the first forward of the root module, which generating would bypass). Only rank 0 writes
and logs. The time an evaluation takes is
kept out of the training throughput (`train/tokens_per_s`).

A stop signal ends a measurement between generate batches (one process; with several ranks the
measurement finishes first, since the other ranks wait for its verdicts): the step is saved and the
resumed run measures that point, and no point already in `points.csv`.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from dftlab.callbacks.distributed import gather_uneven
from dftlab.callbacks.preemption import stop_from_callback
from dftlab.errors import ConfigError
from dftlab.evaluation.runner import SplitResult, generate_and_score, select, summarise, verdicts
from dftlab.formats.eval_points import DIR, PLOT, POINTS, append_points, read_points
from dftlab.models import eval_mode
from dftlab.plots.progress import Curve, plot_progress
from dftlab.stopping import StopRequested
from dftlab.strategies import FSDP2Strategy

log = logging.getLogger(__name__)

KEY = "callbacks.eval_during_training"
FAST_DEV_RUN_PROBLEMS = 2


class EvalDuringTraining(L.Callback):
    """`every_n_steps`: null measures before and after training only. `max_problems`: the first n
    problems of each split (null: all). `splits`: null for every test split. `n_samples` > 1:
    Average@k at `temperature` and `top_p`. `batch_size`: sequences per generate call. `seed`:
    the sampling seed (the same at every point). `at_start`: measure the model training starts
    from (step 0; off for a model that starts from random weights, whose accuracy is 0)."""

    def __init__(
        self,
        every_n_steps: int | None = 50,
        max_problems: int | None = 100,
        splits: list[str] | None = None,
        n_samples: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 512,
        seed: int = 0,
        at_start: bool = True,
    ):
        checks = {
            "every_n_steps": (every_n_steps, every_n_steps is None or every_n_steps >= 1, "null or >= 1"),
            "max_problems": (max_problems, max_problems is None or max_problems >= 1, "null (all) or >= 1"),
            "n_samples": (n_samples, n_samples >= 1, ">= 1"),
            "temperature": (temperature, temperature > 0, "> 0 (n_samples: 1 is greedy whatever it is)"),
            "top_p": (top_p, 0 < top_p <= 1, "in (0, 1]"),
            "batch_size": (batch_size, batch_size >= 1, ">= 1"),
        }
        for key, (value, ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(f"{KEY}.{key}={value!r} is not allowed: {allowed}")
        self.every_n_steps, self.max_problems = every_n_steps, max_problems
        self.splits = list(splits) if splits else None
        self.n_samples, self.temperature, self.top_p = n_samples, temperature, top_p
        self.batch_size, self.seed, self.at_start = batch_size, seed, at_start
        self.metric = "acc" if n_samples == 1 else f"avg@{n_samples}"
        self._task = None
        self._problems: dict[str, list[dict]] = {}
        self._last_step: int | None = None
        self._trained = False  # whether this fit ran its training loop (a finished run's resume does not)

    # --- when ------------------------------------------------------------------------------

    def _prepare(self, trainer: L.Trainer) -> None:
        self._task = trainer.datamodule.task.eval_task
        if self._task is None:
            log.warning("%s: the task has no eval_task, nothing to evaluate during training", KEY)
            return
        limit = FAST_DEV_RUN_PROBLEMS if trainer.fast_dev_run else self.max_problems
        self._problems = select(self._task, self.splits, limit, f"{KEY}.splits")

    def _measured(self, trainer: L.Trainer, step: int) -> bool:
        """Whether `points.csv` has this step (from an earlier, interrupted run of this directory)."""
        return any(p["step"] == step for p in read_points(self._out_dir(trainer) / POINTS))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained = True
        self._prepare(trainer)
        if self._task is None or isinstance(trainer.strategy, FSDP2Strategy):  # see the module's docstring
            return
        step = trainer.global_step
        due = self.at_start if step == 0 else bool(self.every_n_steps) and step % self.every_n_steps == 0
        if due and not (step > 0 and self._measured(trainer, step)):
            self._measure_or_stop(trainer, pl_module, "on_train_start")
        elif step > 0:
            self._last_step = step  # measured before the interruption (or not a point of the schedule)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # called after every micro-batch: act once, after the optimizer step that reached `step`
        if self._task is not None and self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_step:
            self._measure_or_stop(trainer, pl_module, "on_train_batch_end")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._task is None:
            return
        if trainer.global_step != self._last_step:
            self._measure_or_stop(trainer, pl_module, "on_train_end")
        if trainer.is_global_zero:
            self._publish_plot(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed run whose training was already finished (stopped during the last point) skips
        the training loop: its last point is measured here, on the training device."""
        if self._trained or trainer.world_size > 1:
            return
        self._prepare(trainer)
        if self._task is None or self._measured(trainer, trainer.global_step):
            return
        device = trainer.strategy.root_device
        pl_module.to(device)  # the trainer's teardown has moved it to the CPU
        try:
            self._measure_or_stop(trainer, pl_module, "on_fit_end")
        finally:
            pl_module.cpu()
        self._publish_plot(trainer)

    def _measure_or_stop(self, trainer: L.Trainer, pl_module: L.LightningModule, hook: str) -> None:
        try:
            self._measure(trainer, pl_module)
        except StopRequested:
            stop_from_callback(trainer, hook)

    # --- measuring -------------------------------------------------------------------------

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        started = time.perf_counter()
        sharded = isinstance(trainer.strategy, FSDP2Strategy)
        rank, world = trainer.global_rank, trainer.world_size
        share = self._problems if sharded else {s: rows[rank::world] for s, rows in self._problems.items()}
        log.info("%s: measuring step %d (%d problems)", KEY, trainer.global_step, sum(map(len, share.values())))
        try:
            with (
                eval_mode(pl_module),
                torch.no_grad(),
                trainer.precision_plugin.forward_context(),
                _gathered(pl_module.policy, sharded),
            ):
                records = generate_and_score(
                    pl_module.policy.lm,
                    trainer.datamodule.tokenizer,
                    self._task,
                    share,
                    n_samples=self.n_samples,
                    temperature=self.temperature if self.n_samples > 1 else 0.0,
                    top_p=self.top_p,
                    batch_size=self.batch_size,
                    seed=self.seed + 100_003 * (0 if sharded else rank),
                    synced_gpus=sharded and world > 1,
                    interruptible=world == 1,
                )
        finally:
            pl_module.reset_step_clock()  # keep this pass out of the training throughput
        results = self._collect(trainer, pl_module.device, records, gathered=not sharded)
        self._last_step = trainer.global_step
        if trainer.is_global_zero:
            self._publish(trainer, results, time.perf_counter() - started)

    def _collect(
        self, trainer: L.Trainer, device, records: dict[str, list[dict]], gathered: bool
    ) -> dict[str, SplitResult]:
        """Every rank's verdicts, per split (one collective for all splits)."""
        k, names = self.n_samples, list(self._problems)
        local = [
            [names.index(split), *map(int, c), *map(int, w)]
            for split, recs in records.items()
            for c, w in zip(*verdicts(recs))
        ]
        table = torch.tensor(local, dtype=torch.long, device=device).reshape(-1, 1 + 2 * k)
        if gathered:
            table = gather_uneven(trainer, table.flatten()).reshape(-1, 1 + 2 * k)
        table = table.cpu()
        results = {}
        for i, split in enumerate(names):
            mine = table[table[:, 0] == i]
            correct = mine[:, 1 : 1 + k].bool().tolist()
            well_formed = mine[:, 1 + k :].bool().tolist()
            results[split] = summarise(split, correct, well_formed)
        return results

    # --- outputs (rank 0) ------------------------------------------------------------------

    @staticmethod
    def _out_dir(trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir) / DIR

    def _publish(self, trainer: L.Trainer, results: dict[str, SplitResult], seconds: float) -> None:
        step, k = trainer.global_step, self.n_samples
        metrics = {}
        for split, r in results.items():
            metrics[f"eval/{split}/{self.metric}"] = r.accuracy
            metrics[f"eval/{split}/well_formed"] = r.well_formed
            if r.pass_at_k is not None:
                metrics[f"eval/{split}/pass@{k}"] = r.pass_at_k
        if results:
            metrics[f"eval/mean_{self.metric}"] = sum(r.accuracy for r in results.values()) / len(results)
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=step)
        append_points(self._out_dir(trainer) / POINTS, [
            [step, split, self.metric, r.accuracy, *r.ci, "" if r.pass_at_k is None else r.pass_at_k, r.well_formed,
             r.n, k, round(seconds, 3)]
            for split, r in results.items()
        ])
        log.info("%s at step %d (%.1f s): %s", KEY, step, seconds,
                 ", ".join(f"{s} {100 * r.accuracy:.1f}%" for s, r in results.items()))

    def _publish_plot(self, trainer: L.Trainer) -> None:
        points = read_points(self._out_dir(trainer) / POINTS)
        curves = {}
        for split in dict.fromkeys(p["split"] for p in points):
            mine = sorted((p for p in points if p["split"] == split), key=lambda p: p["step"])
            curves[split] = Curve([p["step"] for p in mine], [p["value"] for p in mine],
                                  [p["ci95_lo"] for p in mine], [p["ci95_hi"] for p in mine])
        if not curves:
            return
        n = max(p["n"] for p in points)
        what = "greedy" if self.n_samples == 1 else f"Average@{self.n_samples}, temperature {self.temperature:g}"
        path = plot_progress({f"{what}, {n} problems a split, band: 95% Wilson interval": curves},
                             self._out_dir(trainer) / PLOT, "accuracy during training", "accuracy (%)")
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.log_image("eval/accuracy_vs_step", [str(path)], step=trainer.global_step)


@contextmanager
def _gathered(policy: torch.nn.Module, sharded: bool):
    """A sharded root's own parameters (embeddings, final norm, output layer) gathered while
    `policy.lm` generates outside the root's forward; the layers gather theirs in their forward."""
    if not sharded:
        yield
        return
    policy.unshard()
    try:
        yield
    finally:
        policy.reshard()
