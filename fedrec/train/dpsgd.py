"""Per-user DP-SGD (``privacy = "sample"``), vectorised over a cohort of users.

Every user runs, on its own data, exactly what opacus would run for it alone: its model is its
private rows plus its own copy of **all** shared parameters; each step Poisson-samples its
privacy units (one interaction with its sampled negatives, see
:mod:`fedrec.privacy.sample_level`) with rate ``q_u = min(1, batch-size / n_u)``, computes the
gradient of every unit, clips it (all parameters jointly) to ``C``, sums, adds ``N(0, sigma^2 C^2)``
to **every coordinate of every parameter** (user rows, every item row, including the rows the
user never touched, and dense parameters), divides by the expected batch size ``q_u * n_u``
(examples) and takes an SGD step. A local epoch is ``round(1 / q_u)`` steps.

Layout (mirrors :mod:`fedrec.train.cohort`): users of a chunk train together, ordered by
decreasing number of steps so that the users still stepping are a prefix. The units sampled in
a step are laid out as pseudo-users: unit ``i`` gets its own copy of its owner's user rows and
dense parameters (``(A', ...)``) and its gathered item rows (``(A', m, k, ...)``), so one
``model.score`` call and one backward give every unit's gradient of every parameter
(per-example gradients of embeddings are just the gradients of the gathered rows: nothing of
size batch x vocabulary is built). The squared norm of a unit's item gradient sums, per distinct
row, the slot gradients of that row (a Gram matrix over the unit's ``m * k`` slots, masked to
equal rows).

Noise is kept sparse by two exact identities of SGD, which is linear in the noise:

* **lazy noise**: a row's noise only matters when the row is read or at the end, so a row used
  at step ``tau`` first receives the noise of the steps since it was last brought up to date in
  one draw, ``N(0, (tau - 1 - last) * s_u^2)`` per coordinate, with ``s_u = lr * sigma * C /
  (q_u n_u)``; the sum of independent Gaussians is one Gaussian with the summed variance, and
  the intermediate values are never observed;
* **end-of-round noise**: after the user's ``T_u`` steps every item row receives, in one draw,
  the noise of the steps since it was last brought up to date: ``N(0, T_u s_u^2)`` for a row
  the user never used (it moved by noise only), ``N(0, (T_u - last) s_u^2)`` for a used one.

User rows and dense parameters are read every step and get their noise every step.

The DP randomness is keyed per user by a **secret** ``noise_key`` (never the published run seed,
DESIGN section 5; the node draws it from OS entropy, :func:`fedrec.node.dpsgd_noise_key`): the
unit sample of user ``u`` at step ``t`` of epoch ``e`` is ``uniform(key, DPSGD_BATCH, round, u,
e, t, unit) < q_u``; per-step noise is keyed by ``(key, DPSGD_NOISE, round, u, tau, param, item,
coord)`` (a torch port of the counter-based hash, computed on the training device); the
end-of-round draw comes from a torch generator seeded by ``(key, DPSGD_FINAL, round, u,
param)``. With one key (a debug ``dp-seed``) a user's update is the same whatever cohort it
trains in. Negatives are drawn with the run seed, as in plain training.

The cohort's sum gives every user weight 1: a weight such as the user's number of interactions
would multiply the DP output by a data-dependent factor (not post-processing).

SGD only: lazy noise is exact because SGD is linear in the noise (Adam is not).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from fedrec import rng
from fedrec.config import TrainConfig
from fedrec.data.schema import SplitData
from fedrec.models.base import Recommender
from fedrec.privacy.sample_level import per_user_rates
from fedrec.train.cohort import CohortUpdate, _chunks, resolve_device
from fedrec.train.examples import examples_per_positive, sample_negatives, uses_labels
from fedrec.train.layout import ItemIndex, local_rows
from fedrec.train.steps import LocalParams, OwnerBatch, OwnerGrads, StepPolicy, run_steps

log = logging.getLogger(__name__)

__all__ = [
    "DPCohortUpdate",
    "UserUnits",
    "build_units",
    "normal_from_keys",
    "poisson_units",
    "train_cohort_dpsgd",
    "uniform_from_keys",
]

#: Floats of per-unit dense-parameter copies materialised at once (bounds memory of big towers).
UNIT_DENSE_BUDGET = 8_000_000


@dataclass
class DPCohortUpdate(CohortUpdate):
    """:class:`CohortUpdate` plus the per-user accounting of this round.

    Attributes
    ----------
    noise_multiplier : float
        ``sigma`` used.
    sample_rates : numpy.ndarray
        ``q_u`` per user (aligned with the input ``users``).
    steps : numpy.ndarray
        DP-SGD steps each user took this round (``local-epochs * round(1 / q_u)``).
    """

    noise_multiplier: float = 0.0
    sample_rates: np.ndarray = field(default_factory=lambda: np.zeros(0))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


# ------------------------------------------------------------------ counter-based RNG in torch
def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _lshr(z: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: Tensor) -> Tensor:
    """splitmix64 finaliser on int64 tensors (wrapping), bit-identical to ``fedrec.rng._mix``."""
    z = z + _GOLDEN
    z = (z ^ _lshr(z, 30)) * _M1
    z = (z ^ _lshr(z, 27)) * _M2
    return z ^ _lshr(z, 31)


def _prefix(*keys: np.ndarray | int, device: torch.device) -> Tensor:
    """``rng.hash64(*keys)`` as an int64 tensor (the per-user part of a key chain)."""
    h = np.ascontiguousarray(rng.hash64(*keys)).view(np.int64)
    return torch.from_numpy(h).to(device)


def uniform_from_keys(prefix: Tensor, key: Tensor) -> Tensor:
    """``rng.uniform(*prefix_keys, key)`` in torch: float64 in [0, 1), identical bits."""
    return _lshr(_mix(prefix ^ key), 11).to(torch.float64) * (1.0 / 2**53)


def normal_from_keys(prefix: Tensor, key: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal keyed by ``(prefix chain, key)``: Box-Muller on the two 32-bit halves of
    one 64-bit hash (|z| <= 6.66; the rest of the Gaussian tail, 3e-11, is cut)."""
    h = _mix(prefix ^ key)
    u1 = (_lshr(h, 32).to(torch.float64) + 0.5) * (1.0 / 2**32)
    u2 = (h & 0xFFFFFFFF).to(torch.float64) * (1.0 / 2**32)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)


