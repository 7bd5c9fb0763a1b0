"""Genre tower: the multi-hot genres of an item, normalised to sum 1, projected."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from fedrec.models.base import ParamSpec
from fedrec.towers.base import Tower, feature_projection, project
from fedrec.towers.registry import register_tower


@register_tower("genre")
class GenreTower(Tower):
    """``tanh(W g_i / |g_i| + b)`` over the multi-hot genres ``g_i`` (zero without genres)."""

    needs = ("genres",)

    def frozen(self) -> dict[str, np.ndarray]:
        g = np.asarray(self.features.get("genres"), dtype=np.float32)
        return {"genre_vec": g / np.maximum(g.sum(1, keepdims=True), 1.0)}

    def specs(self) -> list[ParamSpec]:
        return feature_projection("genre", self.features.get("genres").shape[1], self.dim)

    def encode(self, query: Tensor | None, item: dict[str, Tensor],
               dense: dict[str, Tensor]) -> Tensor:
        return project(item["genre_vec"], dense, "genre")
