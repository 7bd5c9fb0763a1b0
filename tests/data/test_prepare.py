"""prepare_split: settings checks, memoisation, determinism; save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.data import prepare
from fedrec.data.errors import DataError
from fedrec.data.prepare import load_split_file, prepare_split, save_split

from .checks import assert_split_invariants

SMALL = {"n_users": 300, "n_items": 200}


def test_same_arguments_return_the_same_object():
    # Execute
    first = prepare_split("synthetic", synthetic=SMALL)
    second = prepare_split("synthetic", "loo", None, 0, 99, dict(SMALL))
    other_seed = prepare_split("synthetic", synthetic=SMALL, seed=1)

    # Assert
    assert first is second
    assert other_seed is not first
    assert not np.array_equal(first.test_negatives, other_seed.test_negatives)
    assert_split_invariants(first)


def test_recomputation_gives_identical_arrays():
    # Prepare
    first = prepare_split("synthetic", synthetic=SMALL, seed=3)
    prepare.clear_cache()

    # Execute
    again = prepare_split("synthetic", synthetic=SMALL, seed=3)

    # Assert
    assert again is not first
    for name in ("train_indptr", "train_items", "train_ratings", "test_items", "test_negatives"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name


def test_synthetic_seed_in_dict_overrides_split_seed():
    # Execute
    a = prepare_split("synthetic", synthetic={**SMALL, "seed": 5}, seed=0)
    b = prepare_split("synthetic", synthetic={**SMALL, "seed": 5}, seed=1)

    # Assert
    assert np.array_equal(a.train_items, b.train_items)
    assert not np.array_equal(a.test_negatives, b.test_negatives)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"dataset": "ml-100k", "split": "ncf"}, ["`split`", "ml-1m"]),
        ({"dataset": "synthetic", "split": "random"}, ["`split`", "loo", "ncf"]),
        ({"dataset": "ml-1m", "split": "ncf", "num_test_negatives": 50}, ["`split`", "99"]),
        ({"dataset": "ml-100k", "synthetic": {"n_users": 5}}, ["`synthetic`"]),
        ({"dataset": "ml-25m"}, ["ml-100k", "synthetic"]),
    ],
)
def test_invalid_settings_are_named(kwargs, words):
    # Execute
    with pytest.raises(ValueError) as info:
        prepare_split(**kwargs)

    # Assert
    for word in words:
        assert word in str(info.value)


def test_ml_1m_loo_without_timestamps_points_to_ncf(write, tmp_path):
    # Prepare
    write("ml-1m/ratings_uir_ordered.dat", "1::10::3\n1::20::4\n2::10::5\n")

    # Execute
    with pytest.raises(DataError) as info:
        prepare_split("ml-1m", "loo", tmp_path)

    # Assert
    assert 'split = "ncf"' in str(info.value)


def test_save_and_load_round_trip(tmp_path):
    # Prepare
    split = prepare_split("synthetic", synthetic=SMALL)
    split.item_side["title"] = [f"item {k}" for k in range(split.n_items)]
    path = tmp_path / "run" / "split.npz"

    # Execute
    written = save_split(split, path)
    loaded = load_split_file(written)

    # Assert
    assert written == path and sorted(p.name for p in path.parent.iterdir()) == ["split.npz"]
    assert (loaded.name, loaded.n_users, loaded.n_items) == (
        split.name,
        split.n_users,
        split.n_items,
    )
    for name in ("train_indptr", "train_items", "train_ratings", "test_items", "test_negatives"):
        original, restored = getattr(split, name), getattr(loaded, name)
        assert restored.dtype == original.dtype and np.array_equal(restored, original), name
    assert np.array_equal(loaded.test_ratings, split.test_ratings, equal_nan=True)
    for key in ("genres", "text", "kg"):
        assert np.array_equal(loaded.item_side[key], split.item_side[key])
    assert loaded.item_side["title"] == split.item_side["title"]
    assert_split_invariants(loaded)


def test_loading_a_non_split_file_is_a_data_error(tmp_path):
    # Prepare
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"nope")
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))

    # Execute
    with pytest.raises(DataError) as bad:
        load_split_file(garbage)
    with pytest.raises(DataError) as missing:
        load_split_file(other)

    # Assert
    assert str(garbage) in str(bad.value)
    assert str(other) in str(missing.value) and "train_indptr" in str(missing.value)


def test_real_ncf_through_prepare(real_data):
    # Prepare
    root = real_data("ncf-hexiangnan/ml-1m.test.rating", "ncf-hexiangnan/ml-1m.test.negative")

    # Execute
    split = prepare_split("ml-1m", "ncf", root)

    # Assert
    assert split is prepare_split("ml-1m", "ncf", root)
    assert split.n_train == 994_169 and split.test_items[0] == 25
