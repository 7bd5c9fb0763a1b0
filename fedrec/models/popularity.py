"""Popularity baseline: an item's score is its number of training interactions."""

from __future__ import annotations

import numpy as np

from fedrec.data.schema import SplitData


def popularity_scores(split: SplitData) -> np.ndarray:
    """Float64 ``(n_items,)`` training counts of every item."""
    return split.item_counts().astype(np.float64)
