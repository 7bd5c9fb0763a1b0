"""Sampled-candidate evaluation: the held-out item against its fixed negatives."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fedrec.data.schema import SplitData
from fedrec.eval.metrics import positive_rank, ranking_sums
from fedrec.models.base import Recommender


def candidate_scores(
    model: Recommender,
    shared: dict[str, Tensor],
    user_params: dict[str, Tensor],
    candidates: np.ndarray,
    chunk: int = 4096,
) -> np.ndarray:
    """Scores ``(U, K)`` of ``candidates[u]`` for U users with their own (private) rows.

    ``user_params[name]`` holds one row per user, aligned with ``candidates``.
    """
    item_names = [s.name for s in model.specs_of("item")]
    dense_names = [s.name for s in model.specs_of("dense")]
    out = np.empty(candidates.shape, dtype=np.float64)
    with torch.no_grad():
        for lo in range(0, len(candidates), chunk):
            hi = min(lo + chunk, len(candidates))
            cand = torch.from_numpy(candidates[lo:hi])
            a = hi - lo
            user = {n: t[lo:hi].unsqueeze(1) for n, t in user_params.items()}
            item = {n: shared[n][cand] for n in item_names}
            dense = {n: shared[n].unsqueeze(0).expand(a, *shared[n].shape) for n in dense_names}
            out[lo:hi] = model.score(user, item, dense).double().cpu().numpy()
    return out


def evaluate_users(
    model: Recommender,
    shared: dict[str, Tensor],
    user_params: dict[str, Tensor],
    users: np.ndarray,
    split: SplitData,
    ks: tuple[int, ...] = (10,),
) -> dict[str, float]:
    """HR@k / NDCG@k sums and count over ``users`` that have a test item.

    ``user_params`` rows align with ``users``.
    """
    users = np.asarray(users, dtype=np.int64)
    has_test = split.test_items[users] >= 0
    rows = np.nonzero(has_test)[0]
    if len(rows) == 0:
        return ranking_sums(np.zeros(0, dtype=np.int64), ks)
    u = users[rows]
    cand = np.concatenate([split.test_items[u, None], split.test_negatives[u]], axis=1)
    sel = torch.from_numpy(rows)
    scores = candidate_scores(model, shared, {n: t[sel] for n, t in user_params.items()}, cand)
    return ranking_sums(positive_rank(scores[:, 0], scores[:, 1:]), ks)


def evaluate_item_scores(
    item_scores: np.ndarray, split: SplitData, ks: tuple[int, ...] = (10,)
) -> dict[str, float]:
    """Metrics (means) of a non-personalised ranking such as popularity."""
    users = np.nonzero(split.test_items >= 0)[0]
    pos = item_scores[split.test_items[users]]
    neg = item_scores[split.test_negatives[users]]
    sums = ranking_sums(positive_rank(pos, neg), ks)
    return means(sums)


def means(sums: dict[str, float]) -> dict[str, float]:
    """Turn ``ranking_sums`` output into means."""
    n = max(sums["count"], 1.0)
    return {k: v / n for k, v in sums.items() if k != "count"}
