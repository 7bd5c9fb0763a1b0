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
from fedrec.data.errors import DataError

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

    def check(self, source: str | None = None) -> None:
        """Raise :class:`~fedrec.data.errors.DataError` on ids outside their ranges.

        Parameters
        ----------
        source : str, optional
            File named in the message (default: :attr:`source`).
        """
        where = source or self.source or None
        t = np.asarray(self.triples)
        if t.ndim != 2 or t.shape[1] != 3:
            raise DataError(f"KG triples must have shape (n, 3), found {t.shape}", where)
        if len(t) and (t[:, [0, 2]].min() < 0 or t[:, [0, 2]].max() >= self.n_entities):
            raise DataError(f"KG entity ids outside 0..{self.n_entities - 1}", where)
        if len(t) and (t[:, 1].min() < 0 or t[:, 1].max() >= self.n_relations):
            raise DataError(f"KG relation ids outside 0..{self.n_relations - 1}", where)
        ie = np.asarray(self.item_entity)
        if len(ie) and (ie.min() < -1 or ie.max() >= self.n_entities):
            raise DataError(f"KG item entities outside -1..{self.n_entities - 1}", where)

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
        # without replacement (entities with >= n_neighbours neighbours): the neighbours with
        # the n_neighbours smallest keys uniform(seed, entity, position); O(n_edges) memory
        position = np.arange(len(src), dtype=np.int64) - start[src]
        keys = rng.uniform(seed, rng.KG_NEIGHBOURS, src, position)
        by_key = np.lexsort((keys, src))
        rank = np.arange(len(src), dtype=np.int64) - start[src[by_key]]
        take = (rank < n_neighbours) & (counts[src[by_key]] >= n_neighbours)
        rows, cols, edges = src[by_key][take], rank[take], by_key[take]
        adj_e[rows, cols] = dst[edges]
        adj_r[rows, cols] = rel[edges]
        # with replacement (1 <= neighbours < n_neighbours): uniform(seed, entity, -1 - slot)
        few = np.flatnonzero((counts > 0) & (counts < n_neighbours))
        if len(few):
            slot = np.arange(n_neighbours, dtype=np.int64)[None, :]
            ent = few[:, None]
            draw = rng.uniform(seed, rng.KG_NEIGHBOURS, ent, -1 - slot) * counts[ent]
            idx = start[ent] + draw.astype(np.int64)
            adj_e[few] = dst[idx]
            adj_r[few] = rel[idx]
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
        value = (
            self.matrices.get(name)
            if name in self.matrices
            else getattr(self, _ATTR.get(name, name), None)
            if name in FEATURE_NAMES
            else None
        )
        if value is None:
            raise ValueError(
                f"item feature {name!r} is not available for this dataset; available: "
                f"{', '.join(self.available()) or 'none'}"
            )
        return value

    def copy(self) -> ItemFeatures:
        """A new container holding the same (read-only by convention) arrays."""
        return dataclasses.replace(
            self,
            titles=None if self.titles is None else list(self.titles),
            matrices=dict(self.matrices),
        )

    def check(self, n_items: int, source: str | None = None) -> None:
        """Raise :class:`~fedrec.data.errors.DataError` unless every feature has ``n_items`` rows.

        Parameters
        ----------
        n_items : int
            Number of dense items the features must be aligned with.
        source : str, optional
            File named in the message.
        """
        sizes = {
            "titles": None if self.titles is None else len(self.titles),
            "genres": None if self.genres is None else len(self.genres),
            "year": None if self.year is None else len(self.year),
            "text": None if self.text is None else len(self.text),
            "kg.item_entity": None if self.kg is None else len(self.kg.item_entity),
        }
        sizes.update({f"matrices[{k!r}]": len(v) for k, v in self.matrices.items()})
        bad = {k: v for k, v in sizes.items() if v is not None and v != n_items}
        if bad:
            detail = ", ".join(f"{k} has {v}" for k, v in bad.items())
            raise DataError(f"item features not aligned with {n_items} items: {detail}", source)
        if self.genres is not None and self.genre_names:
            if self.genres.shape[1:] != (len(self.genre_names),):
                raise DataError(
                    f"genres have shape {self.genres.shape} but there are "
                    f"{len(self.genre_names)} genre names",
                    source,
                )
        if self.kg is not None:
            self.kg.check(source)

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
