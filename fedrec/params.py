"""Parameter dicts as they travel: plain ``{name: numpy array}``.

The one conversion point between torch tensors and the arrays that ``clients`` and ``server``
put into Flower records. Shared parameters travel as float64 so that averaging the same
updates in a different order (other cohort sizes, other reply order) changes nothing visible.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from fedrec.models.base import Recommender

WIRE_DTYPE = np.float64


def to_numpy(tensors: Mapping[str, Tensor], dtype: type = WIRE_DTYPE) -> dict[str, np.ndarray]:
    """Tensors -> contiguous numpy arrays of ``dtype``."""
    # np.array(order="C") keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d)
    return {n: np.array(t.detach().cpu().numpy(), dtype=dtype, order="C") for n, t in
            tensors.items()}


def to_torch(arrays: Mapping[str, np.ndarray], dtype: torch.dtype = torch.float32) -> dict[
    str, Tensor
]:
    """Numpy arrays -> torch tensors of ``dtype``."""
    return {n: torch.from_numpy(np.asarray(a)).to(dtype) for n, a in arrays.items()}


def check_shared(arrays: Mapping[str, np.ndarray], model: Recommender, where: str) -> None:
    """Raise ``ValueError`` unless ``arrays`` holds exactly the model's shared parameters.

    Also guards privacy: a private (per-user) parameter name is never accepted.
    """
    expected = set(model.shared_names)
    got = set(arrays)
    leaked = got & set(model.private_names)
    if leaked:
        raise ValueError(f"{where}: private parameters must not travel: {sorted(leaked)}")
    if got != expected:
        raise ValueError(
            f"{where}: expected shared parameters {sorted(expected)}, got {sorted(got)}"
        )
