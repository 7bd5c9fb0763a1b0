"""NeuMF (He et al., WWW 2017): GMF and MLP branches fused by one output layer.

``score = h_gmf . (p_u * q_i) + h_mlp . MLP([p'_u, q'_i]) + b``. With pre-training, the
GMF and MLP parameters come from trained GMF / MLP models and the output weights are
``alpha * h_gmf`` and ``(1 - alpha) * h_mlp`` (``alpha = 0.5``), as in the paper.
"""

from __future__ import annotations

from torch import Tensor

from fedrec.models.base import ParamSpec, Recommender
from fedrec.models.mlp import mlp_input, tower, tower_specs
from fedrec.models.registry import register_model


@register_model("neumf")
class NeuMF(Recommender):
    """NeuMF. Private: ``gmf_user``, ``mlp_user``. Shared: item embeddings, tower, outputs."""

    item_slots = ("gmf_item", "mlp_item")
    query_user = "gmf_user"

    def specs(self) -> list[ParamSpec]:
        return [
            ParamSpec("gmf_user", "user", (self.dim,)),
            ParamSpec("mlp_user", "user", (4 * self.dim,)),
            ParamSpec("gmf_item", "item", (self.dim,)),
            ParamSpec("mlp_item", "item", (4 * self.dim,)),
            *tower_specs("mlp", self.dim),
            ParamSpec("gmf_h", "dense", (self.dim,), init="xavier"),
            ParamSpec("mlp_h", "dense", (self.dim,), init="xavier"),
            ParamSpec("out_b", "dense", (), init="zeros"),
        ]

    def score(
        self, user: dict[str, Tensor], item: dict[str, Tensor], dense: dict[str, Tensor]
    ) -> Tensor:
        g = (user["gmf_user"] * item["gmf_item"] * dense["gmf_h"][:, None, :]).sum(-1)
        z = tower(mlp_input(user["mlp_user"], item["mlp_item"]), dense, "mlp")
        m = (z * dense["mlp_h"][:, None, :]).sum(-1)
        return g + m + dense["out_b"][:, None]


def from_pretrained(
    gmf: dict[str, Tensor], mlp: dict[str, Tensor], alpha: float = 0.5
) -> dict[str, Tensor]:
    """NeuMF parameters (shared and private alike) from trained GMF and MLP parameters."""
    out = {k: v.clone() for k, v in mlp.items() if k not in ("mlp_h", "out_b")}
    out.update({k: v.clone() for k, v in gmf.items() if k in ("gmf_user", "gmf_item")})
    out["gmf_h"] = alpha * gmf["gmf_h"]
    out["mlp_h"] = (1 - alpha) * mlp["mlp_h"]
    out["out_b"] = alpha * gmf["out_b"] + (1 - alpha) * mlp["out_b"]
    return out
