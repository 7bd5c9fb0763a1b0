"""Sample-level DP (``privacy = "sample"``): per-user DP-SGD rates, noise calibration, accounting.

Each user runs DP-SGD on its own data as if it ran opacus alone (see :mod:`fedrec.train.dpsgd`).
The privacy unit is **one training interaction of one user**: the positive together with the
negatives sampled for it (BCE: ``1 + num-negatives`` examples, BPR: ``num-negatives`` pairs, MSE:
the rating). Removing an interaction removes exactly one such unit, so units are Poisson-sampled
and clipped jointly; clipping single examples would let one interaction move the sum by
``examples_per_positive * C``. (The negatives are drawn among items the user did *not* interact
with, so an interaction also shifts the negative distribution slightly; like every DP-SGD
recommender we do not account for that.)

Per user ``u`` with ``n_u`` examples per epoch (``n_pos * examples_per_positive``):

* sample rate ``q_u = min(1, batch-size / n_u)`` (Poisson sampling of units);
* steps per local epoch ``S_u = round(1 / q_u)``;
* a round in which the user takes part composes ``local-epochs * S_u`` subsampled Gaussian
  steps with noise multiplier ``sigma``.

**Calibration.** ``sigma`` is the same for every user (every node computes the same value from
the config and the data). With ``target-epsilon`` set (and ``noise-multiplier`` not), it is the
smallest ``sigma`` such that *every* user of the dataset, taking part in all ``num-rounds``
rounds, meets the target: the user with the largest ``q`` (the smallest data, usually ``q = 1``,
i.e. no amplification at all) is tried first, then every distinct ``(q, steps)`` history is
checked with :meth:`SampleLevelAccounting.worst_epsilon` and ``sigma`` is raised for any user
that would still exceed it. (For ``q * S ~ 1`` per epoch, a smaller ``q`` means more
amplification, so the largest-``q`` user is the worst in practice; the check makes it certain.)

**Accounting state.** A user's history is ``{(sigma, q_u): local-epochs * S_u * k_u}`` with
``k_u`` the number of rounds it took part in so far. ``sigma`` and ``q_u`` are functions of the
config and the data, and participation is the seeded Poisson draw keyed by
``(seed, round, user)``, so the history is a deterministic function of the config and the round:
nothing has to be persisted, it survives node restarts, and resuming cannot lose or double-count
steps. The server checkpoints the ``sigma`` in force and refuses to resume a run under another one
(e.g. a changed ``num-rounds`` with ``target-epsilon``), which would break that invariant.

``delta`` defaults to ``n_train ** -1.1`` (the number of privacy units in the whole federation),
which is below ``1 / n_u`` for every user.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from fedrec.config import Config, ConfigError, TrainConfig
from fedrec.data.partition import participants
from fedrec.data.schema import SplitData
from fedrec.privacy.accounting import (
    DEFAULT_EPS_ERROR,
    compute_epsilons,
    default_delta,
    noise_for_target,
)
from fedrec.train.examples import examples_per_positive

log = logging.getLogger(__name__)

__all__ = [
    "EPS_KEY",
    "EPS_RDP_KEY",
    "SampleLevelPrivacy",
    "check_supported",
    "epsilon_metrics",
    "node_worst_epsilon",
    "noise_for_target_worst_user",
    "participation_counts",
    "per_user_rates",
    "resolve_noise_multiplier",
    "sample_delta",
]

#: Metric keys of a node's worst-user epsilon (PRV headline, RDP bound) in train replies.
EPS_KEY = "dp-epsilon"
EPS_RDP_KEY = "dp-epsilon-rdp"


def per_user_rates(n_pos: np.ndarray, tc: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Poisson sample rate and steps per local epoch of each user.

    Parameters
    ----------
    n_pos : numpy.ndarray
        Training positives (privacy units) per user.
    tc : TrainConfig
        ``batch-size`` (expected examples per batch), ``loss``, ``num-negatives``.

    Returns
    -------
    (q, steps) : tuple of numpy.ndarray
        ``q = min(1, batch-size / n_examples)`` (float64; ``1`` for a user without data) and
        ``steps = max(1, round(1 / q))`` (int64, half rounds up).
    """
    n_ex = np.asarray(n_pos, dtype=np.int64) * examples_per_positive(tc.loss, tc.num_negatives)
    q = np.minimum(1.0, tc.batch_size / np.maximum(n_ex, 1).astype(np.float64))
    steps = np.maximum(1, np.floor(1.0 / q + 0.5)).astype(np.int64)
    return q, steps


