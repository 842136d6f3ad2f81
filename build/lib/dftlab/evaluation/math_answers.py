"""Math answers: extract the final answer of a solution, normalise it, and decide equivalence.

Normalisation follows the Qwen2.5-Math grader (`evaluation/parser.py` `strip_string` and
`evaluation/grader.py` `math_equal`), the grader of the DFT paper's tables. Equivalence is decided in
three stages, cheapest first:

1. the normalised strings are equal (case-insensitively, as in the Qwen grader);
2. both are plain numbers (decimals, fractions, mixed numbers, scientific notation) equal within a
   relative tolerance of 1e-4, integers exactly; with a percent sign on either side also x/100 and
   x*100;
3. otherwise `math_verify` decides symbolically (tuples, intervals, sets, matrices, equations, ...)
   in a worker process under a hard time limit (see `symbolic_pool`).

Stages 1-2 run here in linear time; only stage 3 can be slow, and it is the one that is bounded.
"""

from __future__ import annotations

import atexit
import math
import re
import threading
from collections.abc import Iterable

from dftlab.evaluation.symbolic_pool import SymbolicPool

REL_TOL = 1e-4

_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
_BOX = re.compile(r"\\(boxed|fbox|framebox)(?![A-Za-z])")
_BOX_OPTIONS = re.compile(r"(?:\s*\[[^\]]*\])*")  # `\framebox[width][pos]{...}`
_SPACES = re.compile(r"\s*")
_BARE_TOKEN = re.compile(r"[^\s${}]+")  # `\boxed 5`
# "the answer is X" / "the final answer is X" / "final answer: X" / "answer: X"
_STATED = re.compile(r"(?:\bthe\s+(?:final\s+)?answer\s+is\b|\b(?:final\s+)?answer\s*:)\s*:?", re.IGNORECASE)
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def _brace_pairs(s: str) -> dict[int, int]:
    """The index of the `}` closing each `{` that is closed (escaped braces do not count), in one
    pass: answers are matched against their braces in linear time, whatever their nesting."""
    pairs, opened = {}, []
    for m in _BRACE_OR_ESCAPE.finditer(s):
        if m.group() == "{":
            opened.append(m.start())
        elif m.group() == "}" and opened:
            pairs[opened.pop()] = m.start()
    return pairs


def extract_boxed(text: str) -> str | None:
    """The content of the last complete, non-empty `\\boxed{...}` (or `\\fbox`, `\\framebox`,
    `\\boxed 5`). An unclosed box (a truncated generation) and an empty one (the prompt's
    "within \\boxed{}" echoed back) are not answers."""
    found, pos, pairs = None, 0, _brace_pairs(text)
    while m := _BOX.search(text, pos):
        j = _BOX_OPTIONS.match(text, m.end()).end() if m.group(1) == "framebox" else m.end()
        j = _SPACES.match(text, j).end()
        if text.startswith("{", j):
            if j not in pairs:
                pos = m.end()
                continue
            content, pos = text[j + 1 : pairs[j]], pairs[j] + 1
        elif token := _BARE_TOKEN.match(text, j):
            content, pos = token.group(), token.end()
        else:
            pos = m.end()
            continue
        if content.strip():
            found = content.strip()
    return found


def _stated_answer(text: str) -> str | None:
    last = None
    for last in _STATED.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end() :].lstrip().split("\n", 1)[0].strip()
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(open_):
            inner = rest[len(open_) :]
            end = inner.find(close)
            return (inner[:end] if end >= 0 else inner).strip() or None
    # the answer ends where its sentence does; a decimal point is followed by a digit, not a space
    rest = re.split(r"\.(?=\s|$)", rest, maxsplit=1)[0]
    return rest.strip(" ,;") or None


def extract_answer(text: str) -> str | None:
    """The final answer of a solution, tried in this order:

    1. the last `\\boxed{...}` (see `extract_boxed`);
    2. the text after the last "the answer is" / "the final answer is" / "final answer:" /
       "answer:" (case-insensitive), to the end of its sentence or `$...$`;
    3. the last number in the text (thousands separators removed).

    None when none of these finds anything.
    """
    if text is None:
        return None
    for found in (extract_boxed(text), _stated_answer(text)):
        if found is not None:
            return found
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


# --- normalisation -----------------------------------------------------------------------------

