"""`engine.reference=dataset` end to end, as a user runs it: a JSONL file whose `ref_logp` field
holds one reference log-probability per target token (here the initial model's own, computed by
this test), trained with `iw_sft` through `python train.py`'s code path. Its first step's gradients
equal those of `engine.reference=copy` (a frozen copy of the same initial model)."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dftlab.cli import train
from dftlab.config import compose_config
from dftlab.errors import ConfigError
from tests.helpers.stand_ins import make_stand_ins

ROWS = [{"problem": f"what is {a}+{b}?", "solution": f"{a}+{b}={a + b}, so \\boxed{{{a + b}}}"}
        for a in range(5) for b in range(4)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_stand_ins(tmp_path_factory.mktemp("stand_ins")) / "model"


@torch.no_grad()
def _ref_logp(model_dir, row, offset=0.0):
    """The model's log p of each target token: the response's tokens, then EOS (no chat template)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    prompt = tok(row["problem"], add_special_tokens=False)["input_ids"]
    response = tok(row["solution"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    logprobs = model(input_ids=torch.tensor([prompt + response])).logits[0].log_softmax(-1)
    return [float(logprobs[len(prompt) - 1 + j, t]) - offset for j, t in enumerate(response)]


def _write(path, model_dir, offset=0.0, rows=ROWS, edit=None):
    lines = []
    for i, row in enumerate(rows):
        row = {**row, "ref_logp": _ref_logp(model_dir, row, offset)}
        if edit is not None:
            row = edit(i, row)
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def _train(model_dir, data, run_dir, reference, *extra):
    cfg = compose_config([
        "model=hf", f"model.name_or_path={model_dir}", "data=jsonl", f"data.task.path={data}",
        "data.task.columns={prompt: problem, response: solution}", "data.task.chat_template=false",
        "data.task.val_size=4", "data.batch_size=8", "data.micro_batch_size=4", "loss=iw_sft",
        f"engine.reference={reference}", "engine.path=naive", "trainer.max_steps=1", "optim.grad_clip=null",
        f"paths.output_dir={run_dir}", "+callbacks.grads._target_=tests.helpers.step_gradients.SaveGradients",
        f"+callbacks.grads.path={run_dir}.grads.pt", "~callbacks.token_histograms", "+trainer.limit_val_batches=0",
        *extra,
    ])
    summary = train(cfg)
    return summary, torch.load(f"{run_dir}.grads.pt")


def test_dataset_reference_equals_a_frozen_copy(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    data = _write(tmp_path / "train.jsonl", model_dir)
    summary, from_data = _train(model_dir, data, tmp_path / "dataset", "dataset", "data.packing=true")
    assert summary["steps"] == 1
    _, from_copy = _train(model_dir, data, tmp_path / "copy", "copy")
    for name, g in from_copy.items():
        torch.testing.assert_close(from_data[name], g, rtol=1e-4, atol=1e-7, msg=name)
    # the values are used: a reference e^0.5 times less likely weighs every sequence by e^0.5
    shifted = _write(tmp_path / "shifted.jsonl", model_dir, offset=0.5)
    _, from_shifted = _train(model_dir, shifted, tmp_path / "shifted", "dataset")
    for name, g in from_copy.items():
        torch.testing.assert_close(from_shifted[name], math.exp(0.5) * g, rtol=1e-4, atol=1e-7, msg=name)


def test_a_wrong_length_names_the_file_and_line(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))

    def drop_one(i, row):
        return {**row, "ref_logp": row["ref_logp"][:-1]} if i == 6 else row

    data = _write(tmp_path / "train.jsonl", model_dir, edit=drop_one)
    n = len(AutoTokenizer.from_pretrained(model_dir)(ROWS[6]["solution"], add_special_tokens=False)["input_ids"]) + 1
    with pytest.raises(ConfigError, match=rf"train.jsonl:7: ref_logp has {n - 1} values for {n} target tokens"):
        _train(model_dir, data, tmp_path / "run", "dataset")


def test_rows_without_ref_logp_are_refused_by_name(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DFTLAB_CACHE", str(tmp_path / "cache"))
    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    with pytest.raises(ConfigError, match="engine.reference=dataset: the training rows have no ref_logp field"):
        _train(model_dir, plain, tmp_path / "run", "dataset")
