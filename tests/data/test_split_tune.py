"""The NCF tuning split: one seeded random training row per user held out, no NCF test rows."""

from __future__ import annotations

import numpy as np

from fedrec.data import prepare
from fedrec.data.split import ncf_split
from fedrec.data.split_tune import tuning_holdout
from tests.data.checks import assert_split_invariants
from tests.data.test_split import _ncf_fixture


def test_holdout_moves_one_training_row_per_user_and_drops_the_ncf_test(write, tmp_path):
    # Prepare
    _ncf_fixture(write)
    full = ncf_split(tmp_path)

    # Execute
    tune = tuning_holdout(full, seed=3)

    # Assert: each user lost exactly the held-out row from its training rows
    assert tune.n_train == full.n_train - 3
    for u in range(3):
        before, after = set(full.user_items(u).tolist()), set(tune.user_items(u).tolist())
        assert before - after == {int(tune.valid_items[u])}
        assert after < before
    # valid and test part are the held-out rows; the NCF test item is nowhere in them
    assert np.array_equal(tune.valid_items, tune.test_items)
    assert np.array_equal(tune.valid_negatives, tune.test_negatives)
    assert not (tune.valid_negatives == full.test_items[:, None]).any()
    assert not (tune.valid_items == full.test_items).any()
    assert tune.test_ratings is None and tune.has_validation
    assert_split_invariants(tune)


def test_holdout_is_seeded_per_user(write, tmp_path):
    # Prepare
    _ncf_fixture(write)
    full = ncf_split(tmp_path)

    # Execute
    a, b, c = (tuning_holdout(full, seed=s) for s in (1, 1, 2))

    # Assert
    assert np.array_equal(a.valid_items, b.valid_items)
    assert np.array_equal(a.valid_negatives, b.valid_negatives)
    assert not np.array_equal(a.valid_negatives, c.valid_negatives)


def test_prepare_builds_ncf_tune_and_refuses_other_datasets(write, tmp_path):
    # Prepare
    _ncf_fixture(write)

    # Execute
    tune = prepare.prepare_split("ml-1m", "ncf-tune", tmp_path, seed=0)

    # Assert
    assert tune.n_train == 180 - 6 and (tune.valid_items >= 0).sum() == 3
    try:
        prepare.prepare_split("synthetic", "ncf-tune", None, seed=0)
    except ValueError as exc:
        assert '"ncf-tune"' in str(exc) and "ml-1m" in str(exc)
    else:
        raise AssertionError("ncf-tune accepted a dataset other than ml-1m")
