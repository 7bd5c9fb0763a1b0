"""Data containers shared by loaders, splits, training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedrec.data.item_features import ItemFeatures

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
    item_side : ItemFeatures
        Typed public side information aligned with the dense item ids.
    """

    name: str
    df: pd.DataFrame
    raw_user_ids: np.ndarray
    raw_item_ids: np.ndarray
    has_timestamps: bool
    item_side: ItemFeatures = field(default_factory=ItemFeatures)

    @property
    def n_users(self) -> int:
        return len(self.raw_user_ids)

    @property
    def n_items(self) -> int:
        return len(self.raw_item_ids)


@dataclass
class LabeledPairs:
    """Labelled (user, item) rows in CSR over users: a click-through evaluation part.

    Attributes
    ----------
    indptr : numpy.ndarray
        int64 ``(n_users + 1,)``.
    items : numpy.ndarray
        int64 items, grouped by user.
    labels : numpy.ndarray
        float32 0/1 labels aligned with ``items``.
    """

    indptr: np.ndarray
    items: np.ndarray
    labels: np.ndarray

    def user_rows(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[u], self.indptr[u + 1]
        return self.items[lo:hi], self.labels[lo:hi]


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
    test_ratings : numpy.ndarray, optional
        float32 rating of each test item (explicit-feedback metrics).
    item_side : ItemFeatures
        Typed public side information aligned with the dense item ids.
    train_labels : numpy.ndarray, optional
        float32 0/1 label of each training row (click-through splits: the rows are fixed
        positives *and* negatives, used as given; no negative sampling in training).
    valid_items, valid_negatives : numpy.ndarray, optional
        A ranking validation part, laid out as ``test_items`` / ``test_negatives``.
    negative_pool : numpy.ndarray, optional
        Sorted items that training may sample as negatives (default: every item). The
        cold-items split keeps its cold items out: they do not exist at training time.
    ctr_valid, ctr_test : LabeledPairs, optional
        Click-through validation and test rows (``split = "ctr"``); then ``test_items`` is
        all -1 and ``test_negatives`` has 0 columns.
    fake_users : int
        The last ``fake_users`` users are simulated attackers (``fedrec.attacks``): no test
        item, never evaluated; nodes host them among their normal users.
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
    item_side: ItemFeatures = field(default_factory=ItemFeatures)
    train_labels: np.ndarray | None = None
    valid_items: np.ndarray | None = None
    valid_negatives: np.ndarray | None = None
    ctr_valid: LabeledPairs | None = None
    ctr_test: LabeledPairs | None = None
    negative_pool: np.ndarray | None = None
    fake_users: int = 0

    @property
    def protocol(self) -> str:
        """``ctr`` (labelled rows: AUC/ACC/F1) or ``ranking`` (held-out item vs negatives)."""
        return "ctr" if self.ctr_test is not None else "ranking"

    @property
    def has_validation(self) -> bool:
        return self.valid_items is not None or self.ctr_valid is not None

    def user_items(self, u: int) -> np.ndarray:
        """Training items of user ``u``."""
        return self.train_items[self.train_indptr[u] : self.train_indptr[u + 1]]

    @property
    def n_train(self) -> int:
        return int(self.train_indptr[-1])

    def item_counts(self) -> np.ndarray:
        """Training interactions per item (popularity)."""
        return np.bincount(self.train_items, minlength=self.n_items)
