"""The answer checker on the real benchmark sets: their own solutions grade correct, and gold answers
rewritten in another notation grade as the Qwen2.5-Math grader grades them. Skipped without
DFTLAB_BENCHMARKS_DIR."""

import json
import re
from decimal import Decimal
from fractions import Fraction

import pytest

from dftlab.evaluation.math_answers import extract_answer, grade_many, shared_pool


def _rows(folder, name: str) -> list[dict]:
    with open(folder / name / "test.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def math500(benchmarks_dir):
    return _rows(benchmarks_dir, "math_oai")


def test_math500_solutions_grade_equal_to_their_answers(math500):
    pairs = [(extract_answer(r["solution"]), r["answer"]) for r in math500]
    verdicts = grade_many(pairs)
    disagree = [p for p, ok in zip(pairs, verdicts) if not ok]
    assert len(verdicts) == 500
    assert sum(verdicts) / len(verdicts) >= 0.99, disagree


def test_aime24_boxed_solutions_grade_equal_to_their_answers(benchmarks_dir):
    rows = [r for r in _rows(benchmarks_dir, "aime24") if re.search(r"\\(?:boxed|fbox|framebox)", r["solution"])]
    assert len(rows) == 30
    assert grade_many([(extract_answer(r["solution"]), r["answer"]) for r in rows]) == [True] * len(rows)


def _decimal(num: int, den: int) -> str | None:
    """The exact decimal of num/den when it terminates."""
    rest = Fraction(num, den).denominator
    for p in (2, 5):
        while rest % p == 0:
            rest //= p
    return str(Decimal(num) / Decimal(den)) if rest == 1 else None


def _rewrites(gold: str) -> list[tuple[str, bool]]:
    """(prediction, whether the Qwen2.5-Math grader counts it equal to `gold`) for notations
    of the same value, and for nearby wrong values."""
    g = gold.strip().strip("$")
    cases = []
    if re.fullmatch(r"-?\d+", g):
        n = int(g)
        cases += [(f"x = {g}", True), (f"{g}.0", True), (f"{g}\\%", True), (f"\\${g}", True)]
        cases += [(f"{g} \\text{{ units}}", True), (f"{g}^\\circ", True), (str(10 * n + 1), False)]
        cases.append((str(n + 1), False))  # integers are exact (the Qwen grader: n+1 for n >= 10^4)
        if abs(n) >= 1000:
            cases.append((f"{n:,}", True))
    elif m := re.fullmatch(r"(-?)\\[dt]?frac\s*\{?(\d+)\}?\s*\{?(\d+)\}?", g):
        sign, num, den = m.group(1), int(m.group(2)), int(m.group(3))
        cases += [(f"{sign}\\dfrac{{{num}}}{{{den}}}", True), (f"{sign}{num}/{den}", True)]
        if num < 10 and den < 10:
            cases.append((f"{sign}\\frac{num}{den}", True))
        if num != den:
            cases.append((f"{sign}\\frac{{{den}}}{{{num}}}", False))
        if (dec := _decimal(num, den)) is not None:
            cases.append((sign + dec, True))
        rounded = round(num / den, 2)
        if abs(rounded - num / den) > 1e-4 * num / den:
            cases.append((f"{sign}{rounded}", False))
    elif m := re.fullmatch(r"(\d+)\^\{?\\circ\}?", g):
        cases += [(m.group(1), True), (f"{m.group(1)}^{{\\circ}}", True), (f"{m.group(1)} degrees", True)]
        cases.append((str(int(m.group(1)) + 1), False))
    elif re.fullmatch(r"-?\d*\.\d+", g):
        cases += [(g + "0", True), (f"{g}\\text{{ cm}}", True), (str(Decimal(g) * 10), False)]
    if re.fullmatch(r"\((?:[^(),]+,)+[^(),]+\)", g):  # a tuple or an open interval
        inner = g[1:-1].split(",")
        cases.append((f"\\left( {' , '.join(e.strip() for e in inner)} \\right)", True))
        if [e.strip() for e in inner[::-1]] != [e.strip() for e in inner]:
            cases.append(("(" + ",".join(inner[::-1]) + ")", False))
    if re.fullmatch(r"[(\[][^,]+,[^,]+[)\]]", g) and (g[0], g[-1]) != ("(", ")") and "infty" not in g.split(",")[0]:
        # a half-open or closed interval, with a finite left end (`[-\infty` is `(-\infty`)
        swapped = {"(": "[", "[": "("}[g[0]] + g[1:]
        cases.append((swapped, False))
    if "\\!" not in g and re.search(r"[+,=]|\\(?:frac|sqrt)", g):
        spaced = re.sub(r"\s*([+,=])\s*", r" \1 ", g).replace("\\frac", "\\frac ").replace("\\sqrt", "\\, \\sqrt")
        cases.append((spaced, True))
    return cases


# Real gold answers in a notation the generic rewrites above do not produce (each gold is checked
# to be in its set). The expected verdicts are the Qwen2.5-Math grader's, except where marked.
HAND_WRITTEN = {
    "math_oai": [
        ("6 - 5i", "-5i + 6", True),
        ("x^3+3x-6", "-6 + 3x + x^3", True),
        ("p - q", "-q+p", True),
        ("2k+2", "2(k+1)", True),
        ("(a+5)(b+2)", "ab + 2a + 5b + 10", True),
        ("\\frac{11+9a}{20}", "\\frac{9a+11}{20}", True),
        ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}", True),
        ("3 \\pm 2 \\sqrt{2}", "3-2\\sqrt2, 3+2\\sqrt2", True),
        ("\\{1\\pm\\sqrt{5},-2\\}", "-2, 1-\\sqrt{5}, 1+\\sqrt{5}", True),
        ("1,-2", "-2, 1", True),
        ("3, 5, 7", "3,5,7", True),
        ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", "\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}", True),
        (
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
            "\\begin{bmatrix} -1 & 0 \\\\ 0 & -1 \\end{bmatrix}",
            True,
        ),
        (
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
            "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}",
            False,
        ),
        ("5x - 7y + 11z + 4 = 0", "-5x + 7y - 11z - 4 = 0", True),
        ("y = 2x + 3", "2x+3", True),
        ("y = -2x", "y=-2x", True),
        ("x \\in [-2,7]", "[-2, 7]", True),
        ("(3,4]", "(3,4)", False),
        ("(3,4]", "[3,4]", False),  # the Qwen grader strips the brackets and says equal
        ("(-\\infty, 0]", "(-\\infty,0)", False),
        ("(2,\\infty)", "\\left(2, \\infty\\right)", True),
        ("(0,9) \\cup (9,36)", "(0,36)", False),
        ("(-\\infty, 2) \\cup (3, \\infty)", "(-\\infty,2)\\cup(3,\\infty)", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(\\frac{\\pi}{2}, 3)", False),
        ("\\text{(C)}", "C", True),
        ("\\text{(C)}", "(C)", True),
        ("\\text{(C)}", "\\text{(B)}", False),
        ("\\text{Evelyn}", "Evelyn", True),
        ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}", True),
        ("864 \\mbox{ inches}^2", "864", True),
        ("15\\mbox{ cm}^2", "15 \\text{ cm}^2", True),
        ("5.4 \\text{ cents}", "5.4", True),
        ("\\$32,\\!348", "32348", True),
        ("\\$32,\\!348", "\\$32,348", True),
        ("11,\\! 111,\\! 111,\\! 100", "11111111100", True),
        ("10,\\!080", "10080", True),
        ("1\\frac{4}{5}", "\\frac{9}{5}", True),  # a mixed number; the Qwen grader reads 1*4/5
        ("1\\frac{4}{5}", "1.8", True),  # ditto
        ("137 \\frac{1}{2}", "137.5", True),  # ditto
        ("\\cot x", "\\frac{\\cos x}{\\sin x}", True),
        ("3\\sqrt{13}", "\\sqrt{117}", True),
        ("3\\sqrt{13}", "\\sqrt{39}", False),
        ("\\frac{3\\sqrt{3}}{4}", "\\frac{3}{4}\\sqrt{3}", True),
        ("288 \\pi", "288\\pi", True),
        ("\\frac{20000}{\\pi}", "20000/\\pi", True),
        ("90^\\circ", "90", True),
        (".0000672", "6.72 \\times 10^{-5}", True),
        ("\\dfrac{33}{100}", "33\\%", True),  # the Qwen grader reads no fraction as a number: unequal
    ],
    "olympiadbench": [
        ("$(1,8,19), (2,7,13), (4,5,7)$", "(1,8,19),(2,7,13),(4,5,7)", True),
        ("$f(x)=2 x$", "f(x) = 2x", True),
        ("$k=1$", "1", True),
        ("$\\frac{1}{2 n+2}$", "\\frac{1}{2(n+1)}", True),
        ("62.5%", "62.5", True),
        ("62.5%", "0.625", True),
        ("$8 \\%$", "8", True),
        ("$8 \\%$", "0.08", True),
        ("$8 \\%$", "0.8", False),
        ("$45^{\\circ}$", "45^\\circ", True),
        ("$2^{1009}$", "2^{1009}", True),
        ("$2^{1009}$", "2^{1010}", False),
    ],
    "minerva_math": [
        ("4.5e33", "4.5 \\times 10^{33}", True),
        ("4.5e33", "4.5\\cdot10^{33}", True),
        ("4.5e33", "4.6e33", False),
        ("\\frac{37}{4} m", "9.25", True),
    ],
    "aime24": [("025", "25", True), ("025", "52", False)],
    "amc23": [(27.0, "27", True), (27.0, "27.5", False)],
}


