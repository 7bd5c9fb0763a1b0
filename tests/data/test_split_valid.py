"""The validation part held out of a test-only split (fedrec.data.split_valid)."""

import numpy as np

from fedrec.data.split_valid import hold_out_validation
from tests.helpers import tiny_split


def test_one_training_interaction_per_user_becomes_validation():
    split = tiny_split(n_users=30, n_items=300)
    out = hold_out_validation(split, seed=3)
    n_pos = np.diff(split.train_indptr)
    assert out.has_validation and out.n_train == split.n_train - int((n_pos >= 2).sum())
    for u in range(split.n_users):
        before = set(split.user_items(u).tolist())
        after = set(out.user_items(u).tolist())
        if n_pos[u] >= 2:
            v = int(out.valid_items[u])
            assert v in before and after == before - {v}
            negs = set(out.valid_negatives[u].tolist())
            assert len(negs) == 99
            assert not negs & (before | {int(split.test_items[u])})
        else:
            assert out.valid_items[u] == -1 and after == before
    np.testing.assert_array_equal(out.test_items, split.test_items)
    again = hold_out_validation(split, seed=3)
    np.testing.assert_array_equal(again.valid_items, out.valid_items)