def poisson_units(
    key: int,
    round_: int,
    users: np.ndarray,
    epoch: int,
    step: int,
    unit_owner: Tensor,
    unit_pos: Tensor,
    q: Tensor,
) -> Tensor:
    """Poisson sample of units for one step: unit ``i`` of local user ``j = unit_owner[i]`` is
    in the batch iff ``rng.uniform(key, DPSGD_BATCH, round_, users[j], epoch, step,
    unit_pos[i]) < q[j]`` -- independently per unit, so batch sizes vary (Poisson sampling, as
    the accountant assumes), and keyed by the user's global id only.

    Returns
    -------
    Tensor
        Indices (into ``unit_owner``) of the sampled units, increasing.
    """
    pre = _prefix(key, rng.DPSGD_BATCH, round_, users, epoch, step, device=unit_owner.device)
    u = uniform_from_keys(pre[unit_owner], unit_pos)
    return torch.nonzero(u < q[unit_owner]).squeeze(1)


# ------------------------------------------------------------------ units
@dataclass
class UserUnits:
    """Privacy units of a cohort, user-contiguous, users by decreasing size (ties: id).

    Attributes
    ----------
    users : numpy.ndarray
        Global ids in training order; ``users == input_users[order]``.
    order : numpy.ndarray
    n_pos : numpy.ndarray
        Units (training positives) per user.
    start : numpy.ndarray
        ``(n_users + 1,)`` offsets of each user's units.
    items : list of numpy.ndarray
        Per epoch ``(U, m, k)`` item ids of every unit: ``m`` examples per unit, ``k`` items per
        example (BCE/MSE ``k = 1``, BPR ``k = 2``).
    labels : list of numpy.ndarray
        Per epoch ``(U, m)`` float32 labels (empty for BPR).
    """

    users: np.ndarray
    order: np.ndarray
    n_pos: np.ndarray
    start: np.ndarray
    items: list[np.ndarray]
    labels: list[np.ndarray]


