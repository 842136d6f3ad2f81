"""The loss path is fp32 under every precision setting: fp32, bf16 weights, and bf16 autocast (what
`trainer=gpu`, `precision: bf16-mixed`, runs; CPU autocast here). Each member of the family, on the
naive and the chunked path, against an fp64 computation written here; the chunked path is never
less exact than the naive one by more than fp32 rounding."""

import contextlib

import lightning as L
import pytest
import torch

from dftlab.engine import Head, chunked_token_loss, logits_fp32, naive_token_loss, token_logprobs
from dftlab.losses import ENTROPY, MAX_PROB, REGISTRY, TokenContext, build_loss
from dftlab.objective import CausalLMWithLoss
from tests.conftest import tiny_lm
from tests.helpers.step_gradients import step_gradients

SETTINGS = ("fp32", "bf16_weights", "bf16_autocast")
N, H, V, SEQS, NORMALISER, CHUNK = 48, 32, 300, 4, 40.0, 16
FP32 = 2e-6  # what fp32 rounding may add, relative


def _inputs(setting, seed=0):
    g = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16 if setting == "bf16_weights" else torch.float32
    t = {
        "hidden": torch.randn(N, H, generator=g) * 2,
        "weight": torch.randn(V, H, generator=g) * 0.5,
        "bias": torch.randn(V, generator=g) * 0.1,
        "ref_hidden": torch.randn(N, H, generator=g) * 2,
        "ref_weight": torch.randn(V, H, generator=g) * 0.5,
    }
    t = {k: v.to(dtype) for k, v in t.items()}
    t["targets"] = torch.randint(0, V, (N,), generator=g)
    t["seq"] = torch.sort(torch.randint(0, SEQS, (N,), generator=g)).values
    # the per-token batch fields of the pairwise and rollout members: sequence 2i and 2i+1 are a pair
    t["fields"] = {"pair_id": t["seq"] // 2, "pair_side": 1 - 2 * (t["seq"] % 2),
                   "advantage": torch.randn(SEQS, generator=g)[t["seq"]]}
    return t


def _fields(loss, t):
    return {name: t["fields"][name] for name in loss.token_fields}


def _precision(setting):
    return torch.autocast("cpu", dtype=torch.bfloat16) if setting == "bf16_autocast" else contextlib.nullcontext()


def _stats64(logprobs, names):
    """The distribution statistics a member asks for, from their definitions, in fp64."""
    p = logprobs.exp()
    out = {}
    for name in names:
        if name == ENTROPY:
            out[name] = -(p * logprobs).sum(-1)
        elif name == MAX_PROB:
            out[name] = p.max(-1).values
        else:  # top<k>_entropy
            k = int(name[3:].split("_")[0])
            top = p.sort(-1, descending=True).values[:, :k]
            top = top / top.sum(-1, keepdim=True)
            out[name] = -(top * top.log()).sum(-1)
    return out


def _fp64(loss, t):
    """Value, gradients (hidden, weight, bias) and per-token log p, all in fp64 from the same inputs."""
    x, w, b = (t[k].double().requires_grad_() for k in ("hidden", "weight", "bias"))
    logprobs = (x @ w.t() + b).log_softmax(-1)
    ref = (t["ref_hidden"].double() @ t["ref_weight"].double().t()).log_softmax(-1)
    tg = t["targets"]
    logp = logprobs.gather(1, tg[:, None]).squeeze(1)
    ctx = TokenContext(t["seq"], SEQS, ref.gather(1, tg[:, None]).squeeze(1), V,
                       _stats64(logprobs.detach(), loss.stats), _fields(loss, t))
    per_token = loss.per_token(logp, ctx)
    if loss.kl_coef:
        per_token = per_token + loss.kl_coef * (ref.exp() * (ref - logprobs)).sum(-1)
    value = per_token.sum() / NORMALISER
    return value.detach(), torch.autograd.grad(value, [x, w, b]), logp.detach()


