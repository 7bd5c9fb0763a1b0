"""Tests and audits for fedrec.privacy.mechanism (clipping, noise, Poisson sampling)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import stats

from fedrec import rng
from fedrec.data.partition import participants
from fedrec.privacy.accounting import compute_epsilons
from fedrec.privacy.mechanism import (
    gaussian_noise_like,
    noisy_mean,
    per_user_clip_factors,
    poisson_sample,
)

# ---------------------------------------------------------------------------------------------
# clipping
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_clip_factors_bound_every_user(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    n_users, dim, clip = 500, 64, 0.7
    scales = torch.logspace(-4, 4, n_users, dtype=torch.float64)
    updates = torch.randn(n_users, dim, generator=gen, dtype=torch.float64) * scales[:, None]
    updates[3] = 0.0  # a user whose update is zero
    updates = updates.to(dtype)
    # norms as a segment sum over "item rows" + a dense part, like the server computes them
    sq = updates[:, :48].pow(2).sum(1) + updates[:, 48:].pow(2).sum(1)
    factors = per_user_clip_factors(sq, clip)
    assert factors.dtype == dtype and factors.shape == (n_users,)
    assert bool(((factors > 0) & (factors <= 1)).all())
    clipped_norms = (updates.double() * factors.double()[:, None]).norm(dim=1)
    assert bool((clipped_norms <= clip * (1 + 1e-6)).all())
    small = updates.double().norm(dim=1) <= clip
    assert bool((factors[small] == 1).all())
    assert factors[3] == 1
    # users above the bound end up exactly on it
    big = ~small
    assert torch.allclose(clipped_norms[big], torch.full_like(clipped_norms[big], clip), rtol=1e-6)


def test_clip_factors_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        per_user_clip_factors(torch.tensor([1.0, -1.0]), 1.0)
    with pytest.raises(ValueError):
        per_user_clip_factors(torch.tensor([1.0, float("nan")]), 1.0)
    with pytest.raises(ValueError):
        per_user_clip_factors(torch.tensor([1.0]), 0.0)
    assert per_user_clip_factors(torch.zeros(0), 1.0).shape == (0,)


# ---------------------------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------------------------


def test_gaussian_noise_is_seeded_and_independent() -> None:
    shapes = {"emb": (100, 8), "bias": (8,)}
    a = gaussian_noise_like(shapes, 2.0, seed=5, round=3)
    b = gaussian_noise_like(dict(reversed(list(shapes.items()))), 2.0, seed=5, round=3)
    only = gaussian_noise_like({"bias": (8,)}, 2.0, seed=5, round=3)
    other_round = gaussian_noise_like(shapes, 2.0, seed=5, round=4)
    other_seed = gaussian_noise_like(shapes, 2.0, seed=6, round=3)
    assert a["emb"].dtype == torch.float64 and a["emb"].shape == (100, 8)
    assert torch.equal(a["emb"], b["emb"]) and torch.equal(a["bias"], only["bias"])
    assert not torch.equal(a["emb"], other_round["emb"])
    assert not torch.equal(a["emb"], other_seed["emb"])
    corr = np.corrcoef(a["emb"].flatten().numpy(), other_round["emb"].flatten().numpy())[0, 1]
    assert abs(corr) < 0.15
    zeros = gaussian_noise_like(shapes, 0.0, seed=5, round=3)
    assert all(bool((t == 0).all()) for t in zeros.values())


def _calibration_ratio(mechanism: Callable[..., dict[str, torch.Tensor]]) -> float:
    """Empirical std of (noisy mean - true mean) over the std the accountant assumes."""
    z, clip, n_users, q = 1.1, 0.5, 6040, 100 / 6040
    expected_count = q * n_users
    gen = torch.Generator().manual_seed(1)
    sums = {"emb": torch.randn(250, 32, generator=gen, dtype=torch.float64), "w": torch.ones(10)}
    true_mean = {k: v.double() / expected_count for k, v in sums.items()}
    errors = []
    for rnd in range(25):  # 25 rounds x 8010 coordinates = 200k draws
        out = mechanism(sums, z, clip, expected_count, 11, rnd)
        errors += [(out[k].double() - true_mean[k]).flatten() for k in sums]
    err = torch.cat(errors)
    assert abs(float(err.mean())) < 5 * float(err.std()) / math.sqrt(err.numel())  # unbiased
    return float(err.std()) / (z * clip / expected_count)


def test_noise_calibration_audit() -> None:
    ratio = _calibration_ratio(noisy_mean)
    assert 0.95 <= ratio <= 1.05, ratio


def test_noise_calibration_audit_catches_half_noise() -> None:
    def half_noise(sums, z, clip, count, seed, rnd):
        return noisy_mean(sums, z / 2, clip, count, seed, rnd)

    ratio = _calibration_ratio(half_noise)
    assert ratio == pytest.approx(0.5, abs=0.02)
    assert not 0.95 <= ratio <= 1.05


def test_noisy_mean_keeps_dtype_and_is_deterministic() -> None:
    sums = {"a": torch.ones(4, 3, dtype=torch.float32)}
    x = noisy_mean(sums, 1.0, 1.0, 10.0, seed=0, round=1)
    y = noisy_mean(sums, 1.0, 1.0, 10.0, seed=0, round=1)
    assert x["a"].dtype == torch.float32 and torch.equal(x["a"], y["a"])
    exact = noisy_mean(sums, 0.0, 1.0, 10.0, seed=0, round=1)
    assert torch.allclose(exact["a"], torch.full((4, 3), 0.1))
    with pytest.raises(ValueError):
        noisy_mean(sums, 1.0, 1.0, 0.0, seed=0, round=1)


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

    With the calibrated mechanism the empirical epsilon lower bound stays below the accountant's
    epsilon; with a quarter of the noise (a mis-calibrated mechanism) it exceeds it.
    """
    z, clip, delta, n = 1.0, 1.0, 1e-5, 200_000
    accountant_eps = compute_epsilons([(z, 1.0, 1)], delta)["prv"]
    without = noisy_mean({"c": torch.zeros(n)}, z * noise_scale, clip, 1.0, seed=2, round=0)
    with_canary = noisy_mean({"c": torch.full((n,), clip)}, z * noise_scale, clip, 1.0, 3, 0)
    lb = _eps_lower_bound(without["c"].numpy(), with_canary["c"].numpy(), delta, clip)
    if noise_scale == 1.0:
        assert 1.0 < lb < accountant_eps, (lb, accountant_eps)
    else:
        assert lb > accountant_eps, (lb, accountant_eps)


