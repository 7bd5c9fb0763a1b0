"""ctr_split: the MKR / KGCN click-through protocol (labels, negatives, 6:2:2, KG items)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrec.data import prepare
from fedrec.data.errors import DataError
from fedrec.data.item_features import ItemFeatures, KnowledgeGraph
from fedrec.data.loaders import build_interactions, load_interactions
from fedrec.data.prepare import load_split_file, prepare_split, save_split
from fedrec.data.schema import Interactions, SplitData
from fedrec.data.split_ctr import ctr_split
from fedrec.data.synthetic import generate

from .checks import interactions_from_rows


def _kg(item_entity: list[int] | np.ndarray, source: str = "test") -> KnowledgeGraph:
    item_entity = np.asarray(item_entity, dtype=np.int64)
    n = int(item_entity.max()) + 2
    triples = np.array([[e, 0, n - 1] for e in item_entity if e >= 0], dtype=np.int64)
    return KnowledgeGraph(triples, n, ("rel",), item_entity, source)


def _typed(inter: Interactions, item_entity, titles: list[str] | None = None) -> Interactions:
    features = ItemFeatures(titles=titles, kg=_kg(item_entity))
    return dataclasses.replace(inter, item_side=features)


def _rows(split: SplitData) -> dict[str, pd.DataFrame]:
    """All labelled rows of a ctr split by part, as (user, item, label) frames."""
    out = {}
    parts = {
        "train": (split.train_indptr, split.train_items, split.train_labels),
        "valid": (split.ctr_valid.indptr, split.ctr_valid.items, split.ctr_valid.labels),
        "test": (split.ctr_test.indptr, split.ctr_test.items, split.ctr_test.labels),
    }
    for name, (indptr, items, labels) in parts.items():
        users = np.repeat(np.arange(split.n_users), np.diff(indptr))
        out[name] = pd.DataFrame({"user": users, "item": items, "label": labels})
    return out


def _synthetic_with_kg(n_users: int = 200, n_items: int = 150, seed: int = 0) -> Interactions:
    inter = generate(n_users=n_users, n_items=n_items, seed=seed)
    in_kg = np.random.default_rng(99).random(n_items) < 0.7
    entity = np.where(in_kg, np.cumsum(in_kg) - 1, -1)
    titles = [f"item {i}" for i in range(n_items)]
    return _typed(inter, entity, titles)


def test_hand_worked_labels_negatives_and_kg_items():
    # Prepare: raw items a..f = 10..15; e = 14 is not in the KG. User 1 rated b 2 (< 4).
    a, b, c, d, e, f = range(10, 16)
    rows = [
        (1, a, 5, 1), (1, b, 2, 2), (1, e, 5, 3),
        (2, c, 4, 1), (2, d, 4, 2), (2, a, 1, 3),
        (3, f, 3, 1), (3, e, 5, 2),  # no KG positive: no rows at all
    ]
    base = interactions_from_rows(rows)  # dense items: a0 b1 e2 c3 d4 f5
    inter = _typed(base, [0, 1, -1, 2, 3, 4], titles=list("abecdf"))

    # Execute
    split = ctr_split(inter, seed=0, threshold=4)

    # Assert: e dropped, the others re-indexed in order a0 b1 c2 d3 f4
    assert split.n_items == 5 and split.n_users == 3
    assert split.item_side.titles == list("abcdf")
    assert split.item_side.kg.item_entity.tolist() == [0, 1, 2, 3, 4]
    frame = pd.concat(_rows(split).values())
    pos = {(u, i) for u, i, lab in frame.itertuples(index=False) if lab == 1}
    neg = {(u, i) for u, i, lab in frame.itertuples(index=False) if lab == 0}
    assert pos == {(0, 0), (1, 2), (1, 3)}
    # user 0: one negative among items it never rated (a, b are rated) -> c, d or f
    assert len([p for p in neg if p[0] == 0]) == 1
    assert all(i in (2, 3, 4) for u, i in neg if u == 0)
    # user 1 rated a, c, d: two positives, untouched b and f are both negatives
    assert {i for u, i in neg if u == 1} == {1, 4}
    assert split.user_items(2).size == 0 and split.ctr_test.user_rows(2)[0].size == 0
    assert split.test_items.tolist() == [-1, -1, -1]
    assert split.test_negatives.shape == (3, 0)
    assert split.protocol == "ctr" and split.has_validation


def test_counts_are_6_2_2_and_one_negative_per_positive():
    # Prepare
    inter = _synthetic_with_kg()

    # Execute
    split = ctr_split(inter, seed=1, threshold=4)

    # Assert
    parts = _rows(split)
    n = sum(len(p) for p in parts.values())
    assert len(parts["valid"]) == int(0.2 * n) and len(parts["test"]) == int(0.2 * n)
    assert len(parts["train"]) == n - 2 * int(0.2 * n)
    every = pd.concat(parts.values())
    assert not every.duplicated(["user", "item"]).any(), "each (user, item) in one part once"
    per_user = every.groupby("user")["label"].agg(["sum", "count"])
    assert np.array_equal(per_user["sum"] * 2, per_user["count"])
    assert split.train_labels.dtype == np.float32
    assert np.array_equal(split.train_labels, split.train_ratings)
    # each part mixes positives and negatives about equally
    for part in parts.values():
        assert 0.4 < part["label"].mean() < 0.6


def test_positives_are_the_kg_ratings_above_threshold_and_negatives_untouched():
    # Prepare
    inter = _synthetic_with_kg()
    entity = inter.item_side.kg.item_entity
    kept = np.flatnonzero(entity >= 0)
    new_id = np.full(inter.n_items, -1)
    new_id[kept] = np.arange(len(kept))
    df = inter.df.assign(item=new_id[inter.df["item_id"]])
    df = df[df["item"] >= 0]

    # Execute
    split = ctr_split(inter, seed=0, threshold=4)

    # Assert
    every = pd.concat(_rows(split).values())
    got_pos = set(map(tuple, every.loc[every["label"] == 1, ["user", "item"]].to_numpy()))
    want_pos = set(map(tuple, df.loc[df["rating"] >= 4, ["user_id", "item"]].to_numpy()))
    assert got_pos == want_pos
    touched = set(map(tuple, df[["user_id", "item"]].to_numpy()))
    negatives = set(map(tuple, every.loc[every["label"] == 0, ["user", "item"]].to_numpy()))
    assert not negatives & touched, "a negative was rated by its user (at any rating)"
    assert split.n_items == len(kept)
    assert split.item_side.titles == [f"item {i}" for i in kept]


def test_deterministic_per_seed():
    # Prepare
    inter = _synthetic_with_kg()

    # Execute
    a, b = ctr_split(inter, 3, 4), ctr_split(inter, 3, 4)
    c = ctr_split(inter, 4, 4)

    # Assert
    for name in ("train_indptr", "train_items", "train_labels"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    for part in ("indptr", "items", "labels"):
        assert np.array_equal(getattr(a.ctr_test, part), getattr(b.ctr_test, part))
    assert not np.array_equal(a.train_items, c.train_items)


def test_user_with_too_few_untouched_items_gets_all_of_them(caplog):
    # Prepare: 4 items; user 1 likes 3 of them, leaving 1 untouched item
    rows = [(1, i, 5, i) for i in range(3)] + [(2, 3, 5, 1)]
    inter = _typed(interactions_from_rows(rows), [0, 1, 2, 3])

    # Execute
    with caplog.at_level(logging.WARNING, logger="fedrec.data.split_ctr"):
        split = ctr_split(inter, seed=0, threshold=4)

    # Assert
    every = pd.concat(_rows(split).values())
    user0 = every[every["user"] == 0]
    assert sorted(user0.loc[user0["label"] == 0, "item"]) == [3]
    assert "fewer never-touched items than positives" in caplog.text


def test_without_kg_every_item_is_kept_and_untyped_side_passes_through():
    # Prepare
    inter = generate(n_users=50, n_items=80, seed=0)

    # Execute
    split = ctr_split(inter, seed=0, threshold=4)

    # Assert
    assert split.n_items == inter.n_items
    assert split.item_side is inter.item_side


@pytest.mark.parametrize(
    ("item_entity", "threshold", "words"),
    [
        ([0, 1], 4, ["knowledge graph", "2 items", "has 3"]),
        ([-1, -1, -1], 4, ["none of its", "knowledge graph"]),
        ([0, 1, 2], 9, ["threshold 9", "positives"]),
    ],
)
def test_unusable_inputs_are_named(item_entity, threshold, words):
    # Prepare
    base = interactions_from_rows([(1, 10, 5, 1), (1, 11, 3, 2), (2, 12, 4, 1)])
    entity = np.asarray(item_entity)
    kg = KnowledgeGraph(np.zeros((0, 3), np.int64), 3, ("r",), entity, "kg.txt")
    inter = dataclasses.replace(base, item_side=ItemFeatures(kg=kg))

    # Execute
    with pytest.raises(DataError) as info:
        ctr_split(inter, seed=0, threshold=threshold)

    # Assert
    for word in words:
        assert word in str(info.value)


def test_prepare_split_ctr_round_trip(tmp_path):
    # Prepare
    split = prepare_split("synthetic", "ctr", synthetic={"n_users": 120, "n_items": 90})

    # Execute
    loaded = load_split_file(save_split(split, tmp_path / "split.npz"))

    # Assert
    for name in ("train_indptr", "train_items", "train_ratings", "train_labels",
                 "test_items", "test_negatives"):
        want, got = getattr(split, name), getattr(loaded, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    for name in ("ctr_valid", "ctr_test"):
        for part in ("indptr", "items", "labels"):
            want, got = getattr(getattr(split, name), part), getattr(getattr(loaded, name), part)
            assert got.dtype == want.dtype and np.array_equal(got, want), (name, part)
    assert loaded.protocol == "ctr" and loaded.valid_items is None


def test_ctr_needs_a_dataset_with_a_threshold(monkeypatch):
    # Prepare
    monkeypatch.delitem(prepare.CTR_THRESHOLDS, "ml-100k")

    # Execute
    with pytest.raises(ValueError) as info:
        prepare_split("ml-100k", "ctr")

    # Assert
    assert "`split`" in str(info.value) and "ml-100k" in str(info.value)


def _read_kg(folder: Path, raw_item_ids: np.ndarray) -> KnowledgeGraph:
    """Tiny reader of an MKR/KGCN ``item_index2entity_id.txt`` + ``kg.txt`` (test only)."""
    link = pd.read_csv(folder / "item_index2entity_id.txt", sep="\t", header=None,
                       names=["item", "entity"], dtype=str)
    link = link.apply(lambda c: c.str.strip())
    kg = pd.read_csv(folder / "kg.txt", sep="\t", header=None, names=["h", "r", "t"], dtype=str)
    kg = kg.apply(lambda c: c.str.strip())
    names = list(dict.fromkeys([*link["entity"], *kg["h"], *kg["t"]]))
    index = {name: k for k, name in enumerate(names)}
    relations = tuple(dict.fromkeys(kg["r"]))
    rel_index = {name: k for k, name in enumerate(relations)}
    triples = np.stack([kg["h"].map(index), kg["r"].map(rel_index), kg["t"].map(index)], 1)
    entity_of = dict(zip(link["item"].astype(np.int64), link["entity"].map(index), strict=True))
    item_entity = np.array([entity_of.get(int(r), -1) for r in raw_item_ids], dtype=np.int64)
    return KnowledgeGraph(triples.astype(np.int64), len(names), relations, item_entity,
                          str(folder))


def test_real_ml_1m_with_mkr_kg_matches_the_mkr_sizes(real_data):
    # Prepare
    root = real_data("kg-movie-mkr/kg.txt", "kg-movie-mkr/item_index2entity_id.txt")
    if not (root / "ml-1m/ratings.dat").is_file():
        real_data("ml-1m/ratings_uir_ordered.dat")
    inter = load_interactions("ml-1m", root)
    side = inter.item_side
    if not isinstance(side, ItemFeatures) or side.kg is None:
        inter = dataclasses.replace(
            inter, item_side=ItemFeatures(kg=_read_kg(root / "kg-movie-mkr", inter.raw_item_ids))
        )

    # Execute
    split = ctr_split(inter, seed=0, threshold=4)

    # Assert: MKR reports 6,036 users, 2,347 items and 753,772 rows; MKR's reader skips the
    # first line of ratings.dat (1::1193::5, a KG positive), so it has one positive and one
    # negative fewer than this split.
    parts = _rows(split)
    every = pd.concat(parts.values())
    assert split.n_items == 2347
    assert every["user"].nunique() == 6036
    assert len(every) == 753_772 + 2
    assert every["label"].sum() * 2 == len(every)
    assert len(parts["test"]) == int(0.2 * len(every))


def test_real_lastfm_with_kgcn_kg_matches_the_kgcn_sizes(real_data):
    # Prepare
    root = real_data("lastfm-kgcn/user_artists.dat", "lastfm-kgcn/kg.txt")
    table = pd.read_csv(root / "lastfm-kgcn/user_artists.dat", sep="\t")
    table.columns = ["user", "item", "rating"]
    inter = build_interactions("lastfm", table.assign(timestamp=0), has_timestamps=False)
    inter = dataclasses.replace(
        inter, item_side=ItemFeatures(kg=_read_kg(root / "lastfm-kgcn", inter.raw_item_ids))
    )

    # Execute
    split = ctr_split(inter, seed=0, threshold=prepare.CTR_THRESHOLDS["lastfm"])

    # Assert: KGCN's Last.FM: 1,872 users, 3,846 items, 42,346 labelled rows
    every = pd.concat(_rows(split).values())
    assert every["user"].nunique() == 1872
    assert len(every) == 42_346
    assert split.n_items <= 3846
