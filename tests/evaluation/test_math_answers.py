"""Answer extraction, normalisation and equivalence on hand-written cases; the hard time limit."""

import shutil
import threading
import time

import pytest

from dftlab.evaluation import symbolic_pool
from dftlab.evaluation.math_answers import (
    clean,
    extract_answer,
    extract_boxed,
    grade_many,
    is_equivalent,
    normalize,
    shared_pool,
)
from dftlab.evaluation.symbolic_pool import SymbolicPool

# sympy evaluates the tower eagerly: the comparison never returns (while using little memory)
HANGS = "9^{9^{9^{9}}}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{5}$.", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\left\\{ 1, \\frac{\\sqrt{2}}{2} \\right\\}}", "\\left\\{ 1, \\frac{\\sqrt{2}}{2} \\right\\}"),
        ("first \\boxed{1}, then \\boxed{2}, finally \\boxed{3}", "3"),
        ("$\\boxed 5$", "5"),
        ("\\fbox{7}", "7"),
        ("or $\\framebox{204}$ minutes", "204"),
        ("\\framebox[2cm][l]{12}", "12"),
        ("\\boxed{\\text{(C)}}", "\\text{(C)}"),
        ("put it within \\boxed{}. The answer is \\boxed{42}", "42"),
        ("\\boxed{42} and then a truncated \\boxed{\\frac{1}{", "42"),
    ],
)
def test_boxed_extraction(text, expected):
    assert extract_boxed(text) == expected
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("We get 3 and 4. The answer is 12.", "12"),
        ("the answer is 12 apples; no, The Answer Is $-3.5$. I hope it is correct.", "-3.5"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),
        ("final answer: (1, 2)", "(1, 2)"),
        ("Answer:\n 7 cm", "7 cm"),
        ("The total is 1,250 dollars after 3 days, so 1,250 + 3 = 1,253", "1253"),
        ("it is -.5", "-.5"),
        ("There is no number here.", None),
        ("\\boxed{} with nothing inside", None),
        ("", None),
    ],
)
def test_fallbacks_when_no_box(text, expected):
    assert extract_boxed(text) is None
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("$5$", "5"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
        ("10\\text{ cm}", "10"),
        ("864 \\mbox{ inches}^2", "864"),
        ("5.4 \\text{ cents}", "5.4"),
        ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}"),
        ("\\frac{37}{4} m", "\\frac{37}{4}"),
        ("2m", "2m"),  # an expression, not two metres
        ("\\text{Evelyn}", "Evelyn"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("10\\%", "10"),
        ("10%", "10"),
        ("x = 3", "3"),
        ("y=2x+3", "2x+3"),
        ("x \\in [-2,7]", "[-2,7]"),
        ("5x - 7y + 11z + 4 = 0", "5x-7y+11z+4=0"),
        ("\\dfrac{17}{50}", "\\frac{17}{50}"),
        ("\\tfrac12", "\\frac{1}{2}"),
        ("\\frac 59", "\\frac{5}{9}"),
        ("\\frac9{19}", "\\frac{9}{19}"),
        ("\\frac{a}b", "\\frac{a}{b}"),
        ("11\\sqrt2", "11\\sqrt{2}"),
        ("1/3", "\\frac{1}{3}"),
        ("1,000", "1000"),
        ("10,\\!080", "10080"),
        ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
        ("\\$32,\\!348", "32348"),
        ("(1,2)", "(1,2)"),
        ("1,-2", "1,-2"),
        ("27.0", "27"),
        (".0000672", "0.0000672"),
        ("3\\,\\sqrt{13}.", "3\\sqrt{13}"),
        ("\\{1\\pm\\sqrt{5},-2\\}", "1\\pm\\sqrt{5},-2"),
        ("\\begin{bmatrix} 1 \\\\ 2 \\end{bmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
        ("\\emptyset", "{}"),
        ("\\displaystyle\\frac{1}{2}", "\\frac{1}{2}"),
        ("f \\circ g", "f\\circg"),
        ("1 and -2", "1,-2"),
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_clean_keeps_latex_valid():
    # spaces between commands survive, or `\pi x` would read as an unknown `\pix`
    assert clean("\\pi x") == "\\pi x"
    assert clean("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}") == "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("\\dfrac12", "0.5", True),
        ("1/2", "\\frac12", True),
        ("0.33333", "\\frac{1}{3}", True),  # within the relative tolerance of 1e-4
        ("0.333", "\\frac{1}{3}", False),
        ("1.8", "1\\frac{4}{5}", True),
        ("4.5 \\times 10^{33}", "4.5e33", True),
        ("4.6e33", "4.5e33", False),
        ("25", "025", True),
        ("10", "10\\%", True),
        ("0.1", "10\\%", True),
        ("1000", "10\\%", True),  # the Qwen grader accepts x*100 as well
        ("0.1", "10", False),  # no percent sign on either side
        ("1", "100", False),
        ("10081", "10080", False),  # integers are exact
        ("10080.5", "10080", True),  # other numbers within the tolerance
        ("(C)", "\\text{(C)}", True),
        ("C", "\\text{(C)}", True),
        ("B", "\\text{(C)}", False),
        ("(1, 0.5)", "(1,\\frac{1}{2})", True),
        ("1, 0.5", "(1,\\frac{1}{2})", True),
        ("1, 2", "[1, 2]", False),
        ("$$", "\\emptyset", False),
        ("\\varnothing", "\\emptyset", True),
        (None, "1", False),
        ("", "1", False),
        ("1", "", False),
    ],
)
def test_numeric_and_string_equivalence(pred, gold, expected):
    assert is_equivalent(pred, gold) is expected


