"""MLP recommender of NCF (He et al., WWW 2017): a tower over [p_u, q_i].

With ``dim`` predictive factors the embeddings have ``4 * dim`` entries and the tower is
``8d -> 4d -> 2d -> d`` (the paper's 64-32-16-8 at d = 8).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedrec.models.base import ParamSpec, Recommender
from fedrec.models.registry import register_model


def tower_specs(prefix: str, dim: int) -> list[ParamSpec]:
    """Dense layers ``8d -> 4d -> 2d -> d`` named ``{prefix}_w{k}``/``{prefix}_b{k}``."""
    sizes = [8 * dim, 4 * dim, 2 * dim, dim]
    out = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        out.append(ParamSpec(f"{prefix}_w{k}", "dense", (i, o), init="xavier"))
        out.append(ParamSpec(f"{prefix}_b{k}", "dense", (o,), init="zeros"))
    return out


def tower(x: Tensor, dense: dict[str, Tensor], prefix: str, layers: int = 3) -> Tensor:
    """Apply per-user tower copies: ``x`` (A, B, in), weights (A, in, out)."""
    for k in range(layers):
        x = torch.relu(torch.baddbmm(dense[f"{prefix}_b{k}"][:, None, :], x,
                                     dense[f"{prefix}_w{k}"]))
    return x


def mlp_input(user: Tensor, item: Tensor) -> Tensor:
    """Concatenate user (A, 1, e) broadcast to item (A, B, e)."""
    return torch.cat([user.expand(-1, item.shape[1], -1), item], dim=-1)


@register_model("mlp")
class MLP(Recommender):
    """NCF MLP. Private: ``mlp_user``. Shared: ``mlp_item``, tower, output ``mlp_h``/``out_b``."""

    item_slots = ("mlp_item",)
    query_user = "mlp_user"

    def specs(self) -> list[ParamSpec]:
        return [
            ParamSpec("mlp_user", "user", (4 * self.dim,)),
            ParamSpec("mlp_item", "item", (4 * self.dim,)),
            *tower_specs("mlp", self.dim),
            ParamSpec("mlp_h", "dense", (self.dim,), init="xavier"),
            ParamSpec("out_b", "dense", (), init="zeros"),
        ]

    def score(
        self, user: dict[str, Tensor], item: dict[str, Tensor], dense: dict[str, Tensor]
    ) -> Tensor:
        z = tower(mlp_input(user["mlp_user"], item["mlp_item"]), dense, "mlp")
        return (z * dense["mlp_h"][:, None, :]).sum(-1) + dense["out_b"][:, None]
