"""Online sampling for GRPO, inside the training step of the same LightningModule and engine.

At the first micro-batch of each optimizer step, the policy being trained samples `n` completions
(a group) of each prompt of the rank's share of the step, with the evaluation's generation code
(under DDP each rank samples its own share); the task's verifier rewards them (1 correct, 0 not,
or the grader's own `reward`); each completion's advantage is its reward normalised within its
group, `(r - mean) / (std + eps)` (`scale_rewards: true`, std the unbiased standard deviation) or
`r - mean` (`false`), given to each of its tokens (`advantage`). The completions become token
batches (prompt + sampled ids, the completion's tokens as targets), one per micro-batch, and the
step's number of units (completion tokens, or completions: the loss's `unit`) is summed over ranks
once, so the step's loss is exactly its mean over them. With `ppo_epochs` > 1 the same samples
serve that many optimizer steps, and the sampling policy's log p (`old_logp`) is kept for the
clipped ratio.

Bad groups are handled and counted, never a crash: a group whose rewards are all equal (no
signal) gets advantage 0 (`zero_variance_groups`); a reward that is not finite is left out of its
group's statistics and its completion gets advantage 0 (`nonfinite_rewards`); a completion cut by
`max_new_tokens` is trained on with its reward (`truncated`; `all_truncated_groups` counts the
prompts whose every sample was cut). Logged per step as `train/rollout/<name>` (means and
fractions), with `reward`, `correct` and `completion_tokens`; totals go into `summary.json`.
"""

from __future__ import annotations

import math

import torch
from lightning.fabric.utilities import move_data_to_device
from torch import Tensor

from dftlab.data.collate import collate
from dftlab.data.encode import Encoded, prompt_ids
from dftlab.errors import ConfigError
from dftlab.losses import IGNORE_INDEX
from dftlab.models import eval_mode
from dftlab.rl.grading import grader_of
from dftlab.rl.sampling import Sample, sample_and_grade

KEY = "rollout"


def group_advantages(rewards: Tensor, scale: bool = True, eps: float = 1e-4) -> tuple[Tensor, Tensor, Tensor]:
    """Advantages of a [groups, n] reward matrix, with which groups had zero variance and which
    rewards were not finite (those are left out of their group's mean and std, and get 0)."""
    finite = torch.isfinite(rewards)
    r = torch.where(finite, rewards, torch.zeros_like(rewards)).double()
    count = finite.sum(1, keepdim=True)
    mean = r.sum(1, keepdim=True) / count.clamp(min=1)
    dev = torch.where(finite, r - mean, torch.zeros_like(r))
    var = (dev**2).sum(1, keepdim=True) / (count - 1).clamp(min=1)
    std = var.sqrt()
    zero_var = (std == 0).squeeze(1)
    adv = dev / (std + eps) if scale else dev
    adv = torch.where(zero_var[:, None] | ~finite, torch.zeros_like(adv), adv)
    return adv.to(rewards.dtype), zero_var, ~finite


