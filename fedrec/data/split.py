"""Leak-free train/test splits with fixed sampled negatives (DESIGN section 4)."""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from fedrec.data.errors import DataError
from fedrec.data.loaders import load_ml_1m
from fedrec.data.ncf_files import find_ncf_files, read_test_negative, read_test_rating
from fedrec.data.paths import resolve_data_dir
from fedrec.data.schema import Interactions, SplitData

logger = logging.getLogger(__name__)

_MASK_CELLS = 1 << 24  # users x items booleans held at once while sampling negatives
NCF_NUM_NEGATIVES = 99
NCF_TRAIN_SIZE = 994_169
ML1M_SIZE = 1_000_209


def leave_one_out(inter: Interactions, num_negatives: int = 99, seed: int = 0) -> SplitData:
    """Hold out each user's latest interaction and sample fixed test negatives.

    The test item is the interaction with the largest timestamp; among equal latest timestamps,
    the one appearing last in file order. Users with fewer than 2 interactions keep everything
    in training and get test item -1 and negatives -1. Negatives are drawn once, uniformly
    without replacement, from the items the user never interacted with (train or test).

    Parameters
    ----------
    inter : Interactions
        Interactions with real timestamps and no duplicate (user, item) pairs.
    num_negatives : int
        Negatives per user.
    seed : int
        Seed of ``numpy.random.default_rng`` for the negatives.

    Returns
    -------
    SplitData
        CSR training data (items sorted per user), test items, ratings and negatives.

    Raises
    ------
    DataError
        No timestamps (e.g. ML-1M rebuilt without them: use ``split = "ncf"``), duplicate
        (user, item) pairs, or a user with fewer than ``num_negatives`` non-interacted items.
    """
    if not inter.has_timestamps:
        hint = (
            'For ML-1M use the published NCF protocol (setting split = "ncf"), or provide '
            "ml-1m/ratings.dat with its timestamps."
            if inter.name == "ml-1m"
            else 'Use a split that needs no times (e.g. split = "ctr", the click-through '
            "protocol of the KG papers)."
        )
        raise DataError(
            f"dataset {inter.name!r} has no timestamps, but leave-one-out holds out each user's "
            f"latest interaction and needs them. {hint}"
        )
    if num_negatives < 0:
        raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
    users, items, ratings, times = _columns(inter)
    n, n_users = len(users), inter.n_users
    test_rows, eligible = latest_rows(users, times, n_users)

    test_items = np.full(n_users, -1, dtype=np.int64)
    test_items[eligible] = items[test_rows]
    test_ratings = np.full(n_users, np.nan, dtype=np.float32)
    test_ratings[eligible] = ratings[test_rows]
    train = np.ones(n, dtype=bool)
    train[test_rows] = False
    indptr, train_items, train_ratings = build_csr(
        users[train], items[train], ratings[train], n_users
    )
    _check_no_duplicates(inter, indptr, train_items, test_items)
    negatives = sample_negatives(
        indptr,
        train_items,
        test_items,
        inter.n_items,
        num_negatives,
        np.random.default_rng(seed),
        raw_user_ids=inter.raw_user_ids,
    )
    logger.debug("leave-one-out on %s: %d test users", inter.name, int(eligible.sum()))
    return SplitData(
        name=inter.name,
        n_users=n_users,
        n_items=inter.n_items,
        train_indptr=indptr,
        train_items=train_items,
        train_ratings=train_ratings,
        test_items=test_items,
        test_negatives=negatives,
        test_ratings=test_ratings,
        item_side=inter.item_side.copy(),
    )


