"""The tuning split of a published protocol: one random training row per user held out.

The NCF split (:func:`fedrec.data.split.ncf_split`) has a test part and nothing to tune on.
``split = "ncf-tune"`` is what its hyperparameters (epochs, dimension, rates) are chosen on, as
Rendle et al. (RecSys 2020) tuned on "a holdout carved from training": from the NCF training
data, each user with at least two training rows loses one seeded random row, which becomes its
held-out item, ranked against ``num_negatives`` items the user never touched (training rows,
the held-out row and the user's published NCF test item all excluded). The published test rows
are not in this split at all: its validation part *and* its test part are the held-out rows
(the same arrays), so a tuning run can never read the NCF test items, and the chosen settings
are then run once on ``split = "ncf"`` with every training row.

ML-1M's rating file is ordered by user but not by time within a user, so the held-out row is
a random one (as the cold-items split does without timestamps), not the latest.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedrec.data.draws import draw_untouched, keyed_uniform
from fedrec.data.schema import SplitData
from fedrec.data.split import build_csr

_TAG_HOLDOUT = 21
_TAG_NEGATIVES = 22


def tuning_holdout(split: SplitData, seed: int, num_negatives: int = 99) -> SplitData:
    """``split`` with each user's seeded random training row held out as valid and test part.

    Parameters
    ----------
    split : SplitData
        A ranking split (its test part is dropped; its test items stay excluded from the
        held-out negatives, since they are positives of their users).
    seed : int
        Seed of the held-out rows and their negatives (keyed per user: a user's choice does
        not depend on other users).
    num_negatives : int
        Negatives per held-out row.

    Returns
    -------
    SplitData
        Training rows minus the held-out ones; ``valid_items`` / ``test_items`` the held-out
        item (-1 for users with fewer than two training rows), ``valid_negatives`` /
        ``test_negatives`` their negatives; no ``test_ratings``.
    """
    if split.protocol != "ranking":
        raise ValueError("a tuning hold-out needs a ranking split (held-out item + negatives)")
    n_users = split.n_users
    counts = np.diff(split.train_indptr)
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    items = split.train_items.astype(np.int64)
    # the row with the smallest keyed value of each user with >= 2 rows is held out
    key = keyed_uniform(seed, _TAG_HOLDOUT, users, items)
    order = np.lexsort((key, users))
    first = split.train_indptr[:-1][counts >= 2]
    held_rows = order[first]
    held_items = np.full(n_users, -1, dtype=np.int64)
    held_items[users[held_rows]] = items[held_rows]

    keep = np.ones(len(items), dtype=bool)
    keep[held_rows] = False
    indptr, train_items, train_ratings = build_csr(
        users[keep], items[keep], split.train_ratings[keep], n_users
    )
    eligible = np.flatnonzero(held_items >= 0)
    test_known = split.test_items >= 0
    touched_users = np.concatenate([users, np.flatnonzero(test_known)])
    touched_items = np.concatenate([items, split.test_items[test_known]])
    short = counts[eligible] + test_known[eligible] + num_negatives > split.n_items
    if short.any():
        u = int(eligible[np.flatnonzero(short)[0]])
        raise ValueError(f"user {u} has fewer than {num_negatives} untouched items for the "
                         "tuning hold-out's negatives")
    drawn = draw_untouched(seed, _TAG_NEGATIVES, eligible,
                           np.full(len(eligible), num_negatives, dtype=np.int64),
                           np.arange(split.n_items, dtype=np.int64), touched_users,
                           touched_items)
    negatives = np.full((n_users, num_negatives), -1, dtype=np.int64)
    negatives[eligible] = drawn.reshape(len(eligible), num_negatives)
    return dataclasses.replace(
        split, train_indptr=indptr, train_items=train_items, train_ratings=train_ratings,
        test_items=held_items, test_negatives=negatives, test_ratings=None,
        valid_items=held_items, valid_negatives=negatives,
    )
