"""The scale of a step's gradients, against formulas written here.

Invariance tests (tests/test_accumulation.py) compare one way of splitting a step with another, so
they cannot see an error that every split shares: normalising by every token instead of the target
tokens, a missing division by the number of ranks, a formula off by a constant. Here a real
optimizer step through the LightningModule (two micro-batches, so with accumulation) is compared
with `sum over the step's target tokens of loss_t / their number`, computed from the model in fp64
with each member's loss written out below from its definition (README, "The loss family"), not
from `dftlab.losses`. The policy is moved away from its reference first, so that iw-SFT's weights
and ASFT's KL term are not trivial.
"""

import copy
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from dftlab.data.collate import collate
from dftlab.data.encode import encode
from dftlab.data.sampler import StepBatchSampler
from dftlab.data.tokenizer import char_tokenizer
from dftlab.losses import REGISTRY, build_loss
from dftlab.module import FineTuneModule
from dftlab.objective import CausalLMWithLoss
from dftlab.settings import EngineSettings
from tests.conftest import ROOT, tiny_lm
from tests.helpers.step_gradients import step_gradients

# --- each member's loss per target token, from its definition ------------------------------------
# lp, lp_ref: [T] log p of one sequence's targets under the model (differentiable) and the reference;
# logprobs, ref: [T, V] their log-distributions.


def _dft_weight(lp, alpha=1.0, min_p=0.0, level="token", eta=0.0):
    q = {"token": lp, "sequence": lp.sum().expand_as(lp), "geometric": lp.mean().expand_as(lp)}[level].detach().exp()
    return eta + (1 - eta) * torch.clamp(q, min=min_p) ** alpha


def _entropy(logprobs, topk=None):
    p = logprobs.detach().exp()
    if topk is not None:
        p = p.sort(-1, descending=True).values[:, :topk]
        p = p / p.sum(-1, keepdim=True)
    return -(p * p.log()).sum(-1), math.log(logprobs.shape[-1] if topk is None else topk)


def sft(lp, logprobs, lp_ref, ref):
    return -lp


def dft(lp, logprobs, lp_ref, ref, **params):
    return -_dft_weight(lp, **params) * lp


def mixce(lp, logprobs, lp_ref, ref, eta=0.5):
    return -(eta + (1 - eta) * lp.detach().exp()) * lp


def focal(lp, logprobs, lp_ref, ref, gamma=2.0, detach_weight=False):
    one_minus_p = 1 - (lp.detach() if detach_weight else lp).exp()
    return -(one_minus_p**gamma) * lp


def prob_power(lp, logprobs, lp_ref, ref, alpha=1.0):
    return -(lp.exp() ** alpha - 1) / alpha


def iw_sft(lp, logprobs, lp_ref, ref, level="sequence", temperature=1.0, w_min=None, w_max=None):
    if level == "sequence":
        w = torch.exp(temperature * (lp.detach() - lp_ref).mean()).clamp(w_min or 0.0, w_max or 16.0)
    else:
        w = (lp.detach().exp() / lp_ref.exp()).clamp(0.2 if w_min is None else w_min, 1.8 if w_max is None else w_max)
    return -w * lp


def asft(lp, logprobs, lp_ref, ref, kl_coef=0.05, alpha=1.0, min_p=0.0):
    kl = (ref.exp() * (ref - logprobs)).sum(-1)  # KL(p_ref || p_theta) over the vocabulary
    return dft(lp, logprobs, lp_ref, ref, alpha=alpha, min_p=min_p) + kl_coef * kl


def eaft(lp, logprobs, lp_ref, ref, alpha=1.0, topk=None):
    h, h_max = _entropy(logprobs, topk)
    return -((h / h_max) ** alpha) * lp


FORMULAS = {f.__name__: f for f in (sft, dft, mixce, focal, prob_power, iw_sft, asft, eaft)}


def _sequence_losses(name, params, model, reference, e):
    """Per-target-token losses of one encoded example, in fp64, from its own forward pass."""
    ids = torch.tensor(e.input_ids)
    positions = torch.arange(e.prompt_len, len(ids))  # the response and EOS, each predicted from position - 1
    targets = ids[positions][:, None]
    logprobs = model(input_ids=ids[None]).logits[0, positions - 1].log_softmax(-1)
    ref = lp_ref = None
    if reference is not None:
        with torch.no_grad():
            ref = reference(input_ids=ids[None]).logits[0, positions - 1].log_softmax(-1)
        lp_ref = ref.gather(1, targets).squeeze(1)
    return FORMULAS[name](logprobs.gather(1, targets).squeeze(1), logprobs, lp_ref, ref, **params)