def ncf_split(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    on_overlap: str = "resample",
    seed: int = 0,
) -> SplitData:
    """The ML-1M split of the NCF paper (He et al., WWW 2017), rebuilt from its test files.

    User index = ML-1M UserID - 1 (checked to equal first-appearance order); item index =
    order of first appearance of the MovieID in the ratings file. The test item of each user
    and its 99 negatives come from ``ncf-hexiangnan/ml-1m.test.rating`` and
    ``ml-1m.test.negative``; training is every rating except the 6,040 test rows (994,169).

    Data finding (checked on the published files): ``ml-1m.test.negative`` is *not* clean.
    On 156 of its 6,040 lines the user's own held-out test item is one of the 99 "negatives"
    (no other positive of the user appears, and no line repeats a negative). NCF's evaluation
    scores candidates in a dict keyed by item, so there the duplicate silently collapsed. By
    default (``on_overlap="resample"``) each such entry is replaced by a fresh negative drawn
    uniformly (seeded) from the items the user never rated and not already in the line, so
    every user keeps 99 true negatives; ``on_overlap="raise"`` refuses the file instead.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Data directory with ``ml-1m/`` (``ratings.dat`` or ``ratings_uir_ordered.dat``) and
        ``ncf-hexiangnan/``.
    on_overlap : {"resample", "raise"}
        What to do with published negatives that are positives of the user.
    seed : int
        Seed for the replacement negatives.

    Returns
    -------
    SplitData
        ``name`` ``"ml-1m"``, 6,040 users, 3,706 items, 994,169 training interactions.

    Raises
    ------
    DataError
        Files inconsistent with each other or with the NCF protocol (file and line named).
    """
    if on_overlap not in ("resample", "raise"):
        raise ValueError(f"on_overlap must be 'resample' or 'raise', got {on_overlap!r}")
    root = resolve_data_dir(data_dir)
    rating_path, negative_path = find_ncf_files(root)
    inter = load_ml_1m(root)
    expected_users = np.arange(1, inter.n_users + 1)
    if not np.array_equal(inter.raw_user_ids, expected_users):
        raise DataError(
            "ml-1m ratings: UserIDs in order of first appearance are not 1, 2, ..., "
            f"{inter.n_users}; the NCF user index (UserID - 1) cannot be aligned"
        )
    test = read_test_rating(rating_path, inter.n_users, inter.n_items)
    negatives = read_test_negative(negative_path, test, inter.n_items, NCF_NUM_NEGATIVES)

    users, items, ratings, times = _columns(inter)
    key = users * inter.n_items + items
    sorter = np.argsort(key, kind="stable")
    test_key = test.users * inter.n_items + test.items
    pos = np.searchsorted(key, test_key, sorter=sorter).clip(max=len(key) - 1)
    rows = sorter[pos]
    found = key[rows] == test_key
    if not found.all():
        k = int(np.flatnonzero(~found)[0])
        raise DataError(
            f"test pair (user {test.users[k]}, item {test.items[k]}) is not a rating of that user "
            "in ml-1m (user = UserID - 1, item = first-appearance order of MovieID)",
            rating_path,
            k + 1,
        )
    bad = ratings[rows] != test.ratings
    if inter.has_timestamps:
        bad |= times[rows] != test.timestamps
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"test row disagrees with ml-1m: rating/timestamp {test.ratings[k]}/"
            f"{test.timestamps[k]} vs {ratings[rows[k]]}/{times[rows[k]]} in the ratings file",
            rating_path,
            k + 1,
        )
    train = np.ones(len(users), dtype=bool)
    train[rows] = False
    n_train = int(train.sum())
    if n_train != len(users) - inter.n_users or (
        len(users) == ML1M_SIZE and n_train != NCF_TRAIN_SIZE
    ):
        raise DataError(
            f"NCF training set has {n_train} interactions, expected "
            f"{len(users) - inter.n_users} (all ratings minus one test row per user)",
            rating_path,
        )
    negatives = _fix_overlaps(
        negatives, users, items, test.items, inter.n_items, on_overlap, negative_path, seed
    )
    indptr, train_items, train_ratings = build_csr(
        users[train], items[train], ratings[train], inter.n_users
    )
    return SplitData(
        name="ml-1m",
        n_users=inter.n_users,
        n_items=inter.n_items,
        train_indptr=indptr,
        train_items=train_items,
        train_ratings=train_ratings,
        test_items=test.items.copy(),
        test_negatives=negatives,
        test_ratings=test.ratings.astype(np.float32),
        item_side=inter.item_side.copy(),
    )


