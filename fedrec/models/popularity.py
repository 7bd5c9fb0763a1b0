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
