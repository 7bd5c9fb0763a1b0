"""The click-through split of MKR and KGCN (Wang et al., WWW 2019; DESIGN section 9).

Reference preprocessing: ``hwwang55/MKR`` and ``hwwang55/KGCN`` ``src/preprocess.py``
(``convert_rating``) and ``src/data_loader.py`` (``dataset_split``):

1. Items are restricted to those in the knowledge graph (``item_index2entity_id.txt``);
   ratings of other items are dropped.
2. A rating ``>= threshold`` is a positive (ML-1M 4; Last.FM 0, i.e. every listened artist).
3. Each user gets as many negatives as positives, sampled without replacement from the
   kept items the user never rated at any value.
4. All labelled rows are split at random 6:2:2 into train / eval / test (eval and test have
   ``int(0.2 * n)`` rows each, train the rest), over all rows, not per user.

Differences from the reference, all deliberate: users without positives keep their dense id
(with empty rows) instead of being dropped and renumbered; a user with fewer untouched items
than positives gets all of them (the reference's ``np.random.choice`` would fail); the
reference reads ``ratings.dat`` skipping its first line as a header (it has none), so it
drops one ML-1M rating, which is kept here; randomness is keyed (:mod:`fedrec.data.draws`),
so the rows differ from seed 555 of the reference but follow the same distribution.
"""

from __future__ import annotations

import logging

import numpy as np

from fedrec.data.draws import draw_untouched, keyed_uniform
from fedrec.data.errors import DataError
from fedrec.data.item_features import ItemFeatures, KnowledgeGraph
from fedrec.data.schema import Interactions, LabeledPairs, SplitData
from fedrec.data.split import _columns, build_csr

logger = logging.getLogger(__name__)

VALID_FRACTION = 0.2
TEST_FRACTION = 0.2
_TAG_NEGATIVES = 1
_TAG_PARTS = 2


