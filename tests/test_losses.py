"""The loss family on analytic cases, gradient identities and degenerate parameters."""

import math

import pytest
import torch

from dftlab.engine import naive_token_loss
from dftlab.losses import REGISTRY, LossConfigError, TokenContext, build_loss
from tests.helpers.rl import example_fields


def _setup(n=12, v=7, seed=0, ref_equal=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * 2
    targets = torch.randint(0, v, (n,), generator=g)
    ref_logits = logits.clone() if ref_equal else torch.randn(n, v, generator=g, dtype=torch.float64)
    seq = torch.tensor([0] * (n // 3) + [1] * (n // 3) + [2] * (n - 2 * (n // 3)))
    return logits, targets, ref_logits, seq


def _loss(loss, logits, targets, ref_logits, seq, normaliser=1.0):
    logits = logits.clone().requires_grad_(True)
    ref_logp = ref_logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    ctx = TokenContext(seq, 3, ref_logp, fields=example_fields(loss, seq))
    value, stats = naive_token_loss(logits, targets, loss, ctx, normaliser, ref_logits)
    (grad,) = torch.autograd.grad(value, logits)
    return value.detach(), grad, stats


def _p(logits, targets):
    return logits.softmax(-1).gather(1, targets[:, None]).squeeze(1)


def test_uniform_logits_dft_is_ce_over_v():
    v = 11
    logits = torch.zeros(5, v, dtype=torch.float64)
    targets = torch.arange(5)
    seq = torch.zeros(5, dtype=torch.long)
    sft, _, _ = _loss(build_loss("sft"), logits, targets, logits, seq, normaliser=5)
    dft, _, _ = _loss(build_loss("dft"), logits, targets, logits, seq, normaliser=5)
    assert sft.item() == pytest.approx(math.log(v), abs=1e-12)
    assert dft.item() == pytest.approx(math.log(v) / v, abs=1e-12)


def test_p_one_half():
    logits = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([0])
    seq = torch.zeros(1, dtype=torch.long)
    dft, _, stats = _loss(build_loss("dft"), logits, targets, logits, seq)
    focal, _, _ = _loss(build_loss("focal", gamma=1.0), logits, targets, logits, seq)
    assert stats.logp.exp().item() == pytest.approx(0.5)
    assert dft.item() == pytest.approx(0.5 * math.log(2))
    assert focal.item() == pytest.approx(0.5 * math.log(2))


def test_dft_gradient_is_minus_grad_p():
    logits, targets, ref, seq = _setup()
    _, grad, _ = _loss(build_loss("dft"), logits, targets, ref, seq)
    x = logits.clone().requires_grad_(True)
    (grad_p,) = torch.autograd.grad(_p(x, targets).sum(), x)
    torch.testing.assert_close(grad, -grad_p, rtol=0, atol=1e-12)


def test_sft_gradient_is_minus_grad_p_over_p():
    logits, targets, ref, seq = _setup()
    _, grad, _ = _loss(build_loss("sft"), logits, targets, ref, seq)
    x = logits.clone().requires_grad_(True)
    p = _p(x, targets)
    (grad_p,) = torch.autograd.grad(p.sum(), x)
    # each row's target probability only depends on its own row of logits
    torch.testing.assert_close(grad, -grad_p / p.detach()[:, None], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "name, params, reference",
    [
        ("focal", {"gamma": 0.0}, "sft"),
        ("focal", {"gamma": 0.0, "detach_weight": True}, "sft"),
        ("dft", {"eta": 1.0}, "sft"),
        ("mixce", {"eta": 1.0}, "sft"),
        ("mixce", {"eta": 0.0}, "dft"),
        ("dft", {"alpha": 0.0}, "sft"),
        ("prob_power", {"alpha": 0.0}, "sft"),
        ("dft", {"min_p": 0.0}, "dft"),
        ("asft", {"kl_coef": 0.0}, "dft"),
        ("iw_sft", {"level": "sequence"}, "sft"),
        ("iw_sft", {"level": "token"}, "sft"),
    ],
)
def test_degenerate_parameters(name, params, reference):
    ref_equal = name == "iw_sft"  # iw-SFT against a reference equal to the model is SFT
    logits, targets, ref, seq = _setup(ref_equal=ref_equal)
    v1, g1, _ = _loss(build_loss(name, **params), logits, targets, ref, seq)
    v2, g2, _ = _loss(build_loss(reference), logits, targets, ref, seq)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-12)


def _grad_wrt(loss, logits, targets, ref, seq):
    return _loss(loss, logits, targets, ref, seq)[1]


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.0])
def test_prob_power_gradient_equals_dft_with_power(alpha):
    logits, targets, ref, seq = _setup()
    g_pp = _grad_wrt(build_loss("prob_power", alpha=alpha), logits, targets, ref, seq)
    g_dft = _grad_wrt(build_loss("dft", alpha=alpha), logits, targets, ref, seq)
    torch.testing.assert_close(g_pp, g_dft, rtol=0, atol=1e-12)
    v_pp = _loss(build_loss("prob_power", alpha=alpha), logits, targets, ref, seq)[0]
    v_dft = _loss(build_loss("dft", alpha=alpha), logits, targets, ref, seq)[0]
    assert not torch.isclose(v_pp, v_dft)  # same gradient, different values


