"""Batched generation: left padding changes nothing, sampling is seeded, the settings are the ones
asked for (not the model's own generation defaults), EOS and stop strings end a completion."""

from types import SimpleNamespace

import pytest
import torch

from dftlab.data.tokenizer import char_tokenizer
from dftlab.evaluation.decoding import decode, stop_token_ids
from dftlab.evaluation.generate import generate
from tests.conftest import tiny_lm

PROMPTS = ["1,2,3,4|24:", "J=8,Q=9,K=10|A,7,K,3|24:", "5|", "10*3=30;7-1=6;30-6=", "Q", "A,A,A,A,A|24:"]


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def lm(tok):
    ids = {f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("pad", "bos", "eos")}
    return tiny_lm(vocab=len(tok), **ids).eval()


def test_batched_left_padded_greedy_equals_one_by_one(lm, tok):
    batched = generate(lm, tok, PROMPTS, max_new_tokens=16, batch_size=len(PROMPTS))
    alone = [generate(lm, tok, [p], max_new_tokens=16, batch_size=1)[0] for p in PROMPTS]
    assert batched == alone
    assert all(len(c) == 1 for c in batched) and len({c[0] for c in batched}) > 1
    # batches of two: prompts of different lengths share a batch, padded on the left
    assert generate(lm, tok, PROMPTS, max_new_tokens=16, batch_size=2) == alone


def test_sampling_is_seeded_and_returns_n_per_prompt(lm, tok):
    def sample(seed):
        return generate(lm, tok, PROMPTS, max_new_tokens=12, temperature=1.0, n=4, batch_size=8, seed=seed)

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = sample(0)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG is left where it was
    assert first == sample(0)
    assert first != sample(1)
    assert [len(c) for c in first] == [4] * len(PROMPTS)
    assert any(len(set(c)) > 1 for c in first)  # samples of one prompt differ


def test_the_models_own_generation_defaults_do_not_apply(lm, tok):
    """An instruct model's generation_config (top_k, repetition_penalty) must not change the
    sampling asked for: with top_k=1 inherited, every sample would be the greedy completion."""
    lm.generation_config.top_k = 1
    lm.generation_config.repetition_penalty = 10.0
    try:
        greedy = generate(lm, tok, PROMPTS[:2], max_new_tokens=12)
        samples = generate(lm, tok, PROMPTS[:2], max_new_tokens=12, temperature=1.0, n=8)
        assert any(s != g[0] for s, g in zip(samples[0] + samples[1], greedy * 8))
    finally:
        lm.generation_config.top_k = None
        lm.generation_config.repetition_penalty = None


def test_end_tokens_and_stop_strings(tok):
    eos = tok.eos_token_id
    ids = tok("1+2=3;", add_special_tokens=False)["input_ids"]
    assert decode(tok, ids + [eos] + ids, [eos], None) == "1+2=3;"
    assert decode(tok, ids + ids, [eos], [";"]) == "1+2=3"
    assert decode(tok, ids, [eos], ["@"]) == "1+2=3;"

    config = SimpleNamespace(eos_token_id=[eos, 7])
    assert stop_token_ids(config, tok) == [eos, 7]  # the model's end-of-turn tokens too
    assert stop_token_ids(None, tok) == [eos]


def test_a_stop_string_ends_generation_as_the_cut_would(lm, tok):
    """Generation stops at a stop string (not at max_new_tokens), and the text is what generating
    to the limit and cutting gives."""
    full = generate(lm, tok, PROMPTS, max_new_tokens=24, batch_size=len(PROMPTS))
    stops = sorted({c[0][k:k + 2] for c in full for k in (3, 5) if len(c[0]) > k + 1})[:3]  # pieces it does write
    cut = [[decode(tok, tok(c[0], add_special_tokens=False)["input_ids"], [], stops)] for c in full]
    assert cut != full  # some completions do contain a stop string
    assert generate(lm, tok, PROMPTS, max_new_tokens=24, batch_size=len(PROMPTS), stop=stops) == cut
    assert generate(lm, tok, PROMPTS, max_new_tokens=24, batch_size=2, stop=stops) == cut
    # and it stopped: fewer forward passes for a prompt cut early than the 24 to the limit
    i = min(range(len(PROMPTS)), key=lambda k: len(cut[k][0]) if cut[k] != full[k] else 99)
    calls = []
    hook = lm.register_forward_hook(lambda *_: calls.append(1))
    try:
        generate(lm, tok, [PROMPTS[i]], max_new_tokens=24, stop=stops)
    finally:
        hook.remove()
    assert len(calls) <= len(cut[i][0]) + max(map(len, stops)) + 1 < 24


def test_each_module_mode_is_restored(tok):
    """A model in training with one part kept in eval mode (a frozen reference, say) comes back as
    it was, not all in train mode."""
    ids = {f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("pad", "bos", "eos")}
    model = tiny_lm(vocab=len(tok), **ids).train()
    frozen = model.model.layers[0]
    frozen.eval()
    generate(model, tok, PROMPTS[:2], max_new_tokens=4)
    assert model.training and model.model.layers[1].training
    assert not any(m.training for m in frozen.modules())