def build_units(
    split: SplitData,
    users: np.ndarray,
    epochs: int,
    num_negatives: int,
    loss: str,
    seed: int,
    round_: int,
) -> UserUnits:
    """Units of ``users`` for ``epochs`` local epochs, with the same negatives as
    :func:`fedrec.train.examples.build_examples` (keyed by user, epoch and position)."""
    users = np.asarray(users, dtype=np.int64)
    n_pos_in = np.diff(split.train_indptr)[users]
    order = np.lexsort((users, -n_pos_in))
    users_o, n_pos = users[order], n_pos_in[order]
    start = np.concatenate([[0], np.cumsum(n_pos)]).astype(np.int64)
    total = int(start[-1])
    local = np.repeat(np.arange(len(users_o), dtype=np.int64), n_pos)
    offset = np.arange(total, dtype=np.int64) - start[:-1][local]
    pos_index = split.train_indptr[users_o][local] + offset
    pos_items = split.train_items[pos_index]
    labelled = split.train_labels is not None
    m = examples_per_positive(loss, num_negatives, labelled)
    items_e, labels_e = [], []
    for epoch in range(epochs):
        if labelled:  # click-through rows: one labelled example per unit
            items = pos_items[:, None, None]
            labels = split.train_labels[pos_index].astype(np.float32)[:, None]
        elif loss == "mse":
            items = pos_items[:, None, None]
            labels = split.train_ratings[pos_index].astype(np.float32)[:, None]
        else:
            negs = sample_negatives(split, users_o[local], offset, num_negatives, seed, round_,
                                    epoch) if total else np.zeros((0, num_negatives), np.int64)
            if loss == "bce":
                items = np.concatenate([pos_items[:, None], negs], axis=1)[:, :, None]
                labels = np.zeros((total, m), dtype=np.float32)
                labels[:, 0] = 1.0
            else:
                items = np.stack([np.repeat(pos_items[:, None], m, axis=1), negs], axis=2)
                labels = np.zeros((0, m), dtype=np.float32)
        items_e.append(np.ascontiguousarray(items, dtype=np.int64))
        labels_e.append(labels)
    return UserUnits(users_o, order, n_pos, start, items_e, labels_e)


# ------------------------------------------------------------------ training
def train_cohort_dpsgd(
    model: Recommender,
    shared: dict[str, Tensor],
    user_state: dict[str, Tensor],
    users: np.ndarray,
    split: SplitData,
    tc: TrainConfig,
    seed: int,
    round_: int,
    *,
    noise_multiplier: float,
    clip_norm: float,
    noise_key: int,
    keep_per_user: bool = False,
) -> DPCohortUpdate:
    """Per-user DP-SGD of ``users`` from ``shared`` (see the module doc).

    Parameters
    ----------
    model, shared, user_state, users, split, tc, seed, round_
        As :func:`fedrec.train.cohort.train_cohort` (``tc.optimizer`` must be ``sgd``).
    noise_multiplier : float
        ``sigma``: noise std ``sigma * C`` on each step's sum of clipped unit gradients.
    clip_norm : float
        ``C``: bound on each unit's gradient (all parameters jointly).
    noise_key : int
        Secret key of the unit sampling and the noise (see the module doc).
    keep_per_user : bool
        Also return each user's full update (tests, audits).

    Returns
    -------
    DPCohortUpdate
        ``sum_update`` sums the users' updates with weight 1 each (``weight_sum`` = number of
        users); every item row of every user moved (noise), so ``item_weight`` counts every user
        on every row.
    """
    if tc.optimizer != "sgd":
        raise ValueError(
            f"setting 'optimizer' = {tc.optimizer!r}: privacy='sample' (DP-SGD) supports 'sgd' only"
        )
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    if split.train_labels is not None:
        raise ValueError("privacy='sample' (DP-SGD) does not support click-through splits "
                         "(labelled training rows); use privacy='user'")
    device = resolve_device(tc.device)
    users = np.asarray(users, dtype=np.int64)
    shared_dev = {n: t.to(device=device, dtype=torch.float32) for n, t in shared.items()}
    per_pos = examples_per_positive(tc.loss, tc.num_negatives)
    n_pos_all = np.diff(split.train_indptr)[users]
    q_all, s_all = per_user_rates(n_pos_all, tc)
    counts = n_pos_all * per_pos * tc.local_epochs
    sum_update = {
        n: torch.zeros(t.shape, dtype=torch.float64, device=device) for n, t in shared_dev.items()
    }
    new_state = {n: t.clone() for n, t in user_state.items()}
    sq_norms = np.zeros(len(users))
    weight_sum, loss_sum = 0.0, 0.0
    per_user: dict[int, dict[str, Tensor]] = {}
    for lo, hi in _chunks(counts, tc.max_examples_per_chunk):
        un = build_units(split, users[lo:hi], tc.local_epochs, tc.num_negatives, tc.loss, seed,
                         round_)
        state = {n: t[lo:hi][torch.from_numpy(un.order)] for n, t in user_state.items()}
        res = _train_chunk(model, shared_dev, state, un, tc, device, float(noise_multiplier),
                           float(clip_norm), int(noise_key), round_, keep_per_user)
        for n in sum_update:
            sum_update[n] += res["sum"][n]
        weight_sum += res["weight_sum"]
        loss_sum += res["loss_sum"]
        back = lo + un.order
        for n, t in res["state"].items():
            new_state[n][torch.from_numpy(back)] = t.to(new_state[n].dtype).cpu()
        sq_norms[back] = res["sq_norms"]
        per_user.update(res["per_user"])
    return DPCohortUpdate(
        sum_update={n: t.cpu() for n, t in sum_update.items()},
        weight_sum=weight_sum,
        n_users=len(users),
        user_state=new_state,
        loss_sum=loss_sum,
        sq_norms=sq_norms,
        item_weight=torch.full((model.n_items,), weight_sum, dtype=torch.float64),
        per_user=per_user,
        noise_multiplier=float(noise_multiplier),
        sample_rates=q_all,
        steps=s_all * tc.local_epochs,
    )


