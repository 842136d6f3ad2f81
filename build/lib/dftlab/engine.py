"""Per-token log-probabilities in fp32 and the reduction, with or without materialising logits.

Both paths take only the target rows (N of them) and return `sum_t loss_t / normaliser` plus
detached per-token statistics:

- `naive_token_loss`: from logits [N, V]; autograd does the rest.
- `chunked_token_loss`: from hidden states [N, H] and the output projection, `chunk_rows` rows at
  a time, so that at most one [chunk_rows, V] block of logits exists. The gradients with respect
  to the hidden states and the projection are computed inside the forward loop, as fused
  linear-cross-entropy kernels do: three vocabulary-sized matmuls per chunk, where recomputing the
  chunk in backward would cost four. A member's derivative `d loss_t / d log p_t` comes from
  autograd on the [chunk] vector of log-probabilities, so any formula in `losses.py` works here
  unchanged. Members whose weight depends on the whole sequence get a first, gradient-free pass
  for the sequence statistics.

The logits of a chunk are taken in fp32 (the matmul accumulates in fp32 and is not rounded to the
model's dtype before the softmax).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dftlab.losses import ENTROPY, MAX_PROB, TokenContext, TokenLoss, check_stat


@dataclass
class TokenStats:
    """Detached per-target-token statistics."""

    logp: Tensor  # [N] fp32
    correct: Tensor  # [N] bool: the argmax is the target


@dataclass
class Head:
    """An output projection: logits = hidden @ weight.T + bias."""

    weight: Tensor  # [V, H]
    bias: Tensor | None = None


def _wide(x: Tensor) -> Tensor:
    """x in fp32, or as it is when it is already at least that precise."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _mm_fp32(a: Tensor, b: Tensor) -> Tensor:
    """a @ b with an (at least) fp32 result: low-precision inputs get fp32 accumulation and output."""
    if a.dtype == b.dtype and a.dtype in (torch.float32, torch.float64):
        return a @ b
    if a.is_cuda and a.dtype == b.dtype:
        return torch.mm(a, b, out_dtype=torch.float32)
    return _wide(a) @ _wide(b)


def _logits_fp32(h: Tensor, head: Head) -> Tensor:
    out = _mm_fp32(h, head.weight.t())
    if head.bias is not None:
        out = out + _wide(head.bias)
    return out


def _kl_ref(ref_logp_all: Tensor, logp_all: Tensor) -> Tensor:
    """KL(p_ref || p_theta) per row, from full log-distributions [C, V]."""
    return (ref_logp_all.exp() * (ref_logp_all - logp_all)).sum(-1)