def _golds(folder) -> dict[str, set[str]]:
    return {
        "math_oai": {r["answer"] for r in _rows(folder, "math_oai")},
        "olympiadbench": {r["final_answer"][0] for r in _rows(folder, "olympiadbench")},
        "minerva_math": {extract_answer(r["solution"]) for r in _rows(folder, "minerva_math")},
        "aime24": {r["answer"] for r in _rows(folder, "aime24")},
        "amc23": {r["answer"] for r in _rows(folder, "amc23")},
    }


def test_rewritten_gold_answers_grade_as_the_qwen_grader(benchmarks_dir):
    golds = _golds(benchmarks_dir)
    cases = []
    for name in ("math_oai", "olympiadbench", "minerva_math"):
        cases += [(pred, gold, ok) for gold in sorted(golds[name]) for pred, ok in _rewrites(gold)]
    for name, hand in HAND_WRITTEN.items():
        for gold, pred, ok in hand:
            assert gold in golds[name], (name, gold)
            cases.append((pred, str(gold), ok))
    timeouts = shared_pool().timeouts
    verdicts = grade_many([(pred, gold) for pred, gold, _ in cases])
    wrong = [(pred, gold, ok) for (pred, gold, ok), got in zip(cases, verdicts) if got != ok]
    assert not wrong, f"{len(wrong)} of {len(cases)} cases graded wrongly: {wrong[:20]}"
    assert len(cases) >= 1000 and sum(not ok for *_, ok in cases) >= 200
    assert shared_pool().timeouts == timeouts


def test_percent_leniency_of_the_qwen_grader_on_gsm8k(benchmarks_dir):
    golds = [r["answer"].split("####")[-1].replace(",", "").strip() for r in _rows(benchmarks_dir, "gsm8k")[:200]]
    pairs = [(str(Decimal(g) / 100), g) for g in golds if g != "0"]
    assert grade_many(pairs) == [False] * len(pairs)
    assert grade_many(pairs, lenient=True) == [True] * len(pairs)
