"""Any base model with any set of towers: gated fusion of the ID embedding with the towers.

For every item embedding slot of the base model (``item_slots``: MF's ``item_emb``, NeuMF's
``gmf_item`` and ``mlp_item`` ...), with ``z`` the sum of the towers' vectors (projected to
the slot's width when it differs from ``dim``):

``g = sigmoid(W_g [id; z] + b_g)``, ``item = g * id + (1 - g) * z``.

The slots' ID rows start at zero, so an item with no training interactions (a cold item) keeps
``id = 0`` and is scored from its towers alone. Every tower and fusion parameter is shared;
the user's private rows stay private, and towers read the private query vector on the node.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from fedrec.data.item_features import ItemFeatures
from fedrec.models.base import ITEM_TABLE, ParamSpec, Recommender
from fedrec.towers.base import Tower
from fedrec.towers.registry import build_tower


class TowerModel(Recommender):
    """``base`` scored with item representations fused from its ID embeddings and ``towers``."""

    def __init__(self, base: Recommender, towers: list[Tower]) -> None:
        super().__init__(base.n_users, base.n_items, base.dim, base.init_std)
        if not base.item_slots:
            raise ValueError(f"model '{base.name}' declares no item slots for towers")
        self.base, self.towers = base, towers
        self.name = f"{base.name}+{'+'.join(t.name for t in towers)}"
        self.item_slots, self.query_user = base.item_slots, base.query_user
        self._slot_dim = {s.name: int(np.prod(s.shape)) for s in base.specs()
                          if s.name in base.item_slots}
        self._owner = {t: tw for tw in towers for t in tw.tables()}

    def specs(self) -> list[ParamSpec]:
        out = [dataclasses.replace(s, init="zeros") if s.name in self.item_slots else s
               for s in self.base.specs()]
        for tw in self.towers:
            out += tw.specs()
        for slot, d in self._slot_dim.items():
            if d != self.dim:
                out.append(ParamSpec(f"fuse_{slot}_proj", "dense", (self.dim, d), init="xavier"))
            out += [ParamSpec(f"fuse_{slot}_gw", "dense", (2 * d, d), init="xavier"),
                    ParamSpec(f"fuse_{slot}_gb", "dense", (d,), init="zeros")]
        return out

    def tables(self) -> dict[str, int]:
        out = self.base.tables()
        for tw in self.towers:
            out.update(tw.tables())
        return out

    def reach(self, table: str) -> np.ndarray:
        if table == ITEM_TABLE:
            return self.base.reach(table)
        if table not in self._owner:
            raise ValueError(f"model '{self.name}' has no row table '{table}'")
        return self._owner[table].reach(table)

    def frozen(self) -> dict[str, np.ndarray]:
        out = dict(self.base.frozen())
        for tw in self.towers:
            out.update(tw.frozen())
        return out

    def tower_vectors(self, user: dict[str, Tensor], item: dict[str, Tensor],
                      dense: dict[str, Tensor]) -> Tensor:
        """``(A, B, dim)``: the sum of the towers' item vectors."""
        query = user.get(self.query_user)
        return sum(tw.encode(query, item, dense) for tw in self.towers)

    def score(self, user: dict[str, Tensor], item: dict[str, Tensor],
              dense: dict[str, Tensor]) -> Tensor:
        z = self.tower_vectors(user, item, dense)
        fused = dict(item)
        for slot, d in self._slot_dim.items():
            zs = torch.bmm(z, dense[f"fuse_{slot}_proj"]) if d != self.dim else z
            idv = item[slot]
            g = torch.sigmoid(torch.baddbmm(dense[f"fuse_{slot}_gb"][:, None, :],
                                            torch.cat([idv, zs], dim=-1),
                                            dense[f"fuse_{slot}_gw"]))
            fused[slot] = g * idv + (1 - g) * zs
        return self.base.score(user, fused, dense)


def with_towers(base: Recommender, names: list[str], features: ItemFeatures, seed: int,
                **options: int) -> Recommender:
    """``base`` unchanged when ``names`` is empty, else a :class:`TowerModel`."""
    if not names:
        return base
    qdim = next((int(np.prod(s.shape)) for s in base.specs() if s.name == base.query_user), 0)
    towers = [build_tower(n, features=features, n_items=base.n_items, dim=base.dim,
                          query_dim=qdim, seed=seed, **options) for n in names]
    return TowerModel(base, towers)
