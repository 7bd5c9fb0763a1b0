"""Generalized Matrix Factorization (He et al., WWW 2017): score = h . (p_u * q_i) + b."""

from __future__ import annotations

from torch import Tensor

from fedrec.models.base import ParamSpec, Recommender
from fedrec.models.registry import register_model


@register_model("gmf")
class GMF(Recommender):
    """GMF. Private: ``gmf_user``. Shared: ``gmf_item``, output weights ``gmf_h`` and ``out_b``."""

    item_slots = ("gmf_item",)
    query_user = "gmf_user"

    def specs(self) -> list[ParamSpec]:
        return [
            ParamSpec("gmf_user", "user", (self.dim,)),
            ParamSpec("gmf_item", "item", (self.dim,)),
            ParamSpec("gmf_h", "dense", (self.dim,), init="ones"),
            ParamSpec("out_b", "dense", (), init="zeros"),
        ]

    def score(
        self, user: dict[str, Tensor], item: dict[str, Tensor], dense: dict[str, Tensor]
    ) -> Tensor:
        z = user["gmf_user"] * item["gmf_item"]  # (A, B, d)
        return (z * dense["gmf_h"][:, None, :]).sum(-1) + dense["out_b"][:, None]
