"""Privacy accounting for user-level DP-FedAvg and per-user (sample-level) DP-SGD.

Both settings are compositions of Poisson-subsampled Gaussian mechanisms, accounted with the
opacus accountants:

* PRV (``opacus.accountants.PRVAccountant``, Gopi et al. 2021) gives the headline epsilon. The
  value reported is opacus' *upper* bound, i.e. the numerical estimate plus ``eps_error``.
* RDP (``opacus.accountants.RDPAccountant``) gives the conservative bound. opacus converts RDP to
  (epsilon, delta) with Balle et al. 2020, Thm. 21 (tighter than the classical
  ``rdp + log(1/delta)/(alpha-1)``); we use opacus' default order grid extended at both ends
  (orders below 1.1 and above 63), which only ever lowers the bound when the optimum lies at an
  edge of the default grid and leaves interior optima untouched.

Adjacency is add/remove of one unit (one user for :class:`UserLevelAccountant`, one example of one
user for :class:`SampleLevelAccounting`), which is what the Poisson-subsampled Gaussian analyses in
opacus assume and what DP-FedAvg with a fixed denominator ``qN`` satisfies.

Special cases handled here rather than in opacus:

* a step with ``noise_multiplier == 0`` and ``sample_rate > 0`` gives ``inf``;
* steps with ``sample_rate == 0`` cost nothing;
* histories where every step has ``sample_rate == 1`` (no subsampling) are composed exactly: ``T``
  Gaussian mechanisms with noise multipliers ``z_i`` are ``mu``-GDP with
  ``mu = sqrt(sum(T_i / z_i**2))`` and the (epsilon, delta) curve is known in closed form, so the
  "prv" value is the exact epsilon (no discretisation error);
* when the PRV discretisation would be too large (many steps, large epsilon) ``eps_error`` is
  coarsened so the domain stays at most :data:`PRV_MAX_DOMAIN_SIZE` points; when that would make
  the error large, or opacus raises, the PRV value falls back to the RDP bound with a warning.

Epsilon computations are memoised on the canonical history (composition is commutative, so the
history is reduced to a sorted tuple of ``(noise_multiplier, sample_rate, steps)`` with identical
``(z, q)`` pairs merged).
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from scipy import optimize, special

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EPS_ERROR",
    "PRV_MAX_DOMAIN_SIZE",
    "RDP_ORDERS",
    "SampleLevelAccounting",
    "UserLevelAccountant",
    "compute_epsilons",
    "default_delta",
    "noise_for_target",
]

#: Default additive error of the PRV accountant's epsilon (opacus' own default).
DEFAULT_EPS_ERROR: float = 0.01
#: Largest PRV discretisation domain (points) we let opacus build (~1-2 s, ~100 MB peak).
PRV_MAX_DOMAIN_SIZE: int = 2_000_000
#: RDP orders: opacus' defaults plus a few orders below 1.1 and above 63.
RDP_ORDERS: tuple[float, ...] = tuple(
    sorted(
        {1.01, 1.02, 1.05}
        | set(RDPAccountant.DEFAULT_ALPHAS)
        | {64, 80, 96, 128, 160, 192, 256, 384, 512}
    )
)

_STATE_VERSION = 1
_MIN_NOISE = 1e-4

Segment = tuple[float, float, int]
History = tuple[Segment, ...]


def default_delta(n_users: int) -> float:
    """Default delta for a population of ``n_users`` units: ``n_users ** -1.1``.

    Parameters
    ----------
    n_users : int
        Number of privacy units (users for user-level DP).

    Returns
    -------
    float
        ``n_users ** -1.1``, strictly below ``1 / n_users``.
    """
    if n_users < 2:
        raise ValueError(f"n_users must be >= 2, got {n_users}")
    return float(n_users) ** -1.1


# ---------------------------------------------------------------------------------------------
# validation and canonical histories
# ---------------------------------------------------------------------------------------------


def _check_z(z: float) -> float:
    z = float(z)
    if not (z >= 0.0 and math.isfinite(z)):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {z}")
    return z


def _check_q(q: float) -> float:
    q = float(q)
    if not (0.0 <= q <= 1.0):
        raise ValueError(f"sample_rate must be in [0, 1], got {q}")
    return q


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return delta


def _check_steps(steps: int) -> int:
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    return int(steps)


def _canonical(history: Iterable[Sequence[Any]]) -> History:
    """Reduce a history to a hashable, order-free form (composition is commutative)."""
    merged: dict[tuple[float, float], int] = {}
    for z, q, steps in history:
        z, q, steps = _check_z(z), _check_q(q), _check_steps(steps)
        if steps == 0 or q == 0.0:
            continue  # costs nothing
        merged[(z, q)] = merged.get((z, q), 0) + steps
    return tuple(sorted((z, q, n) for (z, q), n in merged.items()))


# ---------------------------------------------------------------------------------------------
# epsilon computations (memoised on canonical histories)
# ---------------------------------------------------------------------------------------------


def _gaussian_delta(eps: float, mu: float) -> float:
    """delta(eps) of a mu-GDP mechanism (exact for composed full-batch Gaussians)."""
    a = special.ndtr(-eps / mu + mu / 2.0)
    b = math.exp(eps + special.log_ndtr(-eps / mu - mu / 2.0))
    return float(a - b)


def _gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of a mu-GDP mechanism at ``delta`` (smallest eps with delta(eps) <= delta)."""
    if _gaussian_delta(0.0, mu) <= delta:
        return 0.0
    hi = max(1.0, mu * mu)
    while _gaussian_delta(hi, mu) > delta:
        hi *= 2.0
    return float(optimize.brentq(lambda e: _gaussian_delta(e, mu) - delta, 0.0, hi, xtol=1e-12))


