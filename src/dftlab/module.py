"""The LightningModule: a causal LM, its token loss, metrics and optimizer; nothing task-specific."""

from __future__ import annotations

import math
import time

import lightning as L
import torch
from torchmetrics import SumMetric

from dftlab.errors import ConfigError
from dftlab.losses import IGNORE_INDEX, TokenLoss
from dftlab.models import load_causal_lm
from dftlab.policy import CausalLMWithLoss

REDUCTIONS = ("token", "official")


class FineTuneModule(L.LightningModule):
    """Trains `model` (a config for `dftlab.models.load_causal_lm`) with `loss`.

    Normalisation (`engine.reduction`):
    - `token` (default): the loss of an optimizer step is the sum of per-token losses over every
      target token of every micro-batch on every rank, divided by the number of those tokens.
    - `official`: as the public DFT code does: each micro-batch's token mean, summed over the
      micro-batches of a step without division, averaged over ranks. For faithful comparisons.
    """

    def __init__(self, model, loss: TokenLoss, optim, engine, tokenizer=None):
        super().__init__()
        if engine.get("reduction", "token") not in REDUCTIONS:
            raise ConfigError(f"engine.reduction={engine.get('reduction')!r}: choose one of {', '.join(REDUCTIONS)}")
        self.model_cfg, self.loss, self.optim_cfg, self.engine = model, loss, optim, engine
        self.tokenizer = tokenizer
        self.policy: CausalLMWithLoss | None = None
        self.val_sums = torch.nn.ModuleDict({k: SumMetric() for k in ("nll", "correct", "tokens")})
        self._step_sums = torch.zeros(6, dtype=torch.float64)
        self._step_clock: float | None = None

    # --- model -----------------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.policy is not None:
            return
        lm = load_causal_lm(self.model_cfg, self.tokenizer)
        self.policy = CausalLMWithLoss(
            lm,
            self.loss,
            reference=self.engine.get("reference", "copy"),
            path=self.engine.get("path", "auto"),
            chunk_mib=self.engine.get("chunk_mib", 64),
            auto_mib=self.engine.get("auto_mib", 256),
        )

    @property
    def lm(self) -> torch.nn.Module:
        return self.policy.lm

    # --- training --------------------------------------------------------------------------

    def _normaliser(self, batch) -> float:
        accumulation = self.trainer.accumulate_grad_batches
        if self.engine.get("reduction", "token") == "official":
            # Lightning divides each micro-batch loss by the accumulation; official code does not
            n_local = int((batch["labels"] != IGNORE_INDEX).sum())
            return max(n_local, 1) / accumulation
        # Lightning divides by the accumulation and DDP/FSDP average over ranks: undo both
        return max(int(batch["step_tokens"]), 1) / (accumulation * self.trainer.world_size)

    def training_step(self, batch, batch_idx):
        normaliser = self._normaliser(batch)
        loss, stats = self.policy(batch, normaliser)
        logp = stats.logp.double()
        self._step_sums += torch.stack(
            [
                loss.detach().double() * normaliser,
                -logp.sum(),
                stats.correct.double().sum(),
                logp.exp().sum(),
                torch.tensor(float(logp.numel()), dtype=torch.float64, device=logp.device),
                batch["attention_mask"].sum().double(),
            ]
        ).cpu()
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        sums = self._step_sums.to(self.device)
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        weighted, nll, correct, psum, n_targets, n_tokens = sums.tolist()
        self._step_sums.zero_()
        now = time.perf_counter()
        elapsed = now - self._step_clock if self._step_clock is not None else math.nan
        self._step_clock = now
        n = max(n_targets, 1.0)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])) if grads else torch.zeros(())
        metrics = {
            "train/loss": weighted / n,
            "train/ce": nll / n,
            "train/acc": correct / n,
            "train/p_mean": psum / n,
            "train/grad_norm": float(grad_norm),
            "train/lr": optimizer.param_groups[0]["lr"],
            "train/target_tokens": n_targets,
        }
        if elapsed == elapsed:  # the first step has no previous clock
            metrics["train/tokens_per_s"] = n_tokens / elapsed
            metrics["train/target_tokens_per_s"] = n_targets / elapsed
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
        self.log("ce", metrics["train/ce"], prog_bar=True, logger=False, on_step=True, batch_size=1)

    # --- validation ------------------------------------------------------------------------

    def validation_step(self, batch, batch_idx):
        stats, _ = self.policy.token_stats(batch)
        self.val_sums["nll"].update(-stats.logp.double().sum())
        self.val_sums["correct"].update(stats.correct.double().sum())
        self.val_sums["tokens"].update(torch.tensor(float(stats.logp.numel()), dtype=torch.float64))

    def on_validation_epoch_end(self) -> None:
        n = self.val_sums["tokens"].compute().clamp(min=1)
        self.log("val/ce", self.val_sums["nll"].compute() / n, prog_bar=True, sync_dist=False)
        self.log("val/acc", self.val_sums["correct"].compute() / n, sync_dist=False)
        for metric in self.val_sums.values():
            metric.reset()

    # --- optimizer -------------------------------------------------------------------------

    def configure_optimizers(self):
        cfg = self.optim_cfg
        decay, no_decay = [], []
        for p in self.policy.lm.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(cfg.warmup_ratio * total)
        min_ratio = cfg.get("min_lr_ratio", 0.0)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
