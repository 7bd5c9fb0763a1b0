"""The one local step loop of the cohort trainers, with DP as a pluggable step policy.

Plain cohort training (:mod:`fedrec.train.cohort`) and per-user DP-SGD
(:mod:`fedrec.train.dpsgd`) run the same loop: for every local epoch and step, a batch of
*gradient owners* -- a user's next mini-batch, or the privacy units Poisson-sampled for this
step -- then the gradient of every owner's loss with respect to its own copy of every parameter
it reads (:func:`owner_grads`: one gather through :mod:`fedrec.train.layout`, one
``model.score`` per item slot, one backward), then an update. What differs lives in a
:class:`StepPolicy`, split the way opacus' ``DPOptimizer`` splits DP (clip and accumulate, add
noise, scale, step):

- the plain policy: owners are users; it hands their gradients to the per-user optimiser
  (SGD, Adam, lazy Adam; FedProx terms);
- the DP-SGD policy: owners are units; before the step it brings the rows the units read up
  to date with lazy noise, then clips each unit's gradient (all parameters jointly), sums per
  user, adds Gaussian noise, scales by the expected batch size and takes the SGD step.

A model or tower written once therefore trains in every mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from fedrec.models.base import Recommender
from fedrec.train.layout import ItemIndex, LocalRows
from fedrec.train.losses import example_loss


@dataclass
class LocalParams:
    """Each user's local copy of the parameters it trains: private rows ``P`` (``(n, ...)``),
    the shared rows it reaches ``T`` (stacked per table, :class:`LocalRows` order; ``T0`` at
    the start), and its own copy of the dense parameters ``D`` (``(n, ...)``; ``D0`` global)."""

    index: ItemIndex
    loc: LocalRows
    P: dict[str, Tensor]
    T0: dict[str, Tensor]
    T: dict[str, Tensor]
    D0: dict[str, Tensor]
    D: dict[str, Tensor]

    @classmethod
    def start(cls, model: Recommender, index: ItemIndex, loc: LocalRows,
              shared: dict[str, Tensor], state: dict[str, Tensor],
              device: torch.device) -> LocalParams:
        """Copies for ``loc.n_owners`` users from the global ``shared`` and their ``state``."""
        n = loc.n_owners
        P = {s.name: state[s.name].to(device=device, dtype=torch.float32).clone()
             for s in model.specs_of("user")}
        T0 = {s.name: shared[s.name][loc.tables[s.table].row] for s in model.specs_of("item")}
        D0 = {s.name: shared[s.name] for s in model.specs_of("dense")}
        D = {k: t.unsqueeze(0).expand(n, *t.shape).clone() for k, t in D0.items()}
        return cls(index, loc, P, T0, {k: t.clone() for k, t in T0.items()}, D0, D)


@dataclass
class OwnerBatch:
    """One step's gradient owners.

    Attributes
    ----------
    epoch, step : int
    n_active : int
        Users ``[0, n_active)`` take part in this step.
    owner : Tensor
        ``(A,)`` local user of each owner.
    pairs : Tensor
        ``(A, b, k)`` local ``(user, item)`` pair of each example slot.
    items : Tensor or None
        ``(A, b, k)`` global items (frozen inputs; ``None`` when the model has none).
    labels : Tensor or None
        ``(A, b)``.
    mask : Tensor or None
        ``(A, b)``: real examples (``None``: all are).
    """

    epoch: int
    step: int
    n_active: int
    owner: Tensor
    pairs: Tensor
    items: Tensor | None
    labels: Tensor | None
    mask: Tensor | None = None


@dataclass
class OwnerGrads:
    """Gradients of each owner's loss w.r.t. its copies: ``user`` / ``dense`` ``(A, ...)``,
    ``item`` at the gathered rows ``(A, b, k[, m], ...)``; ``rows`` the local rows per table,
    ``per_ex`` the detached per-example losses ``(A, b)``."""

    user: dict[str, Tensor]
    item: dict[str, Tensor]
    dense: dict[str, Tensor]
    rows: dict[str, Tensor]
    per_ex: Tensor


def owner_grads(model: Recommender, lp: LocalParams, batch: OwnerBatch, loss: str, wd: float,
                mean_per_owner: bool) -> OwnerGrads:
    """Every owner's gradient w.r.t. its own copy of every parameter its examples read.

    The loss of an owner is the sum (``mean_per_owner``: the mean over its real examples, plus
    ``wd * ||user rows||^2``) of its examples' losses, each with ``wd * ||rows it reads||^2``.
    """
    index, own = lp.index, batch.owner
    rows = lp.loc.rows(batch.pairs)
    u_leaf = {n: t[own].clone().requires_grad_() for n, t in lp.P.items()}
    i_leaf = {n: t[rows[index.table_of[n]]].requires_grad_() for n, t in lp.T.items()}
    d_leaf = {n: t[own].clone().requires_grad_() for n, t in lp.D.items()}
    item_in = index.inputs(lambda n, _: i_leaf[n], rows, batch.items)
    user = {n: u.unsqueeze(1) for n, u in u_leaf.items()}
    scores = [model.score(user, index.slot(item_in, c), d_leaf)
              for c in range(batch.pairs.shape[2])]
    per_ex = example_loss(loss, scores, batch.labels)
    n_own, b = per_ex.shape
    if wd:
        per_ex = per_ex + wd * sum(x.pow(2).reshape(n_own, b, -1).sum(-1)
                                   for x in i_leaf.values())
    if mean_per_owner:
        maskf = batch.mask.to(per_ex.dtype)
        total = ((per_ex * maskf).sum(1) / maskf.sum(1)).sum()
        if wd:
            total = total + wd * sum(u.pow(2).reshape(n_own, -1).sum() for u in u_leaf.values())
    else:
        total = per_ex.sum()
    total.backward()
    return OwnerGrads({n: x.grad for n, x in u_leaf.items()},
                      {n: x.grad for n, x in i_leaf.items()},
                      {n: x.grad for n, x in d_leaf.items()}, rows, per_ex.detach())


class StepPolicy:
    """What a trainer plugs into :func:`run_steps`: its batches and its update."""

    #: Loss of an owner: the mean over its examples (users) or their sum (DP units).
    mean_per_owner = True

    def batches(self) -> Iterator[OwnerBatch]:
        raise NotImplementedError

    def before(self, batch: OwnerBatch) -> None:
        """Called before the gradients of a step (DP-SGD: lazy noise on the rows read)."""

    def parts(self, batch: OwnerBatch) -> Iterator[OwnerBatch]:
        """Owners whose gradients are computed together (default: all)."""
        yield batch

    def accumulate(self, part: OwnerBatch, grads: OwnerGrads) -> None:
        raise NotImplementedError

    def step(self, batch: OwnerBatch) -> None:
        raise NotImplementedError


def run_steps(model: Recommender, lp: LocalParams, policy: StepPolicy, loss: str,
              wd: float) -> None:
    """The local step loop: batches, gradients per owner, the policy's update."""
    for batch in policy.batches():
        policy.before(batch)
        for part in policy.parts(batch):
            policy.accumulate(part, owner_grads(model, lp, part, loss, wd,
                                                policy.mean_per_owner))
        policy.step(batch)
