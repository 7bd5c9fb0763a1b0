"""Evaluation of a node's users with their private rows: sampled candidates (the held-out item
against its fixed negatives: HR@K, NDCG@K), full ranking over every item the user has not
trained on (Recall@20, NDCG@20) and, for explicit-rating models, squared error (RMSE).

Scores come either from the global shared parameters or from each user's locally fine-tuned
copy (``LocalTables``), where a user's own rows replace the global ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from fedrec.data.schema import SplitData
from fedrec.eval.ctr import add_sums, ctr_means, ctr_sums
from fedrec.eval.metrics import positive_rank, ranking_sums
from fedrec.models.base import ITEM_TABLE, Recommender
from fedrec.train.cohort import LocalTables
from fedrec.train.layout import ItemIndex

FULL_K = 20
ItemLookup = Callable[[np.ndarray, np.ndarray], dict[str, Tensor]]


class _View:
    """Parameters of a set of users: private rows, dense params and an item-row lookup."""

    def __init__(
        self,
        model: Recommender,
        shared: dict[str, Tensor],
        users: np.ndarray,
        user_rows: dict[str, Tensor],
        local: LocalTables | None = None,
    ) -> None:
        self.model = model
        self.shared = shared
        self.users = users
        self.user_rows = user_rows
        self.local = local
        self.index = ItemIndex(model)
        self.dense_names = [s.name for s in model.specs_of("dense")]
        # floats gathered per candidate item (bounds the users scored at once)
        width = {t: 1 if t == ITEM_TABLE else r.shape[1] for t, r in self.index.reach.items()}
        self.per_candidate = sum(
            width.get(s.table, 1) * int(np.prod(s.shape)) for s in self.index.specs
        ) + sum(int(np.prod(f.shape[1:])) for f in self.index.frozen.values())

    def scores(self, pos: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Scores ``(len(pos), K)`` of candidates ``cand`` for users at positions ``pos``."""
        a = len(pos)
        p = torch.from_numpy(pos)
        c = torch.from_numpy(cand)
        user = {n: t[p].unsqueeze(1) for n, t in self.user_rows.items()}
        rows = self.index.rows(c)
        if self.local is None:
            gather = self.index.table_gather(self.shared)
            dense = {n: self.shared[n].unsqueeze(0).expand(a, *self.shared[n].shape)
                     for n in self.dense_names}
        else:
            dense = {n: self.local.dense[n][p] for n in self.dense_names}
            gather = self._local_gather(p)
        with torch.no_grad():
            item = self.index.inputs(gather, rows, c)
            return self.model.score(user, item, dense).double().cpu().numpy()

    def _local_gather(self, p: Tensor):
        """Rows from each user's fine-tuned copy where it holds one, else the global rows."""
        local, index = self.local, self.index

        def gather(name: str, idx: Tensor) -> Tensor:
            table = index.table_of[name]
            glob = self.shared[name][idx]
            owner = p.view(-1, *[1] * (idx.dim() - 1))
            key = (owner * index.sizes[table] + idx).reshape(-1)
            keys = local.rows_key[table]
            at = torch.searchsorted(keys, key).clamp_max(len(keys) - 1)
            hit = keys[at] == key
            flat = glob.reshape(len(key), *glob.shape[idx.dim():]).clone()
            flat[hit] = local.item[name][at[hit]]
            return flat.reshape(glob.shape)

        return gather

    def users_per_call(self, n_candidates: int, budget: int = 1 << 25) -> int:
        """Users scored at once so that gathered inputs stay under ``budget`` floats."""
        return max(1, budget // max(1, n_candidates * self.per_candidate))


def _evaluate_view(view: _View, split: SplitData, ks: tuple[int, ...], full: bool,
                   explicit: bool, chunk: int = 1024, target: int = -1) -> dict[str, float]:
    users = view.users
    has_test = split.test_items[users] >= 0
    pos_all = np.nonzero(has_test)[0]
    sums = ranking_sums(np.zeros(0, dtype=np.int64), ks)
    if full:
        sums.update({f"recall@{FULL_K}": 0.0, f"ndcg@{FULL_K}-full": 0.0})
    explicit = explicit and split.test_ratings is not None
    if explicit:
        sums["sse"] = 0.0
    if target >= 0:
        sums[f"er@{EXPOSURE_K}"] = 0.0
        sums[f"er@{EXPOSURE_WIDE}"] = 0.0
    chunk = min(chunk, view.users_per_call(split.n_items if full or target >= 0 else
                                           1 + split.test_negatives.shape[1]))
    for lo in range(0, len(pos_all), chunk):
        pos = pos_all[lo : lo + chunk]
        u = users[pos]
        cand = np.concatenate([split.test_items[u, None], split.test_negatives[u]], axis=1)
        s = view.scores(pos, cand)
        part = ranking_sums(positive_rank(s[:, 0], s[:, 1:]), ks)
        for k, v in part.items():
            sums[k] += v
        if explicit:
            sums["sse"] += float(((s[:, 0] - split.test_ratings[u]) ** 2).sum())
        if full or target >= 0:
            all_items = np.broadcast_to(np.arange(split.n_items), (len(pos), split.n_items))
            s_all = view.scores(pos, np.ascontiguousarray(all_items))
        if target >= 0:
            sums[f"er@{EXPOSURE_K}"] += float(exposed(s_all, u, split, target).sum())
            sums[f"er@{EXPOSURE_WIDE}"] += float(
                exposed(s_all, u, split, target, EXPOSURE_WIDE).sum())
        if full:
            rank = full_ranks(s_all, u, split)
            sums[f"recall@{FULL_K}"] += float((rank < FULL_K).sum())
            sums[f"ndcg@{FULL_K}-full"] += float(
                np.where(rank < FULL_K, 1.0 / np.log2(rank + 2.0), 0.0).sum()
            )
    return sums


def full_ranks(scores: np.ndarray, users: np.ndarray, split: SplitData) -> np.ndarray:
    """0-based rank of each user's test item among all items it has not trained on.

    Training items are excluded; ties count against the test item (as in the sampled protocol).
    """
    test = split.test_items[users]
    s_test = scores[np.arange(len(users)), test]
    beats = scores >= s_test[:, None]
    beats[np.arange(len(users)), test] = False
    counts = np.diff(split.train_indptr)[users]
    rows = np.repeat(np.arange(len(users)), counts)
    cols = np.concatenate([split.user_items(int(v)) for v in users]) if len(users) else rows
    beats[rows, cols] = False
    return beats.sum(axis=1).astype(np.int64)


EXPOSURE_K = 10
EXPOSURE_WIDE = 100  # er@100: how close a target outside the top-10 came (attack diagnostics)


def exposed(scores: np.ndarray, users: np.ndarray, split: SplitData, target: int,
            k: int = EXPOSURE_K) -> np.ndarray:
    """Whether ``target`` is in each user's top-``k`` over the items it has not trained on
    (full ranking; ties count against the target; a user who trained on it is not exposed).
    The exposure ratio ER@k is the mean over normal users with a test item."""
    s = np.array(scores, dtype=np.float64, copy=True)
    counts = np.diff(split.train_indptr)[users]
    rows = np.repeat(np.arange(len(users)), counts)
    cols = np.concatenate([split.user_items(int(v)) for v in users]) if len(users) else rows
    s[rows, cols] = -np.inf
    st = s[:, target]
    beats = s >= st[:, None]
    beats[:, target] = False
    return (beats.sum(axis=1) < k) & np.isfinite(st)


VALID = "val-"  # key prefix of the validation part's sums and metrics
PARTS = ("valid", "test")


def part_split(split: SplitData, part: str) -> SplitData:
    """``split`` with the ``part`` ("valid" or "test") in the test fields (no copies)."""
    if part == "test":
        return split
    if part != "valid":
        raise ValueError(f"unknown evaluation part {part!r} (known: {', '.join(PARTS)})")
    if not split.has_validation:
        raise ValueError(f"split {split.name!r} has no validation part")
    return dataclasses.replace(
        split, test_items=split.valid_items if split.valid_items is not None
        else split.test_items, test_negatives=split.valid_negatives
        if split.valid_negatives is not None else split.test_negatives,
        test_ratings=None, ctr_test=split.ctr_valid)


def _evaluate_ctr(view: _View, split: SplitData, chunk: int = 1024) -> dict[str, float]:
    """Click-through sums (:func:`fedrec.eval.ctr.ctr_sums`) over the users' labelled rows."""
    pairs = split.ctr_test
    users = view.users
    n_rows = pairs.indptr[users + 1] - pairs.indptr[users]
    pos_all = np.nonzero(n_rows > 0)[0]
    total = ctr_sums(np.zeros(0), np.zeros(0))  # every key, also for a node without rows
    if len(pos_all):
        chunk = min(chunk, view.users_per_call(int(n_rows.max())))
    for lo in range(0, len(pos_all), chunk):
        pos = pos_all[lo : lo + chunk]
        width = int(n_rows[pos].max())
        offs = np.arange(width)[None, :]
        valid = offs < n_rows[pos][:, None]
        at = np.minimum(pairs.indptr[users[pos]][:, None] + offs, len(pairs.items) - 1)
        cand = np.where(valid, pairs.items[at], 0)
        s = view.scores(pos, np.ascontiguousarray(cand))
        total = add_sums(total, ctr_sums(s[valid], pairs.labels[at][valid]))
    return total


def evaluate_parts(
    model: Recommender,
    shared: dict[str, Tensor],
    user_params: dict[str, Tensor] | list[LocalTables],
    users: np.ndarray,
    split: SplitData,
    parts: tuple[str, ...] = ("test",),
    full: bool = False,
    explicit: bool = False,
    ks: tuple[int, ...] = (10,),
    target: int = -1,
) -> dict[str, float]:
    """Metric sums of ``users`` on each of ``parts``: ``test`` keys as they are, ``valid`` keys
    prefixed ``val-``. Ranking splits give HR/NDCG (and full-ranking, RMSE) sums and ``count``;
    click-through splits :func:`fedrec.eval.ctr.ctr_sums`. ``user_params`` are the private
    rows aligned with ``users``, or the users' locally fine-tuned tables. ``target`` >= 0 adds
    the sums of :func:`exposed` (``er@10``: the target in the user's full-ranking top-10;
    ``er@100``: in its top-100)."""
    if isinstance(user_params, list):
        views = [_View(model, shared, t.users, t.user, t) for t in user_params]
    else:
        views = [_View(model, shared, np.asarray(users, dtype=np.int64), user_params)]
    out: dict[str, float] = {}
    for part in parts:
        sp = part_split(split, part)
        prefix = VALID if part == "valid" else ""
        for view in views:
            if sp.protocol == "ctr":
                sums = _evaluate_ctr(view, sp)
            else:
                sums = _evaluate_view(view, sp, ks, full, explicit and part == "test",
                                      target=target)
            for k, v in sums.items():
                out[prefix + k] = out.get(prefix + k, 0.0) + v
    return out


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Metrics of every part from summed :func:`evaluate_parts` output (ranking: means over
    ``count``; click-through: AUC / ACC / F1)."""
    out: dict[str, float] = {}
    for prefix in ("", VALID):
        part = {k[len(prefix):]: v for k, v in sums.items()
                if k.startswith(prefix) and (prefix or not k.startswith(VALID))}
        if "count" not in part:
            continue
        m = ctr_means(part) if "tp" in part else means(part)
        out.update({prefix + k: v for k, v in m.items()})
    return out


def evaluate_users(
    model: Recommender,
    shared: dict[str, Tensor],
    user_params: dict[str, Tensor],
    users: np.ndarray,
    split: SplitData,
    ks: tuple[int, ...] = (10,),
    full: bool = False,
    explicit: bool = False,
) -> dict[str, float]:
    """Metric sums and the count over ``users`` that have a test item (global parameters).

    ``user_params`` rows align with ``users``. ``full`` adds full-ranking Recall@20/NDCG@20;
    ``explicit`` adds the squared error of the predicted test rating (``sse``).
    """
    return evaluate_parts(model, shared, user_params, users, split, ("test",), full, explicit, ks)


def evaluate_local(
    model: Recommender,
    shared: dict[str, Tensor],
    tables: list[LocalTables],
    split: SplitData,
    ks: tuple[int, ...] = (10,),
    full: bool = False,
    explicit: bool = False,
) -> dict[str, float]:
    """Metric sums for users scored with their locally fine-tuned parameters."""
    return evaluate_parts(model, shared, tables, np.zeros(0, np.int64), split, ("test",), full,
                          explicit, ks)


def evaluate_item_scores(
    item_scores: np.ndarray, split: SplitData, ks: tuple[int, ...] = (10,)
) -> dict[str, float]:
    """Metric means of a non-personalised ranking such as popularity (click-through splits:
    its exact AUC on the test rows)."""
    if split.protocol == "ctr":
        s = item_scores[split.ctr_test.items]
        lab = split.ctr_test.labels > 0.5
        ranks = pd.Series(s).rank(method="average").to_numpy()
        n_pos, n_neg = int(lab.sum()), int((~lab).sum())
        auc = (ranks[lab].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1)
        return {"auc": float(auc)}
    users = np.nonzero(split.test_items >= 0)[0]
    pos = item_scores[split.test_items[users]]
    neg = item_scores[split.test_negatives[users]]
    out = means(ranking_sums(positive_rank(pos, neg), ks))
    rank = np.concatenate([
        full_ranks(np.broadcast_to(item_scores, (len(b), split.n_items)).copy(), b, split)
        for b in np.array_split(users, max(1, len(users) // 2048))
    ])
    out[f"recall@{FULL_K}"] = float((rank < FULL_K).mean())
    out[f"ndcg@{FULL_K}-full"] = float(np.where(rank < FULL_K, 1 / np.log2(rank + 2.0), 0).mean())
    return out


def means(sums: dict[str, float]) -> dict[str, float]:
    """Turn metric sums into means (``sse`` becomes ``rmse``)."""
    n = max(sums["count"], 1.0)
    out = {k: v / n for k, v in sums.items() if k not in ("count", "sse")}
    if "sse" in sums:
        out["rmse"] = float(np.sqrt(sums["sse"] / n))
    return out
