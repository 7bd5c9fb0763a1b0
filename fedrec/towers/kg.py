"""Knowledge-graph tower: KGCN (Wang et al., WWW 2019) over the public item KG.

Why KGCN rather than MKR: KGCN's item vector is a function of the item's fixed-size sampled
KG neighbourhood alone, so a user's local copy needs exactly the entity and relation rows its
items reach (the same sparse "rows a user touches" layout as item embeddings), and the
user-specific relation attention uses the private user vector where it lives, on the node.
MKR instead trains a KG-embedding task on triples that belong to no user, which a client
cannot own.

Each entity gets ``neighbours`` (entity, relation) pairs sampled once, seeded
(:meth:`KnowledgeGraph.sample_neighbours`); an item reaches its entity, its ``K`` neighbours
and, with 2 hops, their ``K^2`` neighbours. Per iteration ``h`` and hop ``j``:
``pi = softmax_K(mean(u * r))`` (the query user ``u`` against each neighbour's relation
``r``), ``agg = sum_K pi * e_neighbour``, ``e <- act(W_h (e + agg) + b_h)`` (KGCN's sum
aggregator; ReLU, tanh at the last iteration). The item's vector is the aggregated entity.
Shared: entity and relation rows (tables ``kg_entity``, ``kg_relation``), ``kg_w{h}``,
``kg_b{h}``. Items outside the KG map to a padding entity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fedrec.models.base import ParamSpec
from fedrec.towers.base import Tower
from fedrec.towers.registry import register_tower

ENTITY, RELATION = "kg_entity", "kg_relation"


@register_tower("kg")
class KGTower(Tower):
    """KGCN aggregation over a seeded fixed-size neighbourhood (1 or 2 hops)."""

    needs = ("kg",)

    def __init__(self, features, n_items: int, dim: int, query_dim: int = 0, seed: int = 0,
                 neighbours: int = 8, hops: int = 1, **options: int) -> None:
        super().__init__(features, n_items, dim, query_dim, seed)
        if hops not in (1, 2):
            raise ValueError(f"setting 'kg-hops' = {hops}: must be 1 or 2")
        if neighbours < 1:
            raise ValueError(f"setting 'kg-neighbours' = {neighbours}: must be >= 1")
        kg = features.get("kg")
        if len(kg.item_entity) != n_items:
            raise ValueError(f"KG {kg.source}: maps {len(kg.item_entity)} items, the data has "
                             f"{n_items}")
        self.kg, self.neighbours, self.hops = kg, neighbours, hops
        adj_e, adj_r = kg.sample_neighbours(neighbours, seed)
        ent = np.where(kg.item_entity >= 0, kg.item_entity, kg.n_entities)[:, None]
        hop_e, hop_r = [ent], []
        for _ in range(hops):
            hop_r.append(adj_r[hop_e[-1]].reshape(n_items, -1))
            hop_e.append(adj_e[hop_e[-1]].reshape(n_items, -1))
        self._reach = {ENTITY: np.concatenate(hop_e, 1), RELATION: np.concatenate(hop_r, 1)}
        # padding rows (items outside the KG, entities without neighbours) read as zeros, so
        # they get exactly zero gradients and never move
        self._masks = {"kg_entity_mask": (self._reach[ENTITY] < kg.n_entities),
                       "kg_relation_mask": (self._reach[RELATION] < kg.n_relations)}
        self.qdim = query_dim or dim

    def tables(self) -> dict[str, int]:
        return {ENTITY: self.kg.n_entities + 1, RELATION: self.kg.n_relations + 1}

    def reach(self, table: str) -> np.ndarray:
        if table not in self._reach:
            return super().reach(table)
        return self._reach[table]

    def frozen(self) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32) for k, v in self._masks.items()}

    def specs(self) -> list[ParamSpec]:
        out = [ParamSpec(ENTITY, "item", (self.dim,), table=ENTITY),
               ParamSpec(RELATION, "item", (self.qdim,), table=RELATION)]
        for h in range(self.hops):
            out += [ParamSpec(f"kg_w{h}", "dense", (self.dim, self.dim), init="xavier"),
                    ParamSpec(f"kg_b{h}", "dense", (self.dim,), init="zeros")]
        return out

    def encode(self, query: Tensor | None, item: dict[str, Tensor],
               dense: dict[str, Tensor]) -> Tensor:
        K, H = self.neighbours, self.hops
        # (A, B, 1+K(+K^2), d), (A, B, K(+K^2), q); padding rows masked to zero
        ent = item[ENTITY] * item["kg_entity_mask"].unsqueeze(-1)
        rel = item[RELATION] * item["kg_relation_mask"].unsqueeze(-1)
        sizes = [K**j for j in range(H + 1)]
        vectors = list(torch.split(ent, sizes, dim=2))
        relations = list(torch.split(rel, sizes[1:], dim=2))
        for i in range(H):
            nxt = []
            for j in range(H - i):
                nb = vectors[j + 1].unflatten(2, (-1, K))  # (A, B, n_j, K, d)
                r = relations[j].unflatten(2, (-1, K))  # (A, B, n_j, K, q)
                if query is not None:
                    pi = torch.softmax((query[:, :, None, None, :] * r).mean(-1), dim=-1)
                else:
                    pi = torch.full(r.shape[:-1], 1.0 / K, dtype=r.dtype, device=r.device)
                x = vectors[j] + (pi.unsqueeze(-1) * nb).sum(-2)
                x = torch.einsum("abnd,ade->abne", x, dense[f"kg_w{i}"]) \
                    + dense[f"kg_b{i}"][:, None, None, :]
                nxt.append(torch.relu(x) if i < H - 1 else torch.tanh(x))
            vectors = nxt
        return vectors[0][:, :, 0]
