"""Vectorised local training of a cohort of users.

All users of a cohort run their local epochs together in batched tensor operations, each with
the semantics of training alone from the same global shared parameters: its own copy of every
shared row it touches (``item`` params), its own copy of ``dense`` params, its own negatives,
batch order and user embedding, and its own optimiser state. Only rows a user touches are
materialised per user, and users are processed in chunks bounded by
``max-examples-per-chunk``, so memory stays bounded for any cohort size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from fedrec.config import TrainConfig
from fedrec.data.schema import SplitData
from fedrec.models.base import ITEM_TABLE, Recommender
from fedrec.train.examples import (
    CohortExamples,
    build_examples,
    examples_per_positive,
    uses_labels,
)
from fedrec.train.ials import item_stats, observed, solve_users
from fedrec.train.layout import ItemIndex, local_rows
from fedrec.train.newton import newton_stats, row_params
from fedrec.train.optim import CohortOptimizer
from fedrec.train.steps import LocalParams, OwnerBatch, OwnerGrads, StepPolicy, run_steps

log = logging.getLogger(__name__)


@dataclass
class CohortUpdate:
    """What a cohort sends back (before Flower packaging).

    Attributes
    ----------
    sum_update : dict of str to Tensor
        ``sum_u w_u * f_u * delta_u`` per shared parameter, float64, full shape.
    weight_sum : float
        ``sum_u w_u`` (examples weighting: training positives; ``equal``: 1 per user).
    n_users : int
    user_state : dict of str to Tensor
        Private rows after training, aligned with the input ``users``.
    loss_sum : float
        Sum over users of the mean loss of their last epoch.
    sq_norms : numpy.ndarray
        Squared L2 norm of each user's (unclipped) update, aligned with ``users``.
    item_weight : Tensor
        ``(n_items,)`` float64: sum of ``w_u * f_u`` over the users whose local copy holds the
        row (for item-count-weighted averaging of item parameters).
    per_user : dict
        Only with ``keep_per_user``: ``{user: {name: delta Tensor (full shape)}}``.
    local : list of LocalTables
        Only with ``keep_local``: each chunk's per-user parameters after training.
    item_curvature : Tensor or None
        Only with ``item_step = "newton"``: each item row's Gauss-Newton matrix, packed
        (:func:`fedrec.train.newton.newton_stats`; the item rows of ``sum_update`` are then
        gradient steps).
    """

    sum_update: dict[str, Tensor]
    weight_sum: float
    n_users: int
    user_state: dict[str, Tensor]
    loss_sum: float
    sq_norms: np.ndarray
    item_weight: Tensor
    per_user: dict[int, dict[str, Tensor]] = field(default_factory=dict)
    local: list[LocalTables] = field(default_factory=list)
    item_curvature: Tensor | None = None


@dataclass
class LocalTables:
    """Per-user parameters of a chunk after local training (personalised evaluation).

    ``rows_key[table]`` is ``user_pos * table_size + row`` (sorted) of the rows a user holds,
    ``item`` their values (by parameter name); ``dense`` is ``(n_chunk_users, ...)``; ``users``
    gives each position's global id.
    """

    users: np.ndarray
    rows_key: dict[str, Tensor]
    item: dict[str, Tensor]
    dense: dict[str, Tensor]
    user: dict[str, Tensor]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("setting 'device' = 'cuda' but no CUDA device is available")
    return torch.device(name)


def train_cohort(
    model: Recommender,
    shared: dict[str, Tensor],
    user_state: dict[str, Tensor],
    users: np.ndarray,
    split: SplitData,
    tc: TrainConfig,
    seed: int,
    round_: int,
    clip_norm: float | None = None,
    weighting: str = "examples",
    proximal_mu: float = 0.0,
    keep_per_user: bool = False,
    keep_local: bool = False,
    row_clip: float | None = None,
    weight_cap: float | None = None,
    item_step: str = "mean",
) -> CohortUpdate:
    """Train ``users`` locally from ``shared`` and return the cohort's aggregate update.

    Parameters
    ----------
    model : Recommender
    shared : dict of str to Tensor
        Global shared parameters (any float dtype).
    user_state : dict of str to Tensor
        Private rows aligned with ``users``.
    users : numpy.ndarray
        Global ids of the users taking part.
    split : SplitData
    tc : TrainConfig
    seed, round_ : int
        Keys of every random draw.
    clip_norm : float, optional
        Clip each user's update of the shared parameters to this L2 norm.
    weighting : {"examples", "equal"}
    proximal_mu : float
        FedProx coefficient: adds ``mu/2 * ||w - w_global||^2`` over the user's shared rows
        (with ``sparse-adam``, lazily: over the item rows used in each batch, as torch's
        SparseAdam would see a proximal term on the gathered rows; dense parameters always).
    keep_per_user : bool
        Also return each user's update (tests, audits).
    keep_local : bool
        Also return each user's trained parameters (``LocalTables``), e.g. for evaluating
        locally fine-tuned models.
    row_clip : float, optional
        Defense ``row-clip``: clip each user's update of each item row (all item-table
        parameters of that item together) to this L2 norm, before ``clip_norm``.
    weight_cap : float, optional
        Defense ``row-clip``: cap each user's weight at this value (``min(w_u, cap)``, in
        every sum: updates, ``weight_sum``, ``item_weight``). With ``row_clip`` it bounds what
        one user adds to an item row's weighted sum by ``cap * row_clip``, whatever its
        profile size.
    item_step : {"mean", "newton"}
        ``mean``: item rows are summed with the users' weights and ``item_weight`` is the
        weight of the users holding each row (a per-row weighted mean). ``newton`` (MF): the
        item rows' entries of ``sum_update`` are the full-batch gradient step of each row at
        the users' new rows and ``item_curvature`` its Gauss-Newton matrix
        (:func:`fedrec.train.newton.newton_stats`).
    """
    device = resolve_device(tc.device)
    users = np.asarray(users, dtype=np.int64)
    shared_dev = {n: t.to(device=device, dtype=torch.float32) for n, t in shared.items()}
    per_pos = examples_per_positive(tc.loss, tc.num_negatives, split.train_labels is not None)
    counts = np.diff(split.train_indptr)[users] * per_pos * tc.local_epochs
    sum_update = {
        n: torch.zeros(t.shape, dtype=torch.float64, device=device) for n, t in shared_dev.items()
    }
    new_state = {n: t.clone() for n, t in user_state.items()}
    sq_norms = np.zeros(len(users))
    weight_sum, loss_sum = 0.0, 0.0
    per_user: dict[int, dict[str, Tensor]] = {}
    local: list[LocalTables] = []
    item_weight = torch.zeros(split.n_items, dtype=torch.float64, device=device)
    item_curvature: Tensor | None = None
    for lo, hi in _chunks(counts, tc.max_examples_per_chunk):
        chunk_users = users[lo:hi]
        ex = build_examples(
            split, chunk_users, tc.local_epochs, tc.num_negatives, tc.loss, seed, round_
        )
        state = {n: t[lo:hi][torch.from_numpy(ex.order)] for n, t in user_state.items()}
        res = _train_chunk(
            model, shared_dev, state, ex, tc, device, clip_norm, weighting, proximal_mu,
            keep_per_user, keep_local, row_clip, weight_cap, item_step,
        )
        item_weight += res["item_weight"]
        if res["item_curvature"] is not None:
            c = res["item_curvature"]
            item_curvature = c if item_curvature is None else item_curvature + c
        if keep_local:
            local.append(res["local"])
        for n in sum_update:
            sum_update[n] += res["sum"][n]
        weight_sum += res["weight_sum"]
        loss_sum += res["loss_sum"]
        back = lo + ex.order  # positions in the input order
        for n, t in res["state"].items():
            new_state[n][torch.from_numpy(back)] = t.to(new_state[n].dtype).cpu()
        sq_norms[back] = res["sq_norms"]
        per_user.update(res["per_user"])
    return CohortUpdate(
        {n: t.cpu() for n, t in sum_update.items()},
        weight_sum,
        len(users),
        new_state,
        loss_sum,
        sq_norms,
        item_weight.cpu(),
        per_user,
        local,
        None if item_curvature is None else item_curvature.cpu(),
    )


def _chunks(counts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    out, lo, acc = [], 0, 0
    for i, c in enumerate(counts):
        if acc and acc + c > budget:
            out.append((lo, i))
            lo, acc = i, 0
        acc += int(c)
    if len(counts):
        out.append((lo, len(counts)))
    return out


def _train_chunk(
    model: Recommender,
    shared: dict[str, Tensor],
    state: dict[str, Tensor],
    ex: CohortExamples,
    tc: TrainConfig,
    device: torch.device,
    clip_norm: float | None,
    weighting: str,
    proximal_mu: float,
    keep_per_user: bool,
    keep_local: bool,
    row_clip: float | None = None,
    weight_cap: float | None = None,
    item_step: str = "mean",
) -> dict:
    if tc.loss == "ials":
        if keep_per_user or keep_local:
            raise ValueError("setting 'loss' = 'ials' solves rows exactly: there are no "
                             "per-user updates or local tables to keep")
        return _ials_chunk(model, shared, state, ex, tc, device)
    n_users = len(ex.users)
    n_items = model.n_items
    item_names = [s.name for s in model.specs_of("item")]
    dense_names = [s.name for s in model.specs_of("dense")]
    index = ItemIndex(model, device)
    table_of = index.table_of

    # Local rows: every (user, item) pair the user touches in any epoch, and the rows of every
    # table those items reach, each user's copy sorted by user.
    ex_local = np.repeat(np.arange(n_users, dtype=np.int64), ex.n_ex)
    keys = np.concatenate(
        [(ex_local[:, None] * n_items + it).reshape(-1) for it in ex.items]
    )
    loc, inverse = local_rows(index, keys, n_users, device)
    tab = loc.tables
    lp = LocalParams.start(model, index, loc, shared, state, device)
    P, T0, T, D0, D = lp.P, lp.T0, lp.T, lp.D0, lp.D
    policy = _PlainPolicy(lp, ex, inverse, tc, device, proximal_mu)
    run_steps(model, lp, policy, tc.loss, tc.weight_decay)
    ep_loss, n_ex_t = policy.ep_loss, policy.n_ex_t

    # Per-user updates of the shared parameters.
    with torch.no_grad():
        dT = {n: T[n] - T0[n] for n in item_names}
        dD = {n: D[n] - D0[n].unsqueeze(0) for n in dense_names}
        if row_clip is not None:
            _clip_item_rows(dT, [n for n in dT if table_of[n] == ITEM_TABLE], row_clip)
        sq = torch.zeros(n_users, dtype=torch.float64, device=device)
        for n, d in dT.items():  # row norms in one pass (no full-size float64 temporaries)
            sq.index_add_(0, tab[table_of[n]].owner, _row_sq_norms(d))
        for d in dD.values():
            sq += _row_sq_norms(d)
        if weighting == "examples":
            w = torch.from_numpy(ex.n_pos.astype(np.float64)).to(device)
        elif weighting == "equal":
            w = torch.ones(n_users, dtype=torch.float64, device=device)
        else:
            raise ValueError(f"unknown weighting '{weighting}' (known: examples, equal)")
        if weight_cap is not None:
            w = w.clamp(max=weight_cap)
        f = torch.ones_like(sq)
        if clip_norm is not None:
            f = torch.clamp(clip_norm / sq.sqrt().clamp_min(1e-30), max=1.0)
        wf = w * f
        out_sum: dict[str, Tensor] = {}
        curvature = None
        if item_step == "newton":  # item rows: a Newton step's statistics at the new users
            out_sum, curvature = newton_stats(model, P, ex, shared, tc)
        for n, d in dT.items():
            tr = tab[table_of[n]]
            if n in out_sum:
                continue
            scale = wf[tr.owner].view(-1, *([1] * (d.dim() - 1)))
            acc = torch.zeros((index.sizes[table_of[n]], *d.shape[1:]), dtype=torch.float64,
                              device=device)
            out_sum[n] = acc.index_add_(0, tr.row, d.double() * scale)
        for n, d in dD.items():
            out_sum[n] = (d.double() * wf.view(-1, *([1] * (d.dim() - 1)))).sum(0)
        pairs = tab[ITEM_TABLE]
        item_weight = torch.zeros(n_items, dtype=torch.float64, device=device)
        item_weight.index_add_(0, pairs.row, wf[pairs.owner])
        per_user: dict[int, dict[str, Tensor]] = {}
        if keep_per_user:
            for j, u in enumerate(ex.users):
                upd = {}
                for n, d in dT.items():
                    tr = tab[table_of[n]]
                    lo, hi = (int(tr.end[j - 1]) if j else 0), int(tr.end[j])
                    full = torch.zeros((index.sizes[table_of[n]], *d.shape[1:]),
                                       dtype=torch.float64)
                    full[tr.row[lo:hi].cpu()] = d[lo:hi].double().cpu()
                    upd[n] = full
                for n, d in dD.items():
                    upd[n] = d[j].double().cpu()
                per_user[int(u)] = upd
    return {
        "sum": out_sum,
        "weight_sum": float(w.sum()),
        "loss_sum": float((ep_loss / n_ex_t.double().clamp_min(1.0)).sum()),
        "state": {n: t.detach() for n, t in P.items()},
        "sq_norms": sq.cpu().numpy(),
        "per_user": per_user,
        "item_weight": item_weight,
        "item_curvature": curvature,
        "local": LocalTables(
            ex.users, {t: tr.key(index.sizes[t]).cpu() for t, tr in tab.items()},
            {n: t.cpu() for n, t in T.items()}, {n: t.cpu() for n, t in D.items()},
            {n: t.detach().cpu() for n, t in P.items()},
        ) if keep_local else None,
    }


def _ials_chunk(model: Recommender, shared: dict[str, Tensor], state: dict[str, Tensor],
                ex: CohortExamples, tc: TrainConfig, device: torch.device) -> dict:
    """``loss = "ials"``: each user's exact row, then the items' Newton statistics at the new
    rows (:mod:`fedrec.train.ials`), in :func:`_train_chunk`'s result layout. Both statistics
    are divided by the federation's user count: summed over nodes they are the per-user mean
    gradient and Hessian (the Newton step does not change), and a reply's step is bounded like
    an average of per-user updates (``max-update-norm``, :mod:`server.replies`)."""
    row_params(model)
    y = observed(ex, model.n_items, device)
    rows, loss = solve_users(y, shared, tc.unobserved_weight, tc.weight_decay)
    step, curvature = item_stats(y, rows, shared, tc.unobserved_weight, tc.weight_decay)
    per_user = 1.0 / model.n_users  # the reply: this cohort's share of the per-user mean
    step = {n: t * per_user for n, t in step.items()}
    sq = sum(((rows[n] - state[n].to(device).double().view_as(rows[n])) ** 2)
              .reshape(len(ex.users), -1).sum(1) for n in rows)
    dense = {s.name: torch.zeros(shared[s.name].shape, dtype=torch.float64, device=device)
             for s in model.specs_of("dense")}
    return {
        "sum": {**step, **dense},
        "weight_sum": float(ex.n_pos.sum()),
        "loss_sum": float(loss.sum()),
        "state": {n: t.to(state[n].dtype).view_as(state[n]) for n, t in rows.items()},
        "sq_norms": sq.cpu().numpy(),
        "per_user": {},
        "item_weight": y.sum(0),
        "item_curvature": curvature * per_user,
        "local": None,
    }


class _PlainPolicy(StepPolicy):
    """Owners are users: each active user's next mini-batch; its gradients go to the
    per-user optimiser (with FedProx terms)."""

    def __init__(self, lp: LocalParams, ex: CohortExamples, inverse: Tensor, tc: TrainConfig,
                 device: torch.device, proximal_mu: float) -> None:
        self.lp, self.ex, self.tc, self.mu = lp, ex, tc, proximal_mu
        n_users = len(ex.users)
        n_e, k = int(ex.n_ex.sum()), ex.items[0].shape[1]
        self.pairs = [inverse[e * n_e * k : (e + 1) * n_e * k].view(n_e, k)
                      for e in range(len(ex.items))]
        self.items = [torch.from_numpy(it).to(device) for it in ex.items] \
            if lp.index.frozen else None
        self.labels = [torch.from_numpy(lab).to(device) for lab in ex.labels] \
            if uses_labels(tc.loss) else None
        self.n_ex_t = torch.from_numpy(ex.n_ex).to(device)
        self.start_t = torch.from_numpy(ex.start).to(device)
        self.ar = torch.arange(tc.batch_size, device=device)
        self.owners = torch.arange(n_users, device=device)
        self.ep_loss = torch.zeros(n_users, dtype=torch.float64, device=device)
        user_names = list(lp.P)
        params: list[tuple[Tensor, Tensor | None]] = (
            [(lp.P[n], None) for n in user_names]
            + [(lp.T[n], lp.loc.tables[lp.index.table_of[n]].owner) for n in lp.T]
            + [(lp.D[n], None) for n in lp.D]
        )
        lrs = ([tc.users_lr] * len(user_names) + [tc.lr] * len(lp.T)
               + [tc.dense_rate] * len(lp.D))
        self.opt = CohortOptimizer(params, n_users, tc.optimizer, tc.lr, lrs=lrs)
        self.grads: list[Tensor | tuple[Tensor, Tensor]] = []

    def batches(self) -> Iterator[OwnerBatch]:
        ex, B = self.ex, self.tc.batch_size
        n_steps = int(-(-int(ex.n_ex.max()) // B)) if len(ex.users) else 0
        neg_n_ex = -ex.n_ex  # users still training at step t: a prefix (n_ex non-increasing)
        for e in range(len(ex.items)):
            self.ep_loss.zero_()
            for t in range(n_steps):
                a = int(np.searchsorted(neg_n_ex, -t * B, side="left"))
                pos = self.start_t[:a, None] + t * B + self.ar
                mask = pos < (self.start_t[:a] + self.n_ex_t[:a])[:, None]
                pos = torch.where(mask, pos, self.start_t[:a, None])
                yield OwnerBatch(e, t, a, self.owners[:a], self.pairs[e][pos],
                                 self.items[e][pos] if self.items is not None else None,
                                 self.labels[e][pos] if self.labels is not None else None, mask)

    def accumulate(self, part: OwnerBatch, grads: OwnerGrads) -> None:
        lp, mu, a, mask = self.lp, self.mu, part.n_active, part.mask
        self.ep_loss[:a] += (grads.per_ex * mask.to(grads.per_ex.dtype)).sum(1).double()
        out: list[Tensor | tuple[Tensor, Tensor]] = [grads.user[n] for n in lp.P]
        sparse = self.tc.optimizer == "sparse-adam" or (self.tc.optimizer == "sgd" and not mu)
        for n, T in lp.T.items():
            table = lp.index.table_of[n]
            r = grads.rows[table]
            flat_r = r.reshape(-1)
            real = mask.view(*mask.shape, *[1] * (r.dim() - 2)).expand_as(r).reshape(-1)
            g = grads.item[n].reshape(flat_r.shape[0], *T.shape[1:])
            if sparse:
                idx, vals = flat_r[real], g[real]
                if mu:  # lazy FedProx: mu (w - w_global) once per row used now
                    used = torch.unique(idx)
                    idx = torch.cat([idx, used])
                    vals = torch.cat([vals, mu * (T[used] - lp.T0[n][used])])
                out.append((idx, vals))
            else:
                n_rows = lp.loc.n_rows(table, a)
                dense_g = torch.zeros((n_rows, *T.shape[1:]), device=T.device)
                dense_g.index_add_(0, flat_r, g)
                if mu:  # gradient of mu/2 ||w - w_global||^2 on every own row
                    dense_g.add_(T[:n_rows] - lp.T0[n][:n_rows], alpha=mu)
                out.append(dense_g)
        for n, D in lp.D.items():
            g = grads.dense[n]
            if mu:
                g = g + mu * (D[:a] - lp.D0[n].unsqueeze(0))
            out.append(g)
        self.grads = out

    def step(self, batch: OwnerBatch) -> None:
        self.opt.step(batch.n_active, self.grads)


def _clip_item_rows(dT: dict[str, Tensor], names: list[str], bound: float) -> None:
    """Scale each (user, item) pair's update of the item rows ``names`` (together) down to
    L2 norm ``bound`` (in place)."""
    if not names:
        return
    sq = sum(_row_sq_norms(dT[n]) for n in names)
    f = torch.clamp(bound / sq.sqrt().clamp_min(1e-30), max=1.0)
    for n in names:
        dT[n] = dT[n] * f.to(dT[n].dtype).view(-1, *([1] * (dT[n].dim() - 1)))


def _row_sq_norms(d: Tensor) -> Tensor:
    """Squared L2 norm of each row of ``d`` (float64)."""
    return torch.linalg.vector_norm(d.reshape(d.shape[0], -1), dim=1).double().pow(2)