# ---------------------------------------------------------------------------------------------
# Poisson sampling
# ---------------------------------------------------------------------------------------------


def test_poisson_sample_uses_the_participation_stream() -> None:
    """Same decisions as fedrec.rng / data.partition.participants (one participation stream)."""
    users = np.arange(3000, dtype=np.int64)
    mask = poisson_sample(users, 0.05, seed=9, round=4)
    np.testing.assert_array_equal(users[mask], participants(users, 0.05, seed=9, round_=4))
    np.testing.assert_array_equal(mask, rng.uniform(9, rng.PARTICIPATION, 4, users) < 0.05)


def test_poisson_sample_rate() -> None:
    ids = np.arange(200_000)
    for q in (0.01, 100 / 6040, 0.3):
        mask = poisson_sample(ids, q, seed=7, round=2)
        assert mask.dtype == np.bool_ and mask.shape == ids.shape
        sd = math.sqrt(q * (1 - q) / ids.size)
        assert abs(mask.mean() - q) < 5 * sd
    assert not poisson_sample(ids, 0.0, 7, 2).any()
    assert poisson_sample(ids, 1.0, 7, 2).all()


def test_poisson_sample_independent_of_chunking() -> None:
    ids = np.arange(1000)
    whole = poisson_sample(ids, 0.1, seed=42, round=5)
    chunked = np.concatenate([poisson_sample(c, 0.1, 42, 5) for c in np.array_split(ids, 8)])
    np.testing.assert_array_equal(whole, chunked)
    perm = np.random.default_rng(0).permutation(1000)
    np.testing.assert_array_equal(poisson_sample(ids[perm], 0.1, 42, 5), whole[perm])
    # torch input, other int dtype, python list: same decisions
    as_tensor = poisson_sample(torch.arange(1000), 0.1, 42, 5)
    assert as_tensor.dtype == torch.bool
    np.testing.assert_array_equal(as_tensor.numpy(), whole)
    np.testing.assert_array_equal(poisson_sample(ids.astype(np.int32), 0.1, 42, 5), whole)
    np.testing.assert_array_equal(poisson_sample(list(range(1000)), 0.1, 42, 5), whole)


def test_poisson_sample_varies_with_round_and_seed() -> None:
    ids = np.arange(50_000)
    q = 0.2
    a = poisson_sample(ids, q, 1, 0)
    b = poisson_sample(ids, q, 1, 1)
    c = poisson_sample(ids, q, 2, 0)
    for other in (b, c):
        both = (a & other).mean()
        assert abs(both - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / ids.size)
    # consecutive ids are not correlated within a round
    corr = np.corrcoef(a[:-1].astype(float), a[1:].astype(float))[0, 1]
    assert abs(corr) < 0.03
    with pytest.raises(ValueError):
        poisson_sample(ids, 1.5, 1, 0)
    with pytest.raises(TypeError):
        poisson_sample(np.array([0.5]), 0.1, 1, 0)
