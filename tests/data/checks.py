"""Invariant checks shared by the split tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedrec.data.schema import Interactions, SplitData


def assert_split_invariants(split: SplitData, inter: Interactions | None = None) -> None:
    """Leak-freedom and shape invariants of a split (DESIGN section 4 guards)."""
    n_users, n_items = split.n_users, split.n_items
    indptr, items = split.train_indptr, split.train_items
    assert indptr.dtype == np.int64 and items.dtype == np.int64
    assert split.train_ratings.dtype == np.float32
    assert indptr.shape == (n_users + 1,) and indptr[0] == 0 and indptr[-1] == len(items)
    assert np.all(np.diff(indptr) >= 0)
    assert len(split.train_ratings) == len(items)
    rows = np.repeat(np.arange(n_users), np.diff(indptr))
    assert np.all((np.diff(items) > 0) | (rows[1:] != rows[:-1])), "items sorted, unique per user"
    assert items.min(initial=0) >= 0 and items.max(initial=0) < n_items

    has_test = split.test_items >= 0
    assert split.test_items.shape == (n_users,)
    train_key = rows * n_items + items
    test_users = np.flatnonzero(has_test)
    assert not np.isin(test_users * n_items + split.test_items[has_test], train_key).any()

    neg = split.test_negatives
    assert neg.dtype == np.int64 and neg.shape[0] == n_users
    assert np.all(neg[~has_test] == -1)
    pos_neg = neg[has_test]
    assert np.all((pos_neg >= 0) & (pos_neg < n_items))
    assert not np.isin(test_users[:, None] * n_items + pos_neg, train_key).any()
    assert np.all(pos_neg != split.test_items[has_test][:, None])
    sorted_neg = np.sort(pos_neg, axis=1)
    assert np.all(np.diff(sorted_neg, axis=1) > 0), "negatives unique per user"

    if inter is not None:
        counts = np.bincount(inter.df["user_id"].to_numpy(), minlength=n_users)
        assert np.array_equal(has_test, counts >= 2), "exactly one test per eligible user"
        assert split.n_train == len(inter.df) - int(has_test.sum())


def expected_latest_items(inter: Interactions) -> np.ndarray:
    """Reference (slow, obvious) test item per user: max timestamp, ties -> last in file."""
    df = inter.df.reset_index(drop=True).assign(row=lambda d: np.arange(len(d)))
    ordered = df.sort_values(["user_id", "timestamp", "row"])
    last = ordered.groupby("user_id").tail(1).set_index("user_id")["item_id"]
    counts = df.groupby("user_id").size()
    out = np.full(inter.n_users, -1, dtype=np.int64)
    eligible = counts[counts >= 2].index.to_numpy()
    out[eligible] = last.loc[eligible].to_numpy()
    return out


def interactions_from_rows(rows: list[tuple], has_timestamps: bool = True) -> Interactions:
    """Interactions from raw (user, item, rating, timestamp) rows, dense ids by appearance."""
    from fedrec.data.loaders import build_interactions

    table = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    return build_interactions("tiny", table, has_timestamps)
