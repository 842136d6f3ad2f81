"""Average@k and pass@k on a hand-computed example."""

import math

import pytest

from dftlab.evaluation.runner import summarise
from dftlab.evaluation.stats import average_at_k, newcombe, pass_at_k, wilson

# three problems, four samples each: half right, none right, all right
CORRECT = [[True, False, False, True], [False] * 4, [True] * 4]


def test_average_at_k_is_the_mean_over_samples_then_problems():
    assert average_at_k(CORRECT) == pytest.approx((2 / 4 + 0 + 4 / 4) / 3)  # 0.5
    assert average_at_k([[True], [False]]) == 0.5  # k = 1: plain accuracy
    assert average_at_k([]) == 0.0


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(CORRECT) == pytest.approx((1 + 0 + 1) / 3)  # k = n: any sample right
    # k = 2 of n = 4: 1 - C(2, 2) / C(4, 2) = 5/6 for the first problem
    assert pass_at_k(CORRECT, k=2) == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert pass_at_k(CORRECT, k=1) == pytest.approx(average_at_k(CORRECT))  # pass@1 = Average@k
    with pytest.raises(ValueError, match="pass@5"):
        pass_at_k(CORRECT, k=5)


def test_summarise_pools_the_interval_over_all_samples():
    well_formed = [[True] * 4, [True, False, True, False], [True] * 4]
    r = summarise("test_id", CORRECT, well_formed)
    assert (r.n, r.accuracy, r.pass_at_k) == (3, 0.5, pytest.approx(2 / 3))
    assert r.ci == wilson(6, 12) and r.well_formed == pytest.approx(10 / 12)
    lo, hi = r.ci
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 12), rel=0.15)
    greedy = summarise("test_id", [[True], [False]], [[True], [True]])
    assert greedy.pass_at_k is None and greedy.accuracy == 0.5


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((56, 70), (48, 80), (0.0524, 0.3339)),
        ((9, 10), (3, 10), (0.1705, 0.8090)),
        ((5, 56), (0, 29), (-0.0381, 0.1926)),
    ],
)
def test_newcombe_interval_of_a_difference_matches_the_published_values(a, b, expected):
    """Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10."""
    assert newcombe(*a, *b) == pytest.approx(expected, abs=1e-4)
