"""Data containers shared by loaders, splits, training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

COLUMNS = ("user_id", "item_id", "rating", "timestamp")
NO_TIMESTAMP = -1


@dataclass
class Interactions:
    """One interactions table with dense 0-based ids.

    Attributes
    ----------
    name : str
        Dataset name (``synthetic``, ``ml-100k`` ...).
    df : pandas.DataFrame
        Columns ``user_id`` (int64), ``item_id`` (int64), ``rating`` (float32),
        ``timestamp`` (int64, ``NO_TIMESTAMP`` where the source has none), in file order.
    raw_user_ids, raw_item_ids : numpy.ndarray
        Encoder: ``raw_user_ids[dense_id]`` is the id in the source file. Dense ids are
        assigned in order of first appearance in the file (read top to bottom).
    has_timestamps : bool
        Whether ``timestamp`` holds real times.
    item_side : dict
        Optional item side information indexed by dense item id (e.g. ``"genres"``:
        float32 array ``(n_items, n_genres)``, ``"title"``: list of str).
    """

    name: str
    df: pd.DataFrame
    raw_user_ids: np.ndarray
    raw_item_ids: np.ndarray
    has_timestamps: bool
    item_side: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.raw_user_ids)

    @property
    def n_items(self) -> int:
        return len(self.raw_item_ids)


@dataclass
class SplitData:
    """Train/test split with fixed sampled negatives (DESIGN section 4).

    Attributes
    ----------
    train_indptr : numpy.ndarray
        int64 ``(n_users + 1,)`` CSR row pointer over users.
    train_items : numpy.ndarray
        int64 training items, sorted ascending within each user.
    train_ratings : numpy.ndarray
        float32 ratings aligned with ``train_items``.
    test_items : numpy.ndarray
        int64 ``(n_users,)`` held-out item per user, -1 where a user has none.
    test_negatives : numpy.ndarray
        int64 ``(n_users, n_neg)`` fixed negatives (never a train or test item of the user);
        rows of users without a test item are -1.
    """

    name: str
    n_users: int
    n_items: int
    train_indptr: np.ndarray
    train_items: np.ndarray
    train_ratings: np.ndarray
    test_items: np.ndarray
    test_negatives: np.ndarray
    test_ratings: np.ndarray | None = None
    item_side: dict = field(default_factory=dict)

    def user_items(self, u: int) -> np.ndarray:
        """Training items of user ``u``."""
        return self.train_items[self.train_indptr[u] : self.train_indptr[u + 1]]

    @property
    def n_train(self) -> int:
        return int(self.train_indptr[-1])

    def item_counts(self) -> np.ndarray:
        """Training interactions per item (popularity)."""
        return np.bincount(self.train_items, minlength=self.n_items)
