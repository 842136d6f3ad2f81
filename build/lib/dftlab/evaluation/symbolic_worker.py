"""The worker process of `symbolic_pool`: reads `[gold, pred]` JSON lines on stdin and answers `1`
(equivalent) or `0` on its own channel, one line each; `1` first, once it is ready.

Its time limit is enforced from outside (the pool kills it), so math_verify's own signal-based
timeouts are switched off here.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import sys

# a runaway evaluation (`2^{2^{40}}`) fails with MemoryError before it can starve the machine
MEMORY_LIMIT_BYTES = 4 << 30
WARM_UP = [
    ("\\cot x", "\\frac{\\cos x}{\\sin x}"),
    ("(1, \\frac{\\pi}{2})", "(\\frac{\\pi}{2}, 1)"),
    ("(-\\infty, 2] \\cup (3, 4)", "[1, 2)"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}"),
    ("x + y = 1", "y = 1 - x"),
]


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> tuple:
    # cached: a gold answer comes back with every sample of its problem (sympy objects are immutable)
    from math_verify import parse

    return tuple(parse(f"${answer}$", parsing_timeout=None))


def symbolic_equal(gold: str, pred: str) -> bool:
    """math_verify's verdict, gold first (its `verify` is not symmetric: the gold answer decides
    how the prediction is read, e.g. a set against a tuple)."""
    from math_verify import verify

    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    return bool(gold_parsed and pred_parsed and verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))


def _limit_memory() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(hard, MEMORY_LIMIT_BYTES)
    if soft == resource.RLIM_INFINITY or soft > limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main() -> None:
    # the protocol gets fd 1 to itself; anything a library prints goes to stderr instead
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    logging.disable(logging.WARNING)  # math_verify warns on every unparsable answer
    _limit_memory()
    try:
        import math_verify  # noqa: F401
    except ImportError as err:
        sys.exit(f"{err}: the math answer checker needs `pip install 'dftlab[math]'`")
    # sympy imports much of itself on first use (a second on the first comparison): pay it here,
    # before the first item's clock starts
    for gold, pred in WARM_UP:
        symbolic_equal(gold, pred)
    channel.write("1\n")
    for line in sys.stdin:
        try:
            ok = symbolic_equal(*json.loads(line))
        except Exception:  # noqa: BLE001  (an answer sympy cannot handle: MemoryError, RecursionError, ...)
            ok = False
        channel.write("1\n" if ok else "0\n")


if __name__ == "__main__":
    main()
