"""Click-through metrics as summable statistics: hand-worked values, exact AUC, node sums."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrec.eval.ctr import BINS, add_sums, ctr_means, ctr_sums, sigmoid


def _exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC by ranking (average ranks for ties), no sklearn."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # 1-based average rank
            start = end
    n_pos = labels.sum()
    n_neg = len(labels) - n_pos
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_hand_worked_confusion_accuracy_f1_and_auc():
    # Prepare: logit 0 is probability 0.5, predicted positive
    scores = np.array([2.0, -1.0, 0.5, -3.0, 0.0])
    labels = np.array([1, 0, 0, 1, 1])

    # Execute
    sums = ctr_sums(scores, labels)
    means = ctr_means(sums)

    # Assert: tp = {2, 0}, fp = {0.5}, fn = {-3}, tn = {-1}
    assert (sums["tp"], sums["fp"], sums["fn"], sums["tn"], sums["count"]) == (2, 1, 1, 1, 5)
    assert means["acc"] == pytest.approx(3 / 5)
    assert means["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # pairs (pos, neg): 2>-1, 2>0.5, 0>-1 win; -3<-1, -3<0.5, 0<0.5 lose -> 3/6
    assert means["auc"] == pytest.approx(0.5)


def test_histogram_keys_hold_every_bin():
    # Prepare: probabilities 0.5 -> bin 2 of 4; 0.88 -> bin 3; 0.27 -> bin 1
    scores = np.array([0.0, 2.0, -1.0, 0.0])
    labels = np.array([1, 1, 0, 0])

    # Execute
    sums = ctr_sums(scores, labels, bins=4)

    # Assert
    # (every bin is a key, zeros too: Flower aggregates only replies with the same keys)
    hist = {k: v for k, v in sums.items() if k.startswith("auc-")}
    assert hist == {"auc-pos/0": 0.0, "auc-pos/1": 0.0, "auc-pos/2": 1.0, "auc-pos/3": 1.0,
                    "auc-neg/0": 0.0, "auc-neg/1": 1.0, "auc-neg/2": 1.0, "auc-neg/3": 0.0}
    assert set(ctr_sums(np.zeros(0), np.zeros(0), bins=4)) == set(sums)
    # pos 0.5 vs neg 0.27: 1; vs neg 0.5 (same bin): 1/2; pos 0.88 beats both -> 3.5 / 4
    assert ctr_means(sums)["auc"] == pytest.approx(3.5 / 4)


def test_ties_within_a_bin_count_half():
    # Prepare: one bin holds everything
    scores = np.array([3.0, -2.0, 1.0, -1.0])
    labels = np.array([1, 0, 0, 1])

    # Execute
    auc = ctr_means(ctr_sums(scores, labels, bins=1))["auc"]

    # Assert
    assert auc == 0.5


def test_auc_matches_the_exact_ranking_auc():
    # Prepare
    rs = np.random.default_rng(0)
    labels = (rs.random(20_000) < 0.4).astype(np.int64)
    scores = rs.normal(size=20_000) * 1.5 + 1.2 * labels - 0.3

    # Execute
    auc = ctr_means(ctr_sums(scores, labels))["auc"]

    # Assert
    exact = _exact_auc(scores, labels)
    assert 0.6 < exact < 0.9
    assert abs(auc - exact) <= 1e-3


def test_sums_over_nodes_equal_the_sums_of_all_rows():
    # Prepare
    rs = np.random.default_rng(1)
    labels = rs.integers(0, 2, size=3000)
    scores = rs.normal(size=3000) + labels
    parts = np.array_split(np.arange(3000), [700, 1900])

    # Execute
    total: dict[str, float] = {}
    for part in parts:
        total = add_sums(total, ctr_sums(scores[part], labels[part]))

    # Assert
    whole = ctr_sums(scores, labels)
    assert total == whole
    assert ctr_means(total) == ctr_means(whole)


def test_constant_model_and_degenerate_inputs():
    # Execute
    constant = ctr_means(ctr_sums(np.zeros(6), np.array([1, 0, 1, 0, 0, 1])))
    only_pos = ctr_means(ctr_sums(np.array([-1.0, 2.0]), np.array([1, 1])))
    empty = ctr_means(ctr_sums(np.zeros(0), np.zeros(0)))

    # Assert: a constant model has AUC 1/2 (every pair tied); it predicts all positive
    assert constant["auc"] == 0.5 and constant["acc"] == 0.5
    assert math.isnan(only_pos["auc"]) and only_pos["f1"] == pytest.approx(2 / 3)
    assert math.isnan(empty["auc"]) and math.isnan(empty["acc"]) and empty["f1"] == 0.0


def test_extreme_logits_do_not_overflow():
    # Execute
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
        sums = ctr_sums(np.array([-1000.0, 1000.0]), np.array([0, 1]))

    # Assert
    assert p.tolist() == [0.0, 0.5, 1.0]
    assert sums["auc-neg/0"] == 1.0 and sums[f"auc-pos/{BINS - 1}"] == 1.0


@pytest.mark.parametrize(("scores", "labels", "words"), [
    ([0.0, 1.0], [1], ["2 scores", "1 labels"]),
    ([0.0], [2], ["0 or 1"]),
    ([np.nan], [1], ["finite"]),
])
def test_bad_inputs_are_refused(scores, labels, words):
    # Execute
    with pytest.raises(ValueError) as info:
        ctr_sums(np.array(scores), np.array(labels))

    # Assert
    assert all(w in str(info.value) for w in words)
