"""Year tower: the release year of an item as a one-hot period, projected."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from fedrec.models.base import ParamSpec
from fedrec.towers.base import Tower, feature_projection, project
from fedrec.towers.registry import register_tower

#: Width of a period in years; the last column is "unknown".
PERIOD = 5


def year_one_hot(year: np.ndarray, period: int = PERIOD) -> np.ndarray:
    """float32 ``(n_items, n_periods + 1)``: one-hot ``period``-year bins from the earliest
    known year, last column for an unknown (NaN) year."""
    year = np.asarray(year, dtype=np.float64)
    known = np.isfinite(year)
    lo = np.nanmin(year) if known.any() else 0.0
    hi = np.nanmax(year) if known.any() else 0.0
    n_bins = int((hi - lo) // period) + 1
    col = np.where(known, (np.nan_to_num(year, nan=lo) - lo) // period, n_bins).astype(np.int64)
    out = np.zeros((len(year), n_bins + 1), dtype=np.float32)
    out[np.arange(len(year)), col] = 1.0
    return out


@register_tower("year")
class YearTower(Tower):
    """``tanh(W y_i + b)`` over the one-hot release period ``y_i``."""

    needs = ("year",)

    def __init__(self, features, n_items: int, dim: int, query_dim: int = 0, seed: int = 0,
                 **options: int) -> None:
        super().__init__(features, n_items, dim, query_dim, seed)
        self._vec = year_one_hot(features.get("year"))

    def frozen(self) -> dict[str, np.ndarray]:
        return {"year_vec": self._vec}

    def specs(self) -> list[ParamSpec]:
        return feature_projection("year", self._vec.shape[1], self.dim)

    def encode(self, query: Tensor | None, item: dict[str, Tensor],
               dense: dict[str, Tensor]) -> Tensor:
        return project(item["year_vec"], dense, "year")