class Rollout:
    """GRPO's online sampling (see the module docstring).

    n: completions per prompt (the group). temperature, top_p: sampling. max_new_tokens: null for
    the grader's. scale_rewards: divide by the group's std (false: "no std"). eps: added to the std.
    ppo_epochs: optimizer steps on each step's samples. batch_size: sequences per generate call.
    grader: null for the task's verifier. seed: the sampling seed (varied by step and rank).
    """

    token_fields = ("advantage", "old_logp")
    units = ("token", "sequence")
    METRICS = ("reward", "correct", "completion_tokens", "truncated", "nonfinite_rewards", "zero_variance_groups",
               "all_truncated_groups")

    def __init__(self, n: int = 4, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int | None = None,
                 scale_rewards: bool = True, eps: float = 1e-4, ppo_epochs: int = 1, batch_size: int = 512,
                 grader=None, seed: int = 0):
        checks = {
            "n": (n, n >= 2, ">= 2 (advantages are relative to the group)"),
            "temperature": (temperature, temperature > 0, "> 0"),
            "top_p": (top_p, 0 < top_p <= 1, "in (0, 1]"),
            "max_new_tokens": (max_new_tokens, max_new_tokens is None or max_new_tokens >= 1, "null or >= 1"),
            "eps": (eps, eps >= 0, ">= 0"),
            "ppo_epochs": (ppo_epochs, ppo_epochs >= 1, ">= 1"),
            "batch_size": (batch_size, batch_size >= 1, ">= 1"),
        }
        for key, (value, ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(f"{KEY}.{key}={value!r} is not allowed: {allowed}")
        self.n, self.temperature, self.top_p, self.max_new_tokens = n, temperature, top_p, max_new_tokens
        self.scale_rewards, self.eps, self.ppo_epochs, self.batch_size = scale_rewards, eps, ppo_epochs, batch_size
        self.grader, self.seed = grader, seed
        self._key: tuple | None = None
        self._batches: list[dict] = []
        self._sums: dict[str, tuple[float, float]] = {}

    # --- what the module calls -------------------------------------------------------------

    def training_batch(self, module, batch: dict) -> dict:
        """The token batch of this micro-batch of prompts (sampled at the step's first micro-batch)."""
        key = (batch["epoch"], batch["step"])
        if key != self._key:  # a new step, or a resumed run in the middle of a step's PPO epochs
            self._batches, self._sums = self._sample(module, batch)
            self._key = key
        out = dict(self._batches[batch["micro"]])
        if batch["micro"] == 0:
            out["metric_sums"] = {f"rollout/{k}": v for k, v in self._sums.items()}
        return out

    # --- sampling --------------------------------------------------------------------------

    def _sample(self, module, batch: dict) -> tuple[list[dict], dict]:
        trainer, tokenizer = module.trainer, module.tokenizer
        task = trainer.datamodule.task
        grader = grader_of(task, self.grader)
        rows = batch["prompt_rows"]
        lm = module.policy.lm
        with eval_mode(lm), torch.no_grad():
            samples = sample_and_grade(
                lm, tokenizer, grader, rows, n=self.n, temperature=self.temperature, top_p=self.top_p,
                max_new_tokens=self.max_new_tokens or grader.max_new_tokens(), batch_size=self.batch_size,
                seed=(self.seed * 1_000_003 + trainer.global_step) * 1009 + trainer.global_rank,
                chat_template=task.chat_template,
            )
        rewards = torch.tensor([[s.reward for s in group] for group in samples], dtype=torch.float64)
        adv, zero_var, nonfinite = group_advantages(rewards, self.scale_rewards, self.eps)
        batches = self._token_batches(module, rows, batch["row_ids"].tolist(), samples, adv, batch["n_micro"])
        units = self._units(module, batches)
        for b in batches:
            b["step_tokens"] = units
        flat = [s for group in samples for s in group]
        finite = [s.reward for s in flat if math.isfinite(s.reward)]
        truncated = [[not s.finished for s in group] for group in samples]
        sums = {
            "reward": (sum(finite), len(finite)),
            "correct": (sum(s.correct for s in flat), len(flat)),
            "completion_tokens": (sum(len(s.ids) for s in flat), len(flat)),
            "truncated": (sum(map(sum, truncated)), len(flat)),
            "nonfinite_rewards": (int(nonfinite.sum()), len(flat)),
            "zero_variance_groups": (int(zero_var.sum()), len(samples)),
            "all_truncated_groups": (sum(all(t) for t in truncated), len(samples)),
        }
        return batches, sums

    def _token_batches(self, module, rows: list[dict], row_ids: list[int], samples: list[list[Sample]], adv: Tensor,
                       n_micro: int) -> list[dict]:
        """One token batch per micro-batch: the completions of its prompts, with their advantages
        (and, for more than one PPO epoch, the sampling policy's log p)."""
        tokenizer, datamodule = module.tokenizer, module.trainer.datamodule
        chat = datamodule.task.chat_template
        per_micro = math.ceil(len(rows) / n_micro)
        out = []
        for m in range(n_micro):
            items, advantages = [], []
            for p in range(m * per_micro, min(len(rows), (m + 1) * per_micro)):
                prompt = prompt_ids(tokenizer, rows[p]["prompt"], chat)
                for s, a in zip(samples[p], adv[p].tolist()):
                    items.append((row_ids[p], Encoded(prompt + s.ids, len(prompt)), 0))
                    advantages.append(a)
            batch = collate(items, pad_id=tokenizer.pad_token_id, pack_length=getattr(datamodule, "pack_length", None))
            per_seq = torch.zeros(batch["n_seqs"], dtype=torch.float32)
            per_seq[: len(advantages)] = torch.tensor(advantages, dtype=torch.float32)
            batch["advantage"] = per_seq[batch["seq_ids"]]
            batch = move_data_to_device(batch, module.device)
            if self.ppo_epochs > 1:
                batch["old_logp"] = self._logp(module, batch)
            out.append(batch)
        return out

    @staticmethod
    def _logp(module, batch: dict) -> Tensor:
        """The current (sampling) policy's log p of every target, laid out like the labels."""
        stats, _ = module.policy.token_stats(batch)
        out = torch.zeros(batch["labels"].shape, dtype=torch.float32, device=batch["labels"].device)
        out[batch["labels"] != IGNORE_INDEX] = stats.logp.float()
        return out

    @staticmethod
    def _units(module, batches: list[dict]) -> int:
        """The step's number of units of the loss, over every micro-batch of every rank."""
        unit = module.loss.unit
        if unit == "token":
            local = sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)
        else:
            local = sum(len(b["row_ids"]) for b in batches)
        total = torch.tensor(float(local), dtype=torch.float64, device=module.device)
        if module.trainer.world_size > 1:
            total = module.trainer.strategy.reduce(total, reduce_op="sum")
        return int(total.item())