def sample_delta(cfg: Config, split: SplitData) -> float:
    """``delta`` of the run: the configured one, else ``n_train ** -1.1``."""
    return cfg.privacy.delta or default_delta(max(int(split.n_train), 2))


def check_supported(cfg: Config) -> None:
    """Raise ``ConfigError`` naming the setting that ``privacy = "sample"`` cannot honour."""
    if cfg.privacy.privacy != "sample":
        return
    if cfg.train.optimizer != "sgd":
        raise ConfigError(
            f"setting 'optimizer' = {cfg.train.optimizer!r} is not supported with "
            "privacy='sample': per-user DP-SGD adds its noise lazily, which is exact for SGD "
            "only; set optimizer=sgd"
        )
    if cfg.data.split == "ctr":
        raise ConfigError(
            "setting 'split' = 'ctr' is not supported with privacy='sample': its training rows "
            "are labelled positives and negatives, not the privacy units DP-SGD accounts; use "
            "privacy='user'"
        )
    if cfg.fed.proximal_mu:
        raise ConfigError(
            f"setting 'proximal-mu' = {cfg.fed.proximal_mu!r} is not supported with "
            "privacy='sample' (the proximal term would move every item row every step)"
        )


def participation_counts(users: np.ndarray, fraction: float, seed: int, round_: int) -> np.ndarray:
    """Number of rounds ``1 .. round_`` in which each user took part (seeded Poisson draw)."""
    users = np.asarray(users, dtype=np.int64)
    if fraction >= 1.0:
        return np.full(len(users), max(int(round_), 0), dtype=np.int64)
    counts = np.zeros(len(users), dtype=np.int64)
    for r in range(1, int(round_) + 1):
        counts += np.isin(users, participants(users, fraction, seed, r))
    return counts


def _distinct_rates(q: np.ndarray, steps: np.ndarray) -> list[tuple[float, int]]:
    return sorted({(float(a), int(b)) for a, b in zip(q.tolist(), steps.tolist(), strict=True)})


#: Orders of the fast RDP bound used to rank and prune histories (integers are cheap in opacus;
#: fractional orders cost ~5 ms each).
_PROXY_ORDERS: tuple[float, ...] = (1.5, *range(2, 65), 80, 96, 128, 160, 192, 256, 384, 512)


def _proxy_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """A fast RDP upper bound on the epsilon of ``steps`` subsampled Gaussian steps.

    Never below the true epsilon (it is an RDP bound); used only to rank and prune histories.
    """
    if steps == 0 or q == 0.0:
        return 0.0
    if sigma == 0.0:
        return math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(_PROXY_ORDERS))
        eps, _ = get_privacy_spent(orders=list(_PROXY_ORDERS), rdp=rdp, delta=delta)
    return float(eps)


def _worst(
    sigma: float, histories: Sequence[tuple[float, int]], delta: float, eps_error: float
) -> tuple[dict[str, float], int, int]:
    """Worst epsilons over single-segment histories ``(q, steps)`` at noise ``sigma``.

    The accountants only run where needed: histories are visited by decreasing fast RDP bound
    (an upper bound of the true epsilon), stopping once that bound is below both the largest
    RDP epsilon found and the largest PRV epsilon found minus the PRV error (so a skipped
    history can neither have a larger RDP epsilon nor a larger PRV estimate).

    Returns
    -------
    (epsilons, i_prv, i_rdp)
        ``{"prv", "rdp"}`` maxima and the indices of histories attaining them.
    """
    if not histories:
        return {"prv": 0.0, "rdp": 0.0}, 0, 0
    bound = [_proxy_epsilon(sigma, q, n, delta) for q, n in histories]
    best = {"prv": -1.0, "rdp": -1.0}
    arg = {"prv": 0, "rdp": 0}
    for i in sorted(range(len(histories)), key=lambda j: bound[j], reverse=True):
        if bound[i] < best["rdp"] and bound[i] + eps_error < best["prv"]:
            break
        eps = compute_epsilons([(sigma, *histories[i])], delta, eps_error)
        for key in ("prv", "rdp"):
            if eps[key] > best[key]:
                best[key], arg[key] = eps[key], i
    return best, arg["prv"], arg["rdp"]


