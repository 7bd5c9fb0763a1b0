"""Implicit ALS (``loss = "ials"``, MF): every round an exact solve for every user and item row.

The loss of Hu, Koren and Volinsky (2008) with frequency-scaled L2 as tuned by Rendle,
Krichene, Zhang and Koren, "Revisiting the Performance of iALS on Item Recommendation
Benchmarks" (RecSys 2022): for scores ``s_ui = p_u . q_i + b_u + b_i + b``,

    L = 1/2 sum_{(u,i) observed} (s_ui - 1)^2 + alpha0/2 sum_u sum_{i all items} s_ui^2
        + weight-decay * sum_u (|I_u| + alpha0 |I|) ||[p_u, b_u]||^2
        + weight-decay * sum_i (|U_i| + alpha0 |U|) ||[q_i, b_i]||^2

(``alpha0`` = ``unobserved-weight``; every item counts as unobserved, a user's held-out items
too, so nothing is learnt from them). With the items fixed, each user's loss is quadratic in its
row: a node solves it exactly (:func:`solve_users`), and the rows never leave it. With the users
fixed, each item's loss is quadratic in its row and a sum over users: a node replies, per item,
its users' share of the gradient and of the (exact) Hessian (:func:`item_stats`), the server
adds them over nodes and takes one Newton step per row (``item-step = newton``, server-lr 1),
which lands on the exact minimiser. A round is one ALS sweep, users then items, whatever the
partition of the users into nodes: federated iALS computes central iALS.

Row layouts as :mod:`fedrec.train.newton`: ``[item_emb, item_bias]`` and ``[user_emb,
user_bias]``, each ``dim + 1`` coordinates; ``bias`` (global) stays at its initial value.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fedrec.train.examples import CohortExamples
from fedrec.train.newton import packed_outer, with_one

SOLVE_BLOCK = 512  # users per batched solve (bounds the (n, m, m) float64 temporaries)


def observed(ex: CohortExamples, n_items: int, device: torch.device) -> Tensor:
    """``(n_users, n_items)`` 0/1 float64 matrix of each user's observed items (``ex.users``
    order; the examples of ``loss = "ials"``: one per training positive)."""
    owner = torch.from_numpy(np.repeat(np.arange(len(ex.users), dtype=np.int64), ex.n_ex))
    items = torch.from_numpy(np.ascontiguousarray(ex.items[0][:, 0]))
    y = torch.zeros(len(ex.users), n_items, dtype=torch.float64)
    y[owner, items] = 1.0
    return y.to(device)


def _solve(packed: Tensor, r: Tensor, c: Tensor, extra: Tensor, ridge: Tensor,
           rhs: Tensor) -> Tensor:
    """Solve ``(unpack(packed) + extra + ridge I) x = rhs`` row by row, in blocks."""
    m = extra.shape[0]
    out = torch.empty_like(rhs)
    eye = torch.eye(m, dtype=torch.float64, device=rhs.device)
    for lo in range(0, rhs.shape[0], SOLVE_BLOCK):
        hi = min(lo + SOLVE_BLOCK, rhs.shape[0])
        a = torch.zeros(hi - lo, m, m, dtype=torch.float64, device=rhs.device)
        a[:, r, c] = packed[lo:hi]
        a[:, c, r] = packed[lo:hi]
        a += extra + ridge[lo:hi, None, None] * eye
        out[lo:hi] = torch.linalg.solve(a, rhs[lo:hi])
    return out


def solve_users(y: Tensor, shared: dict[str, Tensor], alpha0: float,
                weight_decay: float) -> tuple[dict[str, Tensor], Tensor]:
    """Each user's exact minimiser of ``L`` at the items ``shared``: ``({"user_emb",
    "user_bias"}, per-user loss)`` in ``y``'s row order, float64.

    The per-user loss is ``L``'s two data terms at the new row over the user's observed count
    (a mean per observed example, reported as the round's training loss)."""
    q = shared["item_emb"].double()
    o = shared["item_bias"].double() + shared["bias"].double()  # item offsets
    f = with_one(q)  # (n_items, m)
    n_items = f.shape[0]
    outer, r, c = packed_outer(f.float())
    packed = (y.float() @ outer).double()  # sum over observed items of f f^T, upper triangle
    gram = f.T @ f  # sum over all items
    counts = y.sum(1)
    rhs = y @ ((1.0 - o)[:, None] * f) - alpha0 * (o @ f)[None, :]
    ridge = 2.0 * weight_decay * (counts + alpha0 * n_items)
    x = _solve(packed, r, c, alpha0 * gram, ridge, rhs)
    s = x @ f.T + o[None, :]  # (n_users, n_items) scores
    data = 0.5 * (y * (s - 1.0) ** 2).sum(1) + 0.5 * alpha0 * (s**2).sum(1)
    return {"user_emb": x[:, :-1], "user_bias": x[:, -1]}, data / counts.clamp_min(1.0)


def item_stats(y: Tensor, user: dict[str, Tensor], shared: dict[str, Tensor], alpha0: float,
               weight_decay: float) -> tuple[dict[str, Tensor], Tensor]:
    """The cohort's share of each item row's Newton step: ``(step, curvature)`` as
    :func:`fedrec.train.newton.newton_stats` returns them (``-gradient`` of ``L``'s item terms
    over these users at the round's item rows, and the exact Hessian, packed), float64."""
    q = shared["item_emb"].double()
    qb = shared["item_bias"].double()
    g = with_one(user["user_emb"].double())  # (n_users, m)
    e = user["user_bias"].double() + shared["bias"].double()
    n_users = g.shape[0]
    s = q @ g[:, :-1].T + qb[:, None] + e[None, :]  # (n_items, n_users)
    yt = y.T
    counts = yt.sum(1)
    resid = yt * (s - 1.0) + alpha0 * s
    ridge = 2.0 * weight_decay * (counts + alpha0 * n_users)
    grad = resid @ g + ridge[:, None] * torch.cat([q, qb[:, None]], 1)
    outer, r, c = packed_outer(g.float())
    packed = (yt.float() @ outer).double() + alpha0 * outer.double().sum(0)[None, :]
    packed[:, r == c] += ridge[:, None]
    return {"item_emb": -grad[:, :-1], "item_bias": -grad[:, -1]}, packed
