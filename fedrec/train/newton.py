"""Per-item-row Newton statistics of a cohort (setting ``item-step = newton``, MF).

With the users' rows fixed at their values after the local epochs, the loss of one item row
over a cohort's examples is an L2-regularised logistic regression in that row. A node replies,
per row, its gradient in the units of a local SGD step (``-lr / batch-size * g``: the
full-batch sum of its users' updates of the row) and its Gauss-Newton curvature in the same
units; the server adds both over nodes and takes one Newton step per row (damped by
``server-lr``). A round is then an alternation, as in ALS: every user takes a local epoch
against the current items, every item a Newton step against the new users. Sums only: the
users' rows never leave the node, and the server sees per-row sums over each node's users.

Row layout: ``[item_emb, item_bias]`` (``dim + 1`` coordinates), the order of the model's
item-table row specs; the logit's gradient in it is ``[p_u, 1]`` for every item.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fedrec.config import TrainConfig
from fedrec.models.base import ITEM_TABLE, Recommender
from fedrec.train.examples import CohortExamples

ROW_PARAMS = ("item_emb", "item_bias")


def row_params(model: Recommender) -> tuple[str, ...]:
    """The item-table parameters in row-layout order; only MF's layout is supported."""
    names = tuple(s.name for s in model.row_specs(ITEM_TABLE))
    if names != ROW_PARAMS or model.name != "mf":
        raise ValueError(f"setting 'item-step' = 'newton' needs model 'mf' (item rows "
                         f"{ROW_PARAMS}); model '{model.name}' has item rows {names}")
    return names


def newton_stats(model: Recommender, user: dict[str, Tensor], ex: CohortExamples,
                 shared: dict[str, Tensor], tc: TrainConfig) -> tuple[dict[str, Tensor], Tensor]:
    """Per item row of the cohort's examples (every local epoch): ``(step, curvature)``.

    Parameters
    ----------
    user : dict of str to Tensor
        ``user_emb`` ``(n, dim)`` and ``user_bias`` ``(n,)`` after training, in ``ex.users``
        order.
    shared : dict of str to Tensor
        The global item rows and bias the round started from.

    Returns
    -------
    step : dict of str to Tensor
        ``-lr / batch-size * gradient`` of the rows' loss (each example's BCE plus
        ``weight-decay * ||row||^2`` per example, as in local training): ``item_emb``
        ``(n_items, dim)``, ``item_bias`` ``(n_items,)``, float64.
    curvature : Tensor
        ``lr / batch-size *`` Gauss-Newton matrix ``sum_e s_e [p_u, 1][p_u, 1]^T +
        2 * weight-decay * count * I`` of each row, packed: its upper triangle in row-major
        order, ``(n_items, (dim + 1) * (dim + 2) / 2)`` float64 (see :func:`unpack`).
    """
    row_params(model)
    dev = shared["item_emb"].device
    q = shared["item_emb"].double()
    qb = shared["item_bias"].double()
    b = shared["bias"].double()
    pu = user["user_emb"].to(dev).double()
    bu = user["user_bias"].to(dev).double()
    n_users = pu.shape[0]
    n_items = q.shape[0]
    # every (item, user) logit at once (a small GEMM), then per-example sums per (item, user)
    logits = (q @ pu.T + qb[:, None] + bu[None, :] + b).view(-1)
    count = torch.zeros(n_items, dtype=torch.float64, device=dev)
    r_sum = torch.zeros(n_items * n_users, dtype=torch.float64, device=dev)  # sum of p - y
    s_sum = torch.zeros(n_items * n_users, dtype=torch.float64, device=dev)  # sum of p(1-p)
    owner_all = torch.from_numpy(np.repeat(np.arange(n_users, dtype=np.int64), ex.n_ex)).to(dev)
    for items_np, labels_np in zip(ex.items, ex.labels, strict=True):
        it = torch.from_numpy(np.ascontiguousarray(items_np[:, 0])).to(dev)
        key = it * n_users + owner_all
        p = torch.sigmoid(logits[key])
        r_sum.index_add_(0, key, p - torch.from_numpy(labels_np).to(dev).double())
        s_sum.index_add_(0, key, p * (1 - p))
        count.index_add_(0, it, torch.ones_like(p))
    wd2 = 2.0 * tc.weight_decay
    grad_q = r_sum.view(n_items, n_users) @ pu + wd2 * count[:, None] * q
    grad_b = r_sum.view(n_items, n_users).sum(1) + wd2 * count * qb
    # sum_u c_iu [p_u, 1][p_u, 1]^T for every item at once: one GEMM over the upper triangle
    # (float32: the solve on the server is float64 and the matrices are well conditioned)
    outer, r, c = packed_outer(with_one(pu))
    packed = (s_sum.view(n_items, n_users).float() @ outer.float()).double()
    packed[:, r == c] += wd2 * count[:, None]
    rate = tc.lr / tc.batch_size
    return {"item_emb": -rate * grad_q, "item_bias": -rate * grad_b}, rate * packed


def with_one(x: Tensor) -> Tensor:
    """``[x, 1]``: rows extended by the constant that multiplies the other side's bias (the
    row layout's last coordinate)."""
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)


def packed_outer(f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each row's outer product ``f f^T`` as its upper triangle in row-major order (``(n, T)``,
    in ``f``'s dtype), with the triangle's row and column indices ``r``, ``c``."""
    r, c = torch.triu_indices(f.shape[1], f.shape[1], device=f.device)
    return f[:, r] * f[:, c], r, c


def _triangle(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each entry of packed ``m x m`` upper triangles ``(n, m(m+1)/2)``."""
    return np.triu_indices(int(round((np.sqrt(8 * packed.shape[1] + 1) - 1) / 2)))


def unpack(packed: np.ndarray) -> np.ndarray:
    """Symmetric ``(n, m, m)`` matrices from their row-major upper triangles ``(n, T)``."""
    r, c = _triangle(packed)
    m = int(r.max()) + 1
    out = np.zeros((packed.shape[0], m, m), dtype=packed.dtype)
    out[:, r, c] = packed
    out[:, c, r] = packed
    return out


def packed_size(m: int) -> int:
    """Entries of an ``m x m`` matrix's upper triangle (the reply's row width)."""
    return m * (m + 1) // 2


def diagonal(packed: np.ndarray) -> np.ndarray:
    """The diagonals ``(n, m)`` of packed upper triangles ``(n, T)``."""
    r, c = _triangle(packed)
    return packed[:, r == c]


def newton_step(step: dict[str, np.ndarray], packed: np.ndarray,
                names: list[str]) -> dict[str, np.ndarray]:
    """The server's per-row Newton step ``curvature^-1 step`` from the summed statistics
    (``packed`` upper triangles; rows no example touched: 0). ``names`` in row-layout order."""
    curvature = unpack(packed)
    n = curvature.shape[0]
    flat = np.concatenate([step[k].reshape(n, -1) for k in names], axis=1)
    out = np.zeros_like(flat)
    touched = np.einsum("nii->n", curvature) > 0
    if touched.any():
        out[touched] = np.linalg.solve(curvature[touched], flat[touched][..., None])[..., 0]
    res, col = {}, 0
    for k in names:
        width = int(np.prod(step[k].shape[1:], dtype=np.int64))
        res[k] = out[:, col:col + width].reshape(step[k].shape)
        col += width
    return res