def _solve_sigma(
    q: float, steps: int, target: float, delta: float, accountant: str, eps_error: float,
    rtol: float = 1e-3,
) -> float:
    """Smallest sigma (within ``rtol``) with epsilon ``<= target`` for one history.

    Like :func:`fedrec.privacy.accounting.noise_for_target`, but bracketed from the fast RDP
    bound and refined by regula falsi (Illinois) on ``log epsilon`` against ``log sigma``, so a
    subsampled history costs a handful of accountant calls instead of a dozen. Stops when the
    bracket is within ``rtol`` or the budget is used to within ``2 rtol``.
    """
    if q == 1.0:  # closed form: cheap, use the reference bisection
        return noise_for_target(target, delta, q, steps, accountant, eps_error=eps_error)

    def f(sigma: float) -> float:  # log(eps / target); eps decreases with sigma
        eps = compute_epsilons([(sigma, q, steps)], delta, eps_error)[accountant]
        return math.log(max(eps, 1e-300) / target)

    # an upper end from the cheap bound (which is never below the accountants' epsilon)
    hi = 1.0
    while _proxy_epsilon(hi, q, steps, delta) > target:
        hi *= 2.0
    while hi > 1e-3 and _proxy_epsilon(hi / 2.0, q, steps, delta) <= target:
        hi /= 2.0
    lo_p, hi_p = hi / 2.0, hi
    while hi_p / lo_p - 1.0 > 0.02:  # cheap bisection of the bound to 2 %
        mid = math.sqrt(lo_p * hi_p)
        lo_p, hi_p = (lo_p, mid) if _proxy_epsilon(mid, q, steps, delta) <= target else (mid, hi_p)
    hi = hi_p
    f_hi = f(hi)
    while f_hi > 0:  # the headline accountant above the bound: go up
        hi *= 1.25
        f_hi = f(hi)
    lo = hi / 1.15  # the headline epsilon is rarely more than ~15 % of sigma below the bound
    f_lo = f(lo)
    while f_lo <= 0:
        hi, f_hi = lo, f_lo
        lo /= 1.15
        f_lo = f(lo)
    side = 0
    while hi / lo - 1.0 > rtol and f_hi < math.log1p(-2 * rtol):
        x_lo, x_hi = math.log(lo), math.log(hi)
        x = x_hi - f_hi * (x_hi - x_lo) / (f_hi - f_lo)
        x = min(max(x, x_lo + 0.01 * (x_hi - x_lo)), x_hi - 0.01 * (x_hi - x_lo))
        mid = math.exp(x)
        f_mid = f(mid)
        if f_mid <= 0:
            hi, f_hi = mid, f_mid
            if side == 1:
                f_lo /= 2.0
            side = 1
        else:
            lo, f_lo = mid, f_mid
            if side == -1:
                f_hi /= 2.0
            side = -1
    return hi


