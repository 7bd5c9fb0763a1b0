"""Matrix factorisation with biases: score = p_u . q_i + b_u + b_i + b."""

from __future__ import annotations

from torch import Tensor

from fedrec.models.base import ParamSpec, Recommender
from fedrec.models.registry import register_model


@register_model("mf")
class MF(Recommender):
    """Matrix factorisation (Koren et al. 2009) on implicit feedback.

    Private: user embedding ``user_emb`` and bias ``user_bias``. Shared: ``item_emb``,
    ``item_bias`` and the global bias ``bias``.
    """

    item_slots = ("item_emb",)
    query_user = "user_emb"

    def specs(self) -> list[ParamSpec]:
        return [
            ParamSpec("user_emb", "user", (self.dim,)),
            ParamSpec("user_bias", "user", (), init="zeros"),
            ParamSpec("item_emb", "item", (self.dim,)),
            ParamSpec("item_bias", "item", (), init="zeros"),
            ParamSpec("bias", "dense", (), init="zeros"),
        ]

    def score(
        self, user: dict[str, Tensor], item: dict[str, Tensor], dense: dict[str, Tensor]
    ) -> Tensor:
        dot = (user["user_emb"] * item["item_emb"]).sum(-1)
        return dot + user["user_bias"] + item["item_bias"] + dense["bias"][:, None]
