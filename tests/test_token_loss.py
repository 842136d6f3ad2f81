"""The chunked engine equals the naive one, and reproduces real models' logits."""

import pytest
import torch

from dftlab.engine import Head, chunk_rows_for, chunked_token_loss, naive_token_loss, token_logprobs
from dftlab.errors import ConfigError
from dftlab.losses import ENTROPY, IGNORE_INDEX, MAX_PROB, REGISTRY, TokenContext, build_loss, topk_entropy
from dftlab.objective import CausalLMWithLoss, head_reproduces_logits
from tests.conftest import tiny_lm
from tests.helpers.rl import example_fields

VARIANTS = [(name, {}) for name in REGISTRY] + [
    ("dft", {"level": "sequence"}),
    ("dft", {"level": "geometric", "min_p": 0.05, "alpha": 0.5}),
    ("focal", {"gamma": 0.5}),
    ("focal", {"gamma": 2.0, "detach_weight": True}),
    ("prob_power", {"alpha": 0.3}),
    ("iw_sft", {"level": "token"}),
    ("asft", {"kl_coef": 0.1}),
    ("eaft", {"topk": 4, "alpha": 0.5}),
    ("eaft", {"alpha": 2.0}),
    ("grpo", {"unit": "sequence", "kl_coef": 0.1}),
    ("dpo", {"beta": 2.0}),
]


def _inputs(n=37, h=16, v=50, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g) * 0.5
    b = torch.randn(v, generator=g) * 0.1 if bias else None
    targets = torch.randint(0, v, (n,), generator=g)
    seq = torch.sort(torch.randint(0, 5, (n,), generator=g)).values
    ref_hidden = torch.randn(n, h, generator=g)
    ref_weight = torch.randn(v, h, generator=g) * 0.5
    return hidden, weight, b, targets, seq, ref_hidden, ref_weight


@pytest.mark.parametrize("name, params", VARIANTS)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 8, 1000])
def test_chunked_equals_naive(name, params, bias, chunk_rows):
    loss = build_loss(name, **params)
    hidden, weight, b, targets, seq, ref_hidden, ref_weight = _inputs(bias=bias)
    ref_logits = ref_hidden @ ref_weight.t()
    ref_logp = ref_logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    ctx = TokenContext(seq, 5, ref_logp, fields=example_fields(loss, seq))

    def grads(value, leaves):
        return torch.autograd.grad(value, [x for x in leaves if x is not None])

    leaves = [hidden.clone().requires_grad_(), weight.clone().requires_grad_(),
              b.clone().requires_grad_() if bias else None]
    logits = leaves[0] @ leaves[1].t() + (leaves[2] if bias else 0)
    v_naive, s_naive = naive_token_loss(logits, targets, loss, ctx, 7.0, ref_logits)
    g_naive = grads(v_naive, leaves)

    leaves = [hidden.clone().requires_grad_(), weight.clone().requires_grad_(),
              b.clone().requires_grad_() if bias else None]
    v_chunk, s_chunk = chunked_token_loss(
        leaves[0], Head(leaves[1], leaves[2]), targets, loss, ctx, 7.0, chunk_rows, ref_hidden, Head(ref_weight)
    )
    g_chunk = grads(v_chunk * 3.0, leaves)  # the upstream gradient scales the stored ones

    torch.testing.assert_close(v_chunk, v_naive, rtol=1e-6, atol=1e-6)
    for gc, gn in zip(g_chunk, g_naive):
        torch.testing.assert_close(gc / 3.0, gn, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s_chunk.logp, s_naive.logp, rtol=1e-6, atol=1e-6)
    assert torch.equal(s_chunk.correct, s_naive.correct)


def test_chunked_without_targets_and_without_grad():
    hidden, weight, _, targets, seq, _, _ = _inputs()
    h = hidden[:0].clone().requires_grad_()
    w = weight.clone().requires_grad_()
    value, _ = chunked_token_loss(h, Head(w), targets[:0], build_loss("dft"), TokenContext(seq[:0], 1), 1.0, 8)
    value.backward()
    assert value.item() == 0 and torch.count_nonzero(w.grad) == 0
    with torch.no_grad():
        value, stats = chunked_token_loss(hidden, Head(weight), targets, build_loss("sft"), TokenContext(seq, 5),
                                          1.0, 8)
    assert not value.requires_grad and stats.logp.shape == targets.shape


