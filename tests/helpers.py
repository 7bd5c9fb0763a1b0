"""Small hand-built datasets for unit tests (no files, no generator dependency)."""

from __future__ import annotations

import numpy as np

from fedrec.data.schema import SplitData


def tiny_split(
    n_users: int = 12, n_items: int = 40, seed: int = 0, n_neg: int = 12, planted: bool = False
) -> SplitData:
    """Uneven user sizes (2..~20 items), planted two-cluster taste, fixed negatives.

    ``planted``: negatives come from the other cluster only, so the taste alone ranks the
    held-out item first.
    """
    rs = np.random.default_rng(seed)
    indptr, items, tests, negs = [0], [], [], []
    for u in range(n_users):
        k = int(rs.integers(2, 20)) if u % 3 else int(rs.integers(12, 22))
        half = n_items // 2
        pool = np.arange(half) if u % 2 == 0 else np.arange(half, n_items)
        chosen = rs.choice(pool, size=min(k + 1, len(pool)), replace=False)
        test, train = chosen[0], np.sort(chosen[1:])
        items.append(train)
        indptr.append(indptr[-1] + len(train))
        tests.append(test)
        other = np.setdiff1d(np.arange(n_items), pool)
        free = other if planted else np.setdiff1d(np.arange(n_items), chosen)
        negs.append(rs.choice(free, size=n_neg, replace=False))
    return SplitData(
        name="tiny",
        n_users=n_users,
        n_items=n_items,
        train_indptr=np.array(indptr, dtype=np.int64),
        train_items=np.concatenate(items).astype(np.int64),
        train_ratings=np.ones(indptr[-1], dtype=np.float32),
        test_items=np.array(tests, dtype=np.int64),
        test_negatives=np.stack(negs).astype(np.int64),
    )
