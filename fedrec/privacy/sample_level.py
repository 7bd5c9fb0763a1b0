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
checked with :func:`fedrec.privacy.calibration.worst_epsilon` and ``sigma`` is raised for any user
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
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedrec.config import Config, ConfigError, TrainConfig
from fedrec.data.partition import participants
from fedrec.data.schema import SplitData
from fedrec.privacy.analysis import DEFAULT_EPS_ERROR, default_delta
from fedrec.privacy.calibration import noise_for_target_worst_user, worst_epsilon
from fedrec.train.examples import examples_per_positive

log = logging.getLogger(__name__)

__all__ = [
    "SampleLevelPrivacy",
    "check_supported",
    "node_worst_epsilon",
    "participation_counts",
    "per_user_rates",
    "resolve_noise_multiplier",
    "sample_delta",
]


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
    eps, i_prv, _ = worst_epsilon(float(sigma), hist, sample_delta(cfg, split), DEFAULT_EPS_ERROR)
    hit = np.flatnonzero((q == hist[i_prv][0]) & (total == hist[i_prv][1]))
    return {"prv": eps["prv"], "rdp": eps["rdp"], "user_id": int(users[hit[0]])}


class SampleLevelPrivacy:
    """Server-side bookkeeping for ``privacy = "sample"``: sigma, budget, reported epsilon.

    Nodes train with DP-SGD; :meth:`observe` computes the worst user's epsilon.

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

    def observe(self, round_: int) -> dict[str, float]:
        """The worst user's epsilons after ``round_`` rounds (computed here from the data's
        per-user counts and the participation draw: nodes send no epsilon, which would reveal
        their users' data sizes)."""
        users = np.arange(self.split.n_users)
        worst = node_worst_epsilon(self.cfg, self.split, users, round_, self.sigma)
        self.eps = {"prv": float(worst["prv"]), "rdp": float(worst["rdp"])}
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
