"""The cold-items split: items never seen in training, ranked from their side information.

A seeded ``fraction`` of the items that have interactions is *cold*: every interaction with a
cold item leaves training, and the warm interactions are the whole training set (no further
hold-out). Each user with a cold interaction is tested on its latest cold item against
``num_negatives`` cold items it never touched; its second-latest cold item is its validation
item, with its own negatives drawn the same way. A model can only score these candidates from
their towers (DESIGN section 9), which is what the split measures.
"""

from __future__ import annotations

import logging

import numpy as np

from fedrec.data.draws import draw_untouched, keyed_uniform
from fedrec.data.errors import DataError
from fedrec.data.schema import Interactions, SplitData
from fedrec.data.split import _columns, build_csr

logger = logging.getLogger(__name__)

_TAG_COLD = 11
_TAG_ORDER = 12
_TAG_TEST_NEGATIVES = 13
_TAG_VALID_NEGATIVES = 14


def cold_items_split(
    inter: Interactions, seed: int, num_negatives: int = 99, fraction: float = 0.2
) -> SplitData:
    """Hold out a random fraction of the items entirely; test users on them.

    Parameters
    ----------
    inter : Interactions
        Interactions with dense ids and no duplicate (user, item) pairs. Without timestamps
        (``has_timestamps`` false) the test / validation items are seeded random cold items
        of the user instead of the latest ones (a warning is logged).
    seed : int
        Seed of the cold items, of the order without timestamps and of the negatives.
    num_negatives : int
        Negatives per test (and per validation) user: cold items the user never touched.
    fraction : float
        Share of the items with interactions that are cold (``round(fraction * n)``, >= 1).

    Returns
    -------
    SplitData
        All items (``n_items`` unchanged, ``item_side`` passed through); training = every
        interaction with a warm item (items ascending per user); ``test_items`` the latest
        cold item per user (ties: last in file order), -1 for users without cold
        interactions; ``valid_items`` the second-latest, -1 for users with fewer than two;
        ``test_negatives`` / ``valid_negatives`` ``(n_users, num_negatives)``, -1 rows where
        the item is -1; ``test_ratings`` the test items' ratings (NaN where none).

    Raises
    ------
    ValueError
        ``fraction`` outside (0, 1) or ``num_negatives < 0``.
    DataError
        Duplicate (user, item) pairs, no item with interactions, or a user with fewer than
        ``num_negatives`` untouched cold items (the message names the settings to change).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"cold-items split: fraction must be in (0, 1), got {fraction}")
    if num_negatives < 0:
        raise ValueError(
            f"setting `test-negatives` (num_negatives) must be >= 0, got {num_negatives}"
        )
    users, items, ratings, times = _columns(inter)
    n_users, n_items = inter.n_users, inter.n_items
    _refuse_duplicates(inter, users, items)
    cold = _cold_items(items, n_items, seed, fraction, inter.name)
    is_cold = np.zeros(n_items, dtype=bool)
    is_cold[cold] = True
    warm = ~is_cold[items]
    indptr, train_items, train_ratings = build_csr(
        users[warm], items[warm], ratings[warm], n_users
    )

    rows = np.flatnonzero(~warm)
    if inter.has_timestamps:
        when = times[rows].astype(np.float64)
    else:
        logger.warning(
            "%s has no timestamps: the cold-items split tests each user on a seeded random "
            "cold item (and validates on another), not on its latest ones",
            inter.name,
        )
        when = keyed_uniform(seed, _TAG_ORDER, users[rows], items[rows])
    # per user, ascending time, ties by file order: the last row is the latest
    rows = rows[np.lexsort((rows, when, users[rows]))]
    row_user = users[rows]
    n_cold_of = np.bincount(row_user, minlength=n_users)
    end = np.cumsum(n_cold_of)
    test_items = np.full(n_users, -1, dtype=np.int64)
    valid_items = np.full(n_users, -1, dtype=np.int64)
    test_ratings = np.full(n_users, np.nan, dtype=np.float32)
    testable = _testable(inter, len(cold), n_cold_of, num_negatives, fraction)
    has_test = np.flatnonzero((n_cold_of >= 1) & testable)
    has_valid = np.flatnonzero((n_cold_of >= 2) & testable)
    test_items[has_test] = items[rows[end[has_test] - 1]]
    test_ratings[has_test] = ratings[rows[end[has_test] - 1]]
    valid_items[has_valid] = items[rows[end[has_valid] - 2]]

    negatives = []
    for tag, who in ((_TAG_TEST_NEGATIVES, has_test), (_TAG_VALID_NEGATIVES, has_valid)):
        out = np.full((n_users, num_negatives), -1, dtype=np.int64)
        drawn = draw_untouched(
            seed, tag, who, np.full(len(who), num_negatives), cold, users, items
        )
        out[who] = drawn.reshape(len(who), num_negatives)
        negatives.append(out)
    logger.info(
        "%s cold-items split: %d of %d items cold, %d train interactions, %d test users, "
        "%d validation users",
        inter.name, len(cold), n_items, int(warm.sum()), len(has_test), len(has_valid),
    )
    return SplitData(
        name=inter.name,
        n_users=n_users,
        n_items=n_items,
        train_indptr=indptr,
        train_items=train_items,
        train_ratings=train_ratings,
        test_items=test_items,
        test_negatives=negatives[0],
        test_ratings=test_ratings,
        item_side=inter.item_side,
        valid_items=valid_items,
        valid_negatives=negatives[1],
        negative_pool=np.setdiff1d(np.arange(n_items, dtype=np.int64), cold),
    )


def _cold_items(
    items: np.ndarray, n_items: int, seed: int, fraction: float, name: str
) -> np.ndarray:
    """The seeded cold items (sorted): ``round(fraction * n)`` of the ``n`` interacted items."""
    seen = np.flatnonzero(np.bincount(items, minlength=n_items) > 0)
    if len(seen) == 0:
        raise DataError(f"{name}: no item has interactions; the cold-items split needs some")
    n_cold = max(1, int(round(fraction * len(seen))))
    order = np.lexsort((seen, keyed_uniform(seed, _TAG_COLD, seen)))
    return np.sort(seen[order[:n_cold]])


def _testable(
    inter: Interactions, n_cold: int, n_cold_of: np.ndarray, num_negatives: int, fraction: float
) -> np.ndarray:
    """Users with ``num_negatives`` cold items they never touched (the others are not tested,
    logged); an error naming the setting when no user with a cold item is left."""
    ok = n_cold - n_cold_of >= num_negatives
    short = (n_cold_of >= 1) & ~ok
    if short.any():
        if not ((n_cold_of >= 1) & ok).any():
            u = int(np.flatnonzero(short)[0])
            raise DataError(
                f"{inter.name} cold-items split: {n_cold} cold items (fraction {fraction}); "
                f"every user with a cold item touched too many of them (e.g. user {u} touched "
                f"{n_cold_of[u]}, leaving {n_cold - n_cold_of[u]} candidates for "
                f"{num_negatives} negatives). Lower the setting `test-negatives` "
                f"(num_negatives={num_negatives}) or use a dataset with more items"
            )
        logger.warning(
            "%s cold-items split: %d user(s) touched more than %d of the %d cold items and are "
            "not tested (too few untouched cold items for %d negatives)", inter.name,
            int(short.sum()), n_cold - num_negatives, n_cold, num_negatives)
    return ok


def _refuse_duplicates(inter: Interactions, users: np.ndarray, items: np.ndarray) -> None:
    key = np.sort(users * inter.n_items + items)
    dup = np.flatnonzero(key[1:] == key[:-1])
    if len(dup):
        u = int(key[dup[0]] // inter.n_items)
        raise DataError(
            f"{inter.name}: user {u} (raw id {inter.raw_user_ids[u]}) has duplicate "
            "(user, item) interactions; deduplicate before splitting"
        )
