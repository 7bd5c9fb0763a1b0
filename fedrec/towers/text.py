"""Text tower: frozen text vectors of the items (e.g. all-MiniLM-L6-v2 of the titles), projected.

The frozen vectors are first reduced to their top ``text-components`` principal components
(computed once from the public item vectors: data preparation, not training), so that every
user's copy of the projection is ``components x dim`` rather than ``384 x dim``: in a cohort
each user trains its own copy of the dense tower weights, and the raw width made the text
projection the largest cost of a round.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from fedrec.models.base import ParamSpec
from fedrec.towers.base import Tower, feature_projection, project
from fedrec.towers.registry import register_tower


def principal_components(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` (rows without a vector, all zero, stay zero) projected on its top ``k`` principal
    components, scaled so the first component has unit variance. ``k <= 0`` or ``k >= width``:
    ``x`` unchanged."""
    x = np.asarray(x, dtype=np.float64)
    if k <= 0 or k >= x.shape[1]:
        return x.astype(np.float32)
    has = np.abs(x).sum(1) > 0
    mean = x[has].mean(0)
    _, s, vt = np.linalg.svd(x[has] - mean, full_matrices=False)
    out = np.zeros((len(x), k))
    out[has] = (x[has] - mean) @ vt[:k].T / (s[0] / np.sqrt(max(has.sum() - 1, 1)))
    return out.astype(np.float32)


@register_tower("text")
class TextTower(Tower):
    """``tanh(W t_i + b)`` over the reduced frozen text vector ``t_i`` (zero without one)."""

    needs = ("text",)

    def __init__(self, features, n_items: int, dim: int, query_dim: int = 0, seed: int = 0,
                 text_components: int = 64, **options: int) -> None:
        super().__init__(features, n_items, dim, query_dim, seed)
        self._vec = principal_components(features.get("text"), text_components)

    def frozen(self) -> dict[str, np.ndarray]:
        return {"text_vec": self._vec}

    def specs(self) -> list[ParamSpec]:
        return feature_projection("text", self._vec.shape[1], self.dim)

    def encode(self, query: Tensor | None, item: dict[str, Tensor],
               dense: dict[str, Tensor]) -> Tensor:
        return project(item["text_vec"], dense, "text")
