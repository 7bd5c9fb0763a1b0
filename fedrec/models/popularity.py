"""Popularity baseline: an item's score is its number of training interactions."""

from __future__ import annotations

import numpy as np

from fedrec.data.schema import SplitData


def popularity_scores(split: SplitData) -> np.ndarray:
    """Float64 ``(n_items,)`` training counts of every item (positive rows only where the
    training rows are labelled)."""
    if split.train_labels is not None:
        return np.bincount(split.train_items, weights=split.train_labels,
                           minlength=split.n_items).astype(np.float64)
    return split.item_counts().astype(np.float64)


def user_normalised_counts(split: SplitData, users: np.ndarray) -> np.ndarray:
    """Float64 ``(n_items,)``: the sum over ``users`` of each user's item indicator (its
    training positives) divided by its L2 norm ``sqrt(|I_u|)``.

    One user moves this vector by exactly 1 in L2 norm (0 for a user without positives): the
    sensitivity of the histogram that ``item-bias-init = popularity`` releases with Gaussian
    noise under user-level DP (``server/warmstart.py``). Summing it over nodes gives the same
    vector as over all users at once.
    """
    users = np.asarray(users, dtype=np.int64)
    lo, hi = split.train_indptr[users], split.train_indptr[users + 1]
    rows = (np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])
            if len(users) else np.zeros(0, dtype=np.int64))
    items = split.train_items[rows]
    pos = np.ones(len(rows)) if split.train_labels is None else \
        (split.train_labels[rows] > 0).astype(np.float64)
    owner = np.repeat(np.arange(len(users)), hi - lo)
    n_pos = np.bincount(owner, weights=pos, minlength=len(users))
    w = pos / np.sqrt(np.maximum(n_pos, 1.0))[owner]
    return np.bincount(items, weights=w, minlength=split.n_items).astype(np.float64)


#: Histogram value below which items share one bias (``item-bias-init = popularity``): the
#: weight of a handful of users (each adds 1/sqrt(|I_u|)), or the noise std when that is larger.
POPULARITY_FLOOR = 0.5


def popularity_bias(counts: np.ndarray, floor: float = POPULARITY_FLOOR) -> np.ndarray:
    """Item biases ``log(max(counts, floor))`` centred on 0: with uniform negatives, a
    logistic model's item bias tends to the log of the item's positive rate plus a constant,
    so the model starts as the popularity ranking (``item-bias-init = popularity``)."""
    b = np.log(np.maximum(np.asarray(counts, dtype=np.float64), float(floor)))
    return b - b.mean()
