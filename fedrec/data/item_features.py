"""Typed item side information: one feature set per dense item index (DESIGN section 9).

Side information is public: every node loads it from the data directory (or generates it
with the synthetic data). Models and towers read it through :class:`ItemFeatures`; frozen
inputs (text vectors, genres, year) are data, not parameters.

- :class:`KnowledgeGraph` -- triples over entities, the entity of each item, and the seeded
  fixed-size neighbour sampling of KGCN (Wang et al., WWW 2019).
- :class:`ItemFeatures` -- titles, genres (multi-hot), release year, frozen text vectors, a KG
  and any further ``(n_items, d)`` matrices, all aligned with the dense item index.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from fedrec import rng

#: Names of the features a model can ask for (``ItemFeatures.get``).
FEATURE_NAMES = ("title", "genres", "year", "text", "kg")


@dataclass(frozen=True)
class KnowledgeGraph:
    """A knowledge graph whose entities include the items.

    Attributes
    ----------
    triples : numpy.ndarray
        int64 ``(n_triples, 3)``: head entity, relation, tail entity.
    n_entities : int
        Entities are ``0 .. n_entities - 1``.
    relations : tuple of str
        Relation names; relation ids index this tuple.
    item_entity : numpy.ndarray
        int64 ``(n_items,)``: the entity of each dense item, ``-1`` for an item not in the KG.
    source : str
        Where it came from (a file path or ``"synthetic"``), named in messages.
    """

    triples: np.ndarray
    n_entities: int
    relations: tuple[str, ...]
    item_entity: np.ndarray
    source: str = ""

    @property
    def n_relations(self) -> int:
        return len(self.relations)

    def subset_items(self, items: np.ndarray) -> KnowledgeGraph:
        """The same graph with the item index restricted/reordered to ``items``."""
        return dataclasses.replace(self, item_entity=self.item_entity[np.asarray(items)])

    def sample_neighbours(self, n_neighbours: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """KGCN's fixed-size neighbour sample of every entity (the graph taken as undirected).

        Each entity gets ``n_neighbours`` (entity, relation) pairs drawn uniformly from its
        neighbours, without replacement where it has at least that many, with replacement
        otherwise. An entity without neighbours (and the padding entity ``n_entities``) points
        to the padding entity through the padding relation ``n_relations``. The draw is keyed
        by ``(seed, entity)``, so it is the same on every node.

        Returns
        -------
        (adj_entity, adj_relation)
            int64 ``(n_entities + 1, n_neighbours)`` each (last row: padding).
        """
        if n_neighbours < 1:
            raise ValueError(f"n_neighbours must be >= 1, got {n_neighbours}")
        h, r, t = self.triples[:, 0], self.triples[:, 1], self.triples[:, 2]
        src = np.concatenate([h, t])
        dst = np.concatenate([t, h])
        rel = np.concatenate([r, r])
        order = np.lexsort((rel, dst, src))  # deterministic neighbour order per entity
        src, dst, rel = src[order], dst[order], rel[order]
        n = self.n_entities
        counts = np.bincount(src, minlength=n)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        adj_e = np.full((n + 1, n_neighbours), n, dtype=np.int64)
        adj_r = np.full((n + 1, n_neighbours), self.n_relations, dtype=np.int64)
        has = np.flatnonzero(counts > 0)
        ent = has[:, None]
        slot = np.arange(n_neighbours, dtype=np.int64)[None, :]
        # without replacement: the first n_neighbours of a seeded random permutation key
        keys = rng.uniform(seed, rng.KG_NEIGHBOURS, ent, np.arange(counts.max())[None, :])
        valid = np.arange(counts.max())[None, :] < counts[has][:, None]
        keys = np.where(valid, keys, np.inf)
        perm = np.argsort(keys, axis=1)[:, :n_neighbours]
        if perm.shape[1] < n_neighbours:  # every entity has fewer than n_neighbours
            perm = np.pad(perm, ((0, 0), (0, n_neighbours - perm.shape[1])))
        with_repl = (rng.uniform(seed, rng.KG_NEIGHBOURS, ent, -1 - slot) * counts[has][:, None])
        pick = np.where(counts[has][:, None] >= n_neighbours, perm, with_repl.astype(np.int64))
        idx = start[has][:, None] + pick
        adj_e[has] = dst[idx]
        adj_r[has] = rel[idx]
        return adj_e, adj_r


@dataclass
class ItemFeatures:
    """Public side information of every dense item (aligned with the item index).

    Attributes
    ----------
    titles : list of str, optional
        Title (or name) per item; ``""`` where unknown.
    genres : numpy.ndarray, optional
        float32 ``(n_items, n_genres)`` multi-hot.
    genre_names : tuple of str
        Names of the genre columns.
    year : numpy.ndarray, optional
        float32 ``(n_items,)`` release year, NaN where unknown.
    text : numpy.ndarray, optional
        float32 ``(n_items, d)`` frozen text vectors (e.g. all-MiniLM-L6-v2 of the titles);
        all-zero rows where unknown.
    kg : KnowledgeGraph, optional
    matrices : dict of str to numpy.ndarray
        Any further float32 ``(n_items, d)`` item-feature matrices (e.g. from ``.npy`` files).
    """

    titles: list[str] | None = None
    genres: np.ndarray | None = None
    genre_names: tuple[str, ...] = ()
    year: np.ndarray | None = None
    text: np.ndarray | None = None
    kg: KnowledgeGraph | None = None
    matrices: dict[str, np.ndarray] = field(default_factory=dict)

    def available(self) -> list[str]:
        """Names of the features present (:data:`FEATURE_NAMES` order, then matrices)."""
        have = [n for n in FEATURE_NAMES if getattr(self, _ATTR.get(n, n)) is not None]
        return have + sorted(self.matrices)

    def get(self, name: str):
        """A feature by name; a clear error naming what is available when it is missing."""
        value = self.matrices.get(name) if name in self.matrices else getattr(
            self, _ATTR.get(name, name), None) if name in FEATURE_NAMES else None
        if value is None:
            raise ValueError(
                f"item feature {name!r} is not available for this dataset; available: "
                f"{', '.join(self.available()) or 'none'}"
            )
        return value

    def subset(self, items: np.ndarray) -> ItemFeatures:
        """Features of ``items`` (dense ids), in that order: the new item ``k`` is ``items[k]``."""
        items = np.asarray(items, dtype=np.int64)
        return ItemFeatures(
            titles=[self.titles[i] for i in items.tolist()] if self.titles is not None else None,
            genres=None if self.genres is None else self.genres[items],
            genre_names=self.genre_names,
            year=None if self.year is None else self.year[items],
            text=None if self.text is None else self.text[items],
            kg=None if self.kg is None else self.kg.subset_items(items),
            matrices={k: v[items] for k, v in self.matrices.items()},
        )


_ATTR = {"title": "titles"}
