"""Synthetic data: determinism, shapes, popularity skew, KG validity, learnable signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrec.data.split import leave_one_out
from fedrec.data.synthetic import KG_RELATIONS, generate


@pytest.fixture(scope="module")
def default():
    return generate()


def test_same_seed_gives_identical_data(default):
    # Execute
    again = generate()

    # Assert
    pd.testing.assert_frame_equal(default.df, again.df)
    side, side_again = default.item_side, again.item_side
    assert np.array_equal(side.genres, side_again.genres)
    assert np.array_equal(side.text, side_again.text)
    assert np.array_equal(side.kg.triples, side_again.kg.triples)


def test_different_seed_gives_different_data(default):
    # Execute
    other = generate(seed=1)

    # Assert
    assert not default.df.equals(other.df)
    assert not np.array_equal(default.item_side.text, other.item_side.text)


def test_sizes_dtypes_and_activity_bounds(default):
    # Prepare
    df = default.df

    # Execute
    per_user = np.bincount(df["user_id"], minlength=default.n_users)

    # Assert
    assert default.name == "synthetic" and default.has_timestamps
    assert (default.n_users, default.n_items) == (1000, 500)
    assert [str(t) for t in df.dtypes] == ["int64", "int64", "float32", "int64"]
    assert per_user.min() >= 5 and per_user.max() <= 250
    assert 25 <= per_user.mean() <= 45
    assert not df.duplicated(["user_id", "item_id"]).any()
    assert set(np.unique(df["rating"])) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert np.array_equal(default.raw_user_ids, np.arange(1000))


def test_timestamps_increase_per_user_with_some_ties(default):
    # Prepare
    df = default.df

    # Execute
    same_user = df["user_id"].to_numpy()[1:] == df["user_id"].to_numpy()[:-1]
    steps = np.diff(df["timestamp"].to_numpy())[same_user]

    # Assert
    assert np.all(np.diff(df["user_id"]) >= 0), "grouped by user"
    assert np.all(steps >= 0)
    assert 0.02 < np.mean(steps == 0) < 0.3


def test_popularity_is_power_law_like(default):
    # Execute
    counts = np.sort(np.bincount(default.df["item_id"], minlength=default.n_items))[::-1]
    top_share = counts[: default.n_items // 10].sum() / counts.sum()

    # Assert
    assert top_share > 0.30


def test_side_information_shapes(default):
    # Prepare
    side = default.item_side

    # Assert
    assert side.available() == ["genres", "year", "text", "kg"]
    assert side.genres.dtype == np.float32 and side.genres.shape == (500, 12)
    assert side.genre_names == tuple(f"genre {k}" for k in range(12))
    assert np.all(side.genres.sum(axis=1) >= 1)
    assert set(np.unique(side.genres)) == {0.0, 1.0}
    assert side.text.dtype == np.float32 and side.text.shape == (500, 32)
    side.check(default.n_items)


def test_kg_triples_are_valid_and_follow_genres(default):
    # Prepare
    graph, n_items = default.item_side.kg, default.n_items
    kg = graph.triples

    # Execute
    heads, rels, tails = kg.T

    # Assert
    assert kg.dtype == np.int64 and kg.ndim == 2 and kg.shape[1] == 3
    assert graph.relations == KG_RELATIONS and graph.source == "synthetic"
    assert np.array_equal(graph.item_entity, np.arange(n_items))
    assert kg.max() < graph.n_entities
    assert len(np.unique(kg, axis=0)) == len(kg)
    assert set(np.unique(rels)) == set(range(len(KG_RELATIONS)))
    assert kg.min() >= 0 and np.all(tails >= n_items)
    item_rel = rels != KG_RELATIONS.index("works_in_genre")
    assert np.all(heads[item_rel] < n_items)
    for relation in ("has_genre", "directed_by"):
        linked = heads[rels == KG_RELATIONS.index(relation)]
        assert np.array_equal(np.unique(linked), np.arange(n_items)), relation
    genre_rows = kg[rels == KG_RELATIONS.index("has_genre")]
    rebuilt = np.zeros_like(default.item_side.genres)
    rebuilt[genre_rows[:, 0], genre_rows[:, 2] - n_items] = 1.0
    assert np.array_equal(rebuilt, default.item_side.genres)


def _hit_rate(split, scores: np.ndarray, k: int = 10) -> float:
    has = split.test_items >= 0
    users = np.flatnonzero(has)
    cand = np.concatenate([split.test_items[has, None], split.test_negatives[has]], axis=1)
    s = scores[users[:, None], cand]
    rank = (s[:, 1:] >= s[:, :1]).sum(axis=1)  # ties rank the positive below
    return float(np.mean(rank < k))


def test_matrix_factorization_clearly_beats_popularity(default):
    # Prepare
    split = leave_one_out(default, seed=0)
    matrix = np.zeros((split.n_users, split.n_items))
    rows = np.repeat(np.arange(split.n_users), np.diff(split.train_indptr))
    matrix[rows, split.train_items] = 1.0

    # Execute
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    mf_scores = (u[:, :16] * s[:16]) @ vt[:16]  # PureSVD, rank = planted dim
    pop_scores = np.broadcast_to(split.item_counts().astype(float), matrix.shape)
    hr_mf, hr_pop = _hit_rate(split, mf_scores), _hit_rate(split, pop_scores)

    # Assert
    assert hr_mf > hr_pop + 0.1, (hr_mf, hr_pop)


def test_larger_instance_keeps_invariants():
    # Execute
    inter = generate(n_users=20_000, n_items=1_000, seed=5)

    # Assert
    per_user = np.bincount(inter.df["user_id"], minlength=20_000)
    assert per_user.min() >= 5 and per_user.max() <= 500
    assert not inter.df.duplicated(["user_id", "item_id"]).any()
    assert inter.df["item_id"].between(0, 999).all()


@pytest.mark.parametrize(
    "kwargs", [{"n_items": 9}, {"n_users": 0}, {"mean_interactions": 2}, {"temperature": 0}]
)
def test_invalid_arguments(kwargs):
    # Execute / Assert
    with pytest.raises(ValueError):
        generate(**kwargs)
