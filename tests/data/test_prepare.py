"""prepare_split: settings checks, memoisation, determinism; save/load round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedrec.data import prepare
from fedrec.data.errors import DataError
from fedrec.data.item_features import ItemFeatures, KnowledgeGraph
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
    side = split.item_side
    side.titles = [f"item {k}" for k in range(split.n_items)]
    side.titles[3] = ""
    side.titles[4] = "Caf\xe9 \u2013 \u4e2d (1995)"
    side.year = np.where(np.arange(split.n_items) % 7 == 0, np.nan, 1990.0).astype(np.float32)
    side.matrices["poster"] = np.arange(split.n_items * 2, dtype=np.float32).reshape(-1, 2)
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
    assert_features_equal(loaded.item_side, side)
    assert_split_invariants(loaded)


def test_round_trip_of_absent_and_empty_features(tmp_path):
    # Prepare
    split = prepare_split("synthetic", synthetic=SMALL)
    bare = dataclasses.replace(split, item_side=ItemFeatures())
    empty_kg = KnowledgeGraph(
        triples=np.zeros((0, 3), dtype=np.int64),
        n_entities=0,
        relations=(),
        item_entity=np.full(split.n_items, -1, dtype=np.int64),
    )
    only_kg = dataclasses.replace(split, item_side=ItemFeatures(kg=empty_kg))

    # Execute
    loaded_bare = load_split_file(save_split(bare, tmp_path / "bare.npz"))
    loaded_kg = load_split_file(save_split(only_kg, tmp_path / "kg.npz"))

    # Assert
    assert loaded_bare.item_side.available() == []
    assert loaded_bare.item_side.genre_names == () and loaded_bare.item_side.matrices == {}
    assert_features_equal(loaded_kg.item_side, only_kg.item_side)


def test_split_file_of_another_format_or_with_misaligned_features_is_refused(tmp_path):
    # Prepare
    split = prepare_split("synthetic", synthetic=SMALL)
    path = save_split(split, tmp_path / "split.npz")
    with np.load(path) as npz:
        arrays = dict(npz)
    old = tmp_path / "old.npz"
    np.savez(old, **{**arrays, "format": np.array(1)})
    short = tmp_path / "short.npz"
    np.savez(short, **{**arrays, "item_side.text": arrays["item_side.text"][:-1]})

    # Execute
    with pytest.raises(DataError) as old_format:
        load_split_file(old)
    with pytest.raises(DataError) as misaligned:
        load_split_file(short)

    # Assert
    assert str(old) in str(old_format.value) and "format 1, expected 3" in str(old_format.value)
    assert str(short) in str(misaligned.value) and "text has 199" in str(misaligned.value)


def assert_features_equal(got: ItemFeatures, want: ItemFeatures) -> None:
    """Exact equality of two feature sets, dtypes included."""
    assert got.available() == want.available()
    assert got.titles == want.titles and got.genre_names == want.genre_names
    for name in ("genres", "year", "text"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), name
    assert sorted(got.matrices) == sorted(want.matrices)
    for name, matrix in want.matrices.items():
        assert got.matrices[name].dtype == matrix.dtype
        assert np.array_equal(got.matrices[name], matrix), name
    assert (got.kg is None) == (want.kg is None)
    if want.kg is not None:
        for name in ("triples", "item_entity"):
            a, b = getattr(got.kg, name), getattr(want.kg, name)
            assert a.dtype == np.int64 and a.shape == b.shape and np.array_equal(a, b), name
        assert got.kg.n_entities == want.kg.n_entities
        assert got.kg.relations == want.kg.relations and got.kg.source == want.kg.source


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
