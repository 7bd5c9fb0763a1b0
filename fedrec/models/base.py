"""What every recommender declares: its parameters (private or shared) and a score function.

A model is a pure score function over named parameters. Each parameter has a *kind*:

- ``user``  one row per user; **private**, never leaves the node;
- ``item``  one row per item; shared; a user's update touches only the rows it used;
- ``dense`` one tensor (towers, MLP layers, global bias); shared.

Training code lays parameters out for ``A`` users at once, each with ``B`` examples:
``user`` params arrive as ``(A, 1, *shape)``, ``item`` params as ``(A, B, *shape)`` and
``dense`` params as ``(A, *shape)`` (each user its own copy). ``score`` returns ``(A, B)``.
Central training uses the same function with ``A = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from fedrec import rng

Kind = Literal["user", "item", "dense"]


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
        ``normal`` (scaled by the model's ``init_std``), ``zeros`` or ``xavier``.
    """

    name: str
    kind: Kind
    shape: tuple[int, ...]
    init: str = "normal"


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

    # -- shared helpers ---------------------------------------------------------------
    def specs_of(self, *kinds: Kind) -> list[ParamSpec]:
        return [s for s in self.specs() if s.kind in kinds]

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
        for s in self.specs_of("item", "dense"):
            shape = (self.n_items, *s.shape) if s.kind == "item" else s.shape
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