@pytest.mark.parametrize("alpha", [1e-2, 1e-3, 1e-4])
def test_prob_power_tends_to_sft(alpha):
    logits, targets, ref, seq = _setup()
    logp = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    v_pp = _loss(build_loss("prob_power", alpha=alpha), logits, targets, ref, seq)[0]
    v_sft = _loss(build_loss("sft"), logits, targets, ref, seq)[0]
    # -(p^a - 1)/a = -log p - a (log p)^2 / 2 - ...
    bound = alpha * (logp**2).sum().item()
    assert abs((v_pp - v_sft).item()) <= bound
    assert abs((v_pp - v_sft).item()) >= 0.25 * bound  # the error really is of that order


@pytest.mark.parametrize("name, params", [("dft", {}), ("dft", {"min_p": 0.1}), ("iw_sft", {"level": "token"}),
                                          ("iw_sft", {}), ("focal", {"detach_weight": True}), ("mixce", {})])
def test_detached_weights_carry_no_gradient(name, params):
    """The gradient equals sum_t w_t * grad(-log p_t) with w_t held constant."""
    logits, targets, ref, seq = _setup()
    loss = build_loss(name, **params)
    _, grad, _ = _loss(loss, logits, targets, ref, seq)
    x = logits.clone().requires_grad_(True)
    logp = x.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    ref_logp = ref.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    w = loss.weight(logp, TokenContext(seq, 3, ref_logp)).detach()
    (expected,) = torch.autograd.grad((w * -logp).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-12)


def test_focal_weight_is_not_detached_by_default():
    logits, targets, ref, seq = _setup()
    attached = _grad_wrt(build_loss("focal", gamma=2.0), logits, targets, ref, seq)
    detached = _grad_wrt(build_loss("focal", gamma=2.0, detach_weight=True), logits, targets, ref, seq)
    assert (attached - detached).abs().max() > 1e-3