def _engine(loss, t, path, setting):
    x, w, b = (t[k].clone().requires_grad_() for k in ("hidden", "weight", "bias"))
    head, ref_head = Head(w, b), Head(t["ref_weight"])
    with _precision(setting):
        if path == "naive":  # as CausalLMWithLoss calls it
            ref_logits = logits_fp32(t["ref_hidden"], ref_head)
            ref_logp = ref_logits.log_softmax(-1).gather(1, t["targets"][:, None]).squeeze(1)
            ctx = TokenContext(t["seq"], SEQS, ref_logp, fields=_fields(loss, t))
            value, stats = naive_token_loss(logits_fp32(x, head), t["targets"], loss, ctx, NORMALISER, ref_logits)
        else:
            ref_logp = token_logprobs(t["ref_hidden"], ref_head, t["targets"], CHUNK)[0]
            ctx = TokenContext(t["seq"], SEQS, ref_logp, fields=_fields(loss, t))
            value, stats = chunked_token_loss(x, head, t["targets"], loss, ctx, NORMALISER, CHUNK, t["ref_hidden"],
                                              ref_head)
    grads = torch.autograd.grad(value, [x, w, b])
    assert value.dtype == torch.float32 and stats.logp.dtype == torch.float32
    assert [g.dtype for g in grads] == [x.dtype, w.dtype, b.dtype]
    return value.detach(), grads, stats.logp


def _errors(got, expected):
    value, grads, logp = got
    value64, grads64, logp64 = expected
    rel = lambda a, b: float((a.double() - b).norm() / b.norm().clamp(min=1e-30))  # noqa: E731
    return {
        "value": abs(float(value) - float(value64)) / max(abs(float(value64)), 1e-30),
        "grad_hidden": rel(grads[0], grads64[0]),
        "grad_weight": rel(grads[1], grads64[1]),
        "grad_bias": rel(grads[2], grads64[2]),
        "logp": float((logp.double() - logp64).abs().max()),
    }


def test_autocast_is_really_on_in_the_bf16_autocast_setting():
    t = _inputs("bf16_autocast")
    with _precision("bf16_autocast"):
        assert (t["hidden"] @ t["weight"].t()).dtype == torch.bfloat16


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_precision_matrix(name, setting):
    loss = build_loss(name)
    t = _inputs(setting)
    expected = _fp64(loss, t)
    errors = {path: _errors(_engine(loss, t, path, setting), expected) for path in ("naive", "chunked")}
    for key in errors["naive"]:
        assert errors["chunked"][key] <= errors["naive"][key] + FP32, (key, errors)
    # and both at fp32's precision, or at bf16's for the gradients of bf16 tensors (their own rounding)
    bound = {"value": 1e-5, "logp": 1e-4, "grad_hidden": 1e-5, "grad_weight": 1e-5, "grad_bias": 1e-5}
    if setting == "bf16_weights":
        bound.update(grad_hidden=2 ** -8, grad_weight=2 ** -8, grad_bias=2 ** -8)
    for path, errs in errors.items():
        for key, err in errs.items():
            assert err <= bound[key], (path, key, err)


# --- the objective: a model's hidden states through its own head, under autocast -------------------


def _batch(vocab, rows=3, width=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, width), generator=g)
    labels = torch.full_like(ids, -100)
    for r in range(rows):
        labels[r, 2 + r : width - 1] = ids[r, 3 + r :]
    seq = torch.arange(rows)[:, None].expand(rows, width).contiguous()
    return {"input_ids": ids, "labels": labels, "seq_ids": seq, "attention_mask": torch.ones_like(ids), "n_seqs": rows}


class _Hidden:
    """The final norm's output (the last hidden states) of one forward pass, and its gradient."""

    def __init__(self, lm):
        self.out = None
        lm.model.norm.register_forward_hook(self._keep)

    def _keep(self, module, args, output):
        if output.requires_grad:
            output.retain_grad()
        self.out = output