# --- a real optimizer step -----------------------------------------------------------------------


class MoveAwayFromReference(L.Callback):
    def on_train_start(self, trainer, pl_module):
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in pl_module.policy.lm.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _expected_gradients(name, params, s, reduction, micro):
    """The step's gradients from the formulas: sum of losses / the step's target tokens (`token`),
    or the sum over micro-batches of each one's token mean (`official`); and that objective's value."""
    policy = s.module.policy
    model = copy.deepcopy(policy.lm).double()
    model.load_state_dict({k: v.double() for k, v in s.capture.weights.items()}, strict=False)
    reference = None if policy.reference is None else copy.deepcopy(policy.reference).double()
    rows = s.datamodule.datasets["train"].rows
    step = s.trainer.train_dataloader.batch_sampler.steps(0)[0]
    objective = 0.0
    if reduction == "token":
        losses = [_sequence_losses(name, params, model, reference, rows[i]) for i in step]
        objective = torch.cat(losses).sum() / sum(len(x) for x in losses)
    else:
        for m in range(0, len(step), micro):
            losses = torch.cat([_sequence_losses(name, params, model, reference, rows[i]) for i in step[m : m + micro]])
            objective = objective + losses.mean()
    named = dict(model.named_parameters())
    grads = torch.autograd.grad(objective, list(named.values()), allow_unused=True)
    return {n: g for n, g in zip(named, grads, strict=True) if g is not None}, objective.detach().item()


# Members trained on demonstrations; the pairwise and rollout members (they read per-token batch fields)
# normalise over pairs or completions, checked against their definitions where they are tested.
DEMONSTRATION = sorted(name for name, cls in REGISTRY.items() if not cls.token_fields)
TESTED_ELSEWHERE = {"dpo": "tests/test_rl_losses.py", "grpo": "tests/test_rl_losses.py"}

VARIANTS = [(name, {}, "naive") for name in DEMONSTRATION] + [
    ("dft", {"min_p": 0.1}, "chunked"),
    ("dft", {"alpha": 0.5, "eta": 0.25, "level": "geometric"}, "chunked"),
    ("dft", {"level": "sequence"}, "chunked"),
    ("focal", {"gamma": 0.5, "detach_weight": True}, "chunked"),
    ("prob_power", {"alpha": 0.3}, "chunked"),
    ("iw_sft", {"temperature": 2.0, "w_max": 1.2}, "chunked"),
    ("iw_sft", {"level": "token", "w_min": 0.5, "w_max": 1.5}, "chunked"),
    ("asft", {"kl_coef": 0.5}, "chunked"),
    ("eaft", {"topk": 4, "alpha": 2.0}, "chunked"),
]


def test_every_member_has_a_formula_here():
    missing = sorted(set(DEMONSTRATION) - set(FORMULAS))
    assert not missing, f"write the loss of {missing} in FORMULAS of tests/test_normalisation.py"
    for name in sorted(set(REGISTRY) - set(DEMONSTRATION)):
        where = TESTED_ELSEWHERE.get(name)
        assert where, f"loss {name!r} reads batch fields: name the test of its normalisation in TESTED_ELSEWHERE"
        assert f"def test_{name}_" in (ROOT / where).read_text(), (name, where)


def _compare(got, expected):
    assert got.keys() >= expected.keys()
    for n, g in expected.items():
        err = float((got[n].double() - g).norm() / g.norm().clamp(min=1e-30))
        assert err <= 1e-4, f"{n}: relative error {err:.3g}"


@pytest.mark.parametrize("name, params, path", VARIANTS,
                         ids=["-".join([n, *(f"{k}={v}" for k, v in p.items()), path]) for n, p, path in VARIANTS])