@pytest.mark.parametrize("gamma", [0.0, 0.01, 0.5, 0.99, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_member_finite_at_p_zero_and_one(gamma, dtype):
    # p = 1 exactly (fp32 saturates) and p = 0 exactly (underflow) in the same batch
    logits = torch.tensor([[200.0, -200.0, -200.0], [-200.0, 200.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    targets = torch.tensor([0, 0, 2])
    seq = torch.tensor([0, 0, 1])
    losses = [build_loss(n) for n in REGISTRY] + [build_loss("focal", gamma=gamma), build_loss("dft", min_p=0.1),
                                                 build_loss("dft", level="sequence"),
                                                 build_loss("iw_sft", level="token")]
    for loss in losses:
        value, grad, stats = _loss(loss, logits, targets, logits.flip(0), seq)
        assert torch.isfinite(value), loss
        assert torch.isfinite(grad).all(), loss


def test_asft_kl_direction():
    """KL(p_ref || p_theta), not KL(p_theta || p_ref): checked on asymmetric distributions."""
    p_ref = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    p_theta = torch.tensor([[0.1, 0.1, 0.8]], dtype=torch.float64)
    targets = torch.tensor([2])
    seq = torch.zeros(1, dtype=torch.long)
    logits, ref_logits = p_theta.log(), p_ref.log()
    with_kl = _loss(build_loss("asft", kl_coef=1.0), logits, targets, ref_logits, seq)[0]
    dft = _loss(build_loss("dft"), logits, targets, ref_logits, seq)[0]
    forward_kl = (p_ref * (p_ref.log() - p_theta.log())).sum()
    reverse_kl = (p_theta * (p_theta.log() - p_ref.log())).sum()
    assert not torch.isclose(forward_kl, reverse_kl)
    torch.testing.assert_close(with_kl - dft, forward_kl, rtol=0, atol=1e-12)


def test_sequence_level_weights():
    logits, targets, ref, seq = _setup()
    logp = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    ctx = TokenContext(seq, 3)
    seq_logp = torch.stack([logp[seq == s].sum() for s in range(3)])
    geo = torch.stack([logp[seq == s].mean() for s in range(3)])
    torch.testing.assert_close(build_loss("dft", level="sequence").weight(logp, ctx), seq_logp[seq].exp())
    torch.testing.assert_close(build_loss("dft", level="geometric").weight(logp, ctx), geo[seq].exp())


def test_iw_sft_sequence_weight_clamped():
    logits, targets, ref, seq = _setup()
    logp = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    ctx = TokenContext(seq, 3, logp - 10.0)  # the model is e^10 times likelier than the reference
    w = build_loss("iw_sft", w_max=16.0).weight(logp, ctx)
    torch.testing.assert_close(w, torch.full_like(w, 16.0))
    tok = build_loss("iw_sft", level="token").weight(logp, TokenContext(seq, 3, logp + 10.0))
    torch.testing.assert_close(tok, torch.full_like(tok, 0.2))


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("focal", {"gamma": -1.0}, "loss.gamma"),
        ("dft", {"min_p": 1.0}, "loss.min_p"),
        ("dft", {"min_p": -0.1}, "loss.min_p"),
        ("dft", {"level": "word"}, "loss.level"),
        ("dft", {"gamma": 2.0}, "loss.gamma is not a parameter of loss 'dft'"),
        ("nope", {}, "loss.name='nope' is unknown"),
        ("iw_sft", {"temperature": 0.0}, "loss.temperature"),
        ("mixce", {"eta": 1.5}, "loss.eta"),
    ],
)
def test_bad_parameters_name_the_key(name, params, match):
    with pytest.raises(LossConfigError, match=match):
        build_loss(name, **params)


# --- the registry ---------------------------------------------------------------------------


def _loss_configs():
    from omegaconf import OmegaConf

    from dftlab.config import CONFIG_DIR, compose_config

    return {p.stem: OmegaConf.to_container(compose_config([f"loss={p.stem}"]).loss, resolve=True)
            for p in (CONFIG_DIR / "loss").glob("*.yaml")}


def test_every_member_has_its_config_and_every_config_a_member():
    configs = _loss_configs()
    for name in REGISTRY:
        assert configs[name]["name"] == name and configs[name]["label"] == name, name
    for stem, node in configs.items():
        assert node["name"] in REGISTRY, stem
        assert node["label"] == stem  # a preset's label is its file's name: runs and reports use it
        loss = build_loss(**{k: v for k, v in node.items() if k != "_target_"})
        assert loss.label == stem


def test_a_name_is_registered_once():
    from dftlab.losses import TokenLoss

    with pytest.raises(TypeError, match="registered twice"):
        type("Again", (TokenLoss,), {}, name="dft")


def test_anti_dft_preset_weight_is_one_minus_p_detached():
    logits, targets, ref, seq = _setup()
    node = _loss_configs()["anti_dft"]
    loss = build_loss(**{k: v for k, v in node.items() if k != "_target_"})
    logp = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1).requires_grad_(True)
    w = loss.weight(logp, TokenContext(seq, 3))
    torch.testing.assert_close(w, 1 - logp.detach().exp(), rtol=0, atol=1e-12)
    assert not w.requires_grad


# --- EAFT: a weight from the predictive distribution's entropy ----------------------------------


def _eaft_reference(logits, targets, alpha, topk=None):
    """EAFT written independently: the entropy from softmax in fp64, the top-k from sorting."""
    p = logits.double().softmax(-1)
    if topk is not None:
        p = p.sort(-1, descending=True).values[:, :topk]
        p = p / p.sum(-1, keepdim=True)
    h = -(p * p.log()).sum(-1)
    h_max = math.log(logits.shape[-1] if topk is None else topk)
    ce = -logits.double().log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    return ((h / h_max) ** alpha * ce).sum()


@pytest.mark.parametrize("alpha, topk", [(1.0, None), (0.5, None), (1.0, 3), (2.0, 5)])
def test_eaft_equals_its_definition(alpha, topk):
    logits, targets, ref, seq = _setup()
    value, grad, _ = _loss(build_loss("eaft", alpha=alpha, topk=topk), logits, targets, ref, seq)
    torch.testing.assert_close(value, _eaft_reference(logits, targets, alpha, topk), rtol=1e-10, atol=1e-12)
    # the weight is detached: the gradient is the weight times SFT's
    x = logits.clone().requires_grad_(True)
    p = x.double().softmax(-1)
    h = -(p * p.log()).sum(-1) if topk is None else None
    if h is not None:
        w = (h / math.log(logits.shape[-1])).detach() ** alpha
        ce = -x.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
        (expected,) = torch.autograd.grad((w * ce).sum(), x)
        torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_eaft_on_uniform_logits_is_sft():
    logits = torch.zeros(6, 9, dtype=torch.float64)  # H = log V: the weight is 1
    targets, seq = torch.arange(6), torch.zeros(6, dtype=torch.long)
    for params in ({"alpha": 1.0}, {"alpha": 2.0}, {"topk": 4}):
        v, g, _ = _loss(build_loss("eaft", **params), logits, targets, logits, seq)
        v_sft, g_sft, _ = _loss(build_loss("sft"), logits, targets, logits, seq)
        torch.testing.assert_close(v, v_sft, rtol=0, atol=1e-12)
        torch.testing.assert_close(g, g_sft, rtol=0, atol=1e-12)


def test_eaft_alpha_zero_is_sft():
    logits, targets, ref, seq = _setup()
    v, g, _ = _loss(build_loss("eaft", alpha=0.0), logits, targets, ref, seq)
    v_sft, g_sft, _ = _loss(build_loss("sft"), logits, targets, ref, seq)
    torch.testing.assert_close(v, v_sft, rtol=0, atol=1e-12)
    torch.testing.assert_close(g, g_sft, rtol=0, atol=1e-12)
