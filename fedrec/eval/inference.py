"""Interaction inference by an honest-but-curious server (issue 13, requirement 4).

The server sees each node's reply: the cohort's average new shared parameters, i.e. the update
``delta`` of every item row. The attack (after FedMF, Chai et al. 2020: one user's item
gradients reveal its items) scores item ``i`` by ``||delta_i||`` over the item-table parameters
(embedding row and bias) and predicts that the node's users trained on the high-scoring items.
Rows a user touched only as sampled negatives move too, so the score is not a plain support
test.

Two AUCs per user of the node (labels: the user's training items vs every other item), averaged
over users:

- ``auc``: over all items. Large cohorts still score popular items high, and popularity is
  public, so this AUC does not go to 0.5 even when the update says nothing about the user;
  ``auc-popularity`` is the same AUC of the public popularity prior (training counts).
- ``auc-matched``: pairs (positive, negative) compared only within the same popularity
  percentile (``BINS`` equal-count bins of the items by training count; Mann-Whitney within
  bins, pooled): what the update reveals beyond popularity. 0.5 = the update tells nothing
  about which items this user trained on that popularity does not. Coarser bins leave
  popularity differences inside a bin and overstate the leak (ML-1M, 504 users per node:
  10 bins .574, 50 bins .526, 200 bins .511).

With ``dp = (C, z)`` every user's update is clipped to ``C`` (equal weights, as in DP-FedAvg)
and the node adds ``N(0, z^2 C^2)`` to its sum before replying (node-local noise: what protects
a reply from the server when no secure aggregation hides it). The noise comes from OS entropy.
"""

from __future__ import annotations

import numpy as np

from fedrec.config import TrainConfig
from fedrec.data.partition import partition_users
from fedrec.data.schema import SplitData
from fedrec.models.base import ITEM_TABLE, Recommender
from fedrec.train.cohort import train_cohort

BINS = 100  # popularity bins of auc-matched (percentiles)


def node_row_scores(model: Recommender, split: SplitData, users: np.ndarray, tc: TrainConfig,
                    seed: int, dp: tuple[float, float] | None = None) -> np.ndarray:
    """``||delta_i||`` per item of the node hosting ``users`` (round 1, from the initial model)."""
    shared = model.init_shared(seed)
    upd = train_cohort(model, shared, model.init_users(users, seed), users, split, tc, seed, 1,
                       clip_norm=dp[0] if dp else None,
                       weighting="equal" if dp else "examples")
    rng = np.random.default_rng()  # DP noise: OS entropy, never the run seed
    sq = np.zeros(split.n_items)
    for spec in model.row_specs(ITEM_TABLE):
        s = upd.sum_update[spec.name].numpy()
        if dp:
            s = s + rng.normal(0.0, dp[0] * dp[1], size=s.shape)
        d = s / max(upd.weight_sum, 1e-12)
        sq += (d.reshape(split.n_items, -1) ** 2).sum(axis=1)
    return np.sqrt(sq)


def pooled_auc(scores: np.ndarray, positive: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """Mann-Whitney AUC (ties 1/2) of ``scores`` for ``positive`` vs the rest, pairs taken only
    within the same ``groups`` value; returns ``(sum of wins, number of pairs)``."""
    wins, pairs = 0.0, 0
    for g in np.unique(groups):
        m = groups == g
        pos, neg = scores[m & positive], np.sort(scores[m & ~positive])
        if len(pos) == 0 or len(neg) == 0:
            continue
        lo = np.searchsorted(neg, pos, side="left")
        hi = np.searchsorted(neg, pos, side="right")
        wins += float(lo.sum() + 0.5 * (hi - lo).sum())
        pairs += len(pos) * len(neg)
    return wins, pairs


def inference_auc(model: Recommender, split: SplitData, users_per_node: int, tc: TrainConfig,
                  seed: int, max_users: int = 512, dp: tuple[float, float] | None = None
                  ) -> dict[str, float]:
    """Mean per-user AUCs (see module doc) over the first nodes of ``users_per_node`` users
    until ``max_users`` users (at least one node) are scored."""
    n_real = split.n_users - split.fake_users
    n_parts = -(-n_real // users_per_node)
    counts = np.bincount(split.train_items[: split.train_indptr[n_real]],
                         minlength=split.n_items).astype(np.float64)
    ranks = np.argsort(np.argsort(counts, kind="stable"), kind="stable")
    pop_bin = ranks * BINS // split.n_items
    one = np.zeros(split.n_items, dtype=np.int64)
    per_user: dict[str, list[float]] = {"auc": [], "auc-matched": [], "auc-popularity": []}
    done = 0
    for users in partition_users(n_real, n_parts):
        if done >= max_users:
            break
        scores = node_row_scores(model, split, users, tc, seed, dp)
        for u in users:
            pos = np.zeros(split.n_items, dtype=bool)
            pos[split.user_items(int(u))] = True
            for key, s, g in (("auc", scores, one), ("auc-matched", scores, pop_bin),
                              ("auc-popularity", counts, one)):
                w, p = pooled_auc(s, pos, g)
                if p:
                    per_user[key].append(w / p)
        done += len(users)
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in per_user.items()}
    out["users"] = float(len(per_user["auc"]))
    return out

