"""The loss family: every member is `loss_t = w_t * (-log p_t) + extra_t` per target token.

A member is one class: `class DFT(TokenLoss, name="dft")` defines, names and registers it, and
`configs/loss/dft.yaml` exposes it (a YAML alone adds a preset of an existing member, with its own
`label`). Its formula `per_token(logp, ctx)` works on a vector of target-token log-probabilities;
the engine (`dftlab.engine`) supplies that vector in fp32, either from full logits or chunk by
chunk, with whatever else the member declares it needs, and does the reduction. Because a member
is a formula over that vector, the chunked engine takes its exact derivative with autograd on the
vector alone, and a new member never touches an engine.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from dftlab.errors import ConfigError

IGNORE_INDEX = -100

# Statistics of the predictive distribution at a target's position that a member may ask for.
ENTROPY = "entropy"  # nats, over the whole vocabulary
MAX_PROB = "max_prob"  # the probability of the most likely token
_TOPK_ENTROPY = re.compile(r"top(\d+)_entropy")  # entropy of the top-k probabilities, renormalised


def topk_entropy(k: int) -> str:
    """The name of the top-k entropy statistic, e.g. `top20_entropy`."""
    return f"top{k}_entropy"


def check_stat(name: str) -> int | None:
    """Validate a statistic's name; its k for a top-k entropy, else None."""
    if name in (ENTROPY, MAX_PROB):
        return None
    m = _TOPK_ENTROPY.fullmatch(name)
    if m is None or int(m.group(1)) < 1:
        raise ValueError(f"unknown distribution statistic {name!r}: use {ENTROPY}, {MAX_PROB} or top<k>_entropy")
    return int(m.group(1))


@dataclass
class TokenContext:
    """What a member's formula may use besides each token's own log-probability (all detached, fp32,
    one value per target token unless said otherwise)."""

    seq_id: Tensor  # [N] long: which sequence each target token belongs to
    n_seqs: int  # sequence ids are below this
    ref_logp: Tensor | None = None  # [N] the reference model's log p of the target (needs_reference)
    vocab_size: int | None = None  # V, set by the engine
    stats: dict[str, Tensor] = field(default_factory=dict)  # name -> [N], the member's `stats`

    def slice(self, start: int, end: int) -> TokenContext:
        """The context of tokens [start, end): enough for weights that are per token."""
        ref = None if self.ref_logp is None else self.ref_logp[start:end]
        stats = {k: v[start:end] for k, v in self.stats.items()}
        return TokenContext(self.seq_id[start:end], self.n_seqs, ref, self.vocab_size, stats)

    def seq_mean(self, x: Tensor) -> Tensor:
        """Mean of x over each token's sequence, broadcast back to the tokens."""
        return self.seq_sum(x) / self.seq_sum(torch.ones_like(x))

    def seq_sum(self, x: Tensor) -> Tensor:
        sums = torch.zeros(self.n_seqs, dtype=x.dtype, device=x.device).index_add_(0, self.seq_id, x)
        return sums[self.seq_id]


REGISTRY: dict[str, type[TokenLoss]] = {}


