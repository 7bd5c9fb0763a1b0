"""Tests and audits for fedrec.privacy.mechanism (secret randomness, Poisson sampling, noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedrec import rng
from fedrec.privacy.analysis import compute_epsilons
from fedrec.privacy.mechanism import (
    DP_NOISE,
    DP_PARTICIPATION,
    dp_participants,
    gaussian_noise,
    secret_rng,
)

# ------------------------------------------------------------------ secret randomness


def test_secret_rng_never_repeats_and_ignores_the_keys() -> None:
    a = secret_rng(-1, DP_NOISE, 3).standard_normal(1000)
    b = secret_rng(-1, DP_NOISE, 3).standard_normal(1000)  # same keys: fresh OS entropy
    assert not np.array_equal(a, b)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.15


def test_debug_dp_seed_is_reproducible_and_keyed() -> None:
    a = secret_rng(7, DP_NOISE, 3).standard_normal(100)
    assert np.array_equal(a, secret_rng(7, DP_NOISE, 3).standard_normal(100))
    assert not np.array_equal(a, secret_rng(7, DP_NOISE, 4).standard_normal(100))
    assert not np.array_equal(a, secret_rng(8, DP_NOISE, 3).standard_normal(100))


# ------------------------------------------------------------------ noise


def test_gaussian_noise_shapes_std_and_name_order() -> None:
    shapes = {"emb": (400, 50), "bias": (8,), "scalar": ()}
    a = gaussian_noise(shapes, 2.0, secret_rng(5, DP_NOISE, 1))
    b = gaussian_noise(dict(reversed(list(shapes.items()))), 2.0, secret_rng(5, DP_NOISE, 1))
    assert list(a) == list(shapes) and a["emb"].dtype == np.float64 and a["scalar"].shape == ()
    assert all(np.array_equal(a[k], b[k]) for k in shapes)  # drawn in name order
    assert a["emb"].std() == pytest.approx(2.0, rel=0.02) and abs(a["emb"].mean()) < 0.07
    assert stats.kstest(a["emb"].ravel() / 2.0, "norm").pvalue > 1e-3
    zeros = gaussian_noise(shapes, 0.0, secret_rng(-1, DP_NOISE))
    assert all(not v.any() for v in zeros.values())
    with pytest.raises(ValueError):
        gaussian_noise(shapes, -1.0, secret_rng(-1, DP_NOISE))


def _eps_lower_bound(null: np.ndarray, alt: np.ndarray, delta: float, clip: float) -> float:
    """Clopper-Pearson (95%, Bonferroni over thresholds) epsilon lower bound of a threshold test."""
    thresholds = clip * np.arange(1, 41) / 8
    alpha = 0.05 / len(thresholds)
    best = 0.0
    for t in thresholds:
        fp, fn = int((null > t).sum()), int((alt <= t).sum())
        fpr_ub = stats.beta.ppf(1 - alpha / 2, fp + 1, len(null) - fp) if fp < len(null) else 1.0
        fnr_ub = stats.beta.ppf(1 - alpha / 2, fn + 1, len(alt) - fn) if fn < len(alt) else 1.0
        if 1 - delta - fnr_ub > 0:
            best = max(best, math.log((1 - delta - fnr_ub) / fpr_ub))
    return best


@pytest.mark.parametrize("noise_scale", [1.0, 0.25])
def test_canary_distinguisher_audit(noise_scale: float) -> None:
    """A canary of norm C is inserted or not; each coordinate is an independent 1-D trial.

    With the calibrated noise the empirical epsilon lower bound stays below the accountant's
    epsilon; with a quarter of the noise (a mis-calibrated mechanism) it exceeds it.
    """
    z, clip, delta, n = 1.0, 1.0, 1e-5, 200_000
    accountant_eps = compute_epsilons([(z, 1.0, 1)], delta)["prv"]
    std = z * noise_scale * clip
    without = gaussian_noise({"c": (n,)}, std, secret_rng(2, DP_NOISE, 0))["c"]
    with_canary = clip + gaussian_noise({"c": (n,)}, std, secret_rng(3, DP_NOISE, 0))["c"]
    lb = _eps_lower_bound(without, with_canary, delta, clip)
    if noise_scale == 1.0:
        assert 1.0 < lb < accountant_eps, (lb, accountant_eps)
    else:
        assert lb > accountant_eps, (lb, accountant_eps)


# ------------------------------------------------------------------ Poisson sampling


def test_dp_participants_rate_and_secrecy() -> None:
    ids = np.arange(200_000)
    for q in (0.01, 100 / 6040, 0.3):
        picked = dp_participants(ids, q, round_=2, dp_seed=-1)
        sd = math.sqrt(q * (1 - q) / ids.size)
        assert abs(len(picked) / ids.size - q) < 5 * sd
        assert np.all(np.diff(picked) > 0) and np.isin(picked, ids).all()
    a = dp_participants(ids, 0.2, 2, -1)
    b = dp_participants(ids, 0.2, 2, -1)  # same round, same everything: another cohort
    overlap = len(np.intersect1d(a, b)) / ids.size
    assert abs(overlap - 0.04) < 5 * math.sqrt(0.04 * 0.96 / ids.size)
    assert len(dp_participants(ids, 1.0, 2, -1)) == ids.size
    assert len(dp_participants(ids, 0.0, 2, -1)) == 0
    with pytest.raises(ValueError):
        dp_participants(ids, 1.5, 1, -1)


def test_debug_dp_seed_sampling_is_independent_of_chunking() -> None:
    ids = np.arange(1000)
    whole = dp_participants(ids, 0.1, 5, dp_seed=42)
    chunked = np.concatenate([dp_participants(c, 0.1, 5, 42) for c in np.array_split(ids, 8)])
    np.testing.assert_array_equal(whole, chunked)
    np.testing.assert_array_equal(whole, ids[rng.uniform(42, DP_PARTICIPATION, 5, ids) < 0.1])
    # not the published seed's participation stream
    assert not np.array_equal(whole, ids[rng.uniform(42, rng.PARTICIPATION, 5, ids) < 0.1])