_UNIT_WORDS = (
    "units?|square\\s+units?|sq\\s+units?|cm|mm|km|m|meters?|metres?|kilometers?|centimeters?|inch(?:es)?|feet|foot|ft"
    "|yards?|miles?|mph|km/h|degrees?|radians?|dollars?|cents?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?"
    "|weeks?|months?|years?|grams?|kg|g|pounds?|lbs?|ounces?|oz|liters?|litres?|ml|gallons?|percent"
)
# a unit word needs a space before it: `2m` may be the expression 2*m, `2 m` is two metres
_TRAILING_WORD_UNIT = re.compile(r"(?<=[\d}])\s+(?:" + _UNIT_WORDS + r")(?:\^\{?\d\}?)?\s*$", re.IGNORECASE)
_TEXT_MACROS = re.compile(r"\\(?:text|textrm|textnormal|textbf|textit|textup|mbox|mathrm|mathbf|mathit|rm)\s*\{")
_ASSIGNMENT = re.compile(r"^\s*(?:[A-Za-z](?:_\{?\w+\}?)?|\\[A-Za-z]+)\s*(?:=|\\in(?![A-Za-z]))\s*")
_UNIT_MACRO = re.compile(r"\\(?:text|textrm|textnormal|mbox|mathrm|rm)\s*\{")
_UNIT_POWER = re.compile(r"\s*(?:\^\s*\{?\d\}?)?\s*")  # `15\mbox{ cm}^2`
_BRACED_ARGS = {"frac": 2, "sqrt": 1, "binom": 2}
_ARG_MACRO = re.compile(r"\\(frac|sqrt|binom)(?![A-Za-z])")
_SQRT_INDEX = re.compile(r"\s*\[[^\]]*\]")  # `\sqrt[3]{x}`
_TOKEN = re.compile(r"\\(?:[A-Za-z]+|.)?|.", re.DOTALL)  # one argument without braces: `\pi`, `2`
_PLAIN = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_FLOAT = re.compile(rf"{_PLAIN}(?:e[+-]?\d+)?", re.IGNORECASE)
_FRAC = re.compile(rf"([+-]?)\\frac\{{({_PLAIN})\}}\{{({_PLAIN})\}}")
_SLASH = re.compile(rf"({_PLAIN})/({_PLAIN})")
_MIXED = re.compile(r"(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_SCIENTIFIC = re.compile(rf"(?:({_PLAIN})(?:\\times|\\cdot|\*))?10\^\{{?([+-]?\d+)\}}?")
_PERCENT = re.compile(r"%|\bpercent\b", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _unwrap_macros(s: str) -> str:
    """`\\text{abc}` -> `abc` (and the other text/roman macros), nested groups included."""
    pairs, drop = _brace_pairs(s), []
    for m in _TEXT_MACROS.finditer(s):
        if m.end() - 1 in pairs:
            drop += [(m.start(), m.end()), (pairs[m.end() - 1], pairs[m.end() - 1] + 1)]
    return _without(s, drop)


def _without(s: str, spans: list[tuple[int, int]]) -> str:
    out, i = [], 0
    for start, end in sorted(spans):
        out.append(s[i:start])
        i = max(i, end)
    return "".join(out) + s[i:]


def _strip_trailing_units(s: str) -> str:
    """`10\\text{ cm}^2` -> `10`: a text-style group at the very end is a unit, unless it is all
    there is (`\\text{Evelyn}`)."""
    for _ in range(3):  # `\\text{ m}\\text{/s}`; a bound keeps absurd inputs linear
        m = None
        for m in _UNIT_MACRO.finditer(s):
            pass
        if m is None or (close := _brace_pairs(s).get(m.end() - 1)) is None:
            break
        if not _UNIT_POWER.fullmatch(s, close + 1) or not s[: m.start()].strip():
            break
        s = s[: m.start()].rstrip()
    # a unit word only after a number: in `\\frac{a}{b} M^{6}` the `M` is a variable
    bare = _TRAILING_WORD_UNIT.sub("", s).rstrip()
    if bare != s and _number(re.sub(r"\s+", "", _brace_args(bare))) is not None:
        s = bare
    return s


def _brace_args(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\frac{270}7` -> `\\frac{270}{7}`, `\\sqrt2` -> `\\sqrt{2}`."""
    pairs, braces = _brace_pairs(s), []
    for m in _ARG_MACRO.finditer(s):
        j = m.end()
        if m.group(1) == "sqrt" and (opt := _SQRT_INDEX.match(s, j)):
            j = opt.end()
        for _ in range(_BRACED_ARGS[m.group(1)]):
            j = _SPACES.match(s, j).end()
            if j >= len(s) or s[j] == "}" or (s[j] == "{" and j not in pairs):
                break
            if s[j] == "{":
                j = pairs[j] + 1
                continue
            end = _TOKEN.match(s, j).end()
            braces.append((j, end))
            j = end
    if not braces:
        return s
    out, i = [], 0
    for start, end in sorted(set(braces)):
        if start >= i:  # overlaps only in malformed input such as `\\frac\\frac12`
            out += [s[i:start], "{", s[start:end], "}"]
            i = end
    return "".join(out) + s[i:]


def clean(ans: str) -> str:
    """The answer without formatting that does not change its value, still valid LaTeX (spaces
    kept: `\\pi x` must not become `\\pix`); `normalize` compacts it further."""
    s = str(ans).strip().replace("\n", " ")
    s = s.replace("\\$", "").replace("$", "")
    for delim in ("\\(", "\\)", "\\[", "\\]"):
        s = s.replace(delim, "")
    s = re.sub(r",\\!\s*", ",", s).replace("\\!", "")  # `11,\! 111` is one number
    s = re.sub(r"(?<!\\)\\(?:[,;: ]|q?quad(?![A-Za-z]))|~", " ", s)  # not the `\\\\ ` of a matrix row
    s = re.sub(r"\\(?:left|right|[Bb]igg?[lr]?|displaystyle|textstyle)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![A-Za-z])", r"\\binom", s)
    s = re.sub(r"\\neq(?![A-Za-z])", r"\\ne", s)
    s = re.sub(r"\\leq(?![A-Za-z])", r"\\le", s)
    s = re.sub(r"\\geq(?![A-Za-z])", r"\\ge", s)
    s = s.replace("bmatrix", "pmatrix")
    s = re.sub(r"\\begin\{array\}\{[^}]*\}", r"\\begin{pmatrix}", s).replace("\\end{array}", "\\end{pmatrix}")
    s = s.strip().rstrip(".").strip()
    s = _strip_trailing_units(s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|°|\\degree(?![A-Za-z])", "", s)
    s = re.sub(r"\\?%", "", s)
    s = _unwrap_macros(s)
    s = re.sub(r"\s+and\s+", ", ", s)
    s = s.replace("infinity", "\\infty").replace("∞", "\\infty").replace("\\varnothing", "\\emptyset")
    if s.count("=") <= 1 and (m := _ASSIGNMENT.match(s)) and s[m.end() :].strip():
        s = s[m.end() :]
    s = _brace_args(s).strip().rstrip(".").strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = re.sub(r"(?<![\d.])\.(?=\d)", "0.", s)
    s = re.sub(r"(\d)\.0+(?![\d])", r"\1", s)
    if m := re.fullmatch(r"(-?\d+)/(\d+)", s):
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    return s


def normalize(ans: str) -> str:
    """The comparison form of an answer: `clean`, then without spaces or escaped set braces."""
    return _compact(clean(ans))


def _compact(s: str) -> str:
    s = re.sub(r"\s+", "", s).replace("\\{", "{").replace("\\}", "}")
    s = s.replace("(-\\infty,\\infty)", "\\mathbb{R}").replace("\\emptyset", "{}")
    if len(s) > 2 and s.startswith("{") and _brace_pairs(s).get(0) == len(s) - 1:
        s = s[1:-1]
    return s.replace(",", "") if _THOUSANDS.fullmatch(s) else s  # `58 , 500` once the spaces are gone


# --- equivalence -------------------------------------------------------------------------------


def _number(s: str) -> float | None:
    """The value of a normalised plain number, None for anything else (or an overflow)."""
    value = None
    try:
        if _FLOAT.fullmatch(s):
            value = float(s)
        elif m := _FRAC.fullmatch(s) or _SLASH.fullmatch(s):
            *sign, num, den = m.groups()
            value = float(num) / float(den) * (-1 if sign and sign[0] == "-" else 1)
        elif m := _MIXED.fullmatch(s):
            whole, num, den = (int(g) for g in m.groups())
            value = whole + num / den if num < den else None
        elif m := _SCIENTIFIC.fullmatch(s):
            value = float(f"{m.group(1) or 1}e{m.group(2)}")
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if value is not None and math.isfinite(value) else None


def _equal_numbers(pred: str, gold: str, percent: bool, exact_integers: bool) -> bool | None:
    """Whether two normalised plain numbers are equal (None: not both numbers)."""
    if exact_integers and _INTEGER.fullmatch(pred) and _INTEGER.fullmatch(gold):
        try:
            a, b = int(pred), int(gold)
        except ValueError:  # beyond Python's 4300 digits
            return None
        return a == b or (percent and (a == 100 * b or 100 * a == b))
    a, b = _number(pred), _number(gold)
    if a is None or b is None:
        return None
    targets = (b, b / 100, b * 100) if percent else (b,)
    return any(math.isclose(a, t, rel_tol=REL_TOL) for t in targets)


def _split_top(s: str) -> list[str]:
    """`a,(b,c),d` -> [`a`, `(b,c)`, `d`]: commas outside any bracket."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    return parts + [s[start:]]


def _outer(s: str) -> tuple[str, str, str]:
    """(`(`, `1,2`, `)`) for `(1,2)`; no brackets for `1,2` or `(1)+(2)`."""
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        depth = 0
        for i, c in enumerate(s):
            depth += c in "([{"
            depth -= c in ")]}"
            if depth == 0 and i < len(s) - 1:
                return "", s, ""
        return s[0], s[1:-1], s[-1]
    return "", s, ""


def _same(pred: str, gold: str, percent: bool, exact_integers: bool) -> bool | None:
    """Stages 1-2 on one pair of normalised strings; None: undecided."""
    if pred.lower() == gold.lower():
        return True
    return _equal_numbers(pred, gold, percent, exact_integers)


def _fast(pred: str, gold: str, percent: bool, exact_integers: bool) -> bool | None:
    """Stages 1-2 on normalised answers, also element by element for lists and tuples (one level,
    so that the work stays linear): True/False when they decide, None when only a symbolic
    comparison can."""
    if (same := _same(pred, gold, percent, exact_integers)) is not None:
        return same
    (po, pi, pc), (go, gi, gc) = _outer(pred), _outer(gold)
    # the Qwen grader accepts `(C)` for `C` and `(1,2)` for `1,2`: parentheses on one side only;
    # other brackets (`(3,4]` against `[3,4]`, `[1,2]` against `1,2`) are for the symbolic stage
    if (po, pc) != (go, gc) and {po + pc, go + gc} != {"()", ""}:
        return None
    parts_p, parts_g = _split_top(pi), _split_top(gi)
    if len(parts_p) != len(parts_g):
        return None
    if len(parts_p) == 1:
        return _same(pi, gi, percent, exact_integers) if (pi, gi) != (pred, gold) else None
    if all(_same(p, g, percent, exact_integers) for p, g in zip(parts_p, parts_g)):
        return True
    return None  # unordered lists and symbolic elements: symbolic


_POOL: SymbolicPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> SymbolicPool:
    """The process-wide worker pool of `is_equivalent` and `grade_many` (started on first use);
    its `timeouts` counts the items that ran out of time."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = SymbolicPool()
            atexit.register(_POOL.close)
        return _POOL


def grade_many(
    pairs: Iterable[tuple[str | None, str | None]],
    timeout: float = 5.0,
    *,
    lenient: bool = False,
    pool: SymbolicPool | None = None,
) -> list[bool]:
    """`is_equivalent` for many (prediction, gold) pairs: the cheap stages here, the rest in
    parallel worker processes, each item under `timeout` seconds (`pool.timeouts` counts those
    that ran out of it)."""
    verdicts: list[bool] = []
    symbolic: list[tuple[int, tuple[str, str]]] = []
    for i, (pred, gold) in enumerate(pairs):
        if pred is None or gold is None or not str(pred).strip() or not str(gold).strip():
            verdicts.append(False)
            continue
        percent = lenient or bool(_PERCENT.search(str(pred)) or _PERCENT.search(str(gold)))
        pred_c, gold_c = clean(pred), clean(gold)
        pred_n, gold_n = _compact(pred_c), _compact(gold_c)
        decided = _fast(pred_n, gold_n, percent, exact_integers=not lenient) if pred_n and gold_n else False
        verdicts.append(bool(decided))
        if decided is None:
            symbolic.append((i, (gold_c, pred_c)))
    if symbolic:
        results = (pool or shared_pool()).run([job for _, job in symbolic], timeout)
        for (i, _), ok in zip(symbolic, results):
            verdicts[i] = ok
    return verdicts


def is_equivalent(pred: str | None, gold: str | None, timeout: float = 5.0, *, lenient: bool = False) -> bool:
    """Whether a predicted answer equals the gold one (see the module docstring), deciding within
    `timeout` seconds; an item that runs out of time is not equivalent.

    `lenient=True` adds the two leniencies of the Qwen2.5-Math grader on numbers: x/100 and x*100
    match x without any percent sign (`1` for `100`), and integers match within the relative
    tolerance (`10081` for `10080`).
    """
    return grade_many([(pred, gold)], timeout, lenient=lenient)[0]
