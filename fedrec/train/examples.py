"""Training examples of a cohort: positives, sampled negatives and per-user batch order.

Negatives and order are drawn from the counter-based generator keyed by
``(seed, round, user, epoch, position)``, so a user's examples are identical whatever other
users it is trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedrec import rng
from fedrec.data.schema import SplitData

MAX_REJECTION_ROUNDS = 64


def sample_negatives(
    split: SplitData,
    users: np.ndarray,
    positions: np.ndarray,
    num_negatives: int,
    seed: int,
    round_: int,
    epoch: int,
) -> np.ndarray:
    """Items the user did not train on, ``(len(users), num_negatives)``.

    Parameters
    ----------
    users : numpy.ndarray
        Global user id of each positive.
    positions : numpy.ndarray
        Index of the positive within its user's training list (a key of the draw).
    """
    n_items = split.n_items
    pool = split.negative_pool
    n_cand = n_items if pool is None else len(pool)
    keys_sorted = _train_keys(split)
    users = users.astype(np.int64)
    j = np.arange(num_negatives, dtype=np.int64)
    slot = positions.astype(np.int64)[:, None] * num_negatives + j[None, :]
    u2 = np.broadcast_to(users[:, None], slot.shape)
    out = np.empty(slot.shape, dtype=np.int64)
    todo = np.ones(slot.shape, dtype=bool)
    for attempt in range(MAX_REJECTION_ROUNDS):
        uu, ss = u2[todo], slot[todo]
        cand = (rng.uniform(seed, rng.NEGATIVES, round_, uu, epoch, ss, attempt) * n_cand)
        cand = cand.astype(np.int64) if pool is None else pool[cand.astype(np.int64)]
        key = uu * n_items + cand
        pos = np.searchsorted(keys_sorted, key)
        pos = np.minimum(pos, len(keys_sorted) - 1)
        bad = keys_sorted[pos] == key
        out[todo] = cand
        idx = np.flatnonzero(todo)
        todo[:] = False
        todo.flat[idx[bad]] = True
        if not todo.any():
            return out
    # Users who interacted with nearly every item: draw from their complement directly.
    for r, c in zip(*np.nonzero(todo), strict=True):
        u = int(u2[r, c])
        every = np.arange(n_items) if pool is None else pool
        free = np.setdiff1d(every, split.user_items(u), assume_unique=True)
        if len(free) == 0:
            raise ValueError(f"user {u} interacted with every item: no negative to sample")
        h = rng.hash64(seed, rng.NEGATIVES, round_, u, epoch, int(slot[r, c]), -1)
        out[r, c] = free[int(h % np.uint64(len(free)))]
    return out


_KEYS_CACHE: dict[int, np.ndarray] = {}


def _train_keys(split: SplitData) -> np.ndarray:
    """Sorted ``user * n_items + item`` of all training pairs (CSR order is already sorted)."""
    k = id(split.train_items)
    if k not in _KEYS_CACHE:
        counts = np.diff(split.train_indptr)
        users = np.repeat(np.arange(split.n_users, dtype=np.int64), counts)
        _KEYS_CACHE.clear()
        _KEYS_CACHE[k] = users * split.n_items + split.train_items
    return _KEYS_CACHE[k]


def examples_per_positive(loss: str, num_negatives: int, labelled: bool = False) -> int:
    """Examples generated per training row: ``bce`` 1 + negatives, ``bpr`` one pair per
    negative, ``mse`` (explicit ratings) the rating alone, ``ials`` the observed pair alone
    (every other item enters iALS's loss through a Gramian, :mod:`fedrec.train.ials`);
    ``labelled`` rows (click-through splits: fixed positives and negatives) are one example
    each, used as given."""
    if labelled:
        if loss != "bce":
            raise ValueError(
                f"setting 'loss' = {loss!r}: a click-through split has labelled rows and "
                "trains with loss = 'bce'"
            )
        return 1
    if loss == "bce":
        return 1 + num_negatives
    if loss == "bpr":
        return num_negatives
    if loss in ("mse", "ials"):
        return 1
    raise ValueError(f"unknown loss '{loss}' (known: bce, bpr, mse, ials)")


def uses_labels(loss: str) -> bool:
    """Whether examples carry labels (``bce``: 0/1, ``mse``: ratings, ``ials``: 1)."""
    return loss in ("bce", "mse", "ials")


@dataclass
class CohortExamples:
    """Examples of a cohort, user-contiguous, each user's block in its own shuffled order.

    Users are ordered by decreasing example count (``users``), so the users still training at
    step ``t`` are always a prefix of the cohort.

    Attributes
    ----------
    users : numpy.ndarray
        Global ids in training order.
    order : numpy.ndarray
        ``users == input_users[order]``.
    n_pos : numpy.ndarray
        Training positives per user (the FedAvg weight).
    n_ex : numpy.ndarray
        Examples per user per epoch.
    start : numpy.ndarray
        Offset of each user's block in the per-epoch arrays.
    items : list of numpy.ndarray
        Per epoch ``(E, k)`` item ids: ``k = 1`` (BCE / MSE, with ``labels``) or ``k = 2``
        (BPR: positive, negative).
    labels : list of numpy.ndarray
        Per epoch ``(E,)`` float32 labels (BCE 0/1, MSE ratings); empty arrays for BPR.
    """

    users: np.ndarray
    order: np.ndarray
    n_pos: np.ndarray
    n_ex: np.ndarray
    start: np.ndarray
    items: list[np.ndarray]
    labels: list[np.ndarray]


def build_examples(
    split: SplitData,
    users: np.ndarray,
    epochs: int,
    num_negatives: int,
    loss: str,
    seed: int,
    round_: int,
) -> CohortExamples:
    """Examples for ``users`` over ``epochs`` local epochs (see ``CohortExamples``)."""
    users = np.asarray(users, dtype=np.int64)
    n_pos_in = np.diff(split.train_indptr)[users]
    labelled = split.train_labels is not None
    per_pos = examples_per_positive(loss, num_negatives, labelled)
    # training order: most examples first; ties by global id
    order = np.lexsort((users, -n_pos_in))
    users_o = users[order]
    n_pos = n_pos_in[order]
    n_ex = n_pos * per_pos
    start = np.concatenate([[0], np.cumsum(n_ex)[:-1]]).astype(np.int64)

    total_pos = int(n_pos.sum())
    local = np.repeat(np.arange(len(users_o), dtype=np.int64), n_pos)
    pos_start = np.concatenate([[0], np.cumsum(n_pos)[:-1]]).astype(np.int64)
    offset = np.arange(total_pos, dtype=np.int64) - pos_start[local]
    pos_index = split.train_indptr[users_o][local] + offset
    pos_items = split.train_items[pos_index]
    g_users = users_o[local]

    items_e, labels_e = [], []
    for epoch in range(epochs):
        if labelled:  # fixed positives and negatives, as given
            items = pos_items[:, None]
            labels = split.train_labels[pos_index].astype(np.float32)
        elif loss == "mse":
            items = pos_items[:, None]
            labels = split.train_ratings[pos_index].astype(np.float32)
        elif loss == "ials":
            items = pos_items[:, None]
            labels = np.ones(total_pos, dtype=np.float32)
        elif loss == "bce":
            negs = sample_negatives(split, g_users, offset, num_negatives, seed, round_, epoch)
            cols = np.concatenate([pos_items[:, None], negs], axis=1)  # (P, 1 + nn)
            items = cols.reshape(-1, 1)
            labels = np.zeros(cols.shape, dtype=np.float32)
            labels[:, 0] = 1.0
            labels = labels.reshape(-1)
        else:
            negs = sample_negatives(split, g_users, offset, num_negatives, seed, round_, epoch)
            items = np.stack([np.repeat(pos_items, num_negatives), negs.reshape(-1)], axis=1)
            labels = np.zeros(0, dtype=np.float32)
        ex_local = np.repeat(local, per_pos)
        k_in_user = np.repeat(offset, per_pos) * per_pos + np.tile(
            np.arange(per_pos, dtype=np.int64), total_pos
        )
        h = rng.hash64(seed, rng.SHUFFLE, round_, users_o[ex_local], epoch, k_in_user)
        sort_key = (ex_local << np.int64(32)) | (h >> np.uint64(32)).astype(np.int64)
        perm = np.argsort(sort_key, kind="stable")
        items_e.append(items[perm])
        labels_e.append(labels[perm] if uses_labels(loss) else labels)
    return CohortExamples(users_o, order, n_pos, n_ex, start, items_e, labels_e)
