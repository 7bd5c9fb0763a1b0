"""Per-example training losses on logits."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def example_loss(kind: str, scores: list[Tensor], labels: Tensor | None) -> Tensor:
    """Loss per example.

    ``bce``: binary cross-entropy of ``scores[0]`` against ``labels``; ``bpr``:
    ``-log sigmoid(s_pos - s_neg)`` with ``scores = [s_pos, s_neg]``; ``mse``: squared error of
    ``scores[0]`` against the rating in ``labels`` (explicit feedback).
    """
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(scores[0], labels, reduction="none")
    if kind == "bpr":
        return -F.logsigmoid(scores[0] - scores[1])
    if kind == "mse":
        return (scores[0] - labels) ** 2
    raise ValueError(f"unknown loss '{kind}' (known: bce, bpr, mse)")
