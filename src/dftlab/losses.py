"""The loss family: every member is `loss_t = w_t * (-log p_t) + extra_t` per target token.

Members differ only in the weight `w_t` (and ASFT in one extra vocabulary-level term). A weight is
detached (stop-gradient) unless its member says otherwise. Each member is a small object with a
`token_loss(logp, ctx)` formula over a vector of target-token log-probabilities; the engine
(`dftlab.engine`) supplies `logp` in fp32, either from full logits or chunk by chunk, and does
the reduction. Because a member is a formula over that vector, the chunked engine can take its
exact derivative with autograd on the vector alone.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dftlab.errors import ConfigError

IGNORE_INDEX = -100


@dataclass
class TokenContext:
    """What a weight may depend on besides the token's own log-probability (all detached)."""

    seq_id: Tensor  # [N] long: which sequence each target token belongs to
    n_seqs: int
    ref_logp: Tensor | None = None  # [N] reference model's log p of the target token

    def slice(self, start: int, end: int) -> TokenContext:
        """The context of tokens [start, end): enough for weights that are per token."""
        ref = None if self.ref_logp is None else self.ref_logp[start:end]
        return TokenContext(self.seq_id[start:end], self.n_seqs, ref)

    def seq_mean(self, x: Tensor) -> Tensor:
        """Mean of x over each token's sequence, broadcast back to the tokens."""
        return self.seq_sum(x) / self.seq_sum(torch.ones_like(x))

    def seq_sum(self, x: Tensor) -> Tensor:
        sums = torch.zeros(self.n_seqs, dtype=x.dtype, device=x.device).index_add_(0, self.seq_id, x)
        return sums[self.seq_id]


class TokenLoss:
    """SFT: w = 1. The base of the family; subclasses override `weight`."""

    name = "sft"
    needs_reference = False  # needs a reference model (ctx.ref_logp, or the reference's logits)
    needs_sequence_stats = False  # weight depends on other tokens of the sequence (detached)
    kl_coef = 0.0  # coefficient of KL(p_ref || p_theta) over the vocabulary (ASFT)

    def weight(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        return torch.ones_like(logp)

    def token_loss(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        """Per target token loss, without the vocabulary-level KL term (added by the engine)."""
        return self.weight(logp, ctx) * -logp

    def __repr__(self) -> str:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        params = ", ".join(f"{k}={getattr(self, k)!r}" for k in names if hasattr(self, k))
        return f"{type(self).__name__}({params})"


class SFT(TokenLoss):
    pass


class DFT(TokenLoss):
    """w = eta + (1 - eta) * sg(max(q, min_p))^alpha.

    q is the token probability (`level: token`, the paper's DFT), the sequence probability
    (`sequence`) or the geometric mean of the sequence's token probabilities (`geometric`).
    eta = 0 is DFT; eta = 1 is SFT; in between is MixCE.
    """

    name = "dft"
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


class MixCE(DFT):
    name = "mixce"

    def __init__(self, eta: float = 0.5):
        super().__init__(eta=eta)


class Focal(TokenLoss):
    """w = (1 - p)^gamma, not detached (the standard focal loss) unless `detach_weight`."""

    name = "focal"

    def __init__(self, gamma: float = 2.0, detach_weight: bool = False):
        _check(gamma >= 0, "gamma", gamma, "gamma >= 0")
        self.gamma, self.detach_weight = gamma, detach_weight

    def weight(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        if self.detach_weight:
            logp = logp.detach()
        # 1 - p = -expm1(log p) keeps its precision near p = 1; the clamp keeps the derivative of
        # (1 - p)^gamma finite at p = 1 for 0 < gamma < 1, where it is infinite.
        return (-torch.expm1(logp)).clamp(min=1e-12) ** self.gamma


class ProbPower(TokenLoss):
    """loss = -(p^alpha - 1) / alpha ("Beyond Log Likelihood"); alpha = 0 is -log p exactly.

    Its gradient is -p^alpha * grad log p: the gradient of DFT with power alpha.
    """

    name = "prob_power"

    def __init__(self, alpha: float = 1.0):
        _check(alpha >= 0, "alpha", alpha, "alpha >= 0")
        self.alpha = alpha

    def token_loss(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        if self.alpha == 0:
            return -logp
        return -torch.expm1(self.alpha * logp) / self.alpha

    def weight(self, logp: Tensor, ctx: TokenContext) -> Tensor:
        # the weight this loss puts on -grad log p; for logging and analysis
        return torch.exp(self.alpha * logp.detach())


class IWSFT(TokenLoss):
    """Importance-weighted SFT against a reference model (a frozen copy of the initial weights).

    sequence level: d = mean_t sg(log p - log p_ref), w = clamp(exp(temperature * d), 0, w_max)
    token level:    w_t = clamp(sg(p / p_ref), w_min, w_max)
    """

    name = "iw_sft"
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


class ASFT(DFT):
    """Anchored SFT: DFT + kl_coef * KL(p_ref || p_theta) over the vocabulary, per target token."""

    name = "asft"
    needs_reference = True

    def __init__(self, kl_coef: float = 0.05, alpha: float = 1.0, min_p: float = 0.0):
        super().__init__(alpha=alpha, min_p=min_p)
        _check(kl_coef >= 0, "kl_coef", kl_coef, "kl_coef >= 0")
        self.kl_coef = kl_coef


MEMBERS: dict[str, type[TokenLoss]] = {
    cls.name: cls for cls in (SFT, DFT, MixCE, Focal, ProbPower, IWSFT, ASFT)
}


class LossConfigError(ConfigError):
    pass


def _check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise LossConfigError(f"loss.{key}={value!r} is not allowed: need {allowed}")


def build_loss(name: str, **params) -> TokenLoss:
    """The config-driven entry point: `build_loss("dft", min_p=0.01)`."""
    if name not in MEMBERS:
        raise LossConfigError(f"loss.name={name!r} is unknown; choose one of: {', '.join(MEMBERS)}")
    cls = MEMBERS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise LossConfigError(
            f"loss.{unknown[0]} is not a parameter of loss '{name}'; its parameters are: "
            f"{', '.join(allowed) or '(none)'}"
        )
    return cls(**params)