def test_step_gradients_are_the_token_mean_of_the_formula(name, params, path, tmp_path):
    extra = [f"loss.{k}={v}" for k, v in params.items()] + ["engine.chunk_mib=0.001"]
    grads, s = step_gradients(name, micro=2, path=path, run_dir=tmp_path, extra=extra,
                              callbacks=[MoveAwayFromReference()])
    assert s.trainer.accumulate_grad_batches == 2
    expected, objective = _expected_gradients(name, params, s, "token", micro=2)
    _compare(grads, expected)
    assert float(s.trainer.callback_metrics["train/loss"]) == pytest.approx(objective, rel=1e-5)


@pytest.mark.parametrize("name", ["sft", "dft"])
def test_official_reduction_is_the_sum_of_micro_batch_means(name, tmp_path):
    grads, s = step_gradients(name, micro=2, reduction="official", run_dir=tmp_path,
                              callbacks=[MoveAwayFromReference()])
    expected, objective = _expected_gradients(name, {}, s, "official", micro=2)
    _compare(grads, expected)
    metrics = s.trainer.callback_metrics
    assert float(metrics["train/loss"]) == pytest.approx(objective, rel=1e-5)  # the quantity optimised
    _, token_mean = _expected_gradients(name, {}, s, "token", micro=2)
    assert float(metrics["train/loss_token_mean"]) == pytest.approx(token_mean, rel=1e-5)
    assert objective > 1.5 * token_mean  # two micro-batches: about twice the token mean


# --- two ranks, without starting them: what DDP and Lightning do with the module's normaliser ------


TOK = char_tokenizer()
EXAMPLES = [("A|24:", "1"), ("J=8,Q=9,K=10|A,7,K,3|24:", "10*3=30;7-1=6;30-6=24"), ("A,2|3:", "1+2=3"),
            ("Q|1:", "3-2=1;1*1=1"), ("K,K|20:", "10+10=20"), ("2,2|4:", "2*2=4"), ("5|5:", "5"),
            ("3,4,5|60:", "3*4=12;12*5=60")]


@pytest.mark.parametrize("reduction", ["token", "official"])
@pytest.mark.parametrize("name", ["sft", "dft"])
def test_normaliser_with_two_ranks_and_accumulation(name, reduction):
    """Each of 2 ranks runs its share of a global batch of 8 in micro-batches of 2 (accumulation 2);
    Lightning divides each micro-batch's loss by the accumulation and DDP averages the ranks' sums.
    The result must be the formula's gradient over the whole step."""
    world, micro, accumulation = 2, 2, 2
    loss = build_loss(name)
    rows = [encode(TOK, p, r, 64) for p, r in EXAMPLES]
    policy = CausalLMWithLoss(tiny_lm("llama", vocab=len(TOK)), loss, path="naive")
    module = FineTuneModule(None, loss, None, EngineSettings(reduction=reduction))
    module.policy = policy
    module._trainer = SimpleNamespace(accumulate_grad_batches=accumulation, world_size=world)
    rank_grads = []
    for rank in range(world):
        policy.zero_grad()
        sampler = StepBatchSampler([e.n_targets for e in rows], len(rows), micro, rank, world, shuffle=False)
        batches = sampler.micro_batches(0)
        assert len(batches) == accumulation
        for keys in batches:
            batch = collate([(i, rows[i], tokens) for i, tokens in keys], pad_id=TOK.pad_token_id)
            value, _ = policy(batch, module._normaliser(batch))
            (value / accumulation).backward()
        rank_grads.append({n: p.grad.clone() for n, p in policy.lm.named_parameters()})
    ddp = {n: sum(g[n] for g in rank_grads) / world for n in rank_grads[0]}

    model = copy.deepcopy(policy.lm).double()
    per_row = [_sequence_losses(name, {}, model, None, e) for e in rows]
    if reduction == "token":
        objective = torch.cat(per_row).sum() / sum(len(x) for x in per_row)
    else:  # on each rank the sum of its micro-batches' token means; then the mean over ranks
        objective = sum(torch.cat([per_row[i] for i, _ in keys]).mean()
                        for rank in range(world)
                        for keys in StepBatchSampler([e.n_targets for e in rows], len(rows), micro, rank, world,
                                                     shuffle=False).micro_batches(0)) / world
    named = dict(model.named_parameters())
    expected = dict(zip(named, torch.autograd.grad(objective, list(named.values())), strict=True))
    _compare(ddp, expected)
