"""Keyed draws without replacement, shared by the ``ctr`` and ``cold-items`` splits.

Every draw is keyed by ``(seed, rng.SPLIT, tag, user, item)`` (:mod:`fedrec.rng`): a user's
sample depends only on the seed, the user, the candidate pool and what the user touched,
never on the other users or on call order.
"""

from __future__ import annotations

import numpy as np

from fedrec import rng

_CELLS = 1 << 22  # users x candidates keys held at once


def keyed_uniform(seed: int, tag: int, *keys: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) values keyed by ``(seed, rng.SPLIT, tag, *keys)``."""
    return rng.uniform(seed, rng.SPLIT, tag, *keys)


def draw_untouched(
    seed: int,
    tag: int,
    users: np.ndarray,
    counts: np.ndarray,
    pool: np.ndarray,
    touched_users: np.ndarray,
    touched_items: np.ndarray,
) -> np.ndarray:
    """For each user, ``counts`` distinct pool items it never touched, uniformly at random.

    Each (user, pool item) pair gets a keyed uniform value; a user's sample is its
    ``counts[j]`` untouched pool items with the smallest values (uniform sampling without
    replacement), returned in increasing key order, i.e. in random order.

    Parameters
    ----------
    seed, tag : int
        Seed and a tag telling apart the draws of one split.
    users : numpy.ndarray
        int64 distinct user ids to draw for.
    counts : numpy.ndarray
        int64 items to draw per user; at most the user's untouched pool items (the caller
        checks and reports shortfalls).
    pool : numpy.ndarray
        int64 distinct candidate item ids.
    touched_users, touched_items : numpy.ndarray
        int64 (user, item) pairs that may not be drawn (items outside ``pool`` and users
        outside ``users`` are ignored).

    Returns
    -------
    numpy.ndarray
        int64 ``(counts.sum(),)``: the drawn items of ``users[0]``, then of ``users[1]`` ...
    """
    users = np.asarray(users, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    pool = np.asarray(pool, dtype=np.int64)
    if len(users) == 0 or counts.sum() == 0 or len(pool) == 0:
        return np.zeros(0, dtype=np.int64)
    size = max(int(pool.max()), int(np.max(touched_items, initial=0))) + 1
    column = np.full(size, -1, dtype=np.int64)
    column[pool] = np.arange(len(pool))
    row_of = np.full(max(int(users.max()), int(np.max(touched_users, initial=0))) + 1, -1)
    row_of[users] = np.arange(len(users))
    t_row = row_of[touched_users]
    t_col = column[touched_items]
    keep = (t_row >= 0) & (t_col >= 0)
    order = np.argsort(t_row[keep], kind="stable")
    t_row, t_col = t_row[keep][order], t_col[keep][order]

    out = []
    chunk = max(1, _CELLS // len(pool))
    for start in range(0, len(users), chunk):
        stop = min(start + chunk, len(users))
        keys = keyed_uniform(seed, tag, users[start:stop, None], pool[None, :])
        lo, hi = np.searchsorted(t_row, [start, stop])
        keys[t_row[lo:hi] - start, t_col[lo:hi]] = np.inf
        need = counts[start:stop]
        top = int(need.max())
        if top == 0:
            continue
        if top < len(pool):
            part = np.argpartition(keys, top - 1, axis=1)[:, :top]
            best = np.take_along_axis(part, np.argsort(np.take_along_axis(keys, part, 1), 1), 1)
        else:
            best = np.argsort(keys, axis=1)
        take = np.arange(best.shape[1])[None, :] < need[:, None]
        out.append(pool[best[take]])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
