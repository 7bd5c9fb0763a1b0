"""PFedRec (Zhang et al., IJCAI 2023, "Dual Personalization on Federated Recommendation").

Each user keeps a personalised score function, here PFedRec's single linear layer over the item
embedding: ``score = w_u . q_i + b_u`` (private: ``head_w``, ``head_b``; no user embedding
beyond the head). Item embeddings are shared and aggregated; the second personalisation, the
user's locally fine-tuned item embeddings, is evaluation-time fine-tuning
(``finetune-epochs``, see ``simulations/configs/ml1m_ncf_pfedrec.toml``). With a linear head
the score has the form of MF without item bias; what differs is the personalisation protocol.
"""

from __future__ import annotations

from torch import Tensor

from fedrec.models.base import ParamSpec, Recommender
from fedrec.models.registry import register_model


@register_model("pfedrec")
class PFedRec(Recommender):
    """Private linear score head per user over shared item embeddings."""

    item_slots = ("item_emb",)
    query_user = "head_w"

    def specs(self) -> list[ParamSpec]:
        return [
            ParamSpec("head_w", "user", (self.dim,)),
            ParamSpec("head_b", "user", (), init="zeros"),
            ParamSpec("item_emb", "item", (self.dim,)),
        ]

    def score(
        self, user: dict[str, Tensor], item: dict[str, Tensor], dense: dict[str, Tensor]
    ) -> Tensor:
        return (user["head_w"] * item["item_emb"]).sum(-1) + user["head_b"]
