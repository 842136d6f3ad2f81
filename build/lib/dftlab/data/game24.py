"""The embedded task: the 24-card game with its face-card rule stated in the prompt.

A problem is a rule (what J, Q and K count as), a multiset of cards and a target. The prompt states
all three; the response is a step-by-step solution that combines two numbers per step, ends with
the target, and uses every card value exactly once:

    prompt    J=8,Q=9,K=10|A,7,K,3|24:
    response  7*3=21;10-8=2;21+2=23 ...

Intermediate results are non-negative integers (the verifier itself is exact over fractions).
Everything is deterministic from a seed, and every problem lands in one split by a hash of its
identity, so splits are disjoint by construction.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

RANKS = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
Rule = tuple[int, int, int]  # values of J, Q, K

_STEP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")


def rule_text(rule: Rule) -> str:
    return "J={},Q={},K={}".format(*rule)


def parse_rule(text: str) -> Rule:
    """'J=8,Q=9,K=10' -> (8, 9, 10)."""
    m = re.fullmatch(r"J=(\d+),Q=(\d+),K=(\d+)", text.strip())
    if not m:
        raise ValueError(f"a rule is written 'J=<int>,Q=<int>,K=<int>', got {text!r}")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


def card_value(card: str, rule: Rule) -> int:
    if card == "A":
        return 1
    if card in ("J", "Q", "K"):
        return rule["JQK".index(card)]
    return int(card)


@dataclass(frozen=True)
class Problem:
    rule: Rule
    cards: tuple[str, ...]  # in prompt order
    target: int
    solution: str  # one reference solution, steps joined by ';'

    @property
    def prompt(self) -> str:
        return f"{rule_text(self.rule)}|{','.join(self.cards)}|{self.target}:"

    @property
    def values(self) -> list[int]:
        return [card_value(c, self.rule) for c in self.cards]


def parse_prompt(prompt: str) -> tuple[Rule, tuple[str, ...], int]:
    m = re.fullmatch(r"(J=\d+,Q=\d+,K=\d+)\|([0-9AJQK,]+)\|(\d+):", prompt.strip())
    if not m:
        raise ValueError(f"not a game prompt: {prompt!r}")
    cards = tuple(m.group(2).split(","))
    if any(c not in RANKS for c in cards):
        raise ValueError(f"unknown card in {prompt!r}")
    return parse_rule(m.group(1)), cards, int(m.group(3))


# --- solving ---------------------------------------------------------------------------------


def _combine(a: int, b: int) -> list[tuple[int, str, int, int]]:
    """Legal steps on two numbers, written with the larger operand first: (x, op, y, result)."""
    hi, lo = max(a, b), min(a, b)
    steps = [(hi, "+", lo, hi + lo), (hi, "*", lo, hi * lo), (hi, "-", lo, hi - lo)]
    if lo and hi % lo == 0:
        steps.append((hi, "/", lo, hi // lo))
    return steps


def _successors(nums: tuple[int, ...]):
    for i, j in itertools.combinations(range(len(nums)), 2):
        rest = [n for k, n in enumerate(nums) if k not in (i, j)]
        for step in _combine(nums[i], nums[j]):
            yield step, tuple(sorted(rest + [step[3]]))


@lru_cache(maxsize=None)
def reachable(nums: tuple[int, ...]) -> frozenset[int]:
    """Every value reachable by combining all of `nums` (a sorted tuple)."""
    if len(nums) == 1:
        return frozenset(nums)
    out: set[int] = set()
    for _, rest in _successors(nums):
        out |= reachable(rest)
    return frozenset(out)


def solvable(values: list[int], target: int) -> bool:
    return target in reachable(tuple(sorted(values)))


def sample_solution(values: list[int], target: int, rng: random.Random) -> str:
    """A random solution: at each step, a uniformly chosen move that keeps the target reachable."""
    nums, steps = tuple(sorted(values)), []
    while len(nums) > 1:
        moves = [(s, rest) for s, rest in _successors(nums) if target in reachable(rest)]
        (x, op, y, r), nums = rng.choice(sorted(set(moves)))
        steps.append(f"{x}{op}{y}={r}")
    return ";".join(steps)


# --- verifying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    correct: bool  # a valid derivation that uses every card once and ends at the target
    well_formed: bool  # parses, and every step is legal under the stated rule


_OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else None,
}


def verify(prompt: str, response: str) -> Verdict:
    """Replay the steps with exact fractions over the card values of the stated rule."""
    rule, cards, target = parse_prompt(prompt)
    pool = [Fraction(card_value(c, rule)) for c in cards]
    parts = response.strip().split(";")
    for part in parts:
        m = _STEP.fullmatch(part)
        if not m:
            return Verdict(False, False)
        a, op, b, written = Fraction(m[1]), m[2], Fraction(m[3]), Fraction(m[4])
        for operand in (a, b):
            if operand not in pool:
                return Verdict(False, False)
            pool.remove(operand)
        result = _OPS[op](a, b)
        if result is None or result != written:
            return Verdict(False, False)
        pool.append(result)
    return Verdict(len(pool) == 1 and pool[0] == target, True)


# --- splits ----------------------------------------------------------------------------------


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") % 100


def problems(
    rules: list[Rule],
    n_cards: int,
    target: int,
    buckets: tuple[int, int],
    n: int | None,
    seed: int,
) -> list[Problem]:
    """Up to `n` distinct solvable problems whose identity hashes into `buckets` = [lo, hi).

    A problem's identity is (rule, card multiset, target); its card order and reference solution
    come from an RNG seeded by that identity and `seed`, so they do not depend on what else is drawn.
    """
    candidates = [
        (rule, hand)
        for rule in rules
        for hand in itertools.combinations_with_replacement(RANKS, n_cards)
        if max(hand.count(r) for r in hand) <= 4  # a deck has four cards of each rank
    ]
    random.Random(f"order:{seed}").shuffle(candidates)
    out = []
    for rule, hand in candidates:  # lazily: solving is the expensive part
        if n is not None and len(out) >= n:
            break
        key = f"{rule_text(rule)}|{','.join(hand)}|{target}"
        values = [card_value(c, rule) for c in hand]
        if not buckets[0] <= _bucket(key) < buckets[1] or not solvable(values, target):
            continue
        rng = random.Random(f"{key}:{seed}")
        cards = list(hand)
        rng.shuffle(cards)
        out.append(Problem(rule, tuple(cards), target, sample_solution(values, target, rng)))
    return out
