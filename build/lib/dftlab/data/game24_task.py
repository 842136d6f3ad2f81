"""The 24-card game as a task: training data, validation data, test splits and a verifier.

Problems are assigned to parts of the instance space by a hash of their identity (see
`game24.problems`), so every split is disjoint from every other, and the base model's corpus is
disjoint from the fine-tuning data:

    base corpus [0, 50)   fine-tune train [50, 75)   val [75, 80)   test_id [80, 100)

Out-of-distribution splits use what training never shows: rules stated in the prompt but never
trained on (`test_ood_rule_<name>`, one split per rule), and five cards instead of four
(`test_ood_cards`, training rules).
"""

from __future__ import annotations

from functools import cached_property

from dftlab.data import game24
from dftlab.errors import ConfigError
from dftlab.tasks import EvalTask, TrainTask

BUCKETS = {"base": (0, 50), "train": (50, 75), "val": (75, 80), "test_id": (80, 100)}


def _rule(value) -> game24.Rule:
    if isinstance(value, str):
        try:
            return game24.parse_rule(value)
        except ValueError as err:
            raise ConfigError(f"data.task: {err}") from None
    rule = tuple(int(v) for v in value)
    if len(rule) != 3 or min(rule) < 1:
        raise ConfigError(f"a rule gives positive values for J, Q and K, got {value!r}")
    return rule  # type: ignore[return-value]


class Game24Task(TrainTask, EvalTask):
    """`corpus: finetune` trains on the fine-tuning part; `corpus: base` on the base corpus."""

    name = "game24"
    chat_template = False

    def __init__(
        self,
        train_rules: list,
        ood_rules: dict[str, object] | None = None,
        target: int = 24,
        n_cards: int = 4,
        ood_n_cards: int | None = 5,
        n_train: int | None = 4000,
        n_val: int = 256,
        n_test: int = 400,
        corpus: str = "finetune",
        seed: int = 0,
    ):
        if corpus not in ("finetune", "base"):
            raise ConfigError(f"data.task.corpus={corpus!r}: choose finetune or base")
        self.train_rules = [_rule(r) for r in train_rules]
        if not self.train_rules:
            raise ConfigError("data.task.train_rules is empty: give at least one rule, e.g. 'J=10,Q=10,K=10'")
        self.ood_rules = {name: _rule(r) for name, r in (ood_rules or {}).items()}
        for name, rule in self.ood_rules.items():
            if rule in self.train_rules:
                raise ConfigError(f"data.task.ood_rules.{name}={rule} is also a training rule")
        self.target, self.n_cards, self.ood_n_cards = target, n_cards, ood_n_cards
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.corpus, self.seed = corpus, seed

    def _problems(self, part: str, n: int | None, rules=None, n_cards=None) -> list[game24.Problem]:
        return game24.problems(
            rules or self.train_rules, n_cards or self.n_cards, self.target, BUCKETS[part], n, self.seed
        )

    @staticmethod
    def _rows(problems: list[game24.Problem]) -> list[dict[str, str]]:
        return [{"prompt": p.prompt, "response": p.solution} for p in problems]

    def train(self) -> list[dict[str, str]]:
        part = "base" if self.corpus == "base" else "train"
        return self._rows(self._problems(part, self.n_train))

    def val(self) -> list[dict[str, str]]:
        return self._rows(self._problems("val", self.n_val))

    @cached_property
    def test_splits(self) -> dict[str, list[dict[str, str]]]:
        splits = {"test_id": self._rows(self._problems("test_id", self.n_test))}
        for name, rule in self.ood_rules.items():
            splits[f"test_ood_rule_{name}"] = self._rows(
                game24.problems([rule], self.n_cards, self.target, (0, 100), self.n_test, self.seed)
            )
        if self.ood_n_cards:
            splits["test_ood_cards"] = self._rows(
                game24.problems(self.train_rules, self.ood_n_cards, self.target, (0, 100), self.n_test, self.seed)
            )
        return splits

    @property
    def eval_task(self):
        """What the end-of-run evaluation runs on: the game's own test splits."""
        return self

    def score(self, row: dict, completion: str) -> dict[str, bool]:
        """`correct`: a valid solution; `well_formed`: parses and every step is legal under the rule."""
        verdict = game24.verify(row["prompt"], completion)
        return {"correct": verdict.correct, "well_formed": verdict.well_formed}

    def max_new_tokens(self) -> int:
        # the longest solution of `ood_n_cards` cards, with room for a wrong but long answer
        return 12 * max(self.n_cards, self.ood_n_cards or 0) + 8