class TokenLoss:
    """A member of the family. SFT (w = 1) is this base class; members override `weight` (or
    `per_token` for a loss that is not of the form `w * -log p`).

    What a member may rely on, and nothing else:
    - `logp` [N]: fp32 log p of each target token; the only input with a gradient. A weight is
      detached (stop-gradient) unless the member says otherwise.
    - `ctx.seq_id`, `ctx.n_seqs`, `ctx.seq_sum`, `ctx.seq_mean`: the token's sequence. A weight that
      depends on other tokens of its sequence sets `needs_sequence_stats` (the chunked engine then
      makes one gradient-free pass first, so that whole sequences are seen).
    - `ctx.ref_logp` [N]: the reference model's log p of the target, when `needs_reference`
      (a frozen copy of the initial model, the LoRA model with its adapters off, or the data's).
    - `ctx.stats[name]` [N] for each name in `stats`: statistics of the model's predictive
      distribution at the token's position, computed once by the engine in fp32 from the logits
      (never a [batch x seq x vocab] tensor on the chunked path): `entropy`, `max_prob`,
      `top<k>_entropy` (see `topk_entropy`).
    - `ctx.vocab_size`: V.
    - `kl_coef`: when > 0 the engine adds `kl_coef * KL(p_ref || p)` over the vocabulary per token.

    The engine does the reduction: sum over target tokens / number of target tokens in the step.
    """

    name: ClassVar[str]
    needs_reference: bool = False
    needs_sequence_stats: bool = False
    stats: tuple[str, ...] = ()
    kl_coef: float = 0.0
    label: str  # what runs and reports call it: the name (set by the registration), or a preset's label

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            if name in REGISTRY:
                raise TypeError(f"loss {name!r} is registered twice ({REGISTRY[name].__name__}, {cls.__name__})")
            cls.name = cls.label = name
            REGISTRY[name] = cls

    def weight(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        return torch.ones_like(logp)

    def per_token(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        """Each target token's loss, without the vocabulary-level KL term (added by the engine)."""
        return self.weight(logp, ctx) * -logp

    @classmethod
    def parameters(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.parameters() if hasattr(self, k))
        return f"{type(self).__name__}({params})"


class SFT(TokenLoss, name="sft"):
    """-log p."""


class DFT(TokenLoss, name="dft"):
    """w = eta + (1 - eta) * sg(max(q, min_p))^alpha.

    q is the token probability (`level: token`, the paper's DFT), the sequence probability
    (`sequence`) or the geometric mean of the sequence's token probabilities (`geometric`).
    eta = 0 is DFT; eta = 1 is SFT; in between is MixCE.
    """

    LEVELS = ("token", "sequence", "geometric")

    def __init__(self, alpha: float = 1.0, min_p: float = 0.0, level: str = "token", eta: float = 0.0):
        _check(alpha >= 0, "alpha", alpha, "alpha >= 0")
        _check(0.0 <= min_p < 1.0, "min_p", min_p, "0 <= min_p < 1")
        _check(level in self.LEVELS, "level", level, " | ".join(self.LEVELS))
        _check(0.0 <= eta <= 1.0, "eta", eta, "0 <= eta <= 1")
        self.alpha, self.min_p, self.level, self.eta = alpha, min_p, level, eta
        self.needs_sequence_stats = level != "token"

    def weight(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        logq = logp.detach()
        if self.level == "sequence":
            logq = ctx.seq_sum(logq)
        elif self.level == "geometric":
            logq = ctx.seq_mean(logq)
        if self.min_p > 0:
            logq = logq.clamp(min=math.log(self.min_p))
        return self.eta + (1.0 - self.eta) * torch.exp(self.alpha * logq)


class MixCE(DFT, name="mixce"):
    def __init__(self, eta: float = 0.5):
        super().__init__(eta=eta)


class Focal(TokenLoss, name="focal"):
    """w = (1 - p)^gamma, not detached (the standard focal loss) unless `detach_weight`."""

    def __init__(self, gamma: float = 2.0, detach_weight: bool = False):
        _check(gamma >= 0, "gamma", gamma, "gamma >= 0")
        self.gamma, self.detach_weight = gamma, detach_weight

    def weight(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        if self.detach_weight:
            logp = logp.detach()
        # 1 - p = -expm1(log p) keeps its precision near p = 1; the clamp keeps the derivative of
        # (1 - p)^gamma finite at p = 1 for 0 < gamma < 1, where it is infinite.
        return (-torch.expm1(logp)).clamp(min=1e-12) ** self.gamma


class ProbPower(TokenLoss, name="prob_power"):
    """loss = -(p^alpha - 1) / alpha ("Beyond Log Likelihood"); alpha = 0 is -log p exactly.

    Its gradient is -p^alpha * grad log p: the gradient of DFT with power alpha.
    """

    def __init__(self, alpha: float = 1.0):
        _check(alpha >= 0, "alpha", alpha, "alpha >= 0")
        self.alpha = alpha

    def per_token(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        if self.alpha == 0:
            return -logp
        return -torch.expm1(self.alpha * logp) / self.alpha

    def weight(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        # the weight this loss puts on -grad log p; for logging and analysis
        return torch.exp(self.alpha * logp.detach())


class IWSFT(TokenLoss, name="iw_sft"):
    """Importance-weighted SFT against a reference model (a frozen copy of the initial weights).

    sequence level: d = mean_t sg(log p - log p_ref), w = clamp(exp(temperature * d), 0, w_max)
    token level:    w_t = clamp(sg(p / p_ref), w_min, w_max)
    """

    needs_reference = True

    def __init__(
        self,
        level: str = "sequence",
        temperature: float = 1.0,
        w_min: float | None = None,
        w_max: float | None = None,
    ):
        _check(level in ("sequence", "token"), "level", level, "sequence | token")
        default_min, default_max = (0.0, 16.0) if level == "sequence" else (0.2, 1.8)
        w_min = default_min if w_min is None else w_min
        w_max = default_max if w_max is None else w_max
        _check(temperature > 0, "temperature", temperature, "temperature > 0")
        _check(0 <= w_min <= w_max, "w_min", w_min, f"0 <= w_min <= w_max ({w_max})")
        self.level, self.temperature, self.w_min, self.w_max = level, temperature, w_min, w_max
        self.needs_sequence_stats = level == "sequence"

    def weight(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        ratio = logp.detach() - ctx.ref_logp
        if self.level == "sequence":
            ratio = self.temperature * ctx.seq_mean(ratio)
        return torch.exp(ratio).clamp(self.w_min, self.w_max)


class ASFT(DFT, name="asft"):
    """Anchored SFT: DFT + kl_coef * KL(p_ref || p_theta) over the vocabulary, per target token."""

    needs_reference = True

    def __init__(self, kl_coef: float = 0.05, alpha: float = 1.0, min_p: float = 0.0):
        super().__init__(alpha=alpha, min_p=min_p)
        _check(kl_coef >= 0, "kl_coef", kl_coef, "kl_coef >= 0")
        self.kl_coef = kl_coef


class EAFT(TokenLoss, name="eaft"):
    """Entropy-adaptive fine-tuning: w = sg(H / H_max)^alpha, H the entropy of the model's
    predictive distribution at the token's position.

    `topk` null: H over the whole vocabulary, H_max = log V. `topk` k: LLaMA-Factory's form, the
    entropy of the renormalised top-k probabilities, H_max = log k (LLaMA-Factory divides by 3.0,
    log 20 rounded).
    """

    def __init__(self, alpha: float = 1.0, topk: int | None = None):
        _check(alpha >= 0, "alpha", alpha, "alpha >= 0")
        _check(topk is None or (isinstance(topk, int) and topk >= 2), "topk", topk, "null or an integer >= 2")
        self.alpha, self.topk = alpha, topk
        self.stats = (ENTROPY,) if topk is None else (topk_entropy(topk),)

    def weight(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        h_max = math.log(ctx.vocab_size if self.topk is None else min(self.topk, ctx.vocab_size))
        return (ctx.stats[self.stats[0]] / h_max).clamp(min=0.0) ** self.alpha


class LossConfigError(ConfigError):
    pass


def _check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise LossConfigError(f"loss.{key}={value!r} is not allowed: need {allowed}")


def build_loss(name: str, label: str | None = None, **params) -> TokenLoss:
    """The config-driven entry point: `build_loss("dft", min_p=0.01)`; `label` names a preset."""
    if name not in REGISTRY:
        raise LossConfigError(f"loss.name={name!r} is unknown; choose one of: {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    allowed = cls.parameters()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise LossConfigError(
            f"loss.{unknown[0]} is not a parameter of loss '{name}'; its parameters are: "
            f"{', '.join(allowed) or '(none)'}"
        )
    loss = cls(**params)
    loss.label = label or name
    return loss