def latest_rows(
    users: np.ndarray, times: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row of each user's latest interaction (ties: the one last in file order).

    Parameters
    ----------
    users, times : numpy.ndarray
        Dense user ids and timestamps, in file order.
    n_users : int
        Number of users.

    Returns
    -------
    rows : numpy.ndarray
        int64 row indices, one per eligible user, in user order.
    eligible : numpy.ndarray
        bool ``(n_users,)``: users with at least 2 interactions.
    """
    counts = np.bincount(users, minlength=n_users)
    eligible = counts >= 2
    latest = np.full(n_users, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(latest, users, times)
    at_latest = np.flatnonzero(times == latest[users])
    last_row = np.full(n_users, -1, dtype=np.int64)
    np.maximum.at(last_row, users[at_latest], at_latest)
    return last_row[eligible], eligible


def build_csr(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Build a user-major CSR with items sorted ascending within each user.

    Parameters
    ----------
    users, items : numpy.ndarray
        Dense ids of the interactions (non-negative).
    ratings : numpy.ndarray
        Values aligned with ``items``.
    n_users : int
        Number of rows.

    Returns
    -------
    tuple of numpy.ndarray
        ``indptr`` int64 ``(n_users + 1,)``, ``items`` int64, ``ratings`` float32.
    """
    n_cols = int(items.max()) + 1 if len(items) else 1
    order = np.argsort(users.astype(np.int64) * n_cols + items, kind="stable")
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return (
        indptr,
        np.ascontiguousarray(items[order], dtype=np.int64),
        np.ascontiguousarray(ratings[order], dtype=np.float32),
    )


def sample_negatives(
    indptr: np.ndarray,
    pos_items: np.ndarray,
    test_items: np.ndarray,
    n_items: int,
    num_negatives: int,
    rng: np.random.Generator,
    raw_user_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Sample negatives uniformly without replacement from each user's non-interacted items.

    Vectorised: per chunk of users, candidates are drawn with replacement and the first
    ``num_negatives`` distinct non-positive draws are kept (exactly uniform sampling without
    replacement, since all allowed items are equally likely); the rare users for whom one
    batch of draws falls short get an exact fallback (random keys over all items).

    Parameters
    ----------
    indptr, pos_items : numpy.ndarray
        CSR of the positive (training) items per user.
    test_items : numpy.ndarray
        int64 ``(n_users,)`` held-out item, also a positive; users with -1 get no negatives.
    n_items : int
        Item count.
    num_negatives : int
        Negatives per user with a test item.
    rng : numpy.random.Generator
        Random source.
    raw_user_ids : numpy.ndarray, optional
        Encoder, to name users in errors.

    Returns
    -------
    numpy.ndarray
        int64 ``(n_users, num_negatives)``, -1 rows for users without a test item.

    Raises
    ------
    DataError
        A user has fewer than ``num_negatives`` non-interacted items.
    """
    n_users = len(test_items)
    out = np.full((n_users, num_negatives), -1, dtype=np.int64)
    eligible = test_items >= 0
    n_pos = np.diff(indptr) + eligible
    too_dense = eligible & (n_items - n_pos < num_negatives)
    if too_dense.any():
        u = int(np.flatnonzero(too_dense)[0])
        raw = f" (raw id {raw_user_ids[u]})" if raw_user_ids is not None else ""
        raise DataError(
            f"user {u}{raw} interacted with {n_pos[u]} of {n_items} items, leaving "
            f"{n_items - n_pos[u]} candidates for {num_negatives} negatives; lower the number "
            "of test negatives or drop such users"
        )
    targets = np.flatnonzero(eligible)
    if num_negatives == 0 or len(targets) == 0:
        return out
    chunk = max(1, _MASK_CELLS // n_items)
    for start in range(0, len(targets), chunk):
        rows = targets[start : start + chunk]
        mask = np.zeros((len(rows), n_items), dtype=bool)
        lo, hi = indptr[rows], indptr[rows + 1]
        lengths = hi - lo
        which = np.repeat(np.arange(len(rows)), lengths)
        flat = np.arange(len(which)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        mask[which, pos_items[np.repeat(lo, lengths) + flat]] = True
        mask[np.arange(len(rows)), test_items[rows]] = True
        out[rows] = _draw_rows(mask, num_negatives, rng)
    return out


def _draw_rows(mask: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """``num`` distinct non-masked items per row, uniformly, in random order."""
    n_rows, n_items = mask.shape
    degree = np.quantile(mask.sum(axis=1), 0.9)
    allowed = n_items - degree
    target = num + 4 * math.sqrt(num) + 4
    if target < 0.95 * allowed:
        draws = math.ceil(-n_items * math.log(1 - target / allowed))
    else:
        draws = 3 * n_items
    draws = int(min(max(draws, num), 3 * n_items))
    cand = rng.integers(n_items, size=(n_rows, draws))
    ok = ~np.take_along_axis(mask, cand, axis=1)
    by_value = np.argsort(cand, axis=1, kind="stable")
    sorted_cand = np.take_along_axis(cand, by_value, axis=1)
    first = np.ones_like(ok)
    first[:, 1:] = sorted_cand[:, 1:] != sorted_cand[:, :-1]
    unique = np.empty_like(ok)
    np.put_along_axis(unique, by_value, first, axis=1)
    ok &= unique
    rank = np.cumsum(ok, axis=1)
    done = rank[:, -1] >= num
    result = np.empty((n_rows, num), dtype=np.int64)
    keep = ok[done] & (rank[done] <= num)
    result[done] = cand[done][keep].reshape(-1, num)
    if not done.all():
        result[~done] = _draw_exact(mask[~done], num, rng)
    return result


def _draw_exact(mask: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    keys = rng.random(mask.shape)
    keys[mask] = 2.0
    top = np.argpartition(keys, num - 1, axis=1)[:, :num]
    return np.take_along_axis(top, np.argsort(np.take_along_axis(keys, top, 1), 1), 1)


def _columns(inter: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    df = inter.df
    users = df["user_id"].to_numpy(dtype=np.int64)
    items = df["item_id"].to_numpy(dtype=np.int64)
    for name, ids, size in (("user_id", users, inter.n_users), ("item_id", items, inter.n_items)):
        if len(ids) and (ids.min() < 0 or ids.max() >= size):
            raise DataError(f"{inter.name}: {name} outside 0..{size - 1} (dense ids expected)")
    return (
        users,
        items,
        df["rating"].to_numpy(dtype=np.float32),
        df["timestamp"].to_numpy(dtype=np.int64),
    )


def _check_no_duplicates(
    inter: Interactions, indptr: np.ndarray, train_items: np.ndarray, test_items: np.ndarray
) -> None:
    n_users = len(test_items)
    row_of = np.repeat(np.arange(n_users), np.diff(indptr))
    same = (train_items[1:] == train_items[:-1]) & (row_of[1:] == row_of[:-1])
    key = row_of * inter.n_items + train_items  # sorted: CSR is user-major, items ascending
    has_test = np.flatnonzero(test_items >= 0)
    test_key = has_test * inter.n_items + test_items[has_test]
    pos = np.searchsorted(key, test_key).clip(max=max(len(key) - 1, 0))
    in_train = key[pos] == test_key if len(key) else np.zeros(len(test_key), dtype=bool)
    if same.any() or in_train.any():
        u = (
            int(row_of[np.flatnonzero(same)[0]])
            if same.any()
            else int(has_test[np.flatnonzero(in_train)[0]])
        )
        raise DataError(
            f"{inter.name}: user {u} (raw id {inter.raw_user_ids[u]}) has duplicate "
            "(user, item) interactions; deduplicate before splitting"
        )


def _fix_overlaps(
    negatives: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    test_items: np.ndarray,
    n_items: int,
    on_overlap: str,
    path: os.PathLike[str],
    seed: int,
) -> np.ndarray:
    n_users, num = negatives.shape
    positives = np.sort(users * n_items + items)
    neg_key = np.arange(n_users)[:, None] * n_items + negatives
    at = np.searchsorted(positives, neg_key).clip(max=len(positives) - 1)
    overlap = positives[at] == neg_key
    if not overlap.any():
        return negatives
    bad_rows = np.flatnonzero(overlap.any(axis=1))
    first = int(bad_rows[0])
    is_test = int((overlap & (negatives == test_items[:, None])).sum())
    what = (
        f"{int(overlap.sum())} published negative(s) on {len(bad_rows)} line(s) are positives "
        f"of their user ({is_test} of them the user's own test item; first: user {first}, "
        f"item {negatives[first][overlap[first]][0]})"
    )
    if on_overlap == "raise":
        raise DataError(what + "; no negative may be a positive of its user", path, first + 1)
    logger.warning("%s: %s; replacing them with fresh seeded negatives", path, what)
    rng = np.random.default_rng(seed)
    fixed = negatives.copy()
    for u in bad_rows.tolist():
        taken = np.zeros(n_items, dtype=bool)
        taken[items[users == u]] = True
        taken[negatives[u]] = True
        replace = np.flatnonzero(overlap[u])
        fixed[u, replace] = rng.choice(np.flatnonzero(~taken), size=len(replace), replace=False)
    return fixed