def test_token_logprobs_entropy():
    hidden, weight, b, targets, _, _, _ = _inputs()
    logp, correct, stats = token_logprobs(hidden, Head(weight, b), targets, 8, (ENTROPY,))
    ent = stats[ENTROPY]
    full = (hidden @ weight.t() + b).log_softmax(-1)
    torch.testing.assert_close(logp, full.gather(1, targets[:, None]).squeeze(1))
    torch.testing.assert_close(ent, -(full.exp() * full).sum(-1))


def test_distribution_statistics_against_their_definitions():
    hidden, weight, b, targets, _, _, _ = _inputs()
    wanted = (ENTROPY, MAX_PROB, topk_entropy(5))
    _, _, stats = token_logprobs(hidden, Head(weight, b), targets, 8, wanted)
    p = (hidden.double() @ weight.double().t() + b.double()).softmax(-1)
    fp32 = {"rtol": 1e-5, "atol": 1e-6}  # fp32 statistics against an fp64 computation
    torch.testing.assert_close(stats[MAX_PROB].double(), p.max(-1).values, **fp32)
    top = p.sort(-1, descending=True).values[:, :5]
    top = top / top.sum(-1, keepdim=True)
    torch.testing.assert_close(stats[topk_entropy(5)].double(), -(top * top.log()).sum(-1), **fp32)


def test_chunk_rows_for():
    assert chunk_rows_for(151_936, 64) == 110
    assert chunk_rows_for(10**9, 1) == 1


def _batch(vocab, rows=3, width=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, width), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for r in range(rows):
        start, end = 2 + r, width - r  # different prompt and response lengths per row
        labels[r, start - 1 : end - 1] = ids[r, start:end]
    seq = torch.arange(rows)[:, None].expand(rows, width).contiguous()
    return {"input_ids": ids, "labels": labels, "seq_ids": seq, "attention_mask": torch.ones_like(ids), "n_seqs": rows}


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("name", ["sft", "dft", "iw_sft", "asft"])
def test_policy_chunked_equals_naive_on_real_architectures(model_type, tie, name):
    lm = tiny_lm(model_type, tie=tie)
    assert head_reproduces_logits(lm) == (True, "")
    batch = _batch(lm.config.vocab_size)
    results = []
    for path in ("naive", "chunked"):
        torch.manual_seed(0)
        policy = CausalLMWithLoss(tiny_lm(model_type, tie=tie), build_loss(name), reference="copy", path=path,
                                  chunk_mib=1e-3)
        with torch.no_grad():  # move the policy away from its reference so the weights differ
            for p in policy.lm.parameters():
                p.add_(0.01 * torch.randn_like(p))
        value, stats = policy(batch, normaliser=5.0)
        value.backward()
        results.append((value.detach(), stats.logp, {n: p.grad.clone() for n, p in policy.lm.named_parameters()}))
    (v0, lp0, g0), (v1, lp1, g1) = results
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lp1, lp0, rtol=1e-5, atol=1e-5)
    for key in g0:
        torch.testing.assert_close(g1[key], g0[key], rtol=1e-4, atol=1e-6, msg=key)
    if policy.loss.needs_reference:  # frozen, unregistered: not trained, not in the checkpoint
        assert all(not p.requires_grad for p in policy.reference.parameters())
        assert set(policy.state_dict()) == {f"lm.{k}" for k in policy.lm.state_dict()}
    else:
        assert policy.reference is None


def test_soft_capped_head_is_refused():
    lm = tiny_lm("gemma2", tie=True, head_dim=8, final_logit_softcapping=5.0, query_pre_attn_scalar=8)
    ok, why = head_reproduces_logits(lm)
    assert not ok and "soft-capping" in why
    with pytest.raises(ConfigError, match="engine.path=chunked cannot serve this model"):
        CausalLMWithLoss(lm, build_loss("dft"), path="chunked")
    policy = CausalLMWithLoss(lm, build_loss("dft"), path="auto")
    assert policy.path == "naive"
