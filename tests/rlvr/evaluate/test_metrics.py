"""pass@k, maj@n and token-budget accuracy against brute force over the definitions."""

import itertools
import math

import pytest

from rlvr.evaluate.metrics import budget_accuracy, majority_correct, pass_at_k, summarize


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c correct) that hold a correct one."""
    correct = [i < c for i in range(n)]
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_stays_finite_for_large_n():
    # math.comb(200, 100) overflows a float; the product form does not
    assert 0 < pass_at_k(200, 1, 100) == pytest.approx(0.5)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, 1, 5), (4, 1, 0), (4, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize("votes, correct, expected", [
    (["18", "18", "17"], [True, True, False], True),
    (["17", "18", "17"], [False, True, False], False),
    (["18", "17"], [True, False], True),  # tie: the answer given first
    (["17", "18"], [False, True], False),
    ([None, None, "18"], [False, False, True], True),  # no answer, no vote
    ([None, None], [False, False], False),
])
def test_majority_vote(votes, correct, expected):
    assert majority_correct(votes, correct) is expected


def test_budget_counts_correct_finished_samples_within_the_budget():
    correct, tokens, finished = [True, True, True, False], [10, 30, 40, 5], [True, True, False, True]
    assert budget_accuracy(correct, tokens, finished, 10) == 0.25
    assert budget_accuracy(correct, tokens, finished, 40) == 0.5  # the truncated one never counts


def test_summarize_pass1_is_avg_and_budgets_rise():
    correct = [[True, False, False, False], [True, True, False, True], [False] * 4]
    tokens = [[4, 8, 16, 16], [2, 3, 9, 12], [16] * 4]
    finished = [[True, True, False, False], [True, True, True, True], [False] * 4]
    votes = [["1", "2", "2", None], ["5", "5", "6", "5"], [None] * 4]
    m = summarize(correct, tokens, finished, votes, ks=(1, 2, 4), max_tokens=16)
    assert m["pass@1"] == pytest.approx(m["avg@4"]) == pytest.approx(4 / 12)
    assert m["pass@2"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert m["maj@4"] == pytest.approx(1 / 3)  # prompt 0 votes "2" (wrong), prompt 1 votes "5" (right)
    budgets = [m[f"accuracy@{p}%tokens"] for p in (25, 50, 75, 100)]
    assert budgets == pytest.approx([3 / 12, 3 / 12, 4 / 12, 4 / 12])
    assert m["truncated"] == pytest.approx(6 / 12)


def test_summarize_rejects_ragged_groups_and_large_k():
    with pytest.raises(ValueError, match="same number"):
        summarize([[True], [True, False]], [[1], [1, 1]], [[True], [True, True]], [[None], [None, None]], (1,), 8)
    with pytest.raises(ValueError, match="outside"):
        summarize([[True, False]], [[1, 1]], [[True, True]], [[None, None]], (4,), 8)
