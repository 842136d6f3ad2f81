"""The LightningModule: a causal LM, its token loss, metrics and optimizer; nothing task-specific."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path

import lightning as L
import torch
from torchmetrics import SumMetric

from dftlab.config import instantiate
from dftlab.losses import IGNORE_INDEX, TokenLoss
from dftlab.models import is_lora, load_causal_lm
from dftlab.objective import CausalLMWithLoss
from dftlab.rng import rng_state, set_rng_state
from dftlab.schedules import planned_steps
from dftlab.settings import EngineSettings
from dftlab.strategies import FSDP2Strategy

log = logging.getLogger(__name__)

class NonFiniteError(RuntimeError):
    pass


class FineTuneModule(L.LightningModule):
    """Trains `model` (a config for `dftlab.models.load_causal_lm`) with `loss`.

    Normalisation (`engine.reduction`):
    - `token` (default): the loss of an optimizer step is the sum of per-token losses over every
      target token of every micro-batch on every rank, divided by the number of those tokens.
    - `official`: as the public DFT code does: each micro-batch's token mean, summed over the
      micro-batches of a step without division, averaged over ranks. For faithful comparisons.

    `train/loss` is the quantity the step optimises under either reduction; under `official`,
    `train/loss_token_mean` is the token mean beside it (what `train/loss` is under `token`).
    """

    def __init__(self, model, loss: TokenLoss, optim, engine: EngineSettings, tokenizer=None, rollout=None):
        super().__init__()
        self.model_cfg, self.loss, self.optim_cfg, self.engine = model, loss, optim, engine
        self.tokenizer = tokenizer
        self.rollout = rollout  # online sampling (dftlab.rl.rollout): turns each prompt batch into a token batch
        self._extra_sums: dict[str, torch.Tensor] = {}  # a batch's `metric_sums`, over this step
        self.totals: dict[str, float] = {}  # the same, over the run (numerators and counts)
        self.policy: CausalLMWithLoss | None = None
        # nan_strategy "disable": a non-finite loss stays non-finite (the default drops NaN, reporting 0)
        self.val_sums = torch.nn.ModuleDict(
            {k: SumMetric(nan_strategy="disable") for k in ("nll", "correct", "tokens")}
        )
        self._step_sums: torch.Tensor | None = None  # this optimizer step's sums, on the device
        self._step_rows: list[torch.Tensor] = []  # row ids of this step's micro-batches
        self._step_clock: float | None = None
        self.skipped_steps = 0
        self.validated_at = -1  # the step of the latest validation
        self.run_record: dict | None = None  # what checkpoints record of the run, for a resume to compare

    # --- model -----------------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.policy is not None:
            return
        lm = load_causal_lm(self.model_cfg, self.tokenizer)
        self.policy = CausalLMWithLoss(
            lm,
            self.loss,
            reference=self.engine.reference,
            path=self.engine.path,
            chunk_mib=self.engine.chunk_mib,
            auto_mib=self.engine.auto_mib,
        )
        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, FSDP2Strategy):
            strategy.parallelize(self.policy, self.policy.lm)
            if self.policy.reference is not None:  # sharded the same way, as its own root
                strategy.parallelize(self.policy.reference, self.policy.reference)

    @property
    def lm(self) -> torch.nn.Module:
        return self.policy.lm

    def export(self, path: Path, tokenizer) -> None:
        """The trained model in Hugging Face format (safetensors), LoRA merged (the adapter alone in
        `adapter/`), consolidated from shards.

        Every rank must call it (gathering sharded parameters is collective); rank 0 writes.
        """
        lm = self.policy.lm
        state = None
        if isinstance(self.trainer.strategy, FSDP2Strategy):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(lm, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.trainer.is_global_zero:
            return
        if state is not None:  # a plain copy on the CPU to hold the gathered weights
            lm = load_causal_lm(self.model_cfg, self.tokenizer).to(torch.float32)
            lm.load_state_dict(state)
        if is_lora(lm):
            lm.save_pretrained(path / "adapter", safe_serialization=True)  # the adapter alone, beside the merged model
            lm = copy.deepcopy(lm).merge_and_unload() if state is None else lm.merge_and_unload()
        lm.save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        if getattr(tokenizer, "image_processor", None) is not None:  # a vision-language model's (dftlab.vision)
            tokenizer.image_processor.save_pretrained(path)

    # --- training --------------------------------------------------------------------------

    def _normaliser(self, batch) -> float:
        accumulation = self.trainer.accumulate_grad_batches
        if self.engine.reduction == "official":
            # Lightning divides each micro-batch loss by the accumulation; official code does not
            n_local = int((batch["labels"] != IGNORE_INDEX).sum())
            return max(n_local, 1) / accumulation
        # Lightning divides by the accumulation and DDP/FSDP average over ranks: undo both
        return max(batch["step_tokens"], 1) / (accumulation * self.trainer.world_size)

    def training_step(self, batch, batch_idx):
        if self.rollout is not None:
            batch = self.rollout.training_batch(self, batch)
        for name, (value, count) in batch.get("metric_sums", {}).items():
            pair = torch.tensor([value, count], dtype=torch.float64, device=self.device)
            self._extra_sums[name] = self._extra_sums[name] + pair if name in self._extra_sums else pair
        normaliser = self._normaliser(batch)
        loss, stats = self.policy(batch, normaliser)
        logp = stats.logp.double()
        sums = torch.stack(
            [
                loss.detach().double() * normaliser,
                # what Lightning backpropagates (the loss over the accumulation); over ranks, DDP averages
                loss.detach().double() / self.trainer.accumulate_grad_batches,
                -logp.sum(),
                stats.correct.double().sum(),
                logp.exp().sum(),
                torch.tensor(float(logp.numel()), dtype=torch.float64, device=logp.device),
                batch["attention_mask"].sum().double(),
            ]
        )
        self._step_sums = sums if self._step_sums is None else self._step_sums + sums
        self._step_rows.append(batch["row_ids"])
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Log the step's metrics (one reduction across ranks), then guard against non-finite values."""
        sums = self._step_sums
        extra = self._extra_sums
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            if extra:  # every rank's batches carry the same names
                reduced = self.trainer.strategy.reduce(torch.stack([extra[k] for k in sorted(extra)]), reduce_op="sum")
                extra = dict(zip(sorted(extra), reduced))
        self._extra_sums = {}
        grad_norm = self._grad_norm(optimizer)
        weighted, optimised, nll, correct, psum, n_targets, n_tokens = sums.tolist()
        rows = torch.cat(self._step_rows).tolist() if self._step_rows else []
        self._step_sums, self._step_rows = None, []
        now = time.perf_counter()
        elapsed = now - self._step_clock if self._step_clock is not None else math.nan
        self._step_clock = now
        n = max(n_targets, 1.0)
        metrics = {
            # what is optimised: the mean over the loss's units (tokens, pairs), or the official sum of means
            "train/loss": optimised / self.trainer.world_size,
            "train/ce": nll / n,
            "train/acc": correct / n,
            "train/p_mean": psum / n,
            "train/grad_norm": grad_norm,
            "train/lr": optimizer.param_groups[0]["lr"],
            "train/target_tokens": n_targets,
            "train/skipped_steps": float(self.skipped_steps),
        }
        if self.engine.reduction == "official":
            metrics["train/loss_token_mean"] = weighted / n
        for name, (value, count) in ((k, v.tolist()) for k, v in extra.items()):
            metrics[f"train/{name}"] = value / max(count, 1.0)
            self.totals[name] = self.totals.get(name, 0.0) + value
            self.totals[f"{name}_count"] = self.totals.get(f"{name}_count", 0.0) + count
        if elapsed == elapsed:  # no rate for the first step, nor after a validation pass
            metrics["train/tokens_per_s"] = n_tokens / elapsed
            metrics["train/target_tokens_per_s"] = n_targets / elapsed
        if not (math.isfinite(weighted) and math.isfinite(grad_norm)):
            self._non_finite(optimizer, weighted, grad_norm, rows)
            metrics["train/skipped_steps"] = float(self.skipped_steps)
        # Lightning writes step metrics every `log_every_n_steps` only: logging them at the other
        # steps would cost time for values that are dropped
        connector = self.trainer._logger_connector
        if connector.should_update_logs or self.trainer.fast_dev_run:
            self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
            self.log("ce", metrics["train/ce"], prog_bar=True, logger=False, on_step=True, batch_size=1)

    def _grad_norm(self, optimizer) -> float:
        """The total gradient norm of the optimizer's parameters, kept for `configure_gradient_clipping`."""
        params = self.trainer.precision_plugin.main_params(optimizer)  # what Lightning would clip, in its order
        grads = [p.grad for p in params if p.grad is not None]
        self._step_grad_norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0) if grads else None
        return 0.0 if self._step_grad_norm is None else float(self._step_grad_norm)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by norm with the norm `on_before_optimizer_step` computed (Lightning's own clipping
        would compute it a second time); the same result as `torch.nn.utils.clip_grad_norm_`."""
        norm, self._step_grad_norm = getattr(self, "_step_grad_norm", None), None
        if norm is None or not gradient_clip_val or gradient_clip_algorithm not in (None, "norm"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        params = list(self.trainer.precision_plugin.main_params(optimizer))
        torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, norm)

    def _non_finite(self, optimizer, loss: float, grad_norm: float, rows: list[int]) -> None:
        """Save what went wrong; then stop the run, or skip the step (`engine.on_non_finite`)."""
        step = self.trainer.global_step + 1  # the optimizer step being taken, counted from 1
        report = {"step": step, "loss": loss, "grad_norm": grad_norm, "row_ids": rows, "rank": self.global_rank}
        out = Path(self.trainer.default_root_dir) / "non_finite"
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"step{step:06d}_rank{self.global_rank}.json"
        path.write_text(json.dumps(report, indent=2))
        if self.engine.on_non_finite == "skip":
            optimizer.zero_grad(set_to_none=True)  # AdamW leaves parameters without gradients alone
            self.skipped_steps += 1
            log.warning("non-finite loss or gradient at step %d: step skipped (details in %s)", step, path)
            return
        raise NonFiniteError(
            f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step {step}; the batch's row ids are in "
            f"{path}. Resume from the last checkpoint, or set engine.on_non_finite=skip to skip such steps."
        )

    def on_train_start(self) -> None:
        # a resumed epoch continues where it stopped, or not at all (its first batches would be trained twice)
        if self.trainer.fit_loop.restarted_mid_epoch and not getattr(self.trainer.train_dataloader, "restored", True):
            raise RuntimeError("resuming mid-epoch, but the checkpoint's position in the epoch was not loaded into "
                               "the training data loader (it was set up before the checkpoint was restored)")

    def reset_step_clock(self) -> None:
        """Leave the time since the last step out of the next tokens/s (an evaluation ran in between)."""
        self._step_clock = None

    def on_validation_end(self) -> None:
        self.reset_step_clock()

    # --- checkpoints -----------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["dftlab"] = {"rng": rng_state(), "skipped_steps": self.skipped_steps, "totals": self.totals}
        if self.run_record is not None:
            datamodule = self.trainer.datamodule
            if "data" not in self.run_record and hasattr(datamodule, "identity"):
                self.run_record["data"] = datamodule.identity()
            checkpoint["dftlab"]["run"] = self.run_record

    def on_load_checkpoint(self, checkpoint) -> None:
        state = checkpoint.get("dftlab", {})
        if "rng" in state:
            set_rng_state(state["rng"])
        self.skipped_steps = state.get("skipped_steps", 0)
        self.totals = dict(state.get("totals", {}))

    # --- validation ------------------------------------------------------------------------

    def validation_step(self, batch, batch_idx):
        stats, _ = self.policy.token_stats(batch)
        self.val_sums["nll"].update(-stats.logp.double().sum())
        self.val_sums["correct"].update(stats.correct.double().sum())
        self.val_sums["tokens"].update(torch.tensor(float(stats.logp.numel()), dtype=torch.float64))

    def on_validation_epoch_end(self) -> None:
        self.validated_at = self.global_step
        n = self.val_sums["tokens"].compute().clamp(min=1)
        # the sums are already over every rank (SumMetric synchronises them)
        self.log("val/ce", self.val_sums["nll"].compute() / n, prog_bar=True, rank_zero_only=True)
        self.log("val/acc", self.val_sums["correct"].compute() / n, rank_zero_only=True)
        for metric in self.val_sums.values():
            metric.reset()

    # --- optimizer -------------------------------------------------------------------------

    def configure_optimizers(self):
        """`optim.optimizer` called with the parameter groups (weight decay on matrices only, or on
        every parameter with `optim.decay_norms_and_biases`, as the public DFT code does), and
        `optim.schedule` with the optimizer and the number of optimizer steps, stepped every step."""
        cfg = self.optim_cfg
        decay_all = bool(cfg.get("decay_norms_and_biases", False))
        decay, no_decay = [], []
        for p in self.policy.lm.parameters():
            if p.requires_grad:
                (decay if decay_all or p.dim() >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = instantiate(cfg.optimizer)(groups)
        total = planned_steps(self.trainer)
        scheduler = instantiate(cfg.schedule)(optimizer, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
