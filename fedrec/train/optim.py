"""Per-user optimisers for cohort training.

A cohort's parameters are stacked rows; each row belongs to one user. A user that has
finished its batches must not move, and Adam's bias correction counts each user's own steps.
Users are ordered so that those still training form a prefix, so every update touches a
prefix of rows. With these rules, each user's rows follow exactly what ``torch.optim.SGD`` /
``torch.optim.Adam`` would do on that user's own full copy of the parameters.

``sparse-adam`` is Adam with lazy updates of embedding rows, as ``torch.optim.SparseAdam`` does
on sparse gradients: a row's moments and value change only at steps where the row has a
gradient (duplicates in a batch are summed first). Its cost is proportional to the examples,
not to the rows a user holds; user rows and dense parameters use ordinary Adam.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class CohortOptimizer:
    """SGD or Adam over row-stacked per-user parameters.

    Parameters
    ----------
    params : list of (Tensor, Tensor | None)
        Each tensor's rows with the local user index of each row (``None``: row ``i`` is
        user ``i``). Rows must be sorted by user.
    n_users : int
        Cohort size.
    kind : {"sgd", "adam", "sparse-adam"}
    lr : float
    lrs : list of float, optional
        A learning rate per entry of ``params`` (default: ``lr`` for all).
    """

    def __init__(
        self,
        params: list[tuple[Tensor, Tensor | None]],
        n_users: int,
        kind: str,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        lrs: list[float] | None = None,
    ) -> None:
        self.params = params
        self.kind = kind
        self.lrs = list(lrs) if lrs is not None else [lr] * len(params)
        if len(self.lrs) != len(params):
            raise ValueError(f"{len(self.lrs)} learning rates for {len(params)} parameters")
        self.b1, self.b2 = betas
        self.eps = eps
        dev = params[0][0].device
        self.steps = torch.zeros(n_users, dtype=torch.float64, device=dev)
        self.log_b1, self.log_b2 = math.log(self.b1), math.log(self.b2)
        if kind in ("adam", "sparse-adam"):
            self.m = [torch.zeros_like(p) for p, _ in params]
            self.v = [torch.zeros_like(p) for p, _ in params]

    @torch.no_grad()
    def step(self, n_active: int, grads: list[Tensor | tuple[Tensor, Tensor]]) -> None:
        """Apply one step for users ``[0, n_active)``.

        ``grads[j]`` is either a dense gradient for the active prefix of ``params[j]`` or, for
        SGD and sparse Adam, a sparse pair ``(row_index, row_grad)`` (rows may repeat).
        """
        self.steps[:n_active] += 1
        if self.kind == "sgd":
            for (p, _), g, lr in zip(self.params, grads, self.lrs, strict=True):
                if isinstance(g, tuple):
                    p.index_add_(0, g[0], g[1], alpha=-lr)
                else:
                    p[: g.shape[0]].add_(g, alpha=-lr)
            return
        s = self.steps[:n_active]
        # 1 - b**s as -expm1(s log b): torch's scalar**tensor takes a slow per-element path
        bc1 = (-torch.expm1(s * self.log_b1)).to(self.params[0][0].dtype)
        bc2_sqrt = (-torch.expm1(s * self.log_b2)).sqrt().to(self.params[0][0].dtype)
        for j, ((p, row_user), g) in enumerate(zip(self.params, grads, strict=True)):
            if isinstance(g, tuple):
                self._sparse_step(j, p, row_user, g, bc1, bc2_sqrt)
                continue
            n = g.shape[0]
            ru = row_user[:n] if row_user is not None else None
            b1r = bc1[ru] if ru is not None else bc1[:n]
            b2r = bc2_sqrt[ru] if ru is not None else bc2_sqrt[:n]
            shape = (n,) + (1,) * (g.dim() - 1)
            m, v = self.m[j][:n], self.v[j][:n]
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = (v.sqrt() / b2r.view(shape)).add_(self.eps)
            p[:n].addcdiv_(m * (self.lrs[j] / b1r).view(shape), denom, value=-1.0)

    def _sparse_step(
        self, j: int, p: Tensor, row_user: Tensor | None, g: tuple[Tensor, Tensor], bc1: Tensor,
        bc2_sqrt: Tensor,
    ) -> None:
        rows, vals = g
        uniq, inv = torch.unique(rows, return_inverse=True)
        summed = torch.zeros((len(uniq), *vals.shape[1:]), dtype=vals.dtype, device=vals.device)
        summed.index_add_(0, inv, vals)
        owner = row_user[uniq] if row_user is not None else uniq
        shape = (len(uniq),) + (1,) * (summed.dim() - 1)
        m = self.m[j][uniq].mul_(self.b1).add_(summed, alpha=1 - self.b1)
        v = self.v[j][uniq].mul_(self.b2).addcmul_(summed, summed, value=1 - self.b2)
        self.m[j][uniq] = m
        self.v[j][uniq] = v
        # torch.optim.SparseAdam's arithmetic: eps is added before bias correction
        denom = v.sqrt().add_(self.eps)
        step = (self.lrs[j] * bc2_sqrt[owner] / bc1[owner]).view(shape)
        p[uniq] = p[uniq] - step * m / denom
