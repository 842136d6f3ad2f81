"""DPO and GRPO as members of the family: their definitions on hand-made cases, DPO against TRL's
DPOTrainer, GRPO's gradient with one update, the clipped surrogate, group advantages."""

import copy
import math

import pytest
import torch

from dftlab.data.collate import collate
from dftlab.data.encode import Encoded
from dftlab.engine import naive_token_loss
from dftlab.errors import ConfigError
from dftlab.losses import TokenContext, build_loss
from dftlab.objective import CausalLMWithLoss
from dftlab.rl.rollout import group_advantages
from tests.conftest import tiny_lm


def _ctx(seq, n_seqs, ref_logp=None, **fields):
    return TokenContext(seq, n_seqs, ref_logp, fields={k: torch.as_tensor(v) for k, v in fields.items()})


# --- DPO ------------------------------------------------------------------------------------


def test_dpo_equals_its_definition_per_pair():
    # two pairs: tokens of pair 0 (chosen 3 tokens, rejected 2), pair 1 (chosen 1, rejected 2)
    logp = torch.tensor([-0.1, -0.2, -0.3, -1.0, -2.0, -0.5, -0.7, -0.9], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-0.2, -0.2, -0.2, -0.5, -0.5, -0.4, -1.0, -1.0], dtype=torch.float64)
    pair = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    side = torch.tensor([1.0, 1, 1, -1, -1, 1, -1, -1], dtype=torch.float64)
    seq = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    loss = build_loss("dpo", beta=0.5)
    total = loss.per_token(logp, _ctx(seq, 4, ref, pair_id=pair, pair_side=side)).sum()
    # by hand: delta_chosen - delta_rejected, then -log sigmoid(beta * margin)
    m0 = (-0.6 - -0.6) - (-3.0 - -1.0)
    m1 = (-0.5 - -0.4) - (-1.6 - -2.0)
    expected = sum(math.log1p(math.exp(-0.5 * m)) for m in (m0, m1))
    assert total.item() == pytest.approx(expected, rel=1e-12)
    (grad,) = torch.autograd.grad(total, logp)
    # d/dlogp_t = -beta * side_t * sigmoid(-beta * margin of its pair)
    s0, s1 = 1 / (1 + math.exp(0.5 * m0)), 1 / (1 + math.exp(0.5 * m1))
    expected_grad = [-0.5 * float(sd) * (s0 if p == 0 else s1) for sd, p in zip(side, pair)]
    torch.testing.assert_close(grad, torch.tensor(expected_grad, dtype=torch.float64))


def test_dpo_is_the_mean_over_pairs_whatever_the_response_lengths():
    """The loss of a pair does not depend on how its tokens split between the sides."""
    loss = build_loss("dpo")
    logp = torch.tensor([-1.0, -1.0, -1.0, -1.0])
    for side in ([1.0, -1, -1, -1], [1.0, 1, 1, -1]):
        ctx = _ctx(torch.tensor([0, 1, 1, 1]), 2, torch.zeros(4), pair_id=torch.zeros(4, dtype=torch.long),
                   pair_side=torch.tensor(side))
        margin = -sum(side)  # sum of side * (log p - log p_ref), log p = -1, log p_ref = 0
        assert loss.per_token(logp, ctx).sum().item() == pytest.approx(math.log1p(math.exp(-0.1 * margin)))


def test_dpo_reference_equal_to_policy_gives_log_2():
    loss = build_loss("dpo")
    logp = torch.randn(6)
    ctx = _ctx(torch.arange(6) // 3, 2, logp.clone(), pair_id=torch.zeros(6, dtype=torch.long),
               pair_side=torch.tensor([1.0, 1, 1, -1, -1, -1]))
    assert loss.per_token(logp, ctx).sum().item() == pytest.approx(math.log(2))