def noise_for_target_worst_user(
    target_epsilon: float,
    delta: float,
    histories: Sequence[tuple[float, int]],
    accountant: str = "prv",
    *,
    eps_error: float = DEFAULT_EPS_ERROR,
) -> float:
    """Smallest common noise multiplier with which *every* history meets the target.

    Parameters
    ----------
    target_epsilon : float
        Budget (``inf``: no noise, returns 0).
    delta : float
        Target delta.
    histories : sequence of (q, steps)
        One per distinct user: sample rate and total number of DP-SGD steps over the run.
    accountant : {"prv", "rdp"}
        Which epsilon must meet the target.
    eps_error : float
        PRV additive error.

    Returns
    -------
    float
        ``sigma`` with ``max_u epsilon_u(sigma) <= target_epsilon``.
    """
    hist = [(float(q), int(n)) for q, n in histories if q > 0 and n > 0]
    if math.isinf(target_epsilon) or not hist:
        return 0.0
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    # start from the history with the largest fast bound at a typical sigma
    cand = max(hist, key=lambda h: _proxy_epsilon(1.0, h[0], h[1], delta))
    sigma = _solve_sigma(*cand, target_epsilon, delta, accountant, eps_error)
    tried = {cand}
    while True:
        eps, i_prv, i_rdp = _worst(sigma, hist, delta, eps_error)
        if eps[accountant] <= target_epsilon:
            return sigma
        cand = hist[i_prv if accountant == "prv" else i_rdp]
        if cand in tried:  # tolerance of the solver only: nudge up
            sigma *= 1.0 + 1e-3
            continue
        tried.add(cand)
        log.info("sample-level calibration: the user with q=%.4g, %d steps is worse; raising "
                 "sigma", cand[0], cand[1])
        sigma = max(sigma, _solve_sigma(*cand, target_epsilon, delta, accountant, eps_error))


_SIGMA_CACHE: dict[tuple, float] = {}


def resolve_noise_multiplier(cfg: Config, split: SplitData) -> float:
    """The DP-SGD noise multiplier of the run (see the module doc).

    ``noise-multiplier > 0`` (or no target) is used as given; ``target-epsilon = inf`` gives 0
    (clipping and sampling without noise); otherwise the smallest ``sigma`` with which every user
    meets the target after ``num-rounds`` rounds of ``local-epochs`` epochs. Memoised.
    """
    p = cfg.privacy
    if p.noise_multiplier > 0 or p.target_epsilon == 0:
        return float(p.noise_multiplier)
    if math.isinf(p.target_epsilon):
        return 0.0
    q, steps = per_user_rates(np.diff(split.train_indptr), cfg.train)
    per_run = cfg.fed.num_rounds * cfg.train.local_epochs
    histories = tuple((a, b * per_run) for a, b in _distinct_rates(q, steps))
    delta = sample_delta(cfg, split)
    key = (p.target_epsilon, delta, histories)
    if key not in _SIGMA_CACHE:
        _SIGMA_CACHE[key] = noise_for_target_worst_user(p.target_epsilon, delta, histories)
        log.info("sample-level DP: sigma=%.4f for target epsilon %g (delta=%.3g, %d distinct "
                 "user histories)", _SIGMA_CACHE[key], p.target_epsilon, delta, len(histories))
    return _SIGMA_CACHE[key]


def node_worst_epsilon(
    cfg: Config, split: SplitData, users: np.ndarray, round_: int, sigma: float
) -> dict[str, Any]:
    """Worst epsilon over ``users`` after ``round_`` rounds (see the module doc).

    Returns
    -------
    dict
        ``{"prv", "rdp"}`` maxima over the users and ``"user_id"``, a user attaining the PRV
        maximum (None without users).
    """
    users = np.asarray(users, dtype=np.int64)
    q, steps = per_user_rates(np.diff(split.train_indptr)[users], cfg.train)
    k = participation_counts(users, cfg.fed.fraction_train, cfg.run.seed, round_)
    total = steps * cfg.train.local_epochs * k
    hist = _distinct_rates(q, total)
    if not hist:
        return {"prv": 0.0, "rdp": 0.0, "user_id": None}
    eps, i_prv, _ = _worst(float(sigma), hist, sample_delta(cfg, split), DEFAULT_EPS_ERROR)
    hit = np.flatnonzero((q == hist[i_prv][0]) & (total == hist[i_prv][1]))
    return {"prv": eps["prv"], "rdp": eps["rdp"], "user_id": int(users[hit[0]])}