def _train_chunk(
    model: Recommender,
    shared: dict[str, Tensor],
    state: dict[str, Tensor],
    un: UserUnits,
    tc: TrainConfig,
    device: torch.device,
    sigma: float,
    clip: float,
    noise_key: int,
    round_: int,
    keep_per_user: bool,
) -> dict:
    n_users, n_items = len(un.users), model.n_items
    specs = model.specs()
    pidx = {s.name: i for i, s in enumerate(specs)}  # parameter index: a key of the noise
    item_names = [s.name for s in specs if s.kind == "item"]
    dense_names = [s.name for s in specs if s.kind == "dense"]
    user_names = [s.name for s in specs if s.kind == "user"]
    lr, wd = tc.lr, tc.weight_decay
    m = examples_per_positive(tc.loss, tc.num_negatives)
    k = un.items[0].shape[2] if un.items else 1
    labelled = uses_labels(tc.loss)

    q, steps = per_user_rates(un.n_pos, tc)  # steps per epoch: non-increasing along users
    qn = np.minimum(tc.batch_size, np.maximum(un.n_pos * m, 1)).astype(np.float64)  # q_u n_u
    qn = np.where(un.n_pos > 0, qn, 1.0)
    s_step = lr * sigma * clip / qn  # std of one step's noise on a parameter (per coordinate)
    q_t = torch.from_numpy(q).to(device)
    lr_qn = torch.from_numpy(lr / qn).to(device=device, dtype=torch.float32)
    s_t = torch.from_numpy(s_step).to(device=device, dtype=torch.float32)
    n_active = [int((steps > t).sum()) for t in range(int(steps.max()) if n_users else 0)]

    # units -> owner / position; local rows = distinct (user, item) pairs over all epochs and
    # the rows of every table those items reach (fedrec.train.layout)
    index = ItemIndex(model, device)
    table_of = index.table_of
    unit_owner_np = np.repeat(np.arange(n_users, dtype=np.int64), un.n_pos)
    unit_owner = torch.from_numpy(unit_owner_np).to(device)
    unit_pos = torch.from_numpy(
        np.arange(len(unit_owner_np), dtype=np.int64) - un.start[:-1][unit_owner_np]
    ).to(device)
    keys = np.concatenate(
        [(unit_owner_np[:, None, None] * n_items + it).reshape(-1) for it in un.items]
    ) if un.items else np.zeros(0, np.int64)
    loc, inverse = local_rows(index, keys, n_users, device)
    tab = loc.tables
    n_u = len(unit_owner_np)
    rows_e = [inverse[e * n_u * m * k : (e + 1) * n_u * m * k].view(n_u, m, k)
              for e in range(len(un.items))]
    items_e = [torch.from_numpy(it).to(device) for it in un.items]
    labels_e = [torch.from_numpy(lab).to(device) for lab in un.labels] if labelled else None

    lp = LocalParams.start(model, index, loc, shared, state, device)
    P, T0, T, D0, D = lp.P, lp.T0, lp.T, lp.D0, lp.D
    used_tables = sorted({table_of[n] for n in item_names})
    dense_size = sum(int(np.prod(D0[n].shape)) for n in dense_names) + sum(
        int(np.prod(P[n].shape[1:])) for n in user_names)
    policy = _DPPolicy(
        lp, un, rows_e, items_e if index.frozen else None, labels_e, n_active, steps, q_t,
        unit_owner, unit_pos, noise_key, round_, sigma, clip, lr, wd, lr_qn, s_t, pidx, m,
        max(1, UNIT_DENSE_BUDGET // max(dense_size, 1)),
    )
    run_steps(model, lp, policy, tc.loss, wd)
    last, ep_loss, ep_cnt, users_g = policy.last, policy.ep_loss, policy.ep_cnt, un.users

    # End of round: every row gets the noise of the steps since it was last brought up to date.
    with torch.no_grad():
        total_steps = steps * len(un.items)
        sq = torch.zeros(n_users, dtype=torch.float64, device=device)
        out_sum = {n: torch.zeros((index.sizes[table_of[n]], *T[n].shape[1:]),
                                  dtype=torch.float64, device=device) for n in item_names}
        per_user: dict[int, dict[str, Tensor]] = {}
        bounds = {}
        for tname in used_tables:
            end = tab[tname].end
            start = torch.cat([torch.zeros(1, dtype=end.dtype, device=device), end[:-1]])
            bounds[tname] = torch.stack([start, end], 1).cpu().tolist()
        for j in range(n_users):
            upd_j: dict[str, Tensor] = {}
            for n in item_names:
                tname = table_of[n]
                lo, hi = bounds[tname][j]
                items_j = tab[tname].row[lo:hi]
                shape = (index.sizes[tname], *T[n].shape[1:])
                if sigma > 0:  # N(0, (T_u - last) s_u^2): last = 0 for rows never read
                    gen = torch.Generator(device=device)
                    gen.manual_seed(int(rng.hash64(noise_key, rng.DPSGD_FINAL, round_,
                                                   int(users_g[j]), pidx[n])) & ((1 << 63) - 1))
                    delta = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
                    delta.mul_(math.sqrt(total_steps[j]) * float(s_step[j]))
                    ratio = ((int(total_steps[j]) - last[tname][lo:hi])
                             / float(total_steps[j])).sqrt()
                    delta[items_j] *= ratio.view(-1, *[1] * (delta.dim() - 1)).float()
                else:
                    delta = torch.zeros(shape, device=device)
                delta[items_j] += T[n][lo:hi] - T0[n][lo:hi]
                flat = delta.reshape(-1)
                sq[j] += torch.dot(flat, flat).double()
                out_sum[n].add_(delta)
                if keep_per_user:
                    upd_j[n] = delta.double().cpu()
            for n in dense_names:
                d = (D[n][j] - D0[n]).double()
                sq[j] += d.pow(2).sum()
                if keep_per_user:
                    upd_j[n] = d.cpu()
            if keep_per_user:
                per_user[int(users_g[j])] = upd_j
        for n in dense_names:
            d = (D[n] - D0[n].unsqueeze(0)).double()
            out_sum[n] = d.sum(0)
    mean_loss = torch.where(ep_cnt > 0, ep_loss / ep_cnt.clamp_min(1.0), torch.zeros_like(ep_loss))
    return {
        "sum": out_sum,
        "weight_sum": float(n_users),
        "loss_sum": float(mean_loss.sum()),
        "state": {n: t.detach() for n, t in P.items()},
        "sq_norms": sq.cpu().numpy(),
        "per_user": per_user,
    }


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """``v[:, None, ...] * x`` for a per-row vector ``v``."""
    return v.view(-1, *[1] * (x.dim() - 1)).to(x.dtype) * x


class _DPPolicy(StepPolicy):
    """Owners are privacy units, Poisson-sampled per step; per step: lazy noise on the rows
    the units read, per-unit gradients clipped jointly to ``C`` and summed per user, Gaussian
    noise on the user's rows and dense copy, scaled by ``1 / (q_u n_u)``, an SGD step."""

    mean_per_owner = False  # a unit's gradient is the sum over its examples

    def __init__(self, lp: LocalParams, un: UserUnits, pairs: list[Tensor],
                 items: list[Tensor] | None, labels: list[Tensor] | None, n_active: list[int],
                 steps: np.ndarray, q: Tensor, unit_owner: Tensor, unit_pos: Tensor, noise_key: int,
                 round_: int, sigma: float, clip: float, lr: float, wd: float, lr_qn: Tensor,
                 s_t: Tensor, pidx: dict[str, int], m: int, unit_chunk: int) -> None:
        self.lp, self.un, self.pairs, self.items, self.labels = lp, un, pairs, items, labels
        self.n_active, self.steps, self.q = n_active, steps, q
        self.unit_owner, self.unit_pos = unit_owner, unit_pos
        self.key, self.round, self.sigma, self.clip, self.lr, self.wd = (
            noise_key, round_, sigma, clip, lr, wd)
        self.lr_qn, self.s_t, self.pidx, self.m, self.unit_chunk = lr_qn, s_t, pidx, m, unit_chunk
        device = unit_owner.device
        n_users = len(un.users)
        self.tables = sorted({lp.index.table_of[n] for n in lp.T})
        # steps of noise applied to each local row
        self.last = {t: torch.zeros(len(lp.loc.tables[t].row), dtype=torch.int64,
                                    device=device) for t in self.tables}
        self.ep_loss = torch.zeros(n_users, dtype=torch.float64, device=device)
        self.ep_cnt = torch.zeros(n_users, dtype=torch.float64, device=device)

    def batches(self) -> Iterator[OwnerBatch]:
        un, device = self.un, self.unit_owner.device
        for e in range(len(un.items)):
            self.ep_loss.zero_()
            self.ep_cnt.zero_()
            for t, a in enumerate(self.n_active):
                self.tau_np = e * self.steps[:a] + t + 1  # each active user's step number
                self.tau = torch.from_numpy(self.tau_np).to(device)
                n_units = int(un.start[a])
                sel = poisson_units(self.key, self.round, un.users[:a], e, t,
                                    self.unit_owner[:n_units], self.unit_pos[:n_units],
                                    self.q[:a])
                lp = self.lp
                self.g_user = {n: torch.zeros_like(x[:a]) for n, x in lp.P.items()}
                self.g_dense = {n: torch.zeros_like(x[:a]) for n, x in lp.D.items()}
                self.item_upd: list[dict[str, tuple[Tensor, Tensor]]] = []
                yield OwnerBatch(e, t, a, self.unit_owner[sel], self.pairs[e][sel],
                                 self.items[e][sel] if self.items is not None else None,
                                 self.labels[e][sel] if self.labels is not None else None)

    def _noise_prefix(self, name: str, a: int) -> Tensor:
        return _prefix(self.key, rng.DPSGD_NOISE, self.round, self.un.users[:a], self.tau_np,
                       self.pidx[name], device=self.tau.device)

    def before(self, batch: OwnerBatch) -> None:
        """Lazy noise: bring the rows read this step up to date."""
        if not (self.sigma > 0 and batch.pairs.numel()):
            return
        lp, tau = self.lp, self.tau
        rows = lp.loc.rows(batch.pairs)
        for tname in self.tables:
            tab = lp.loc.tables[tname]
            read = torch.unique(rows[tname].reshape(-1))
            own = tab.owner[read]
            cnt = tau[own] - 1 - self.last[tname][read]
            std = cnt.to(torch.float32).sqrt() * self.s_t[own]
            for n, T in lp.T.items():
                if lp.index.table_of[n] != tname:
                    continue
                size = int(np.prod(T.shape[1:]))
                key = tab.row[read, None] * size + torch.arange(size, device=tau.device)
                z = normal_from_keys(self._noise_prefix(n, batch.n_active)[own][:, None], key)
                z = z.view(len(read), *T.shape[1:])
                T[read] += std.view(-1, *[1] * (z.dim() - 1)) * z
            self.last[tname][read] = tau[own] - 1

    def parts(self, batch: OwnerBatch) -> Iterator[OwnerBatch]:
        """Units in chunks (bounds the per-unit copies of dense parameters)."""
        for c0 in range(0, len(batch.owner), self.unit_chunk):
            part = slice(c0, c0 + self.unit_chunk)
            yield dataclasses.replace(
                batch, owner=batch.owner[part], pairs=batch.pairs[part],
                items=batch.items[part] if batch.items is not None else None,
                labels=batch.labels[part] if batch.labels is not None else None)

    def accumulate(self, part: OwnerBatch, grads: OwnerGrads) -> None:
        """Clip each unit's gradient (all parameters jointly) and sum it into its user's."""
        lp, owner = self.lp, part.owner
        sq = _unit_sq_norms(grads, lp.index, len(owner))
        f = torch.clamp(self.clip / sq.sqrt(), max=1.0)  # sq = 0 -> inf -> 1
        for n in lp.P:
            self.g_user[n].index_add_(0, owner, _bcast(f, grads.user[n]))
        for n in lp.D:
            self.g_dense[n].index_add_(0, owner, _bcast(f, grads.dense[n]))
        scale = f * self.lr_qn[owner]
        self.item_upd.append({
            n: (grads.rows[lp.index.table_of[n]].reshape(-1),
                _bcast(scale, grads.item[n]).reshape(-1, *T.shape[1:]))
            for n, T in lp.T.items()})
        loss = grads.per_ex.sum(1)
        self.ep_loss.index_add_(0, owner, loss.double())
        self.ep_cnt.index_add_(0, owner, torch.full_like(loss, self.m).double())

    def step(self, batch: OwnerBatch) -> None:
        """SGD with noise on the user's own rows and dense copy; item rows (noised lazily)."""
        lp, a = self.lp, batch.n_active
        with torch.no_grad():
            for n in [*lp.P, *lp.D]:
                X = lp.P[n] if n in lp.P else lp.D[n]
                g = self.g_user[n] if n in self.g_user else self.g_dense[n]
                if self.sigma > 0:
                    size = int(np.prod(X.shape[1:]))
                    z = normal_from_keys(self._noise_prefix(n, a)[:, None],
                                         torch.arange(size, device=X.device))
                    g = g + (self.sigma * self.clip) * z.view(g.shape)
                step = _bcast(self.lr_qn[:a], g)
                if self.wd and n in lp.P:  # public regulariser of the user's own rows
                    step = step + (2 * self.wd * self.lr) * X[:a]
                X[:a] -= step
            for upd in self.item_upd:
                for n, (rows_flat, grad) in upd.items():
                    lp.T[n].index_add_(0, rows_flat, grad, alpha=-1.0)


def _unit_sq_norms(grads: OwnerGrads, index: ItemIndex, n_units: int) -> Tensor:
    """Squared norm of each unit's whole gradient; the slots of one table row within a unit
    add up before the norm (a Gram matrix over the unit's slots, masked to equal rows)."""
    with torch.no_grad():
        sq = torch.zeros(n_units, device=grads.per_ex.device)
        for x in [*grads.user.values(), *grads.dense.values()]:
            sq += x.pow(2).reshape(n_units, -1).sum(1)
        for n, x in grads.item.items():
            flat_r = grads.rows[index.table_of[n]].reshape(n_units, -1)
            same = (flat_r[:, :, None] == flat_r[:, None, :]).to(sq.dtype)
            g = x.reshape(n_units, flat_r.shape[1], -1)
            sq += (torch.bmm(g, g.transpose(1, 2)) * same).sum((1, 2))
        return sq.clamp_(min=0.0)
