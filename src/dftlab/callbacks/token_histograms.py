"""Token-probability histograms during training: what a loss does to the model's confidence.

p(target token) is measured for every target token of a fixed subset of the training data before
training, every `every_n_steps` optimizer steps, and at the end: the analogue of Figure 2 of the DFT
paper (SFT moves the whole distribution up, DFT polarises it). The subset depends only on `seed` and
the size of the training set, so every loss and every training seed is measured on the same tokens.

Distributed: rank r takes subset[r::world_size] (no padding and no repeats, which a
DistributedSampler would add), counts its share into the bins, and the counts are summed over ranks;
the median comes from the gathered values. Only rank 0 writes files and logs.

A stop signal ends a pass between its batches (one process): the step is saved, and the resumed
run measures that point, and no point already on disk.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities import move_data_to_device
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from dftlab import stopping
from dftlab.callbacks.distributed import gather_uneven
from dftlab.callbacks.preemption import stop_from_callback
from dftlab.data.collate import collate
from dftlab.data.datamodule import EncodedDataset
from dftlab.data.encode import EncodeSettings, encode_example
from dftlab.errors import ConfigError
from dftlab.formats.token_probs import BEFORE, DIR, PAPER_EDGES, ProbHistogram, fine_edges, point_name
from dftlab.losses import IGNORE_INDEX
from dftlab.models import eval_mode
from dftlab.plots.histograms import plot_histograms

WANDB_MAX_BINS = 512
LOWEST_COLUMNS = ["token_id", "token", "count", "mean_p"]


def subset_indices(n_rows: int, n_examples: int, seed: int) -> list[int]:
    """`n_examples` distinct row indices out of `n_rows` (all of them when fewer), chosen by `seed`."""
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_rows, generator=g)[:n_examples].tolist())


def _bin_counts(p: Tensor, edges: np.ndarray) -> Tensor:
    """Counts per bin [edges[i], edges[i+1]); the last bin also holds p = 1 (and rounding above it)."""
    inner = torch.as_tensor(edges[1:-1], dtype=p.dtype, device=p.device)
    return torch.bincount(torch.bucketize(p, inner, right=True), minlength=len(edges) - 1)


@dataclass
class _Point:
    hist: ProbHistogram
    token_counts: np.ndarray  # per token id, over the whole subset
    token_psum: np.ndarray


class TokenHistograms(L.Callback):
    """Histograms of p(target token) over `n_examples` training examples chosen by `seed`.

    `every_n_steps`: also every that many optimizer steps (null: only before and after training).
    `batch_size`: examples per forward pass. `fine_bins` log-spaced bins over [fine_min, 1] besides
    the paper's. `lowest_k`: rows of the end-of-training table of the least probable target tokens.
    `rows`: `train`, the run's own training rows; `demonstrations`, the training rows of the task
    the data was sampled from (`data.task.base` for rejection samples and preference pairs, the task
    itself otherwise), so that runs on different data are measured on the same tokens.
    """

    ROWS = ("train", "demonstrations")

    def __init__(
        self,
        n_examples: int = 512,
        every_n_steps: int | None = None,
        batch_size: int = 64,
        fine_bins: int = 100,
        fine_min: float = 1e-8,
        lowest_k: int = 50,
        seed: int = 0,
        rows: str = "train",
    ):
        checks = {
            "n_examples": (n_examples, n_examples >= 1, ">= 1"),
            "every_n_steps": (every_n_steps, every_n_steps is None or every_n_steps >= 1, "null or >= 1"),
            "batch_size": (batch_size, batch_size >= 1, ">= 1"),
            "fine_bins": (fine_bins, 2 <= fine_bins <= WANDB_MAX_BINS, f"2 to {WANDB_MAX_BINS} (W&B's limit)"),
            "fine_min": (fine_min, 0 < fine_min < 1, "0 < fine_min < 1"),
            "lowest_k": (lowest_k, lowest_k >= 1, ">= 1"),
            "rows": (rows, rows in self.ROWS, " | ".join(self.ROWS)),
        }
        for key, (value, ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(f"callbacks.token_histograms.{key}={value!r} is not allowed: {allowed}")
        self.n_examples, self.every_n_steps, self.batch_size = n_examples, every_n_steps, batch_size
        self.fine_edges = fine_edges(fine_bins, fine_min)
        self.lowest_k, self.seed, self.rows = lowest_k, seed, rows
        self._dataset, self._collate = None, None
        self._n_subset = 0
        self._shard: list[int] = []
        self._first: _Point | None = None
        self._last: _Point | None = None
        self._last_step = -1  # the step of the latest point (measured by this run or found on disk)
        self._trained = False  # whether this fit ran its training loop (a finished run's resume does not)

    # --- when ------------------------------------------------------------------------------

    def _examples(self, datamodule):
        """(dataset, collate) of the rows measured."""
        if self.rows == "train":
            return datamodule.datasets["train"], datamodule.collate_fn
        task = getattr(datamodule.task, "base", datamodule.task)
        tok = datamodule.tokenizer
        settings = EncodeSettings(datamodule.max_length, task.chat_template, task.train_on)
        encoded = [encode_example(tok, r, settings) for r in task.train()]  # pairs, conversations, documents
        return EncodedDataset([e for e in encoded if e is not None]), partial(collate, pad_id=tok.pad_token_id)

    def _prepare(self, trainer: L.Trainer) -> None:
        self._dataset, self._collate = self._examples(trainer.datamodule)
        subset = subset_indices(len(self._dataset), self.n_examples, self.seed)
        if trainer.fast_dev_run:
            subset = subset[: self.batch_size]  # a smoke run measures one batch's worth
        self._n_subset = len(subset)
        self._shard = subset[trainer.global_rank :: trainer.world_size]

    def _on_disk(self, trainer: L.Trainer, step: int) -> bool:
        return (self._out_dir(trainer) / f"{point_name(step)}.npz").exists()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained = True
        self._prepare(trainer)
        step = trainer.global_step
        due = step == 0 or bool(self.every_n_steps) and step % self.every_n_steps == 0
        if due and not (step > 0 and self._on_disk(trainer, step)):
            self._point(trainer, pl_module, "on_train_start")
            self._first = self._last
        self._last_step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # called after every micro-batch: act once, after the optimizer step that reached `step`
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_step:
            self._point(trainer, pl_module, "on_train_batch_end")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last_step or self._last is None:
            self._point(trainer, pl_module, "on_train_end")
        if trainer.is_global_zero:
            self._publish_lowest(trainer)
            self._publish_before_after(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed run whose training was already finished (stopped during the last point) skips
        the training loop: its last point is measured here, on the training device."""
        if self._trained or trainer.world_size > 1 or self._on_disk(trainer, trainer.global_step):
            return
        self._prepare(trainer)
        pl_module.to(trainer.strategy.root_device)  # the trainer's teardown has moved it to the CPU
        try:
            self._point(trainer, pl_module, "on_fit_end")
        finally:
            pl_module.cpu()
        self._publish_lowest(trainer)
        self._publish_before_after(trainer)

    def _point(self, trainer: L.Trainer, pl_module: L.LightningModule, hook: str) -> None:
        try:
            self._last = self._evaluate(trainer, pl_module)
        except stopping.StopRequested:
            stop_from_callback(trainer, hook)
        else:
            self._last_step = trainer.global_step

    # --- measuring -------------------------------------------------------------------------

    def _local_values(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[Tensor, Tensor, Tensor]:
        """(p, entropy, token id) of every target token of this rank's share, in eval mode."""
        dataset = self._dataset
        device = pl_module.device
        probs = [torch.empty(0, dtype=torch.float64, device=device)]
        entropies = [torch.empty(0, dtype=torch.float64, device=device)]
        ids = [torch.empty(0, dtype=torch.long, device=device)]
        try:
            with eval_mode(pl_module), torch.no_grad(), trainer.precision_plugin.forward_context():
                for s in range(0, len(self._shard), self.batch_size):
                    if trainer.world_size == 1:  # several ranks reduce the counts together: none stops alone
                        stopping.check()
                    items = [dataset[(i, 0)] for i in self._shard[s : s + self.batch_size]]
                    batch = move_data_to_device(self._collate(items), device)
                    stats, entropy = pl_module.policy.token_stats(batch, entropy=True)
                    probs.append(stats.logp.double().exp())
                    entropies.append(entropy.double())
                    ids.append(batch["labels"][batch["labels"] != IGNORE_INDEX])
        finally:
            if hasattr(pl_module, "reset_step_clock"):  # keep this pass out of the training throughput
                pl_module.reset_step_clock()
        return torch.cat(probs), torch.cat(entropies), torch.cat(ids)

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> _Point:
        p, entropy, ids = self._local_values(trainer, pl_module)
        vocab = pl_module.policy.vocab_size
        n_paper, n_fine = len(PAPER_EDGES) - 1, len(self.fine_edges) - 1
        # one reduction for all the counts and one for all the sums
        counts = torch.cat(
            [
                _bin_counts(p, PAPER_EDGES),
                _bin_counts(p, self.fine_edges),
                torch.stack([(p > 0.9).sum(), (p < 0.01).sum()]),
                torch.bincount(ids, minlength=vocab),
            ]
        )
        sums = torch.cat([torch.stack([p.sum(), entropy.sum()]), torch.bincount(ids, weights=p, minlength=vocab)])
        counts = trainer.strategy.reduce(counts, reduce_op="sum").cpu().numpy()
        sums = trainer.strategy.reduce(sums, reduce_op="sum").cpu().numpy()
        median = float(np.median(gather_uneven(trainer, p).cpu().numpy()))
        paper, fine = counts[:n_paper], counts[n_paper : n_paper + n_fine]
        above, below = counts[n_paper + n_fine : n_paper + n_fine + 2]
        n = int(paper.sum())
        summary = {
            "n_tokens": n,
            "mean": float(sums[0] / n),
            "median": median,
            "frac_above_0.9": float(above / n),
            "frac_below_0.01": float(below / n),
            "entropy_mean": float(sums[1] / n),
        }
        point = _Point(
            ProbHistogram(trainer.global_step, paper, self.fine_edges, fine, summary),
            token_counts=counts[n_paper + n_fine + 2 :],
            token_psum=sums[2:],
        )
        if trainer.is_global_zero:
            self._publish(trainer, point.hist)
        return point

    # --- outputs (rank 0) ------------------------------------------------------------------

    @staticmethod
    def _out_dir(trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir) / DIR

    @staticmethod
    def _wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def _publish(self, trainer: L.Trainer, hist: ProbHistogram) -> None:
        out = self._out_dir(trainer)
        hist.save(out)
        title = (
            f"p(target token) at {hist.name}: {hist.summary['n_tokens']} tokens of {self._n_subset} training examples"
        )
        plot_histograms([(hist.name, hist)], out / f"{hist.name}.png", title)
        metrics = {f"probs/{k}": v for k, v in hist.summary.items()}
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=hist.step)
        wandb_loggers = self._wandb_loggers(trainer)
        if wandb_loggers:
            import wandb

            # edges in log10 p: W&B draws a linear axis, on which log-spaced bins in p would be unreadable
            histogram = wandb.Histogram(np_histogram=(hist.fine_counts.tolist(), hist.log10_fine_edges().tolist()))
            for lg in wandb_loggers:
                lg.log_metrics({"probs/histogram_log10_p": histogram}, step=hist.step)

    def _publish_lowest(self, trainer: L.Trainer) -> None:
        """The least probable target tokens at the last point, by token id, lowest mean p first."""
        last = self._last
        seen = np.flatnonzero(last.token_counts)
        mean = last.token_psum[seen] / last.token_counts[seen]
        tokenizer = trainer.datamodule.tokenizer
        rows = [
            [int(seen[i]), repr(tokenizer.decode([int(seen[i])])), int(last.token_counts[seen[i]]), float(mean[i])]
            for i in np.lexsort((seen, mean))[: self.lowest_k]
        ]
        out = self._out_dir(trainer)
        with open(out / "lowest_tokens.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(LOWEST_COLUMNS)
            w.writerows(rows)
        for lg in self._wandb_loggers(trainer):
            lg.log_table("probs/lowest_tokens", columns=LOWEST_COLUMNS, data=rows, step=last.hist.step)

    def _publish_before_after(self, trainer: L.Trainer) -> None:
        # a run resumed in its own directory compares with the model it first started from
        before = self._out_dir(trainer) / f"{BEFORE}.npz"
        if not before.exists() and self._first is None:
            return
        first = ProbHistogram.load(before) if before.exists() else self._first.hist
        last = self._last.hist
        if first.step == last.step:
            return
        path = plot_histograms(
            [(first.name, first), (f"after, step {last.step}", last)],
            self._out_dir(trainer) / "before_vs_after.png",
            f"p(target token) on {last.summary['n_tokens']} target tokens of {self._n_subset} training examples",
        )
        for lg in self._wandb_loggers(trainer):
            lg.log_image("probs/before_vs_after", [str(path)], step=last.step)