@functools.lru_cache(maxsize=16384)
def _rdp_epsilon(history: History, delta: float) -> float:
    if not history:
        return 0.0
    if any(z == 0.0 for z, _, _ in history):
        return math.inf
    acc = RDPAccountant()
    acc.history = [(z, q, n) for z, q, n in history]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps, alpha = acc.get_privacy_spent(delta=delta, alphas=list(RDP_ORDERS))
    if alpha in (RDP_ORDERS[0], RDP_ORDERS[-1]):
        logger.debug("RDP optimum at the edge of the order grid (alpha=%s)", alpha)
    return float(eps)


def _prv_domain_size(acc: PRVAccountant, eps_error: float, delta_error: float) -> int:
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    prvs = [PoissonSubsampledGaussianPRV(q, z) for z, q, _ in acc.history]
    steps = [n for _, _, n in acc.history]
    return int(acc._get_domain(prvs, steps, eps_error, delta_error).size)


@functools.lru_cache(maxsize=16384)
def _prv_epsilon(history: History, delta: float, eps_error: float) -> float:
    if not history:
        return 0.0
    if any(z == 0.0 for z, _, _ in history):
        return math.inf
    if all(q == 1.0 for _, q, _ in history):
        mu = math.sqrt(sum(n / (z * z) for z, _, n in history))
        return _gaussian_epsilon(mu, delta)

    acc = PRVAccountant()
    acc.history = [(z, q, n) for z, q, n in history]
    delta_error = delta / 1000.0
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            size = _prv_domain_size(acc, eps_error, delta_error)
            eff_error = eps_error
            if size > PRV_MAX_DOMAIN_SIZE:
                # the mesh is proportional to eps_error: coarsen it to bound the domain size
                eff_error = eps_error * size / PRV_MAX_DOMAIN_SIZE * 1.05
                rdp = _rdp_epsilon(history, delta)
                if eff_error > max(10 * eps_error, 0.02 * rdp):
                    raise ValueError(
                        f"PRV domain of {size} points; eps_error would have to be {eff_error:.3g}"
                    )
                logger.warning(
                    "PRV accountant: domain of %d points for history %s; eps_error coarsened "
                    "from %.3g to %.3g",
                    size,
                    history,
                    eps_error,
                    eff_error,
                )
            eps = float(acc.get_epsilon(delta, eps_error=eff_error, delta_error=delta_error))
        if not (math.isfinite(eps) and eps >= 0.0):
            raise ValueError(f"PRV accountant returned {eps}")
        return eps
    except (ArithmeticError, MemoryError, RuntimeError, ValueError) as exc:
        rdp = _rdp_epsilon(history, delta)
        logger.warning(
            "PRV accountant failed for history %s, delta=%.3g (%s); falling back to the RDP "
            "bound %.4f",
            history,
            delta,
            exc,
            rdp,
        )
        return rdp


