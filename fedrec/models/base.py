"""What every recommender declares: its parameters (private or shared) and a score function.

A model is a pure score function over named parameters. Each parameter has a *kind*:

- ``user``  one row per user; **private**, never leaves the node;
- ``item``  one row of a shared *row table*; a user's update touches only the rows it used.
  The table is ``item`` (one row per item) unless the spec names another one (a tower's KG
  entities or relations): item ``i`` then reaches the rows ``reach(table)[i]`` of that table;
- ``dense`` one tensor (towers, MLP layers, global bias); shared.

Training code lays parameters out for ``A`` users at once, each with ``B`` examples:
``user`` params arrive as ``(A, 1, *shape)``, ``item`` params of the ``item`` table as
``(A, B, *shape)``, those of another table as ``(A, B, m, *shape)`` (the ``m`` rows the item
reaches) and ``dense`` params as ``(A, *shape)`` (each user its own copy). Frozen item
features (:meth:`Recommender.frozen`, data and not parameters) arrive in the same ``item``
dict as ``(A, B, *shape)``. ``score`` returns ``(A, B)``. Central training uses the same
function with ``A = 1``. :mod:`fedrec.train.layout` is the one place that builds these layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from fedrec import rng

Kind = Literal["user", "item", "dense"]
ITEM_TABLE = "item"


@dataclass(frozen=True)
class ParamSpec:
    """One named parameter of a model.

    Attributes
    ----------
    name : str
        Key in parameter dicts and in Flower records.
    kind : {"user", "item", "dense"}
        ``user`` parameters are private; the others are shared and aggregated.
    shape : tuple of int
        Row shape for ``user``/``item`` kinds, full shape for ``dense``.
    init : str
        ``normal`` (scaled by the model's ``init_std``), ``zeros``, ``ones`` or ``xavier``.
    table : str
        For ``item`` kinds: the row table (``item``, or a table a tower declares).
    """

    name: str
    kind: Kind
    shape: tuple[int, ...]
    init: str = "normal"
    table: str = ITEM_TABLE


class Recommender:
    """Base class: parameter specs, initialisation and the score function."""

    name = "base"

    def __init__(self, n_users: int, n_items: int, dim: int = 32, init_std: float = 0.1) -> None:
        self.n_users = n_users
        self.n_items = n_items
        self.dim = dim
        self.init_std = init_std

    # -- to implement -------------------------------------------------------------------
    def specs(self) -> list[ParamSpec]:
        """All parameters of the model."""
        raise NotImplementedError

    def score(
        self, user: dict[str, Tensor], item: dict[str, Tensor], dense: dict[str, Tensor]
    ) -> Tensor:
        """Scores ``(A, B)`` (logits) for the laid-out parameters (see module doc)."""
        raise NotImplementedError

    # -- row tables and frozen features (defaults: the item table alone) -----------------
    #: Item-table embeddings that towers fuse into (names of ``item`` specs), and the private
    #: user vector that towers may use as a query (e.g. KGCN's relation attention).
    item_slots: tuple[str, ...] = ()
    query_user: str = ""

    def tables(self) -> dict[str, int]:
        """Row count of every shared row table."""
        return {ITEM_TABLE: self.n_items}

    def reach(self, table: str) -> np.ndarray:
        """int64 ``(n_items, m)``: the rows of ``table`` that each item reaches."""
        if table != ITEM_TABLE:
            raise ValueError(f"model '{self.name}' has no row table '{table}'")
        return np.arange(self.n_items, dtype=np.int64)[:, None]

    def frozen(self) -> dict[str, np.ndarray]:
        """Frozen per-item inputs ``{name: (n_items, ...)}`` that ``score`` reads from ``item``."""
        return {}

    # -- shared helpers ---------------------------------------------------------------
    def specs_of(self, *kinds: Kind) -> list[ParamSpec]:
        return [s for s in self.specs() if s.kind in kinds]

    def row_specs(self, table: str | None = None) -> list[ParamSpec]:
        """``item``-kind specs (of one table, or all)."""
        return [s for s in self.specs_of("item") if table is None or s.table == table]

    @property
    def private_names(self) -> list[str]:
        """Names of parameters that never leave the node."""
        return [s.name for s in self.specs_of("user")]

    @property
    def shared_names(self) -> list[str]:
        """Names of parameters that are sent to the server and aggregated."""
        return [s.name for s in self.specs_of("item", "dense")]

    def init_shared(self, seed: int) -> dict[str, Tensor]:
        """Initial shared parameters (float32), deterministic from ``seed``."""
        gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
        out: dict[str, Tensor] = {}
        sizes = self.tables()
        for s in self.specs_of("item", "dense"):
            shape = (sizes[s.table], *s.shape) if s.kind == "item" else s.shape
            out[s.name] = _init_tensor(s.init, shape, self.init_std, gen)
        return out

    def init_users(self, users: np.ndarray, seed: int) -> dict[str, Tensor]:
        """Initial private rows for ``users`` (global ids).

        Drawn from a counter-based generator keyed by ``(seed, user, element)`` so a user's
        initial embedding does not depend on which other users share its node.
        """
        users = np.asarray(users, dtype=np.int64)
        out: dict[str, Tensor] = {}
        for k, s in enumerate(self.specs_of("user")):
            size = int(np.prod(s.shape)) if s.shape else 1
            if s.init == "zeros":
                arr = np.zeros((len(users), size), dtype=np.float32)
            elif s.init == "normal":
                idx = np.arange(size, dtype=np.int64)
                arr = rng.normal(seed, rng.USER_INIT, k, users[:, None], idx[None, :])
                arr = (arr * self.init_std).astype(np.float32)
            else:
                raise ValueError(f"user parameter '{s.name}': unsupported init '{s.init}'")
            out[s.name] = torch.from_numpy(arr.reshape(len(users), *s.shape))
        return out

    def init_all_users(self, seed: int) -> dict[str, Tensor]:
        return self.init_users(np.arange(self.n_users), seed)


def _init_tensor(kind: str, shape: tuple[int, ...], std: float, gen: torch.Generator) -> Tensor:
    if kind == "zeros":
        return torch.zeros(shape)
    if kind == "normal":
        return torch.randn(shape, generator=gen) * std
    if kind == "xavier":
        fan_in, fan_out = (shape[0], shape[-1]) if len(shape) >= 2 else (shape[0], 1)
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound
    if kind == "ones":
        return torch.ones(shape)
    raise ValueError(f"unknown init '{kind}'")