@pytest.mark.parametrize("path", ["naive", "chunked"])
@pytest.mark.parametrize("name", ["sft", "dft", "iw_sft", "asft"])
def test_policy_loss_is_fp32_under_bf16_autocast(name, path):
    """Under autocast the decoder runs in bf16, but from its hidden states on (logits, softmax, the
    reference's logits, gradients) the loss is fp32: within fp32 rounding of fp64 from the same hidden states."""
    loss = build_loss(name)
    policy = CausalLMWithLoss(tiny_lm("llama", tie=False), loss, reference="copy", path=path, chunk_mib=1e-3)
    with torch.no_grad():  # away from the reference, so that iw_sft's weights and asft's KL are not trivial
        for p in policy.lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    mine = _Hidden(policy.lm)
    ref = _Hidden(policy.reference) if policy.reference is not None else None
    batch = _batch(policy.vocab_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value, stats = policy(batch, normaliser=7.0)
    value.backward()
    assert value.dtype == torch.float32

    mask = batch["labels"] != -100
    targets = batch["labels"][mask]
    h = mine.out.detach()[mask].double().requires_grad_()
    w = policy.lm.lm_head.weight.detach().double().requires_grad_()
    logprobs = (h @ w.t()).log_softmax(-1)
    logp = logprobs.gather(1, targets[:, None]).squeeze(1)
    ref_logprobs = None
    if ref is not None:
        ref_logprobs = (ref.out.detach()[mask].double() @ policy.reference.lm_head.weight.double().t()).log_softmax(-1)
    ctx = TokenContext(batch["seq_ids"][mask], batch["n_seqs"],
                       None if ref_logprobs is None else ref_logprobs.gather(1, targets[:, None]).squeeze(1))
    per_token = loss.per_token(logp, ctx)
    if loss.kl_coef:
        per_token = per_token + loss.kl_coef * (ref_logprobs.exp() * (ref_logprobs - logprobs)).sum(-1)
    expected = per_token.sum() / 7.0
    g_h, g_w = torch.autograd.grad(expected, [h, w])

    assert abs(value.item() - expected.item()) <= 1e-5 * abs(expected.item())
    assert (stats.logp.double() - logp.detach()).abs().max() <= 1e-4
    got_h = mine.out.grad[mask].double()
    assert (got_h - g_h).norm() <= 1e-5 * g_h.norm(), float((got_h - g_h).norm() / g_h.norm())
    got_w = policy.lm.lm_head.weight.grad.double()
    assert (got_w - g_w).norm() <= 1e-5 * g_w.norm(), float((got_w - g_w).norm() / g_w.norm())


# --- a training step through Lightning with precision=bf16-mixed --------------------------------


class _Watch(L.Callback):
    """Each micro-batch's labels, last hidden states and returned loss, and the dtype of a decoder
    projection's output (bf16 when autocast is on)."""

    def __init__(self):
        self.labels, self.hidden, self.losses, self.proj_dtypes = [], [], [], set()

    def on_train_start(self, trainer, pl_module):
        lm = pl_module.policy.lm
        lm.model.norm.register_forward_hook(lambda m, a, out: self.hidden.append(out.detach()))
        lm.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, a, out: self.proj_dtypes.add(out.dtype))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.labels.append(batch["labels"].clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"])


@pytest.mark.parametrize("path", ["naive", "chunked"])
def test_bf16_mixed_training_step_computes_the_loss_in_fp32(path, tmp_path):
    watch = _Watch()
    grads, s = step_gradients("dft", micro=2, path=path, run_dir=tmp_path, callbacks=[watch],
                              extra=["trainer.precision=bf16-mixed", "model.arch.tie_word_embeddings=false",
                                     "engine.chunk_mib=0.001"])
    assert watch.proj_dtypes == {torch.bfloat16}  # the decoder ran under autocast
    assert len(watch.labels) == 2 and all(loss.dtype == torch.float32 for loss in watch.losses)
    w = s.capture.weights["lm_head.weight"].double().requires_grad_()
    n_step = sum(int((labels != -100).sum()) for labels in watch.labels)
    total = 0.0
    for labels, hidden in zip(watch.labels, watch.hidden, strict=True):
        mask = labels != -100
        logp = (hidden[mask].double() @ w.t()).log_softmax(-1).gather(1, labels[mask][:, None]).squeeze(1)
        total = total + (-logp.detach().exp() * logp).sum()
    expected = total / n_step
    (g_w,) = torch.autograd.grad(expected, [w])
    got = grads["lm_head.weight"].double()
    assert (got - g_w).norm() <= 1e-5 * g_w.norm(), float((got - g_w).norm() / g_w.norm())
    assert float(s.trainer.callback_metrics["train/loss"]) == pytest.approx(expected.item(), rel=1e-5)