def compute_epsilons(
    history: Iterable[Sequence[Any]], delta: float, eps_error: float = DEFAULT_EPS_ERROR
) -> dict[str, float]:
    """Epsilon of a composition of Poisson-subsampled Gaussian mechanisms.

    Parameters
    ----------
    history : iterable of (noise_multiplier, sample_rate, steps)
        Segments of the composition, in any order.
    delta : float
        Target delta, in (0, 1).
    eps_error : float, optional
        Additive error allowed to the PRV accountant.

    Returns
    -------
    dict
        ``{"prv": headline epsilon, "rdp": conservative epsilon}``; ``inf`` when a step has no
        noise, ``0.0`` for an empty history.
    """
    canon = _canonical(history)
    delta = _check_delta(delta)
    return {
        "prv": _prv_epsilon(canon, delta, float(eps_error)),
        "rdp": _rdp_epsilon(canon, delta),
    }


# ---------------------------------------------------------------------------------------------
# user-level DP-FedAvg
# ---------------------------------------------------------------------------------------------


class UserLevelAccountant:
    """Accountant for user-level DP-FedAvg: one Poisson-subsampled Gaussian step per round.

    Parameters
    ----------
    noise_multiplier : float
        Noise multiplier ``z`` (noise std ``z * C`` on the sum of clipped updates).
    sample_rate : float
        Poisson sampling rate ``q`` of users per round.
    eps_error : float, optional
        Additive error allowed to the PRV accountant.

    Notes
    -----
    The history is a chronological list of ``[z, q, steps]`` segments; :meth:`step` can change
    ``z`` or ``q`` for later rounds.
    """

    def __init__(
        self,
        noise_multiplier: float,
        sample_rate: float,
        *,
        eps_error: float = DEFAULT_EPS_ERROR,
    ) -> None:
        self.noise_multiplier = _check_z(noise_multiplier)
        self.sample_rate = _check_q(sample_rate)
        if not eps_error > 0:
            raise ValueError(f"eps_error must be > 0, got {eps_error}")
        self.eps_error = float(eps_error)
        self._history: list[list[float | int]] = []

    # -- bookkeeping -----------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Total number of rounds accounted so far."""
        return int(sum(int(n) for _, _, n in self._history))

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """Chronological ``(noise_multiplier, sample_rate, steps)`` segments."""
        return [(float(z), float(q), int(n)) for z, q, n in self._history]

    def step(
        self,
        n: int = 1,
        *,
        noise_multiplier: float | None = None,
        sample_rate: float | None = None,
    ) -> None:
        """Account ``n`` more rounds.

        Parameters
        ----------
        n : int, optional
            Number of rounds.
        noise_multiplier, sample_rate : float, optional
            Change ``z`` / ``q`` for these and later rounds.
        """
        n = _check_steps(n)
        if noise_multiplier is not None:
            self.noise_multiplier = _check_z(noise_multiplier)
        if sample_rate is not None:
            self.sample_rate = _check_q(sample_rate)
        if n == 0:
            return
        z, q = self.noise_multiplier, self.sample_rate
        if self._history and self._history[-1][0] == z and self._history[-1][1] == q:
            self._history[-1][2] = int(self._history[-1][2]) + n
        else:
            self._history.append([z, q, n])

    # -- epsilons ----------------------------------------------------------------------------
    def epsilon(self, delta: float) -> dict[str, float]:
        """Epsilon spent so far.

        Parameters
        ----------
        delta : float
            Target delta.

        Returns
        -------
        dict
            ``{"prv": headline, "rdp": conservative}``.
        """
        return compute_epsilons(self._history, delta, self.eps_error)

    def epsilon_after(self, rounds: int, delta: float) -> dict[str, float]:
        """Epsilon if ``rounds`` rounds *in total* were run (future ones at the current z, q).

        Parameters
        ----------
        rounds : int
            Total number of rounds, ``>= self.steps``.
        delta : float
            Target delta.

        Returns
        -------
        dict
            ``{"prv": ..., "rdp": ...}``.
        """
        rounds = _check_steps(rounds)
        if rounds < self.steps:
            raise ValueError(f"rounds={rounds} is below the {self.steps} rounds already run")
        extra = [(self.noise_multiplier, self.sample_rate, rounds - self.steps)]
        return compute_epsilons([*self._history, *extra], delta, self.eps_error)

    def would_exceed(self, target_epsilon: float, delta: float, accountant: str = "prv") -> bool:
        """Whether running one more round would take epsilon above ``target_epsilon``.

        Parameters
        ----------
        target_epsilon : float
            Privacy budget (``inf`` for none).
        delta : float
            Target delta.
        accountant : {"prv", "rdp"}, optional
            Which epsilon is held to the budget.

        Returns
        -------
        bool
        """
        _check_accountant(accountant)
        if math.isinf(target_epsilon):
            return False
        return self.epsilon_after(self.steps + 1, delta)[accountant] > target_epsilon

    # -- opacus / checkpointing --------------------------------------------------------------
    def opacus_accountants(self) -> tuple[RDPAccountant, PRVAccountant]:
        """Fresh opacus accountants holding this history (for reporting or cross-checks)."""
        rdp, prv = RDPAccountant(), PRVAccountant()
        rdp.history = [tuple(s) for s in self.history]
        prv.history = [tuple(s) for s in self.history]
        return rdp, prv

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "version": _STATE_VERSION,
            "kind": "user_level",
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "eps_error": self.eps_error,
            "history": [list(s) for s in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` (e.g. after a JSON round-trip)."""
        if state.get("kind", "user_level") != "user_level":
            raise ValueError(f"not a user-level accountant state: kind={state.get('kind')}")
        if int(state.get("version", _STATE_VERSION)) != _STATE_VERSION:
            raise ValueError(f"unsupported accountant state version {state.get('version')}")
        history = []
        for z, q, n in state["history"]:
            history.append([_check_z(z), _check_q(q), _check_steps(n)])
        self.noise_multiplier = _check_z(state["noise_multiplier"])
        self.sample_rate = _check_q(state["sample_rate"])
        self.eps_error = float(state.get("eps_error", DEFAULT_EPS_ERROR))
        self._history = history

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> UserLevelAccountant:
        """Build an accountant from :meth:`state_dict` output."""
        acc = cls(state["noise_multiplier"], state["sample_rate"])
        acc.load_state_dict(state)
        return acc

    def __repr__(self) -> str:
        return (
            f"UserLevelAccountant(noise_multiplier={self.noise_multiplier}, "
            f"sample_rate={self.sample_rate}, steps={self.steps})"
        )


def _check_accountant(accountant: str) -> None:
    if accountant not in ("prv", "rdp"):
        raise ValueError(f"accountant must be 'prv' or 'rdp', got {accountant!r}")


def noise_for_target(
    target_epsilon: float,
    delta: float,
    q: float,
    rounds: int,
    accountant: str = "prv",
    *,
    eps_error: float = DEFAULT_EPS_ERROR,
    rtol: float = 1e-3,
    max_noise: float = 1e3,
) -> float:
    """Smallest noise multiplier whose epsilon after ``rounds`` rounds is at most the target.

    Bisection (in log space) until the bracket is within ``rtol`` relative; the upper end of the
    bracket is returned, so ``epsilon(returned z) <= target_epsilon`` always holds.

    Parameters
    ----------
    target_epsilon : float
        Privacy budget; ``inf`` gives ``0.0`` (no noise).
    delta : float
        Target delta.
    q : float
        Poisson sampling rate per round.
    rounds : int
        Number of rounds.
    accountant : {"prv", "rdp"}, optional
        Which epsilon must meet the target.
    eps_error : float, optional
        PRV additive error; use the same value as the run's :class:`UserLevelAccountant`.
    rtol : float, optional
        Relative tolerance on the noise multiplier.
    max_noise : float, optional
        Give up (``ValueError``) above this noise multiplier.

    Returns
    -------
    float
        The noise multiplier ``z``.
    """
    _check_accountant(accountant)
    delta = _check_delta(delta)
    q = _check_q(q)
    rounds = _check_steps(rounds)
    target_epsilon = float(target_epsilon)
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    if math.isinf(target_epsilon) or rounds == 0 or q == 0.0:
        return 0.0

    def eps(z: float) -> float:
        return compute_epsilons([(z, q, rounds)], delta, eps_error)[accountant]

    lo, hi = 0.5, 1.0
    if eps(hi) > target_epsilon:
        lo = hi
        while eps(hi) > target_epsilon:
            lo, hi = hi, hi * 2.0
            if hi > max_noise:
                raise ValueError(
                    f"target epsilon {target_epsilon} not reachable with noise <= {max_noise} "
                    f"({accountant}, eps_error={eps_error})"
                )
    else:
        while eps(lo) <= target_epsilon:
            lo, hi = lo / 2.0, lo
            if lo < _MIN_NOISE:
                # e.g. delta >= probability that the user is ever sampled: (almost) no noise needed
                logger.warning(
                    "target epsilon %s met with noise multiplier %.3g; returning it",
                    target_epsilon,
                    hi,
                )
                return hi
    while hi / lo - 1.0 > rtol:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    logger.debug(
        "noise_for_target(eps=%s, delta=%.3g, q=%.4g, rounds=%d, %s) -> %.6f",
        target_epsilon,
        delta,
        q,
        rounds,
        accountant,
        hi,
    )
    return hi


# ---------------------------------------------------------------------------------------------
# per-user DP-SGD
# ---------------------------------------------------------------------------------------------


class SampleLevelAccounting:
    """Per-user accountants for sample-level DP-SGD run on each user's own data.

    Every user has a history of ``(noise_multiplier, sample_rate, steps)`` segments (sample rate
    = batch size / number of the user's examples) composed across rounds. Histories are kept in
    canonical form and epsilons are memoised per distinct history, so thousands of users with
    identical histories cost one accountant call.

    Parameters
    ----------
    eps_error : float, optional
        Additive error allowed to the PRV accountant.
    """

    def __init__(self, *, eps_error: float = DEFAULT_EPS_ERROR) -> None:
        if not eps_error > 0:
            raise ValueError(f"eps_error must be > 0, got {eps_error}")
        self.eps_error = float(eps_error)
        # user -> {(z, q): steps}; zero-cost segments (steps == 0 or q == 0) are not stored
        self._users: dict[int, dict[tuple[float, float], int]] = {}

    def __len__(self) -> int:
        return len(self._users)

    @property
    def user_ids(self) -> list[int]:
        """Users with a recorded history."""
        return sorted(self._users)

    def record(self, user_id: int, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Record ``steps`` DP-SGD steps of one user.

        Parameters
        ----------
        user_id : int
            The user.
        noise_multiplier : float
            DP-SGD noise multiplier.
        sample_rate : float
            Per-example Poisson sampling rate (batch size / user's number of examples).
        steps : int
            Number of optimizer steps taken.
        """
        z, q, n = _check_z(noise_multiplier), _check_q(sample_rate), _check_steps(steps)
        hist = self._users.setdefault(int(user_id), {})
        if n == 0 or q == 0.0:
            return
        hist[(z, q)] = hist.get((z, q), 0) + n

    def record_many(
        self,
        user_ids: Sequence[int] | np.ndarray,
        noise_multiplier: float | Sequence[float] | np.ndarray,
        sample_rates: float | Sequence[float] | np.ndarray,
        steps: int | Sequence[int] | np.ndarray,
    ) -> None:
        """Vectorised :meth:`record`; scalar arguments are broadcast over ``user_ids``."""
        ids = np.asarray(user_ids).reshape(-1)
        zs = np.broadcast_to(np.asarray(noise_multiplier, dtype=np.float64), ids.shape)
        qs = np.broadcast_to(np.asarray(sample_rates, dtype=np.float64), ids.shape)
        ns = np.broadcast_to(np.asarray(steps), ids.shape)
        for u, z, q, n in zip(ids.tolist(), zs.tolist(), qs.tolist(), ns.tolist(), strict=True):
            self.record(u, z, q, n)

    def history(self, user_id: int) -> History:
        """Canonical history ``((z, q, steps), ...)`` of one user (empty if unknown)."""
        hist = self._users.get(int(user_id), {})
        return tuple(sorted((z, q, n) for (z, q), n in hist.items()))

    def groups(self) -> dict[History, list[int]]:
        """Users grouped by identical canonical history."""
        out: dict[History, list[int]] = {}
        for u in sorted(self._users):
            out.setdefault(self.history(u), []).append(u)
        return out

    def epsilon(self, user_id: int, delta: float) -> dict[str, float]:
        """``{"prv", "rdp"}`` epsilons of one user."""
        return compute_epsilons(self.history(user_id), delta, self.eps_error)

    def epsilons(self, delta: float) -> dict[int, dict[str, float]]:
        """Epsilons of every user (one accountant call per distinct history)."""
        out: dict[int, dict[str, float]] = {}
        for hist, users in self.groups().items():
            eps = compute_epsilons(hist, delta, self.eps_error)
            for u in users:
                out[u] = dict(eps)
        return out

    def worst_epsilon(self, delta: float) -> dict[str, Any]:
        """Largest epsilon over users.

        Users are grouped by identical history, and the PRV accountant only runs where needed:
        a single-segment history ``(z, q, T)`` dominated by ``(z', q', T')`` with ``z' <= z``,
        ``q' >= q`` and ``T' >= T`` is skipped (epsilon is monotone in each; multi-segment
        histories are always candidates), and candidates are visited by decreasing RDP epsilon,
        stopping once a candidate's RDP bound is below the largest PRV epsilon found (its true
        epsilon is then below that maximum too).

        Parameters
        ----------
        delta : float
            Target delta.

        Returns
        -------
        dict
            ``{"prv": max headline epsilon, "rdp": max conservative epsilon,
            "user_id": a user attaining the max PRV epsilon (None if no users),
            "n_users": number of users, "n_histories": number of distinct histories}``.
        """
        delta = _check_delta(delta)
        groups = self.groups()
        result: dict[str, Any] = {
            "prv": 0.0,
            "rdp": 0.0,
            "user_id": None,
            "n_users": len(self._users),
            "n_histories": len(groups),
        }
        if not groups:
            return result
        candidates = _undominated(list(groups))
        rdps = {hist: _rdp_epsilon(hist, delta) for hist in candidates}
        candidates.sort(key=lambda h: rdps[h], reverse=True)
        best_prv, best_user = -1.0, None
        for hist in candidates:
            if rdps[hist] < best_prv:
                break  # sorted: no remaining history can beat best_prv
            eps = _prv_epsilon(hist, delta, self.eps_error)
            if eps > best_prv:
                best_prv, best_user = eps, groups[hist][0]
        result.update(prv=best_prv, rdp=rdps[candidates[0]], user_id=best_user)
        return result

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (users grouped by identical history)."""
        return {
            "version": _STATE_VERSION,
            "kind": "sample_level",
            "eps_error": self.eps_error,
            "groups": [
                {"history": [list(s) for s in hist], "users": users}
                for hist, users in self.groups().items()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        if state.get("kind") != "sample_level":
            raise ValueError(f"not a sample-level accounting state: kind={state.get('kind')}")
        if int(state.get("version", _STATE_VERSION)) != _STATE_VERSION:
            raise ValueError(f"unsupported accounting state version {state.get('version')}")
        users: dict[int, dict[tuple[float, float], int]] = {}
        for group in state["groups"]:
            canon = _canonical(group["history"])
            for u in group["users"]:
                users[int(u)] = {(z, q): n for z, q, n in canon}
        self.eps_error = float(state.get("eps_error", DEFAULT_EPS_ERROR))
        self._users = users


def _undominated(histories: list[History]) -> list[History]:
    """Histories that may attain the maximum epsilon (see :meth:`worst_epsilon`)."""
    single = [h for h in histories if len(h) == 1]
    multi = [h for h in histories if len(h) != 1]  # includes the empty history
    if not single:
        return multi
    arr = np.array([h[0] for h in single], dtype=np.float64)  # (n, 3): z, q, steps
    # worse-or-equal privacy in every coordinate: smaller z, larger q, more steps
    key = np.stack([-arr[:, 0], arr[:, 1], arr[:, 2]], axis=1)
    keep = np.ones(len(single), dtype=bool)
    chunk = 1024
    for start in range(0, len(single), chunk):
        block = key[start : start + chunk]  # (b, 3)
        ge = (key[None, :, :] >= block[:, None, :]).all(axis=2)  # (b, n): j dominates-or-equals i
        gt = (key[None, :, :] > block[:, None, :]).any(axis=2)
        keep[start : start + chunk] = ~(ge & gt).any(axis=1)
    return multi + [h for h, k in zip(single, keep, strict=True) if k]
