"""Tokenisation, masks from lengths, collation, and the per-step sampler."""


import pytest

from dftlab.data.collate import collate
from dftlab.data.encode import encode
from dftlab.data.sampler import EMPTY, StepBatchSampler
from dftlab.data.tokenizer import char_tokenizer
from dftlab.losses import IGNORE_INDEX


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def test_char_tokenizer_round_trip(tok, tmp_path):
    from transformers import AutoTokenizer

    text = "J=8,Q=9,K=10|A,7,K,3|24:10*3=30;7-1=6;30-6=24"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert (again.pad_token_id, again.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)


def test_targets_are_response_and_eos_only(tok):
    e = encode(tok, "A|24:", "1+2=3", max_length=64)
    batch = collate([(0, e, e.n_targets), (1, encode(tok, "AB|24:", "9", 64), 2)], pad_id=tok.pad_token_id)
    ids, labels = batch["input_ids"], batch["labels"]
    # row 0: 5 prompt chars, 5 response chars, EOS; the last position has nothing to predict
    expected = [IGNORE_INDEX] * 4 + ids[0, 5:11].tolist() + [IGNORE_INDEX] * (ids.shape[1] - 10)
    assert labels[0].tolist() == expected
    assert tok.decode(labels[0][labels[0] != IGNORE_INDEX]) == "1+2=3" + tok.eos_token
    assert e.n_targets == 6 == int((labels[0] != IGNORE_INDEX).sum())
    # padding (row 1 is shorter... row 0 is, here) contributes no target
    assert batch["attention_mask"].sum(1).tolist() == [11, 8]


def test_eos_is_a_target_when_pad_equals_eos(tok):
    tok = char_tokenizer()
    tok.pad_token = tok.eos_token
    short = encode(tok, "A|24:", "1", 64)
    long = encode(tok, "A|24:", "1+2=3", 64)
    batch = collate([(0, short, 0), (1, long, 0)], pad_id=tok.pad_token_id)
    row = batch["labels"][0]
    targets = row[row != IGNORE_INDEX].tolist()
    assert targets == [tok.convert_tokens_to_ids("1"), tok.eos_token_id]  # EOS once; the pads after it: none


def test_truncation_is_counted(tok):
    assert encode(tok, "A|24:", "1+2=3", max_length=5) is None  # nothing of the response survives
    e = encode(tok, "A|24:", "1+2=3", max_length=8)
    assert e.truncated and e.n_targets == 3


def _sampler(counts, global_batch, micro, world, rank, shuffle=True):
    return StepBatchSampler(counts, global_batch, micro, rank, world, shuffle, seed=1)


@pytest.mark.parametrize(
    "n, global_batch, micro, world", [(10, 4, 1, 2), (10, 4, 2, 1), (13, 8, 2, 2), (3, 4, 1, 2), (9, 6, 3, 2)]
)
def test_sampler_shards_steps_exactly(n, global_batch, micro, world):
    counts = [i + 1 for i in range(n)]  # different numbers of target tokens per example
    per_rank = [list(_sampler(counts, global_batch, micro, world, r)) for r in range(world)]
    assert len({len(batches) for batches in per_rank}) == 1  # lockstep
    assert all(len(b) == len(_sampler(counts, global_batch, micro, world, r)) for r, b in enumerate(per_rank))
    seen = [i for batches in per_rank for b in batches for i, _ in b if i != EMPTY]
    assert sorted(seen) == list(range(n))  # no padding, no repeats
    steps = _sampler(counts, global_batch, micro, world, 0).steps(0)
    # every micro-batch carries its whole step's token count, over all ranks
    for r, batches in enumerate(per_rank):
        for b in batches:
            rows = [i for i, _ in b if i != EMPTY]
            step = next(s for s in steps if not rows or rows[0] in s)
            assert all(t == sum(counts[i] for i in step) for _, t in b) or not rows
            assert 1 <= len(b) <= micro


def test_sampler_epochs_differ_and_resume():
    s = _sampler(list(range(1, 21)), 4, 2, 1, 0)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    assert list(s) != e0
    e1 = list(s)
    s.set_epoch(0)
    s.resume(1, 2)  # the checkpoint's epoch, whatever the epoch set (a trainer not restored yet)
    assert list(s) == e1[2:]
    s.set_epoch(0)
    s.resume(0, 3)
    assert list(s) == e0[3:]
    assert list(s) == e0  # the offset applies once
    s.resume(0, len(e0))  # saved at the epoch's last step: the next epoch, from its start
    assert list(s) == e1


def test_empty_micro_batch_has_no_targets(tok):
    batch = collate([(EMPTY, None, 17)], pad_id=tok.pad_token_id)
    assert batch["input_ids"].shape == (1, 1)
    assert (batch["labels"] == IGNORE_INDEX).all() and batch["step_tokens"] == 17
    assert batch["row_ids"].numel() == 0


def test_sampler_refuses_impossible_split():
    with pytest.raises(ValueError, match="does not split"):
        StepBatchSampler([1] * 10, 6, 4, 0, 1)
