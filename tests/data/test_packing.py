"""Padding-free packing changes nothing but speed: per-token losses equal the padded ones."""

import pytest
import torch

from dftlab.data.collate import collate, pack
from dftlab.data.encode import encode
from dftlab.data.tokenizer import char_tokenizer
from dftlab.errors import ConfigError
from dftlab.losses import IGNORE_INDEX, build_loss
from dftlab.objective import CausalLMWithLoss
from tests.conftest import tiny_lm

TOK = char_tokenizer()
EXAMPLES = [("J=8,Q=9,K=10|A,7,K,3|24:", "10*3=30;7-1=6;30-6=24"), ("A|24:", "1"), ("J=1,Q=2,K=3|2,2|24:", "2*2=4"),
            ("Q|1:", "3-2=1;1*1=1"), ("K,K|20:", "10+10=20")]


def _items():
    return [(i, encode(TOK, p, r, 64), 0) for i, (p, r) in enumerate(EXAMPLES)]


def test_first_fit_decreasing():
    assert pack([5, 4, 3, 3, 1], 8) == [[0, 2], [1, 3, 4]]
    assert all(sum([7, 7, 7][i] for i in row) <= 8 for row in pack([7, 7, 7], 8))


def test_packed_rows_restart_positions_and_keep_targets_apart():
    padded, packed = collate(_items(), TOK.pad_token_id), collate(_items(), TOK.pad_token_id, pack_length=64)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0]
    assert int(packed["attention_mask"].sum()) == int(padded["attention_mask"].sum())  # same real tokens
    assert sorted(packed["row_ids"].tolist()) == list(range(len(EXAMPLES)))
    for b in range(packed["input_ids"].shape[0]):
        pos, ids, labels = packed["position_ids"][b], packed["input_ids"][b], packed["labels"][b]
        starts = (pos == 0).nonzero().flatten().tolist()
        for s, e in zip(starts, starts[1:] + [len(pos)]):
            # the last position of each segment predicts nothing: no target crosses into the next example
            assert labels[e - 1] == IGNORE_INDEX
            valid = labels[s : e - 1] != IGNORE_INDEX
            assert torch.equal(labels[s : e - 1][valid], ids[s + 1 : e][valid])
    targets = lambda b: sorted(b["labels"][b["labels"] != IGNORE_INDEX].tolist())  # noqa: E731
    assert targets(packed) == targets(padded)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("name, path", [("dft", "naive"), ("sft", "chunked"), ("iw_sft", "naive"), ("dft", "chunked")])
def test_packed_losses_equal_padded(model_type, name, path):
    lm = tiny_lm(model_type, vocab=len(TOK))
    policy = CausalLMWithLoss(lm, build_loss(name), reference="copy", path=path, chunk_mib=1e-3)
    results = {}
    for mode, batch in (("padded", collate(_items(), TOK.pad_token_id)),
                        ("packed", collate(_items(), TOK.pad_token_id, pack_length=64))):
        policy.zero_grad()
        loss, stats = policy(batch, normaliser=10.0)
        loss.backward()
        # per-token log p keyed by (example, target position) so the two layouts line up
        keys = []
        for b in range(batch["labels"].shape[0]):
            for t in (batch["labels"][b] != IGNORE_INDEX).nonzero().flatten().tolist():
                positions = batch.get("position_ids", torch.arange(batch["labels"].shape[1]).expand_as(batch["labels"]))
                keys.append((int(batch["seq_ids"][b, t]), int(positions[b, t])))
        per_token = dict(zip(keys, stats.logp.tolist()))
        results[mode] = (loss.detach(), per_token, {n: p.grad.clone() for n, p in policy.lm.named_parameters()})
    (l0, t0, g0), (l1, t1, g1) = results["padded"], results["packed"]
    assert t0.keys() == t1.keys()
    for key in t0:
        assert t1[key] == pytest.approx(t0[key], abs=1e-5), key
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-5, msg=n)


def test_packing_refused_for_a_model_that_mixes_sequences(monkeypatch):
    lm = tiny_lm("llama", vocab=len(TOK))
    forward = lm.forward
    monkeypatch.setattr(lm, "forward", lambda *a, position_ids=None, **k: forward(*a, **k))  # ignores positions
    policy = CausalLMWithLoss(lm, build_loss("sft"), path="naive")
    with pytest.raises(ConfigError, match="data.packing cannot be used with this model"):
        policy(collate(_items(), TOK.pad_token_id, pack_length=64), normaliser=1.0)
