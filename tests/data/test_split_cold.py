"""cold_items_split: held-out items, latest cold item as test, cold untouched negatives."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from fedrec.data.errors import DataError
from fedrec.data.loaders import load_interactions
from fedrec.data.prepare import load_split_file, prepare_split, save_split
from fedrec.data.schema import Interactions, SplitData
from fedrec.data.split_cold import cold_items_split
from fedrec.data.synthetic import generate

from .checks import interactions_from_rows


def _cold_set(split: SplitData, inter: Interactions) -> np.ndarray:
    """Interacted items without any training row: the cold items."""
    seen = np.bincount(inter.df["item_id"], minlength=inter.n_items) > 0
    return np.flatnonzero(seen & (split.item_counts() == 0))


def _assert_guards(split: SplitData, inter: Interactions, num_negatives: int) -> None:
    cold = _cold_set(split, inter)
    is_cold = np.isin(np.arange(inter.n_items), cold)
    df = inter.df
    # training = every warm interaction, nothing else
    warm = df[~is_cold[df["item_id"]]]
    rows = np.repeat(np.arange(split.n_users), np.diff(split.train_indptr))
    got = set(zip(rows.tolist(), split.train_items.tolist(), strict=True))
    assert got == set(zip(warm["user_id"], warm["item_id"], strict=True))
    touched = set(zip(df["user_id"], df["item_id"], strict=True))
    train_items = set(split.train_items.tolist())
    for held, negs in ((split.test_items, split.test_negatives),
                       (split.valid_items, split.valid_negatives)):
        has = held >= 0
        assert negs.shape == (split.n_users, num_negatives)
        assert np.all(negs[~has] == -1)
        assert not set(held[has].tolist()) & train_items, "a held-out item is in training"
        assert is_cold[held[has]].all()
        assert is_cold[negs[has]].all(), "negatives must be cold"
        for u in np.flatnonzero(has).tolist():
            assert len(set(negs[u].tolist())) == num_negatives
            assert not any((u, int(i)) in touched for i in negs[u]), "negative touched by user"
            assert (u, int(held[u])) in touched


def test_hand_worked_latest_cold_items_are_test_and_validation():
    # Prepare: 30 items, 20 users; timestamps with ties (ties: last in file wins)
    rows = []
    rs = np.random.default_rng(0)
    for u in range(20):
        for t, i in enumerate(rs.choice(30, size=6, replace=False)):
            rows.append((u, int(i), float(1 + t % 5), t // 2))  # pairs of equal times
    inter = interactions_from_rows(rows)

    # Execute
    split = cold_items_split(inter, seed=0, num_negatives=3, fraction=0.2)

    # Assert
    cold = _cold_set(split, inter)
    assert len(cold) == round(0.2 * 30)
    df = inter.df.reset_index(drop=True)
    df = df[df["item_id"].isin(cold)].assign(row=lambda d: d.index)
    assert df.duplicated(["user_id", "timestamp"]).any(), "the tie rule is exercised"
    ordered = df.sort_values(["user_id", "timestamp", "row"])
    for u in range(inter.n_users):
        mine = ordered[ordered["user_id"] == u]["item_id"].tolist()
        assert split.test_items[u] == (mine[-1] if mine else -1)
        assert split.valid_items[u] == (mine[-2] if len(mine) >= 2 else -1)
        want = ordered[ordered["user_id"] == u]["rating"].tolist()
        assert (np.isnan(split.test_ratings[u]) if not want
                else split.test_ratings[u] == want[-1])
    _assert_guards(split, inter, 3)
    assert split.protocol == "ranking" and split.has_validation


def test_guards_and_counts_on_synthetic():
    # Prepare
    inter = generate(n_users=300, n_items=1000, seed=1)

    # Execute
    split = cold_items_split(inter, seed=2, num_negatives=50)

    # Assert
    seen = np.unique(inter.df["item_id"])
    assert len(_cold_set(split, inter)) == round(0.2 * len(seen))
    assert split.n_items == inter.n_items and split.item_side is inter.item_side
    has_cold = np.bincount(
        inter.df["user_id"][np.isin(inter.df["item_id"], _cold_set(split, inter))],
        minlength=inter.n_users,
    )
    assert np.array_equal(split.test_items >= 0, has_cold >= 1)
    assert np.array_equal(split.valid_items >= 0, has_cold >= 2)
    _assert_guards(split, inter, 50)


def test_deterministic_per_seed():
    # Prepare
    inter = generate(n_users=200, n_items=1000, seed=0)

    # Execute
    a, b, c = (cold_items_split(inter, seed=s, num_negatives=50) for s in (5, 5, 6))

    # Assert
    for name in ("train_indptr", "train_items", "test_items", "test_negatives",
                 "valid_items", "valid_negatives"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(_cold_set(a, inter), _cold_set(c, inter))


def test_without_timestamps_a_seeded_random_cold_item_is_tested(caplog):
    # Prepare
    stamped = generate(n_users=100, n_items=800, seed=0)
    df = stamped.df.assign(timestamp=-1)
    inter = Interactions(stamped.name, df, stamped.raw_user_ids, stamped.raw_item_ids, False)

    # Execute
    with caplog.at_level(logging.WARNING, logger="fedrec.data.split_cold"):
        a = cold_items_split(inter, seed=3, num_negatives=20)
    b = cold_items_split(inter, seed=3, num_negatives=20)

    # Assert
    assert "no timestamps" in caplog.text
    assert np.array_equal(a.test_items, b.test_items)
    assert np.array_equal(a.valid_items, b.valid_items)
    _assert_guards(a, inter, 20)


def test_too_few_cold_items_for_the_negatives_names_the_setting():
    # Prepare
    inter = generate(n_users=50, n_items=100, seed=0)

    # Execute
    with pytest.raises(DataError) as info:
        cold_items_split(inter, seed=0, num_negatives=99)

    # Assert
    assert "`test-negatives`" in str(info.value) and "20 cold items" in str(info.value)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"fraction": 0.0}, ["fraction"]),
    ({"fraction": 1.0}, ["fraction"]),
    ({"num_negatives": -1}, ["`test-negatives`"]),
])
def test_bad_arguments_are_named(kwargs, words):
    # Prepare
    inter = interactions_from_rows([(1, 10, 5, 1), (2, 11, 4, 1)])

    # Execute
    with pytest.raises(ValueError) as info:
        cold_items_split(inter, seed=0, **kwargs)

    # Assert
    assert all(w in str(info.value) for w in words)


def test_duplicates_are_refused():
    # Prepare
    inter = interactions_from_rows([(1, 10, 5, 1), (1, 10, 4, 2), (2, 11, 4, 1)])

    # Execute / Assert
    with pytest.raises(DataError, match="duplicate"):
        cold_items_split(inter, seed=0, num_negatives=0)


def test_prepare_split_cold_items_round_trip(tmp_path):
    # Prepare
    split = prepare_split("synthetic", "cold-items", synthetic={"n_users": 150, "n_items": 900},
                          num_test_negatives=30)

    # Execute
    loaded = load_split_file(save_split(split, tmp_path / "split.npz"))

    # Assert
    for name in ("train_indptr", "train_items", "train_ratings", "test_items",
                 "test_negatives", "valid_items", "valid_negatives"):
        want, got = getattr(split, name), getattr(loaded, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    assert split.test_negatives.shape[1] == 30
    assert loaded.train_labels is None and loaded.ctr_test is None


def test_real_ml_100k_cold_items(real_data):
    # Prepare
    root = real_data("ml-100k/u.data")
    inter = load_interactions("ml-100k", root)

    # Execute
    split = cold_items_split(inter, seed=0)

    # Assert
    _assert_guards(split, inter, 99)
    cold = _cold_set(split, inter)
    assert len(cold) == round(0.2 * 1682)
    frame = pd.Series(split.test_items)
    assert (frame >= 0).sum() > 900  # nearly every user rated some of 336 random movies
