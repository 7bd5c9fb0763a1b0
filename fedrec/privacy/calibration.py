"""Calibration: the smallest noise multiplier that meets a privacy budget (opacus'
``get_noise_multiplier``), for user-level DP-FedAvg (:func:`noise_for_target`) and for per-user
DP-SGD, where every user must meet the budget (:func:`noise_for_target_worst_user`).

Every accountant call runs with BLAS limited to one thread (:mod:`fedrec.privacy.analysis`)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from fedrec.privacy.analysis import (
    DEFAULT_EPS_ERROR,
    check_accountant,
    check_delta,
    check_q,
    check_steps,
    compute_epsilons,
    single_threaded_blas,
)

logger = logging.getLogger(__name__)

__all__ = ["noise_for_target", "noise_for_target_worst_user", "worst_epsilon"]

_MIN_NOISE = 1e-4


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
    histogram_ratio: float = 0.0,
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
    histogram_ratio : float, optional
        ``> 0``: the rounds follow one release without sampling (``q = 1``) at noise multiplier
        ``histogram_ratio * z`` (``item-bias-init = popularity``), accounted together.

    Returns
    -------
    float
        The noise multiplier ``z``.
    """
    check_accountant(accountant)
    delta = check_delta(delta)
    q = check_q(q)
    rounds = check_steps(rounds)
    target_epsilon = float(target_epsilon)
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    if math.isinf(target_epsilon) or rounds == 0 or q == 0.0:
        return 0.0

    def eps(z: float) -> float:
        first = [(histogram_ratio * z, 1.0, 1)] if histogram_ratio > 0 else []
        return compute_epsilons([*first, (z, q, rounds)], delta, eps_error)[accountant]

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
    with warnings.catch_warnings(), single_threaded_blas():
        warnings.simplefilter("ignore")
        rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(_PROXY_ORDERS))
        eps, _ = get_privacy_spent(orders=list(_PROXY_ORDERS), rdp=rdp, delta=delta)
    return float(eps)


def worst_epsilon(
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

    Like :func:`noise_for_target`, but bracketed from the fast RDP
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
        eps, i_prv, i_rdp = worst_epsilon(sigma, hist, delta, eps_error)
        if eps[accountant] <= target_epsilon:
            return sigma
        cand = hist[i_prv if accountant == "prv" else i_rdp]
        if cand in tried:  # tolerance of the solver only: nudge up
            sigma *= 1.0 + 1e-3
            continue
        tried.add(cand)
        logger.info("sample-level calibration: the user with q=%.4g, %d steps is worse; raising "
                 "sigma", cand[0], cand[1])
        sigma = max(sigma, _solve_sigma(*cand, target_epsilon, delta, accountant, eps_error))