def test_the_leniencies_of_the_qwen_grader():
    assert not is_equivalent("10081", "10080")
    assert is_equivalent("10081", "10080", lenient=True)
    assert not is_equivalent("10082", "10080", lenient=True)
    assert is_equivalent("0.1", "10", lenient=True)
    assert is_equivalent("1", "100", lenient=True)
    assert not is_equivalent("2", "100", lenient=True)


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("\\frac{\\cos x}{\\sin x}", "\\cot x", True),
        ("-5i + 6", "6 - 5i", True),
        ("ab+2a+5b+10", "(a+5)(b+2)", True),
        ("-2, 1", "1,-2", True),  # all the solutions, in any order
        ("1+\\sqrt{19}, 1-\\sqrt{19}", "1 \\pm \\sqrt{19}", True),
        ("(\\frac{\\pi}{2}, 3)", "\\left( 3, \\frac{\\pi}{2} \\right)", False),
        ("(3,4)", "(3,4]", False),
        ("[3,4]", "(3,4]", False),
        ("(0,36)", "(0,9) \\cup (9,36)", False),
        ("\\left(2, \\infty\\right)", "(2,\\infty)", True),
        ("\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}", "\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", True),
        ("\\begin{pmatrix} 1 \\\\ 3.6 \\end{pmatrix}", "\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", False),
        ("-5x + 7y - 11z - 4 = 0", "5x - 7y + 11z + 4 = 0", True),
        ("\\sqrt{117}", "3\\sqrt{13}", True),
        ("\\sqrt{39}", "3\\sqrt{13}", False),
    ],
)
def test_symbolic_equivalence(pred, gold, expected):
    assert is_equivalent(pred, gold) is expected


def test_batch_matches_single_items():
    pairs = [("0.5", "\\frac12"), ("-2, 1", "1,-2"), ("3", "4"), ("\\sqrt{39}", "3\\sqrt{13}"), (None, "1")]
    assert grade_many(pairs) == [is_equivalent(p, g) for p, g in pairs] == [True, True, False, False, False]


def test_works_off_the_main_thread():
    # math_verify's own timeout relies on signals and refuses to run outside the main thread
    result = []
    worker = threading.Thread(target=lambda: result.append(is_equivalent("\\frac{\\cos x}{\\sin x}", "\\cot x")))
    worker.start()
    worker.join(60)
    assert result == [True]


# The tests below share the process-wide pool (starting workers takes seconds), so they compare
# its counters before and after.


def test_a_hanging_check_is_cut_off_and_the_next_item_still_works():
    pool = shared_pool()
    grade_many([("\\sqrt{2}", "2^{1/2}")])  # workers started: their start is not timed
    timeouts, crashes = pool.timeouts, pool.crashes
    start = time.monotonic()
    assert not is_equivalent(HANGS, "1", timeout=1.0)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 4.0
    assert pool.timeouts == timeouts + 1
    assert is_equivalent("\\frac{\\cos x}{\\sin x}", "\\cot x", timeout=5.0)
    assert (pool.timeouts, pool.crashes) == (timeouts + 1, crashes)


def test_one_hanging_item_does_not_hold_up_a_batch():
    pool = shared_pool()
    assert pool.size >= 2
    timeouts = pool.timeouts
    pairs = [(HANGS, "1"), ("\\frac{\\cos x}{\\sin x}", "\\cot x"), ("x+1", "x+2"), ("-2, 1", "1,-2")]
    assert grade_many(pairs, timeout=3.0) == [False, True, False, True]
    assert pool.timeouts == timeouts + 1


def test_a_worker_that_died_while_idle_is_replaced():
    pool = SymbolicPool(workers=1)
    try:
        assert grade_many([("-2, 1", "1,-2")], pool=pool) == [True]
        (worker,) = pool._idle
        worker.proc.kill()
        worker.proc.wait()
        assert grade_many([("-2, 1", "1,-2")], pool=pool) == [True]
        assert pool.crashes == 0 and pool._idle and pool._idle[0] is not worker
    finally:
        pool.close()


def test_a_worker_that_cannot_start_is_an_error(monkeypatch):
    monkeypatch.setattr(symbolic_pool.sys, "executable", shutil.which("false") or "false")
    pool = SymbolicPool(workers=1)
    with pytest.raises(RuntimeError, match="symbolic-check worker did not start"):
        pool.run([("1", "x")], timeout=1.0)
    assert pool._idle == []
