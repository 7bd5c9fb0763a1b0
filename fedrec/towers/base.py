"""What every tower declares: its parameters, row tables, frozen inputs and an encoder.

A tower maps an item (its rows in the tower's tables and its frozen inputs, laid out by
:mod:`fedrec.train.layout`) to a ``dim``-vector. Parameter, table and input names start with
the tower's name so that towers combine freely. Every parameter is shared (``item`` rows of
the tower's tables or ``dense`` weights); a tower has no private parameters, but it may read the
user's private query vector (computed where the user is: on the node).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from fedrec.data.item_features import ItemFeatures
from fedrec.models.base import ParamSpec


class Tower:
    """Base class of item towers.

    Parameters
    ----------
    features : ItemFeatures
        The dataset's public side information.
    n_items : int
    dim : int
        Width of the tower's output (the base model's ``dim``).
    query_dim : int
        Width of the base model's query user vector (0: none).
    seed : int
        Seed of any sampling the tower does once (e.g. KG neighbours).
    """

    name = "base"
    #: Item features the tower reads (checked when it is built: a clear error naming them).
    needs: tuple[str, ...] = ()

    def __init__(self, features: ItemFeatures, n_items: int, dim: int, query_dim: int = 0,
                 seed: int = 0, **options: int) -> None:
        for feature in self.needs:
            features.get(feature)
        self.features = features
        self.n_items = n_items
        self.dim = dim
        self.query_dim = query_dim
        self.seed = seed

    def specs(self) -> list[ParamSpec]:
        raise NotImplementedError

    def tables(self) -> dict[str, int]:
        """Row tables the tower adds (``{name: rows}``)."""
        return {}

    def reach(self, table: str) -> np.ndarray:
        """int64 ``(n_items, m)`` rows of ``table`` each item reaches."""
        raise ValueError(f"tower '{self.name}' has no table '{table}'")

    def frozen(self) -> dict[str, np.ndarray]:
        """Frozen per-item inputs ``{name: (n_items, ...)}``."""
        return {}

    def encode(self, query: Tensor | None, item: dict[str, Tensor],
               dense: dict[str, Tensor]) -> Tensor:
        """``(A, B, dim)`` item vectors (``query``: ``(A, 1, query_dim)`` or ``None``)."""
        raise NotImplementedError


def feature_projection(prefix: str, width: int, dim: int) -> list[ParamSpec]:
    """A linear map ``width -> dim`` (weights ``{prefix}_w``, bias ``{prefix}_b``)."""
    return [ParamSpec(f"{prefix}_w", "dense", (width, dim), init="xavier"),
            ParamSpec(f"{prefix}_b", "dense", (dim,), init="zeros")]


def project(x: Tensor, dense: dict[str, Tensor], prefix: str) -> Tensor:
    """``tanh(x W + b)`` with per-user copies: ``x`` (A, B, width), ``W`` (A, width, dim)."""
    import torch

    return torch.tanh(torch.baddbmm(dense[f"{prefix}_b"][:, None, :], x, dense[f"{prefix}_w"]))
