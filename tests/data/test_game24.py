"""The embedded task: every generated solution verifies, corrupted ones do not, splits are disjoint."""

import random

import pytest

from dftlab.data import game24
from dftlab.data.game24_task import Game24Task
from dftlab.errors import ConfigError

RULES = ["J=10,Q=10,K=10", "J=8,Q=9,K=10", "J=1,Q=2,K=3"]


@pytest.fixture(scope="module")
def task():
    return Game24Task(
        RULES, {"all5": "J=5,Q=5,K=5", "faces": [11, 12, 13]}, n_train=300, n_val=50, n_test=60, ood_n_cards=5
    )


def test_every_generated_solution_verifies(task):
    splits = {"train": task.train(), "val": task.val(), **task.test_splits}
    assert set(splits) == {"train", "val", "test_id", "test_ood_rule_all5", "test_ood_rule_faces", "test_ood_cards"}
    for name, rows in splits.items():
        assert rows, name
        for row in rows:
            assert task.score(row, row["response"]) == {"correct": True, "well_formed": True}, row


def test_five_card_solutions_have_four_steps(task):
    for row in task.test_splits["test_ood_cards"]:
        assert len(row["prompt"].split("|")[1].split(",")) == 5
        assert row["response"].count(";") == 3


def _identity(prompt):
    rule, cards, target = game24.parse_prompt(prompt)
    return rule, tuple(sorted(cards)), target


def test_splits_are_disjoint_and_base_corpus_is_separate(task):
    base = Game24Task(RULES, n_train=None, corpus="base").train()
    parts = {
        "base": base,
        "train": Game24Task(RULES, n_train=None).train(),
        "val": task.val(),
        **task.test_splits,
    }
    keys = {name: {_identity(r["prompt"]) for r in rows} for name, rows in parts.items()}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not keys[a] & keys[b], (a, b)


def test_ood_rules_never_in_training(task):
    train_rules = {_identity(r["prompt"])[0] for r in task.train()}
    for name in ("test_ood_rule_all5", "test_ood_rule_faces"):
        assert {_identity(r["prompt"])[0] for r in task.test_splits[name]}.isdisjoint(train_rules)
    with pytest.raises(ConfigError, match="also a training rule"):
        Game24Task(RULES, {"x": RULES[0]})


def test_deterministic_from_seed():
    a = Game24Task(RULES, n_train=50, seed=3).train()
    b = Game24Task(RULES, n_train=50, seed=3).train()
    c = Game24Task(RULES, n_train=50, seed=4).train()
    assert a == b and a != c


PROMPT = "J=8,Q=9,K=10|A,7,K,3|24:"  # values 1, 7, 10, 3


@pytest.mark.parametrize(
    "response, correct, well_formed",
    [
        ("10+7=17;17+3=20;20+1=21", False, True),  # legal but misses the target
        ("7*3=21;21+10=31;31-1=30", False, True),
        ("10-7=3;3*1=3;3*3=9", False, True),
        ("7+1=8;10-8=2;3*8=24", False, False),  # reuses the 8
        ("13+7=20;20+3=23;23+1=24", False, False),  # K read as 13, not the stated 10
        ("7*3=21;10-1=9;21+9=30", False, True),
        ("10*3=30;7-1=6;30-6=24", True, True),
        ("10*3=30;7-1=6;30-6=24;", False, False),  # trailing separator
        ("10*3=31;7-1=6;31-6=25", False, False),  # wrong arithmetic
        ("10*3=30;30-6=24", False, False),  # 6 was never made
        ("10*3=30;7-1=6", False, True),  # stops early
        ("", False, False),
        ("10 * 3 = 30", False, False),
    ],
)
def test_verifier(response, correct, well_formed):
    v = game24.verify(PROMPT, response)
    assert (v.correct, v.well_formed) == (correct, well_formed)


def test_verifier_exact_with_fractions():
    # 24 = 8 / (3 - 8/3) needs a fraction; written results must be exact integers, so 8/3 is refused
    assert game24.verify("J=8,Q=9,K=10|8,3,8,3|24:", "8/3=2;3-2=1;8/1=8").correct is False


def test_corrupted_solutions_are_rejected(task):
    rng = random.Random(0)
    rows = task.test_splits["test_id"]
    for row in rows:
        steps = row["response"].split(";")
        i = rng.randrange(len(steps))
        a, rest = steps[i].split("=")
        corrupted = steps[:i] + [f"{a}={int(rest) + rng.choice([-2, -1, 1, 2])}"] + steps[i + 1 :]
        assert not game24.verify(row["prompt"], ";".join(corrupted)).correct
        assert not game24.verify(row["prompt"], ";".join(steps[:-1])).correct


def test_bad_rules_are_refused():
    with pytest.raises(ConfigError, match="J=<int>"):
        Game24Task(["J=1,Q=2"])
    with pytest.raises(ConfigError, match="train_rules is empty"):
        Game24Task([])
