"""Each member parameter's effect, on cases worked out by hand (probabilities that are powers of
two, sequences of two tokens): min_p, alpha, eta, level, gamma, detach_weight, temperature,
w_min / w_max, kl_coef, topk. A parameter that is ignored, or applied to the wrong quantity (a
sum for a mean), changes these numbers."""

import math

import pytest
import torch

from dftlab.engine import naive_token_loss
from dftlab.losses import TokenContext, build_loss

LN2 = math.log(2)


def _value_and_weight(name, p, seq=None, ref_p=None, **params):
    """(sum of per-token losses, d sum / d log p) for target probabilities `p` given directly."""
    loss = build_loss(name, **params)
    logp = torch.tensor(p, dtype=torch.float64).log().requires_grad_()
    seq = torch.tensor(seq if seq is not None else [0] * len(p))
    ref = None if ref_p is None else torch.tensor(ref_p, dtype=torch.float64).log()
    value = loss.per_token(logp, TokenContext(seq, int(seq.max()) + 1, ref, vocab_size=8)).sum()
    (grad,) = torch.autograd.grad(value, logp)
    return value.item(), grad.tolist()


def test_dft_min_p_floors_the_weight():
    # p = 1/2 is above the floor, p = 1/1024 below it: weights 1/2 and 1/64
    value, grad = _value_and_weight("dft", [0.5, 2**-10], min_p=2**-6)
    assert grad == pytest.approx([-0.5, -(2**-6)], rel=1e-12)
    assert value == pytest.approx(0.5 * LN2 + 2**-6 * 10 * LN2, rel=1e-12)
    _, no_floor = _value_and_weight("dft", [0.5, 2**-10])
    assert no_floor == pytest.approx([-0.5, -(2**-10)], rel=1e-12)


@pytest.mark.parametrize("alpha, weight", [(0.5, 0.5), (1.0, 0.25), (2.0, 0.0625), (0.0, 1.0)])
def test_dft_alpha_is_the_power_of_p(alpha, weight):
    value, grad = _value_and_weight("dft", [0.25], alpha=alpha)
    assert grad == pytest.approx([-weight], rel=1e-12)
    assert value == pytest.approx(weight * 2 * LN2, rel=1e-12)


@pytest.mark.parametrize("name, eta", [("dft", 0.25), ("mixce", 0.25), ("mixce", 0.5), ("dft", 1.0)])
def test_eta_mixes_sft_and_dft(name, eta):
    _, grad = _value_and_weight(name, [0.5, 0.125], eta=eta)
    assert grad == pytest.approx([-(eta + (1 - eta) * 0.5), -(eta + (1 - eta) * 0.125)], rel=1e-12)


def test_mixce_default_eta_is_one_half():
    _, grad = _value_and_weight("mixce", [0.25])
    assert grad == pytest.approx([-(0.5 + 0.5 * 0.25)], rel=1e-12)


@pytest.mark.parametrize("level, weights", [
    ("token", [0.5, 0.125, 0.25]),
    ("sequence", [0.0625, 0.0625, 0.25]),   # 1/2 * 1/8 for the first sequence; 1/4 for the second
    ("geometric", [0.25, 0.25, 0.25]),      # sqrt(1/2 * 1/8) = 1/4; 1/4
])
def test_dft_level_is_the_probability_weighted(level, weights):
    _, grad = _value_and_weight("dft", [0.5, 0.125, 0.25], seq=[0, 0, 1], level=level)
    assert grad == pytest.approx([-w for w in weights], rel=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 3.0])
def test_focal_gamma(gamma):
    # loss = -(1 - p)^gamma log p at p = 1/2: (1/2)^gamma ln 2; its derivative in log p (not detached):
    # -(1/2)^gamma + gamma (1/2)^(gamma - 1) (1/2) ln(1/2) = -(1/2)^gamma (1 + gamma ln 2)
    value, grad = _value_and_weight("focal", [0.5], gamma=gamma)
    assert value == pytest.approx(0.5**gamma * LN2, rel=1e-12)
    assert grad == pytest.approx([-(0.5**gamma) * (1 + gamma * LN2)], rel=1e-12)
    _, detached = _value_and_weight("focal", [0.5], gamma=gamma, detach_weight=True)
    assert detached == pytest.approx([-(0.5**gamma)], rel=1e-12)


@pytest.mark.parametrize("alpha, value", [(0.5, 1.0), (1.0, 0.75), (2.0, 0.46875)])
def test_prob_power_alpha(alpha, value):
    # -(p^alpha - 1) / alpha at p = 1/4; its derivative in log p is -p^alpha
    got, grad = _value_and_weight("prob_power", [0.25], alpha=alpha)
    assert got == pytest.approx(value, rel=1e-12)
    assert grad == pytest.approx([-(0.25**alpha)], rel=1e-12)


def _iw_weights(p, ref_p, seq, **params):
    return [-g for g in _value_and_weight("iw_sft", p, seq=seq, ref_p=ref_p, **params)[1]]


