"""The two Table 1 recipes take the optimizer steps that a plain PyTorch loop written here takes:
`qwen2.5-math-1.5b_numina` (the corrected training) and `qwen2.5-math-1.5b_numina_official` (the
public DFT code's update rule), on tiny local stand-ins, three steps each, through the LightningModule.

The loop below is the update rule written out: the DFT loss of each target token, reduced as the
recipe says (the step's token mean, or the sum of micro-batch token means), AdamW with the recipe's
parameter groups, clipping at 1.0, and the warm-up then cosine schedule, in the recipe's parameter
dtype. The learning rate and the weight decay are scaled up (in both) so that each part of the rule
moves bf16 parameters by several units in the last place; everything else is the recipe's.
"""

import math

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM

from dftlab.config import compose_config
from dftlab.run import setup
from tests.helpers.stand_ins import make_stand_ins

LR, WEIGHT_DECAY, STEPS = 1e-2, 1.0, 3
# 168 rows: 160 training rows = 20 steps of 8, so a warm-up of int(0.1 * 20) = 2 steps
N_FIRST = 21


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    return make_stand_ins(tmp_path_factory.mktemp("stand_ins"), n_first=N_FIRST)


class Record(L.Callback):
    """Each step's gradients (before clipping) and learning rate; stops after STEPS steps."""

    def __init__(self):
        self.grads, self.lrs = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append({n: p.grad.detach().clone() for n, p in pl_module.policy.lm.named_parameters()})
        self.lrs.append(optimizer.param_groups[0]["lr"])
        if len(self.lrs) == STEPS:
            trainer.should_stop = True


def _run(recipe, stand_ins, run_dir):
    cfg = compose_config([
        f"experiment={recipe}", "debug=recipe", f"model.name_or_path={stand_ins / 'model'}",
        f"data.task.path={stand_ins / 'numina.jsonl'}", "data.task.eval_task=null", f"paths.output_dir={run_dir}",
        "trainer.max_steps=-1", f"optim.lr={LR}", f"optim.weight_decay={WEIGHT_DECAY}", "+trainer.limit_val_batches=0",
        "~logger",
    ])
    cfg.callbacks = {}  # (the recipe sets some of theirs: `~callbacks` would leave those half-defined)
    record = Record()
    s = setup(cfg, extra_callbacks=[record])
    s.trainer.fit(s.module, datamodule=s.datamodule)
    return cfg, s, record


def _lr_factor(step, total, warmup_ratio, from_zero):
    warmup = int(warmup_ratio * total)
    if step < warmup:
        return step / warmup if from_zero else (step + 1) / (warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def _dft_sum(model, rows, pad_id):
    """Sum over the rows' target tokens of -sg(p) log p, and their number; rows right-padded as one batch."""
    width = max(len(e.input_ids) for e in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for r, e in enumerate(rows):
        ids[r, : len(e.input_ids)] = torch.tensor(e.input_ids)
    hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
    # the loss in fp32 from the model's hidden states and output layer (dftlab's precision for the loss)
    logprobs = (hidden.float() @ model.lm_head.weight.float().t()).log_softmax(-1)
    total, n = 0.0, 0
    for r, e in enumerate(rows):
        pos = torch.arange(e.prompt_len, len(e.input_ids))  # response tokens and EOS, each predicted from pos - 1
        logp = logprobs[r, pos - 1, ids[r, pos]]
        total = total + (-logp.detach().exp() * logp).sum()
        n += len(pos)
    return total, n


def _plain_loop(cfg, s, official):
    dtype = torch.bfloat16 if official else torch.float32
    model = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, dtype=dtype)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters()]
    matrices = [p for p in params if p.dim() >= 2]
    others = [p for p in params if p.dim() < 2]
    if official:
        groups = [{"params": matrices + others, "weight_decay": WEIGHT_DECAY}]
    else:
        groups = [{"params": matrices, "weight_decay": WEIGHT_DECAY}, {"params": others, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), eps=1e-8)
    rows = s.datamodule.datasets["train"].rows
    sampler = s.trainer.train_dataloader.batch_sampler
    total_steps = math.ceil(len(rows) / cfg.data.batch_size)
    micro = cfg.data.micro_batch_size
    grads, lrs = [], []
    for step, members in enumerate(sampler.steps(0)[:STEPS]):
        lr = LR * _lr_factor(step, total_steps, cfg.optim.warmup_ratio, from_zero=official)
        for g in opt.param_groups:
            g["lr"] = lr
        n_step = sum(rows[i].n_targets for i in members)
        for m in range(0, len(members), micro):
            loss_sum, n_micro = _dft_sum(model, [rows[i] for i in members[m : m + micro]], s.tokenizer.pad_token_id)
            (loss_sum / (n_micro if official else n_step)).backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
        lrs.append(lr)
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, grads, lrs


@pytest.mark.parametrize("recipe, official", [("qwen2.5-math-1.5b_numina", False),
                                              ("qwen2.5-math-1.5b_numina_official", True)])
def test_three_steps_equal_a_plain_loop(recipe, official, stand_ins, tmp_path, monkeypatch):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    cfg, s, record = _run(recipe, stand_ins, tmp_path / "run")
    lm = s.module.policy.lm
    assert {p.dtype for p in lm.parameters()} == {torch.bfloat16 if official else torch.float32}
    assert s.trainer.accumulate_grad_batches == 4 and s.module.loss.name == "dft"
    model, grads, lrs = _plain_loop(cfg, s, official)

    assert lrs[0] == (0.0 if official else pytest.approx(LR / 3))
    assert record.lrs == pytest.approx(lrs, rel=1e-12, abs=0)
    # bf16: one unit in the last place (2^-8 relative, and a little more near powers of two)
    tol = {"rtol": 8e-3, "atol": 1e-6} if official else {"rtol": 1e-5, "atol": 1e-7}
    for step, (got, expected) in enumerate(zip(record.grads, grads, strict=True)):
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], **tol, msg=f"step {step} gradient of {name}")
    expected_params = dict(model.named_parameters())
    for name, p in lm.named_parameters():
        torch.testing.assert_close(p.detach(), expected_params[name].detach(), **tol, msg=f"{name} after the steps")
