"""A validation part for splits that publish only a test part (the NCF split of ML-1M).

``split = "ncf-valid"`` is the NCF split with one training interaction per user (drawn with the
seed; users with at least two) held out as validation, scored against 99 negatives drawn
uniformly from the items the user never rated (train, validation or test). Settings are tuned on
it; the test part is read once, for the final model, and the shipped configs then run on
``split = "ncf"`` (all training interactions).
"""

from __future__ import annotations

import numpy as np

from fedrec.data.schema import SplitData
from fedrec.data.split import sample_negatives

_TAG = 8  # seed stream of the validation draw


def hold_out_validation(split: SplitData, seed: int, num_negatives: int = 99) -> SplitData:
    """``split`` with one random training interaction per user moved to a validation part."""
    indptr, items = split.train_indptr, split.train_items
    n_pos = np.diff(indptr)
    rs = np.random.default_rng([int(seed), _TAG])
    has = n_pos >= 2
    pick = indptr[:-1] + np.floor(rs.random(split.n_users) * n_pos).astype(np.int64)
    valid_items = np.full(split.n_users, -1, dtype=np.int64)
    valid_items[has] = items[pick[has]]
    keep = np.ones(len(items), dtype=bool)
    keep[pick[has]] = False
    # negatives avoid every positive: training (validation included) and the test item
    negatives = sample_negatives(indptr, items, split.test_items, split.n_items, num_negatives,
                                 rs)
    negatives[~has] = -1
    new_indptr = np.concatenate([[0], np.cumsum(n_pos - has)]).astype(np.int64)
    return SplitData(
        name=split.name,
        n_users=split.n_users,
        n_items=split.n_items,
        train_indptr=new_indptr,
        train_items=items[keep],
        train_ratings=split.train_ratings[keep],
        test_items=split.test_items,
        test_negatives=split.test_negatives,
        test_ratings=split.test_ratings,
        item_side=split.item_side,
        valid_items=valid_items,
        valid_negatives=negatives,
    )
