"""Privacy analysis: the epsilon of a composition of Poisson-subsampled Gaussian mechanisms.

The maths behind :mod:`fedrec.privacy.accountants` and :mod:`fedrec.privacy.calibration`
(opacus keeps the same split: ``accountants/``, ``accountants/utils.py``, ``accountants/analysis``).
Both DP modes compose Poisson-subsampled Gaussian mechanisms, accounted with opacus:

* PRV (``opacus.accountants.PRVAccountant``, Gopi et al. 2021) gives the headline epsilon. The
  value reported is opacus' *upper* bound, i.e. the numerical estimate plus ``eps_error``.
* RDP (``opacus.accountants.RDPAccountant``) gives the conservative bound. opacus converts RDP to
  (epsilon, delta) with Balle et al. 2020, Thm. 21; we use opacus' default order grid extended at
  both ends (orders below 1.1 and above 63), which only ever lowers the bound when the optimum
  lies at an edge of the default grid and leaves interior optima untouched.

Adjacency is add/remove of one unit (one user for user-level DP, one interaction of one user for
sample-level DP-SGD), which is what the Poisson-subsampled Gaussian analyses in opacus assume and
what DP-FedAvg with a fixed denominator ``qN`` satisfies.

Special cases handled here rather than in opacus:

* a step with ``noise_multiplier == 0`` and ``sample_rate > 0`` gives ``inf``;
* steps with ``sample_rate == 0`` cost nothing;
* histories where every step has ``sample_rate == 1`` (no subsampling) are composed exactly: ``T``
  Gaussian mechanisms with noise multipliers ``z_i`` are ``mu``-GDP with
  ``mu = sqrt(sum(T_i / z_i**2))`` and the (epsilon, delta) curve is known in closed form;
* when the PRV discretisation would be too large (many steps, large epsilon) ``eps_error`` is
  coarsened so the domain stays at most :data:`PRV_MAX_DOMAIN_SIZE` points; when that would make
  the error large, or opacus raises, the PRV value falls back to the RDP bound with a warning.

**BLAS threads.** opacus' PRV discretisation calls ``np.dot`` on large arrays. Inside a Flower
ServerApp thread under the Ray simulation engine, OpenBLAS' own thread pool spun forever in
``exec_blas`` (5 runs of 6 hung before round 1); every accountant call here therefore runs with
the BLAS and OpenMP pools limited to one thread (:func:`single_threaded_blas`, threadpoolctl),
which is also faster for these sizes (0.2 s per calibration alone).

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
from threadpoolctl import threadpool_limits

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EPS_ERROR",
    "PRV_MAX_DOMAIN_SIZE",
    "RDP_ORDERS",
    "compute_epsilons",
    "default_delta",
    "single_threaded_blas",
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

Segment = tuple[float, float, int]
History = tuple[Segment, ...]


def single_threaded_blas() -> threadpool_limits:
    """Context manager limiting BLAS/OpenMP pools to one thread (see the module doc)."""
    return threadpool_limits(limits=1)


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


# ------------------------------------------------------------------ validation, canonical form


def check_z(z: float) -> float:
    z = float(z)
    if not (z >= 0.0 and math.isfinite(z)):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {z}")
    return z


def check_q(q: float) -> float:
    q = float(q)
    if not (0.0 <= q <= 1.0):
        raise ValueError(f"sample_rate must be in [0, 1], got {q}")
    return q


def check_delta(delta: float) -> float:
    delta = float(delta)
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return delta


def check_accountant(accountant: str) -> None:
    if accountant not in ("prv", "rdp"):
        raise ValueError(f"accountant must be 'prv' or 'rdp', got {accountant!r}")


def check_steps(steps: int) -> int:
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    return int(steps)


def _canonical(history: Iterable[Sequence[Any]]) -> History:
    """Reduce a history to a hashable, order-free form (composition is commutative)."""
    merged: dict[tuple[float, float], int] = {}
    for z, q, steps in history:
        z, q, steps = check_z(z), check_q(q), check_steps(steps)
        if steps == 0 or q == 0.0:
            continue  # costs nothing
        merged[(z, q)] = merged.get((z, q), 0) + steps
    return tuple(sorted((z, q, n) for (z, q), n in merged.items()))


# ------------------------------------------------------------------ epsilons (memoised)


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
    delta = check_delta(delta)
    with single_threaded_blas():
        return {
            "prv": _prv_epsilon(canon, delta, float(eps_error)),
            "rdp": _rdp_epsilon(canon, delta),
        }
