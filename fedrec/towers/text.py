"""Text tower: frozen text vectors of the items (e.g. all-MiniLM-L6-v2 of the titles), projected."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from fedrec.models.base import ParamSpec
from fedrec.towers.base import Tower, feature_projection, project
from fedrec.towers.registry import register_tower


@register_tower("text")
class TextTower(Tower):
    """``tanh(W t_i + b)`` over the frozen text vector ``t_i`` (zero for an item without one)."""

    needs = ("text",)

    def frozen(self) -> dict[str, np.ndarray]:
        return {"text_vec": np.asarray(self.features.get("text"), dtype=np.float32)}

    def specs(self) -> list[ParamSpec]:
        return feature_projection("text", self.features.get("text").shape[1], self.dim)

    def encode(self, query: Tensor | None, item: dict[str, Tensor],
               dense: dict[str, Tensor]) -> Tensor:
        return project(item["text_vec"], dense, "text")