def position_stats(
    logprobs: Tensor, targets: Tensor, stats: tuple[str, ...] = ()
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """From fp32 log-distributions [C, V]: log p of each target (differentiable when `logprobs` is),
    whether it is the argmax, and the requested statistics of each row's distribution (detached).
    Every path that needs these (both engines, the reference, token statistics) computes them here."""
    logp = logprobs.gather(1, targets[:, None]).squeeze(1)
    with torch.no_grad():
        lp = logprobs.detach()
        correct = lp.argmax(-1) == targets
        out = {}
        for name in stats:
            k = check_stat(name)
            if name == ENTROPY:
                out[name] = -(lp.exp() * lp).sum(-1)
            elif name == MAX_PROB:
                out[name] = lp.amax(-1).exp()
            else:
                top = lp.topk(min(k, lp.shape[-1]), dim=-1).values
                top = top - top.logsumexp(-1, keepdim=True)
                out[name] = -(top.exp() * top).sum(-1)
    return logp, correct, out


def naive_token_loss(
    logits: Tensor,
    targets: Tensor,
    loss: TokenLoss,
    ctx: TokenContext,
    normaliser: float,
    ref_logits: Tensor | None = None,
) -> tuple[Tensor, TokenStats]:
    """The reference path: full fp32 log-softmax over [N, V] logits."""
    logprobs = _wide(logits).log_softmax(-1)
    logp, correct, ctx.stats = position_stats(logprobs, targets, loss.stats)
    ctx.vocab_size = logits.shape[-1]
    per_token = loss.per_token(logp, ctx)
    if loss.kl_coef:
        per_token = per_token + loss.kl_coef * _kl_ref(_wide(ref_logits).log_softmax(-1), logprobs)
    return per_token.sum() / normaliser, TokenStats(logp.detach(), correct)


@torch.no_grad()
def token_logprobs(
    hidden: Tensor, head: Head, targets: Tensor, chunk_rows: int, stats: tuple[str, ...] = ()
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """`position_stats` of hidden states through `head`, one chunk of rows at a time."""
    parts = [
        position_stats(_logits_fp32(hidden[s : s + chunk_rows], head).log_softmax(-1), targets[s : s + chunk_rows],
                       stats)
        for s in range(0, hidden.shape[0], chunk_rows)
    ]
    if not parts:  # no targets
        empty = torch.empty(0, dtype=_wide(hidden[:0]).dtype, device=hidden.device)
        return empty, torch.empty(0, dtype=torch.bool, device=hidden.device), {k: empty for k in stats}
    logp, correct, chunk_stats = zip(*parts)
    return torch.cat(logp), torch.cat(correct), {k: torch.cat([c[k] for c in chunk_stats]) for k in stats}


def _member_grad(loss: TokenLoss, logp: Tensor, ctx: TokenContext, normaliser: float) -> tuple[Tensor, Tensor]:
    """(d total / d logp, total) for total = sum_t per_token_t / normaliser."""
    with torch.enable_grad():
        x = logp.detach().requires_grad_(True)
        total = loss.per_token(x, ctx).sum() / normaliser
        (g,) = torch.autograd.grad(total, x)
    return g, total.detach()


class _ChunkedTokenLoss(torch.autograd.Function):
    @staticmethod
    def forward(autograd_ctx, hidden, weight, bias, targets, loss, ctx, normaliser, chunk_rows, ref_hidden, ref_head):
        head = Head(weight, bias)
        need_h, need_w, need_b = autograd_ctx.needs_input_grad[:3]
        n = hidden.shape[0]
        dev = hidden.device
        wide = _wide(hidden[:0]).dtype
        logp_all = torch.empty(n, dtype=wide, device=dev)
        correct = torch.empty(n, dtype=torch.bool, device=dev)
        g_all = None
        total = torch.zeros((), dtype=wide, device=dev)
        ctx.vocab_size = weight.shape[0]
        if loss.needs_sequence_stats:
            logp_all, correct, ctx.stats = token_logprobs(hidden, head, targets, chunk_rows, loss.stats)
            g_all, total = _member_grad(loss, logp_all, ctx, normaliser)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=wide, device=dev) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=wide, device=dev) if need_b else None
        kl_scale = loss.kl_coef / normaliser
        for s in range(0, n, chunk_rows):
            e = min(n, s + chunk_rows)
            h, t = hidden[s:e], targets[s:e]
            rows = torch.arange(e - s, device=dev)
            # One [chunk, V] buffer is reused in place: logits -> shifted -> exp -> p -> gradient.
            logits = _logits_fp32(h, head)
            z_t = logits[rows, t]
            chunk_ctx = None
            if g_all is None:
                correct[s:e] = logits.argmax(-1) == t
                chunk_ctx = ctx.slice(s, e)
                if loss.stats:  # one more [chunk, V] buffer, for the members that ask for statistics
                    chunk_ctx.stats = position_stats(logits.log_softmax(-1), t, loss.stats)[2]
            logits.sub_(logits.amax(-1, keepdim=True))
            shift = z_t - logits[rows, t]  # the row maxima
            cross_ref = None
            if loss.kl_coef:
                ref_lp = _logits_fp32(ref_hidden[s:e], ref_head).log_softmax(-1)
                ref_p = ref_lp.exp()
                neg_entropy_ref = (ref_p * ref_lp).sum(-1)
                del ref_lp
                cross_ref = (ref_p * logits).sum(-1)  # sum_v p_ref (z - max)
            log_sum = logits.exp_().sum(-1).log()
            logp = z_t - shift - log_sum
            if g_all is None:
                logp_all[s:e] = logp
                g, part = _member_grad(loss, logp, chunk_ctx, normaliser)
                total += part
            else:
                g = g_all[s:e]
            if cross_ref is not None:  # KL(p_ref || p) = sum p_ref log p_ref - sum p_ref ((z - max) - log_sum)
                total += kl_scale * (neg_entropy_ref - cross_ref + log_sum).sum()
            if not (need_h or need_w or need_b):
                continue
            # d/dlogits of g*logp + kl_scale*KL = g*(onehot - p) + kl_scale*(p - p_ref)
            grad = logits.div_(log_sum.exp()[:, None]).mul_((kl_scale - g)[:, None])
            if cross_ref is not None:
                grad.sub_(ref_p, alpha=kl_scale)
                del ref_p
            grad[rows, t] += g
            grad_lowp = grad.to(weight.dtype)
            if need_h:
                grad_h[s:e] = grad_lowp @ weight
            if need_w:
                if grad_w.dtype == grad_lowp.dtype == h.dtype:
                    grad_w.addmm_(grad_lowp.t(), h)
                else:
                    grad_w += _mm_fp32(grad_lowp.t(), h)
            if need_b:
                grad_b += grad.sum(0)
        autograd_ctx.grads = (grad_h, grad_w, grad_b)
        autograd_ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        autograd_ctx.mark_non_differentiable(logp_all, correct)
        return total, logp_all, correct

    @staticmethod
    def backward(autograd_ctx, grad_total, _grad_logp, _grad_correct):
        grad_h, grad_w, grad_b = autograd_ctx.grads
        autograd_ctx.grads = None
        w_dtype, b_dtype = autograd_ctx.dtypes
        scale = grad_total  # a 0-d tensor; usually 1
        if grad_h is not None:
            grad_h = grad_h.mul_(scale)
        if grad_w is not None:
            grad_w = grad_w.mul_(scale).to(w_dtype)
        if grad_b is not None:
            grad_b = grad_b.mul_(scale).to(b_dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None, None


def chunked_token_loss(
    hidden: Tensor,
    head: Head,
    targets: Tensor,
    loss: TokenLoss,
    ctx: TokenContext,
    normaliser: float,
    chunk_rows: int,
    ref_hidden: Tensor | None = None,
    ref_head: Head | None = None,
) -> tuple[Tensor, TokenStats]:
    if loss.kl_coef and (ref_hidden is None or ref_head is None):
        raise ValueError(f"{loss.name} needs the reference model's hidden states and head")
    total, logp, correct = _ChunkedTokenLoss.apply(
        hidden, head.weight, head.bias, targets, loss, ctx, normaliser, max(1, chunk_rows), ref_hidden, ref_head
    )
    return total, TokenStats(logp, correct)


def chunk_rows_for(vocab_size: int, chunk_mib: float) -> int:
    """Rows of one chunk so that its fp32 logits take about `chunk_mib` MiB."""
    return max(1, int(chunk_mib * 2**20 // (4 * vocab_size)))
