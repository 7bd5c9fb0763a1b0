"""The one gather/layout helper: which shared rows and frozen inputs each example reads.

A model's ``item`` parameters live in row tables (``item`` and, with towers, e.g. KG
``entity`` / ``relation``); item ``i`` reaches ``model.reach(table)[i]`` rows of each table, and
frozen per-item inputs (text vectors, genres) are read at ``i``. Two layouts, one code path:

- **global** (central training, the per-user reference loop, evaluation): the full shared tables;
  the rows of an example are ``reach[items]``;
- **local** (cohort training, DP-SGD): each *owner* (a user, or the user of a DP unit) holds its
  own copy of only the rows its examples reach, stacked and sorted by owner
  (:func:`local_rows`); examples then index ``(owner, item)`` pairs, and a pair's rows in each
  table are looked up with :meth:`LocalRows.rows`.

:meth:`ItemIndex.inputs` builds the ``item`` dict of :meth:`Recommender.score` from either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fedrec.models.base import ITEM_TABLE, Recommender

Gather = Callable[[str, Tensor], Tensor]


class ItemIndex:
    """A model's row tables, the rows each item reaches, and its frozen inputs, on a device."""

    def __init__(self, model: Recommender, device: torch.device | str = "cpu") -> None:
        self.model = model
        self.sizes = model.tables()
        self.specs = model.row_specs()
        self.table_of = {s.name: s.table for s in self.specs}
        self.row_shape = {s.name: tuple(s.shape) for s in self.specs}
        used = {s.table for s in self.specs} | {ITEM_TABLE}
        self.tables = [ITEM_TABLE] + sorted(used - {ITEM_TABLE})
        self.reach = {t: torch.from_numpy(np.asarray(model.reach(t), dtype=np.int64)).to(device)
                      for t in self.tables if t != ITEM_TABLE}
        self.frozen = {n: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(device)
                       for n, a in model.frozen().items()}

    def rows(self, items: Tensor) -> dict[str, Tensor]:
        """Global rows reached by ``items`` (any shape): ``item`` table ``items.shape``, the
        others ``(*items.shape, m)``."""
        out = {ITEM_TABLE: items}
        for t, r in self.reach.items():
            out[t] = r[items]
        return out

    def inputs(self, gather: Gather, rows: dict[str, Tensor], items: Tensor) -> dict[str, Tensor]:
        """The ``item`` dict of ``score``: every row parameter gathered at its table's ``rows``
        (``gather(name, index)`` returns ``(*index.shape, *row_shape)``), and every frozen input
        at ``items``."""
        out = {s.name: gather(s.name, rows[s.table]) for s in self.specs}
        for n, f in self.frozen.items():
            out[n] = f[items]
        return out

    def table_gather(self, tables: dict[str, Tensor]) -> Gather:
        """``gather`` over full (or local) tables with their row shapes: ``tables[name][index]``."""
        return lambda name, index: tables[name][index]

    def embedding_gather(self, tables2d: dict[str, Tensor], sparse: bool) -> Gather:
        """``gather`` over 2-D ``(rows, row numel)`` leaves through ``F.embedding`` (sparse
        gradients for ``torch.optim.SparseAdam``), reshaped to the row shape."""
        emb = torch.nn.functional.embedding

        def gather(name: str, index: Tensor) -> Tensor:
            out = emb(index, tables2d[name], sparse=sparse)
            return out.view(*index.shape, *self.row_shape[name])

        return gather

    def slot(self, item: dict[str, Tensor], c: int) -> dict[str, Tensor]:
        """Slot ``c`` of an ``item`` dict laid out ``(A, B, k, ...)``: ``(A, B, ...)``."""
        return {n: v[:, :, c] for n, v in item.items()}


@dataclass
class TableRows:
    """One table's local rows: each owner's copy of the rows it reaches, sorted by owner.

    Attributes
    ----------
    owner : Tensor
        ``(R,)`` local owner of each row (non-decreasing).
    row : Tensor
        ``(R,)`` global row id.
    end : Tensor
        ``(n_owners,)`` exclusive end of each owner's rows (owners ``< a`` hold ``end[a-1]``).
    of_pair : Tensor or None
        ``(n_pairs, m)`` local rows of each (owner, item) pair; ``None`` for the ``item`` table,
        whose local rows *are* the pairs.
    """

    owner: Tensor
    row: Tensor
    end: Tensor
    of_pair: Tensor | None

    def key(self, size: int) -> Tensor:
        """Sorted ``owner * size + row`` (for looking a local row up)."""
        return self.owner * size + self.row


@dataclass
class LocalRows:
    """Every table's local rows for a group of owners (see :func:`local_rows`)."""

    n_owners: int
    tables: dict[str, TableRows]

    def rows(self, pairs: Tensor) -> dict[str, Tensor]:
        """Local rows of every table for local pair indices ``pairs`` (any shape)."""
        return {t: pairs if tr.of_pair is None else tr.of_pair[pairs]
                for t, tr in self.tables.items()}

    def n_rows(self, table: str, n_active: int) -> int:
        """Rows of ``table`` held by the owners ``[0, n_active)``."""
        return int(self.tables[table].end[n_active - 1]) if n_active else 0


def local_rows(
    index: ItemIndex, keys: np.ndarray, n_owners: int, device: torch.device
) -> tuple[LocalRows, Tensor]:
    """Local rows of every table for the ``(owner, item)`` pairs in ``keys``.

    Parameters
    ----------
    index : ItemIndex
    keys : numpy.ndarray
        int64 ``owner * n_items + item`` of every example slot (repeats allowed).
    n_owners : int

    Returns
    -------
    (LocalRows, Tensor)
        The rows, and the local pair index of every entry of ``keys``.
    """
    n_items = index.sizes[ITEM_TABLE]
    uniq, inverse = torch.unique(torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                                 sorted=True, return_inverse=True)
    uniq = uniq.to(device)
    owners = torch.arange(n_owners, device=device)
    pair_owner, pair_item = uniq // n_items, uniq % n_items
    tables = {ITEM_TABLE: TableRows(pair_owner, pair_item,
                                    torch.searchsorted(pair_owner, owners, right=True), None)}
    for t, reach in index.reach.items():
        size = index.sizes[t]
        r = reach[pair_item]  # (P, m) global rows of each pair
        u, inv = torch.unique((pair_owner[:, None] * size + r).reshape(-1), sorted=True,
                              return_inverse=True)
        owner = u // size
        tables[t] = TableRows(owner, u % size, torch.searchsorted(owner, owners, right=True),
                              inv.view(r.shape))
    return LocalRows(n_owners, tables), inverse.to(device)
