"""Small hand-built datasets for unit tests (no files, no generator dependency)."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.data.item_features import ItemFeatures, KnowledgeGraph
from fedrec.data.schema import SplitData
from fedrec.models.base import Recommender
from fedrec.models.registry import build_model
from fedrec.towers.fusion import with_towers

#: Mark of the test files that start Ray (``pytestmark = RAY``). Ray instances on one machine
#: find each other (ray.init() joins the cluster a ``ray start`` recorded): under ``pytest -n``
#: (README) these files share one xdist worker and run in turn.
RAY = pytest.mark.xdist_group("ray")

#: Tower models the contract and equivalence tests run besides the plain ones.
TOWER_MODELS = ("mf+kg", "mf+text+genre+year", "neumf+kg+text", "mf+kg2+text+genre")


def tiny_features(n_items: int, seed: int = 0) -> ItemFeatures:
    """Random side information for ``n_items``: text (6-d), 4 genres, years, and a KG over the
    items plus 9 attribute entities (3 relations); every fifth item is not in the KG."""
    rs = np.random.default_rng(seed + 100)
    genres = (rs.random((n_items, 4)) < 0.4).astype(np.float32)
    year = rs.integers(1950, 2000, n_items).astype(np.float32)
    year[::7] = np.nan
    in_kg = np.arange(n_items) % 5 != 0
    items = np.flatnonzero(in_kg)
    triples = np.concatenate([
        np.column_stack([items, rs.integers(0, 3, len(items)), n_items + rs.integers(0, 9,
                                                                                     len(items))]),
        np.column_stack([items[:-1], np.full(len(items) - 1, 2), items[1:]]),
    ]).astype(np.int64)
    kg = KnowledgeGraph(triples, n_items + 9, ("r0", "r1", "r2"),
                        np.where(in_kg, np.arange(n_items), -1).astype(np.int64), "tiny")
    return ItemFeatures(titles=[f"item {i}" for i in range(n_items)], genres=genres,
                        genre_names=("a", "b", "c", "d"), year=year,
                        text=rs.standard_normal((n_items, 6)).astype(np.float32), kg=kg)


def build_test_model(name: str, split: SplitData, dim: int = 8, seed: int = 0) -> Recommender:
    """``"mf"``, or a base with towers ``"mf+kg+text"`` (``kg2``: the KG tower with 2 hops and
    3 neighbours; ``kg``: 1 hop, 4 neighbours) on ``split.item_side``."""
    base, *towers = name.split("+")
    model = build_model(base, n_users=split.n_users, n_items=split.n_items, dim=dim)
    hops = 2 if "kg2" in towers else 1
    names = ["kg" if t == "kg2" else t for t in towers]
    return with_towers(model, names, split.item_side, seed, neighbours=3 if hops == 2 else 4,
                       hops=hops)


def tiny_split(
    n_users: int = 12, n_items: int = 40, seed: int = 0, n_neg: int = 12, planted: bool = False
) -> SplitData:
    """Uneven user sizes (2..~20 items), planted two-cluster taste, fixed negatives.

    ``planted``: negatives come from the other cluster only, so the taste alone ranks the
    held-out item first.
    """
    rs = np.random.default_rng(seed)
    indptr, items, tests, negs = [0], [], [], []
    for u in range(n_users):
        k = int(rs.integers(2, 20)) if u % 3 else int(rs.integers(12, 22))
        half = n_items // 2
        pool = np.arange(half) if u % 2 == 0 else np.arange(half, n_items)
        chosen = rs.choice(pool, size=min(k + 1, len(pool)), replace=False)
        test, train = chosen[0], np.sort(chosen[1:])
        items.append(train)
        indptr.append(indptr[-1] + len(train))
        tests.append(test)
        other = np.setdiff1d(np.arange(n_items), pool)
        free = other if planted else np.setdiff1d(np.arange(n_items), chosen)
        negs.append(rs.choice(free, size=n_neg, replace=False))
    return SplitData(
        item_side=tiny_features(n_items, seed),
        name="tiny",
        n_users=n_users,
        n_items=n_items,
        train_indptr=np.array(indptr, dtype=np.int64),
        train_items=np.concatenate(items).astype(np.int64),
        train_ratings=np.ones(indptr[-1], dtype=np.float32),
        test_items=np.array(tests, dtype=np.int64),
        test_negatives=np.stack(negs).astype(np.int64),
    )
