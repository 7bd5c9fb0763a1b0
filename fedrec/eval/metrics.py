"""Ranking metrics. Ties rank the positive below every negative with an equal score."""

from __future__ import annotations

import numpy as np


def positive_rank(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """0-based rank of each user's positive among its candidates.

    Parameters
    ----------
    pos_scores : numpy.ndarray
        ``(U,)`` score of the held-out item.
    neg_scores : numpy.ndarray
        ``(U, K)`` scores of the negatives.

    Returns
    -------
    numpy.ndarray
        ``(U,)`` int64: number of negatives scoring **greater than or equal to** the positive,
        so a constant model ranks every positive last.
    """
    pos = np.asarray(pos_scores)[:, None]
    return (np.asarray(neg_scores) >= pos).sum(axis=1).astype(np.int64)


def hit_ratio(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user HR@k: 1 when the positive is in the top k."""
    return (np.asarray(ranks) < k).astype(np.float64)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with a single relevant item: 1/log2(rank + 2) inside the top k."""
    ranks = np.asarray(ranks)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def ranking_sums(ranks: np.ndarray, ks: tuple[int, ...] = (10,)) -> dict[str, float]:
    """Sums (not means) of HR@k and NDCG@k plus the count, for exact federated averaging."""
    out: dict[str, float] = {"count": float(len(ranks))}
    for k in ks:
        out[f"hr@{k}"] = float(hit_ratio(ranks, k).sum())
        out[f"ndcg@{k}"] = float(ndcg(ranks, k).sum())
    return out