def test_iw_sft_sequence_weight_is_the_exp_of_the_mean_log_ratio():
    # log-ratios: sequence 0: ln 2 and ln 8 (mean 2 ln 2: w = 4; a sum would give 16), sequence 1: ln(1/2)
    p, ref_p, seq = [0.5, 0.5, 0.25], [0.25, 1 / 16, 0.5], [0, 0, 1]
    assert _iw_weights(p, ref_p, seq) == pytest.approx([4.0, 4.0, 0.5], rel=1e-12)
    # temperature T multiplies the mean: w = 2^(2T), 2^(-T)
    assert _iw_weights(p, ref_p, seq, temperature=0.5) == pytest.approx([2.0, 2.0, 2**-0.5], rel=1e-12)
    assert _iw_weights(p, ref_p, seq, temperature=2.0) == pytest.approx([16.0, 16.0, 0.25], rel=1e-12)
    # the clamp: [w_min, w_max]
    assert _iw_weights(p, ref_p, seq, w_min=0.6, w_max=3.0) == pytest.approx([3.0, 3.0, 0.6], rel=1e-12)
    assert _iw_weights(p, ref_p, seq, temperature=3.0) == pytest.approx([16.0, 16.0, 0.125], rel=1e-12)  # 64 -> 16


def test_iw_sft_token_weight_is_the_clamped_ratio():
    p, ref_p, seq = [0.5, 0.5, 0.25, 0.3], [0.25, 0.4, 0.5, 0.3], [0, 0, 0, 0]
    # ratios 2, 1.25, 0.5, 1: default clamp [0.2, 1.8]
    assert _iw_weights(p, ref_p, seq, level="token") == pytest.approx([1.8, 1.25, 0.5, 1.0], rel=1e-12)
    assert _iw_weights(p, ref_p, seq, level="token", w_min=0.75, w_max=1.125) == pytest.approx(
        [1.125, 1.125, 0.75, 1.0], rel=1e-12)
    # temperature belongs to the sequence level only
    assert _iw_weights(p, ref_p, seq, level="token", temperature=2.0) == pytest.approx([1.8, 1.25, 0.5, 1.0])


@pytest.mark.parametrize("kl_coef", [0.0, 0.5, 2.0])
def test_asft_kl_coef_scales_the_kl_term(kl_coef):
    # p_theta = (1/4, 3/4), p_ref = (1/2, 1/2), target 1: DFT = -(3/4) ln(3/4);
    # KL(p_ref || p_theta) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3)
    logits = torch.tensor([[0.25, 0.75]], dtype=torch.float64).log().requires_grad_()
    ref_logits = torch.tensor([[0.5, 0.5]], dtype=torch.float64).log()
    targets = torch.tensor([1])
    ctx = TokenContext(torch.zeros(1, dtype=torch.long), 1, ref_logits[:, 1])
    value, _ = naive_token_loss(logits, targets, build_loss("asft", kl_coef=kl_coef), ctx, 1.0, ref_logits)
    assert value.item() == pytest.approx(-0.75 * math.log(0.75) + kl_coef * 0.5 * math.log(4 / 3), rel=1e-12)


def test_asft_default_kl_coef_and_its_dft_parameters():
    logits = torch.tensor([[0.25, 0.75]], dtype=torch.float64).log()
    ref_logits = torch.tensor([[0.5, 0.5]], dtype=torch.float64).log()
    ctx = TokenContext(torch.zeros(1, dtype=torch.long), 1, ref_logits[:, 1])
    kl = 0.5 * math.log(4 / 3)
    value, _ = naive_token_loss(logits, torch.tensor([1]), build_loss("asft"), ctx, 1.0, ref_logits)
    assert value.item() == pytest.approx(-0.75 * math.log(0.75) + 0.05 * kl, rel=1e-12)
    floored, _ = naive_token_loss(logits, torch.tensor([0]), build_loss("asft", min_p=0.5, alpha=2.0), ctx, 1.0,
                                  ref_logits)
    assert floored.item() == pytest.approx(0.25 * math.log(4) + 0.05 * kl, rel=1e-12)  # max(1/4, 1/2)^2 = 1/4


@pytest.mark.parametrize("alpha, topk, weight", [
    # p = (1/2, 1/4, 1/8, 1/8): H = 1.75 ln 2 over the vocabulary, H_max = ln 4
    (1.0, None, 0.875),
    (2.0, None, 0.875**2),
    (1.0, 2, math.log2(3) - 2 / 3),  # the top 2 renormalised, (2/3, 1/3): H = ln 3 - (2/3) ln 2, H_max = ln 2
    (1.0, 3, (math.log(7) - 10 / 7 * LN2) / math.log(3)),  # (4/7, 2/7, 1/7): H = ln 7 - (10/7) ln 2, H_max = ln 3
])
def test_eaft_alpha_and_topk(alpha, topk, weight):
    logits = torch.tensor([[0.5, 0.25, 0.125, 0.125]], dtype=torch.float64).log().requires_grad_()
    ctx = TokenContext(torch.zeros(1, dtype=torch.long), 1)
    value, _ = naive_token_loss(logits, torch.tensor([0]), build_loss("eaft", alpha=alpha, topk=topk), ctx, 1.0)
    assert value.item() == pytest.approx(weight * LN2, rel=1e-12)