def test_dpo_matches_trl(tmp_path):
    """Loss and gradients against TRL's DPOTrainer on the same pairs, weights and reference."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from dftlab.data.tokenizer import char_tokenizer

    tok = char_tokenizer()
    rows = [
        {"prompt": "J=8,Q=9,K=10|A,7,K,3|24:", "chosen": "10*3=30;7-1=6;30-6=24", "rejected": "10+3=13;7*1=7"},
        {"prompt": "J=1,Q=2,K=3|2,2,6,6|24:", "chosen": "6*2=12;6+6=12", "rejected": "6*6=36;2*2=4;36-4=32"},
        {"prompt": "J=4,Q=8,K=10|Q,3,A,A|24:", "chosen": "8*3=24;1*1=1;24*1=24", "rejected": "8+3=11"},
    ]
    torch.manual_seed(0)
    lm = tiny_lm(vocab=len(tok))
    with torch.no_grad():  # a policy away from its reference, so that the margins are not 0
        for p in lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = tiny_lm(vocab=len(tok))
    args = DPOConfig(output_dir=str(tmp_path), beta=0.1, per_device_train_batch_size=3, report_to=[], use_cpu=True,
                     max_length=None, precompute_ref_log_probs=False)
    trainer = DPOTrainer(model=copy.deepcopy(lm), ref_model=copy.deepcopy(ref), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=tok)
    examples = [trainer.train_dataset[i] for i in range(len(rows))]
    inputs = trainer.data_collator(examples)
    trl_loss = trainer.compute_loss(trainer.model, inputs)
    trl_loss.backward()
    trl_grads = {n: p.grad for n, p in trainer.model.named_parameters()}

    # ours: the same token ids, both sides of each pair in one batch, the reference a copy of `ref`
    policy = CausalLMWithLoss(copy.deepcopy(lm), build_loss("dpo", beta=0.1), reference="copy", path="chunked")
    policy._reference = [copy.deepcopy(ref).eval().requires_grad_(False)]
    items = []
    for i, e in enumerate(examples):
        for side in ("chosen_ids", "rejected_ids"):
            items.append((i, Encoded(e["prompt_ids"] + e[side], len(e["prompt_ids"])), 3))
    batch = collate(items, pad_id=tok.pad_token_id)
    batch["pair_id"] = batch["seq_ids"] // 2
    batch["pair_side"] = 1.0 - 2.0 * (batch["seq_ids"] % 2).float()
    ours, _ = policy(batch, normaliser=len(rows))
    ours.backward()
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-5)
    assert abs(ours.item() - math.log(2)) > 1e-3  # margins that are not 0
    for name, p in policy.lm.named_parameters():
        torch.testing.assert_close(p.grad, trl_grads[name], rtol=1e-5, atol=1e-5, msg=name)


# --- GRPO -----------------------------------------------------------------------------------


def test_grpo_one_update_is_minus_advantage_times_grad_log_p():
    """With one update on the samples, the gradient is -sum_t A_t grad log p_t / N, written here
    from the softmax directly."""
    g = torch.Generator().manual_seed(0)
    n, v = 9, 6
    logits = torch.randn(n, v, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=g)
    seq = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    adv = torch.tensor([0.5, -1.2, 0.8], dtype=torch.float64)[seq]
    value, _ = naive_token_loss(logits, targets, build_loss("grpo"), _ctx(seq, 3, advantage=adv), float(n))
    (grad,) = torch.autograd.grad(value, logits)
    p = logits.detach().softmax(-1)
    onehot = torch.nn.functional.one_hot(targets, v).double()
    expected = -(adv / n)[:, None] * (onehot - p)  # d(-A log p)/dz = -A (onehot - p)
    torch.testing.assert_close(grad, expected)
    logp = p.gather(1, targets[:, None]).squeeze(1).log()
    assert value.item() == pytest.approx((-adv).sum().item() / n)  # r = 1: the value is -mean A
    assert abs(value.item() - (-(adv * logp).sum() / n).item()) > 1e-3  # ... not -A log p itself


def test_grpo_clipped_objective_on_a_hand_made_case():
    """-min(r A, clip(r, 0.8, 1.2) A) token by token; no gradient where the clip is the minimum."""
    old = torch.zeros(6, dtype=torch.float64)
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1, 0.9], dtype=torch.float64)
    adv = torch.tensor([2.0, -2.0, 2.0, -2.0, 1.0, -3.0], dtype=torch.float64)
    logp = ratio.log().requires_grad_(True)
    loss = build_loss("grpo", clip_eps=0.2)
    per = loss.per_token(logp, _ctx(torch.arange(6), 6, advantage=adv, old_logp=old))
    expected = [-1.2 * 2.0, 1.5 * 2.0, -0.5 * 2.0, 0.8 * 2.0, -1.1 * 1.0, 0.9 * 3.0]
    torch.testing.assert_close(per.detach(), torch.tensor(expected, dtype=torch.float64))
    (grad,) = torch.autograd.grad(per.sum(), logp)
    # d/dlogp (-r A) = -r A where unclipped; 0 where the clipped branch is the one taken
    torch.testing.assert_close(grad, torch.tensor([0.0, 3.0, -1.0, 0.0, -1.1, 2.7], dtype=torch.float64))


def test_grpo_clip_higher_and_sequence_unit():
    loss = build_loss("grpo", clip_eps=0.2, clip_eps_high=0.28, unit="sequence")
    logp = torch.tensor([math.log(1.5), 0.0, 0.0], dtype=torch.float64)
    ctx = _ctx(torch.tensor([0, 1, 1]), 2, advantage=torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64),
               old_logp=torch.zeros(3, dtype=torch.float64))
    per = loss.per_token(logp, ctx)
    # sequence 0: one token, clipped at 1.28; sequence 1: two tokens at r = 1, each divided by 2
    torch.testing.assert_close(per, torch.tensor([-1.28, -0.5, -0.5], dtype=torch.float64))


def test_grpo_parameters_are_checked():
    with pytest.raises(ConfigError, match="loss.unit='pair'"):
        build_loss("grpo", unit="pair")
    with pytest.raises(ConfigError, match="loss.clip_eps=1.5"):
        build_loss("grpo", clip_eps=1.5)
    with pytest.raises(ConfigError, match="loss.beta=0"):
        build_loss("dpo", beta=0)


def test_grpo_kl_needs_the_reference_only_when_asked():
    assert not build_loss("grpo").needs_reference
    assert build_loss("grpo", kl_coef=0.05).needs_reference


# --- group advantages -----------------------------------------------------------------------


def test_group_advantages_against_their_definition():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    adv, zero_var, nonfinite = group_advantages(rewards, scale=True, eps=0.0)
    for row, a in zip(rewards.tolist(), adv):
        mean = sum(row) / 4
        std = math.sqrt(sum((r - mean) ** 2 for r in row) / 3)  # unbiased, as TRL and verl
        torch.testing.assert_close(a, torch.tensor([(r - mean) / std for r in row]))
    assert not zero_var.any() and not nonfinite.any()
    no_std, _, _ = group_advantages(rewards, scale=False)
    torch.testing.assert_close(no_std, rewards - rewards.mean(1, keepdim=True))


def test_zero_variance_and_non_finite_rewards_give_zero_advantage():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, float("nan"), 0.0], [float("inf")] * 3])
    adv, zero_var, nonfinite = group_advantages(rewards, scale=True, eps=0.0)  # eps 0: no division by zero
    assert torch.isfinite(adv).all()
    assert zero_var.tolist() == [True, True, False, True]
    assert nonfinite.tolist() == [[False] * 3, [False] * 3, [False, True, False], [True] * 3]
    assert adv[:2].abs().sum() == 0 and adv[3].abs().sum() == 0
    # the finite pair (1, 0): mean 0.5, unbiased std 0.707; the nan is left out and gets 0
    torch.testing.assert_close(adv[2], torch.tensor([0.5 / math.sqrt(0.5), 0.0, -0.5 / math.sqrt(0.5)]))
