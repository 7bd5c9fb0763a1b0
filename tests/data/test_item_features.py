"""ItemFeatures / KnowledgeGraph: KGCN neighbour sampling, subset, get, alignment checks."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.data.errors import DataError
from fedrec.data.item_features import ItemFeatures, KnowledgeGraph


def _graph(triples: list[tuple[int, int, int]], n_entities: int, n_relations: int = 3):
    return KnowledgeGraph(
        triples=np.asarray(triples, dtype=np.int64).reshape(-1, 3),
        n_entities=n_entities,
        relations=tuple(f"r{k}" for k in range(n_relations)),
        item_entity=np.arange(2, dtype=np.int64),
    )


# entity 0: 5 neighbours (hub), 1: 2 neighbours, 2..6: one each (the hub), 7: isolated
HUB = _graph([(0, 0, 2), (0, 1, 3), (4, 2, 0), (0, 0, 5), (1, 1, 0), (1, 2, 6)], n_entities=8)


def _neighbours(graph: KnowledgeGraph) -> dict[int, set[tuple[int, int]]]:
    out: dict[int, set[tuple[int, int]]] = {e: set() for e in range(graph.n_entities)}
    for h, r, t in graph.triples.tolist():
        out[h].add((t, r))
        out[t].add((h, r))
    return out


def test_sample_has_fixed_size_and_padding_row():
    # Execute
    adj_entity, adj_relation = HUB.sample_neighbours(4, seed=0)

    # Assert
    assert adj_entity.shape == adj_relation.shape == (9, 4)
    assert adj_entity.dtype == adj_relation.dtype == np.int64
    assert np.all(adj_entity[8] == 8) and np.all(adj_relation[8] == 3)  # padding entity row


def test_entities_with_enough_neighbours_get_distinct_real_ones():
    # Prepare
    real = _neighbours(HUB)

    # Execute
    adj_entity, adj_relation = HUB.sample_neighbours(4, seed=3)

    # Assert
    pairs = set(zip(adj_entity[0].tolist(), adj_relation[0].tolist(), strict=True))
    assert len(pairs) == 4 and pairs <= real[0]  # without replacement, only real neighbours


def test_entities_with_few_neighbours_repeat_real_ones_and_isolated_get_padding():
    # Prepare
    real = _neighbours(HUB)

    # Execute
    adj_entity, adj_relation = HUB.sample_neighbours(4, seed=1)

    # Assert
    for entity in range(1, 7):
        pairs = set(zip(adj_entity[entity].tolist(), adj_relation[entity].tolist(), strict=True))
        assert pairs <= real[entity], entity
    assert adj_entity[2].tolist() == [0] * 4 and adj_relation[2].tolist() == [0] * 4
    assert adj_entity[7].tolist() == [8] * 4 and adj_relation[7].tolist() == [3] * 4


def test_sample_is_deterministic_per_seed_and_varies_across_seeds():
    # Prepare
    rng = np.random.default_rng(0)
    triples = np.column_stack(
        [rng.integers(50, size=400), rng.integers(4, size=400), rng.integers(50, size=400)]
    )
    graph = _graph(triples.tolist(), n_entities=50, n_relations=4)

    # Execute
    first = graph.sample_neighbours(6, seed=7)
    again = graph.sample_neighbours(6, seed=7)
    other = graph.sample_neighbours(6, seed=8)

    # Assert
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_every_neighbour_of_a_hub_is_drawn_about_equally_often():
    # Prepare: entity 0 linked to entities 1..10
    graph = _graph([(0, 0, k) for k in range(1, 11)], n_entities=11, n_relations=1)

    # Execute
    drawn = np.concatenate([graph.sample_neighbours(3, seed)[0][0] for seed in range(2_000)])

    # Assert
    share = np.bincount(drawn, minlength=11)[1:] / len(drawn)
    assert np.allclose(share, 0.1, atol=0.015)


def test_sample_neighbours_needs_at_least_one():
    # Execute / Assert
    with pytest.raises(ValueError, match="n_neighbours"):
        HUB.sample_neighbours(0, seed=0)


def test_subset_reorders_every_feature():
    # Prepare
    features = ItemFeatures(
        titles=["a", "b", "c"],
        genres=np.eye(3, dtype=np.float32),
        genre_names=("x", "y", "z"),
        year=np.array([1990, np.nan, 2000], dtype=np.float32),
        text=np.arange(6, dtype=np.float32).reshape(3, 2),
        kg=_graph([(0, 0, 1)], n_entities=3).subset_items(np.array([0, 1, 1])),
        matrices={"m": np.arange(3, dtype=np.float32)[:, None]},
    )

    # Execute
    sub = features.subset(np.array([2, 0]))

    # Assert
    assert sub.titles == ["c", "a"] and sub.genre_names == ("x", "y", "z")
    assert np.flatnonzero(sub.genres[0]).tolist() == [2]
    assert sub.year[0] == 2000 and sub.text[1].tolist() == [0.0, 1.0]
    assert sub.kg.item_entity.tolist() == [1, 0] and sub.matrices["m"].ravel().tolist() == [2, 0]
    sub.check(2)


def test_get_names_what_is_available():
    # Prepare
    features = ItemFeatures(titles=["a"], year=np.array([1.0], dtype=np.float32))

    # Execute
    with pytest.raises(ValueError) as info:
        features.get("kg")

    # Assert
    assert features.get("title") == ["a"] and features.available() == ["title", "year"]
    assert "'kg'" in str(info.value) and "available: title, year" in str(info.value)


def test_check_refuses_misaligned_features_and_bad_kg_ids():
    # Prepare
    short_text = ItemFeatures(titles=["a", "b"], text=np.zeros((1, 4), dtype=np.float32))
    bad_kg = ItemFeatures(kg=_graph([(0, 0, 9)], n_entities=3))

    # Execute
    with pytest.raises(DataError) as misaligned:
        short_text.check(2, "f.npz")
    with pytest.raises(DataError) as out_of_range:
        bad_kg.check(2)

    # Assert
    assert str(misaligned.value) == "f.npz: item features not aligned with 2 items: text has 1"
    assert "entity ids outside 0..2" in str(out_of_range.value)


def test_copy_is_a_new_container_with_the_same_arrays():
    # Prepare
    features = ItemFeatures(titles=["a"], matrices={"m": np.zeros((1, 1))})

    # Execute
    copied = features.copy()
    copied.titles.append("b")
    copied.matrices["n"] = np.ones((1, 1))

    # Assert
    assert features.titles == ["a"] and list(features.matrices) == ["m"]
    assert copied.matrices["m"] is features.matrices["m"]