def ctr_split(inter: Interactions, seed: int, threshold: float) -> SplitData:
    """Label interactions and split them 6:2:2 for click-through evaluation (MKR / KGCN).

    Parameters
    ----------
    inter : Interactions
        Interactions with dense ids. When ``inter.item_side`` is an :class:`ItemFeatures` with
        a knowledge graph, only items with ``kg.item_entity >= 0`` are kept and re-indexed
        densely (in their old order); otherwise every item is kept. Duplicate (user, item)
        rows count once (positive when any of them reaches ``threshold``).
    seed : int
        Seed of the negatives and of the 6:2:2 partition (equal seeds give equal splits).
    threshold : float
        A rating ``>= threshold`` is a positive; the user's other rated items are neither
        positives nor negative candidates.

    Returns
    -------
    SplitData
        ``n_items`` = kept items, ``item_side`` = the kept items' features (re-indexed);
        training rows in the CSR (``train_ratings`` and ``train_labels`` = the 0/1 labels,
        items ascending per user); ``ctr_valid`` / ``ctr_test`` the other rows;
        ``test_items`` all -1 and ``test_negatives`` of shape ``(n_users, 0)``.

    Raises
    ------
    DataError
        The KG does not cover the item index, no interaction is with a KG item, or no
        rating reaches ``threshold``.
    """
    side = inter.item_side
    kg = side.kg if isinstance(side, ItemFeatures) else None
    kept = _kept_items(inter, kg)
    if kg is None:
        logger.info("%s has no knowledge graph: the ctr split keeps every item", inter.name)
    n_kept = len(kept)
    new_id = np.full(inter.n_items, -1, dtype=np.int64)
    new_id[kept] = np.arange(n_kept)

    users, items, ratings, _ = _columns(inter)
    items = new_id[items]
    in_kg = items >= 0
    if not in_kg.any():
        raise DataError(
            f"{inter.name}: none of its {len(users)} interactions is with an item of the "
            f"knowledge graph ({kg.source or 'no source recorded'}); the ctr split keeps only "
            "KG items, so the KG does not belong to this dataset"
        )
    users, items, ratings = users[in_kg], items[in_kg], ratings[in_kg]
    keys, inverse = np.unique(users * n_kept + items, return_inverse=True)
    positive = np.zeros(len(keys), dtype=bool)
    np.logical_or.at(positive, inverse, ratings >= threshold)
    pair_user, pair_item = keys // n_kept, keys % n_kept
    n_users = inter.n_users
    n_pos = np.bincount(pair_user[positive], minlength=n_users)
    if n_pos.sum() == 0:
        raise DataError(
            f"{inter.name}: no rating reaches the positive threshold {threshold} "
            f"(ratings range {ratings.min()}..{ratings.max()}); the ctr split needs positives"
        )
    untouched = n_kept - np.bincount(pair_user, minlength=n_users)
    n_neg = np.minimum(n_pos, untouched)
    short = np.flatnonzero(n_neg < n_pos)
    if len(short):
        logger.warning(
            "%s ctr split: %d user(s) have fewer never-touched items than positives (first: "
            "user %d, %d positives, %d candidates); they get every candidate as a negative",
            inter.name, len(short), short[0], n_pos[short[0]], n_neg[short[0]],
        )
    drawers = np.flatnonzero(n_neg > 0)
    neg_items = draw_untouched(
        seed, _TAG_NEGATIVES, drawers, n_neg[drawers], np.arange(n_kept), pair_user, pair_item
    )
    neg_users = np.repeat(drawers, n_neg[drawers])

    row_user = np.concatenate([pair_user[positive], neg_users])
    row_item = np.concatenate([pair_item[positive], neg_items])
    row_label = np.concatenate(
        [np.ones(int(positive.sum()), np.float32), np.zeros(len(neg_items), np.float32)]
    )
    n = len(row_user)
    n_valid, n_test = int(n * VALID_FRACTION), int(n * TEST_FRACTION)
    order = np.lexsort((row_item, row_user, keyed_uniform(seed, _TAG_PARTS, row_user, row_item)))
    part = np.zeros(n, dtype=np.int8)
    part[order[:n_valid]] = 1
    part[order[n_valid : n_valid + n_test]] = 2

    indptr, train_items, train_labels = build_csr(
        row_user[part == 0], row_item[part == 0], row_label[part == 0], n_users
    )
    valid, test = (
        LabeledPairs(*build_csr(row_user[part == p], row_item[part == p], row_label[part == p],
                                n_users))
        for p in (1, 2)
    )
    logger.info(
        "%s ctr split: %d of %d items kept, %d positives, %d negatives; "
        "%d train / %d valid / %d test rows",
        inter.name, n_kept, inter.n_items, int(positive.sum()), len(neg_items),
        n - n_valid - n_test, n_valid, n_test,
    )
    return SplitData(
        name=inter.name,
        n_users=n_users,
        n_items=n_kept,
        train_indptr=indptr,
        train_items=train_items,
        train_ratings=train_labels,
        test_items=np.full(n_users, -1, dtype=np.int64),
        test_negatives=np.zeros((n_users, 0), dtype=np.int64),
        item_side=_subset_side(side, kept, inter.n_items),
        train_labels=train_labels.copy(),
        ctr_valid=valid,
        ctr_test=test,
    )


def _kept_items(inter: Interactions, kg: KnowledgeGraph | None) -> np.ndarray:
    if kg is None:
        return np.arange(inter.n_items, dtype=np.int64)
    if len(kg.item_entity) != inter.n_items:
        raise DataError(
            f"{inter.name}: knowledge graph {kg.source or '(no source recorded)'} gives an "
            f"entity for {len(kg.item_entity)} items, but the dataset has {inter.n_items}",
        )
    return np.flatnonzero(kg.item_entity >= 0).astype(np.int64)


def _subset_side(side, kept: np.ndarray, n_items: int):
    """The kept items' side information, re-indexed (typed features) or passed through."""
    if isinstance(side, ItemFeatures):
        return side.subset(kept) if len(kept) < n_items else side
    # untyped side information (older loaders): no KG, so every item was kept
    return side