def epsilon_metrics(
    cfg: Config, split: SplitData, users: np.ndarray, round_: int, sigma: float
) -> dict[str, float]:
    """A node's train-reply metrics: its worst user's epsilons after ``round_`` rounds.

    The server takes the maximum over nodes (:meth:`SampleLevelPrivacy.observe`).
    """
    worst = node_worst_epsilon(cfg, split, users, round_, sigma)
    return {EPS_KEY: float(worst["prv"]), EPS_RDP_KEY: float(worst["rdp"])}


class SampleLevelPrivacy:
    """Server-side bookkeeping for ``privacy = "sample"``: sigma, budget, reported epsilon.

    Nodes train with DP-SGD and report their worst user's epsilon (metrics :data:`EPS_KEY`,
    :data:`EPS_RDP_KEY`); :meth:`observe` keeps the maximum over nodes.

    Parameters
    ----------
    cfg : Config
    split : SplitData
        The run's data (the server holds it; it needs the users' example counts to calibrate
        ``sigma`` and to stop at a budget).
    """

    def __init__(self, cfg: Config, split: SplitData) -> None:
        check_supported(cfg)
        self.cfg = cfg
        self.split = split
        self.delta = sample_delta(cfg, split)
        self.sigma = resolve_noise_multiplier(cfg, split)
        self.target = cfg.privacy.target_epsilon
        self.eps = {"prv": 0.0, "rdp": 0.0}
        self.rounds = 0
        log.info("sample-level DP: sigma=%.4g, C=%.3g, delta=%.3g%s", self.sigma,
                 cfg.privacy.clip_norm, self.delta,
                 f", target epsilon {self.target:g}" if self.target > 0 else "")

    def exhausted(self, next_round: int) -> bool:
        """True when running ``next_round`` would take some user above a finite target."""
        if not (self.target > 0 and math.isfinite(self.target)):
            return False
        if self.cfg.privacy.noise_multiplier == 0 and next_round <= self.cfg.fed.num_rounds:
            return False  # sigma was calibrated so that num-rounds rounds fit the budget
        users = np.arange(self.split.n_users)
        eps = node_worst_epsilon(self.cfg, self.split, users, next_round, self.sigma)
        return eps["prv"] > self.target

    def observe(self, round_: int, node_metrics: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Record the worst epsilon reported by the nodes for ``round_`` (max over nodes)."""
        prv = [float(m[EPS_KEY]) for m in node_metrics if EPS_KEY in m]
        rdp = [float(m[EPS_RDP_KEY]) for m in node_metrics if EPS_RDP_KEY in m]
        if prv:
            self.eps = {"prv": max(prv), "rdp": max(rdp) if rdp else math.nan}
        self.rounds = int(round_)
        return dict(self.eps)

    def summary(self) -> dict[str, Any]:
        """The ``privacy`` entry of summary.json."""
        return {
            "mode": "sample",
            "epsilon": self.eps["prv"],
            "epsilon_rdp": self.eps["rdp"],
            "delta": self.delta,
            "noise_multiplier": self.sigma,
            "clip_norm": self.cfg.privacy.clip_norm,
            "unit": "one training interaction of one user (with its sampled negatives)",
            "rounds_accounted": self.rounds,
            "accountant": "per-user prv (headline), rdp (conservative); worst user reported",
        }

    def state_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "eps": dict(self.eps), "rounds": self.rounds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the checkpointed state; refuse a run whose sigma differs from the checkpoint."""
        if not math.isclose(float(state["sigma"]), self.sigma, rel_tol=1e-12, abs_tol=0.0):
            raise ConfigError(
                f"the checkpoint was trained with DP-SGD noise multiplier {state['sigma']:.6g} "
                f"but this config gives {self.sigma:.6g} (num-rounds or target-epsilon changed?);"
                " per-user accounting assumes one sigma per run: set noise-multiplier="
                f"{state['sigma']!r} or use another --out"
            )
        self.eps = {k: float(v) for k, v in state["eps"].items()}
        self.rounds = int(state["rounds"])
