import numpy as np
import pytest

from fedrec.eval.metrics import hit_ratio, ndcg, positive_rank, ranking_sums


def test_rank_counts_negatives_scoring_at_least_the_positive():
    # Prepare: user 0 positive beats all; user 1 has two negatives above; user 2 ties one
    pos = np.array([0.9, 0.5, 0.5])
    neg = np.array([[0.1, 0.2, 0.3], [0.6, 0.7, 0.1], [0.5, 0.1, 0.2]])
    # Execute
    ranks = positive_rank(pos, neg)
    # Assert: the tie counts against the positive
    assert ranks.tolist() == [0, 2, 1]


def test_constant_model_scores_zero():
    pos = np.zeros(5)
    neg = np.zeros((5, 99))
    ranks = positive_rank(pos, neg)
    assert ranks.tolist() == [99] * 5
    assert hit_ratio(ranks, 10).sum() == 0
    assert ndcg(ranks, 10).sum() == 0


def test_hand_worked_hr_and_ndcg():
    ranks = np.array([0, 1, 9, 10, 50])
    assert hit_ratio(ranks, 10).tolist() == [1, 1, 1, 0, 0]
    expected_ndcg = [1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0, 0.0]
    assert ndcg(ranks, 10) == pytest.approx(expected_ndcg)
    sums = ranking_sums(ranks, (10, 1))
    assert sums["count"] == 5
    assert sums["hr@10"] == 3
    assert sums["hr@1"] == 1
    assert sums["ndcg@10"] == pytest.approx(1 + 1 / np.log2(3) + 1 / np.log2(11))
