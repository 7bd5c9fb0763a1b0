"""Numerical pieces of user-level DP-FedAvg: clipping, seeded Gaussian noise, Poisson sampling.

Pure torch/numpy, no Flower. The server (or the aggregating node) uses them as follows:

1. :func:`poisson_sample` decides, per user and round, whether the user takes part. The decision
   depends only on ``(seed, round, user_id)``, so any split of users across nodes gives the same
   cohort.
2. Each sampled user's update of the shared parameters is scaled by
   :func:`per_user_clip_factors` (factor ``min(1, C / ||delta_u||)``) and summed.
3. :func:`noisy_mean` adds ``N(0, z^2 C^2)`` once to the sum and divides by the fixed expected
   cohort size ``qN`` (not the realised size, which would leak it).

Notes
-----
The noise comes from torch's (non-cryptographic) CPU generator (Mersenne Twister) in float64 and is
reproducible from ``(seed, round)``; that is right for research runs and audits. A deployment
would need a secret seed and a secure, floating-point-safe sampler (cf. Mironov 2012).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from fedrec import rng

logger = logging.getLogger(__name__)

__all__ = [
    "NOISE_STREAM",
    "gaussian_noise_like",
    "noisy_mean",
    "per_user_clip_factors",
    "poisson_sample",
]

#: Stream key of the DP noise seeds in :mod:`fedrec.rng`.
NOISE_STREAM = rng.NOISE


def _noise_seed(seed: int, round: int, name: str) -> int:
    """63-bit torch seed from the counter-based hash of ``(seed, stream, round, name)``."""
    name_word = int.from_bytes(
        hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little"
    )
    word = rng.hash64(seed, NOISE_STREAM, round, name_word >> 1)
    return int(word) & ((1 << 63) - 1)


def per_user_clip_factors(sq_norms: Tensor, clip: float) -> Tensor:
    """Per-user clipping factors ``min(1, C / ||delta_u||)``.

    Parameters
    ----------
    sq_norms : torch.Tensor
        ``(n_users,)`` squared L2 norms of each user's whole update of the shared parameters.
    clip : float
        Clipping bound ``C > 0``.

    Returns
    -------
    torch.Tensor
        ``(n_users,)`` factors in ``(0, 1]``, same dtype and device as ``sq_norms``; users with a
        zero update get 1. Computed in float64 so ``factor * norm <= C (1 + 1e-12)``.
    """
    clip = float(clip)
    if not (clip > 0 and math.isfinite(clip)):
        raise ValueError(f"clip must be finite and > 0, got {clip}")
    sq = sq_norms.detach().to(torch.float64)
    if sq.numel() and not bool(torch.isfinite(sq).all() and (sq >= 0).all()):
        raise ValueError("squared norms must be finite and non-negative")
    norms = sq.sqrt()
    # C / 0 = inf -> clamped to 1
    factors = torch.clamp(clip / norms, max=1.0)
    return factors.to(dtype=sq_norms.dtype if sq_norms.is_floating_point() else torch.float64)


def gaussian_noise_like(
    shapes: Mapping[str, Sequence[int]],
    std: float,
    seed: int,
    round: int,
    *,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Seeded ``N(0, std^2)`` float64 noise for named tensors.

    Each tensor gets its own ``torch.Generator`` seeded from a counter-based hash of
    ``(seed, round, name)``, so the noise of one tensor does not depend on which other tensors are
    requested or in which order. Noise is drawn on the CPU (reproducible across devices) and then
    moved to ``device``.

    Parameters
    ----------
    shapes : mapping of str to shape
        Tensor names and shapes.
    std : float
        Standard deviation (``0`` gives zeros).
    seed : int
        Run seed.
    round : int
        Round number.
    device : torch.device or str, optional
        Where to put the result (CPU by default).

    Returns
    -------
    dict of str to torch.Tensor
        float64 noise tensors.
    """
    std = float(std)
    if not (std >= 0 and math.isfinite(std)):
        raise ValueError(f"std must be finite and >= 0, got {std}")
    out: dict[str, Tensor] = {}
    for name, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        if std == 0.0:
            noise = torch.zeros(shape, dtype=torch.float64)
        else:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(_noise_seed(seed, round, name))
            noise = torch.randn(shape, generator=gen, dtype=torch.float64).mul_(std)
        out[name] = noise if device is None else noise.to(device)
    return out


def noisy_mean(
    sum_update: Mapping[str, Tensor],
    noise_multiplier: float,
    clip: float,
    expected_count: float,
    seed: int,
    round: int,
) -> dict[str, Tensor]:
    """DP-FedAvg aggregate ``(sum + N(0, z^2 C^2)) / (qN)``.

    Parameters
    ----------
    sum_update : mapping of str to torch.Tensor
        Sum over sampled users of their clipped updates.
    noise_multiplier : float
        ``z``.
    clip : float
        Clipping bound ``C``.
    expected_count : float
        Fixed denominator ``qN`` (expected cohort size), independent of the realised cohort.
    seed : int
        Run seed.
    round : int
        Round number (noise differs per round, reproducible per ``(seed, round)``).

    Returns
    -------
    dict of str to torch.Tensor
        Noisy mean update, each tensor with the dtype and device of the corresponding sum (noise
        added in float64).
    """
    z, clip, expected_count = float(noise_multiplier), float(clip), float(expected_count)
    if not (z >= 0 and math.isfinite(z)):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {z}")
    if not (clip > 0 and math.isfinite(clip)):
        raise ValueError(f"clip must be finite and > 0, got {clip}")
    if not (expected_count > 0 and math.isfinite(expected_count)):
        raise ValueError(f"expected_count must be finite and > 0, got {expected_count}")
    if z == 0.0:
        logger.debug("noisy_mean with noise_multiplier=0: no privacy")
    noise = gaussian_noise_like(
        {k: tuple(v.shape) for k, v in sum_update.items()}, z * clip, seed, round
    )
    out: dict[str, Tensor] = {}
    for name, total in sum_update.items():
        noisy = total.detach().to(torch.float64) + noise[name].to(total.device)
        out[name] = (noisy / expected_count).to(total.dtype)
    return out


def poisson_sample(
    user_ids: np.ndarray | Tensor | Sequence[int], q: float, seed: int, round: int
) -> np.ndarray | Tensor:
    """Independent Poisson sampling of users with rate ``q``.

    User ``u`` is sampled in round ``r`` iff ``fedrec.rng.uniform(seed, PARTICIPATION, r, u) < q``:
    53 bits of a SplitMix64 hash chain of the keys, the same participation stream as
    :func:`fedrec.data.partition.participants`. The decision depends on nothing else, so
    sampling any partition of the ids (in any order, on any node) gives the same cohort.

    Parameters
    ----------
    user_ids : numpy.ndarray, torch.Tensor or sequence of int
        Integer user ids (any shape).
    q : float
        Sampling rate in ``[0, 1]``.
    seed : int
        Run seed.
    round : int
        Round number.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Boolean mask of the same shape; a ``torch.bool`` tensor on the same device if
        ``user_ids`` is a tensor, else a numpy array.
    """
    q = float(q)
    if not (0.0 <= q <= 1.0):
        raise ValueError(f"q must be in [0, 1], got {q}")
    is_tensor = isinstance(user_ids, Tensor)
    ids = user_ids.detach().cpu().numpy() if is_tensor else np.asarray(user_ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"user_ids must be integers, got dtype {ids.dtype}")
    u = rng.uniform(seed, rng.PARTICIPATION, round, ids.astype(np.int64, copy=False))
    mask = np.asarray(u < q, dtype=bool).reshape(ids.shape)
    if is_tensor:
        return torch.from_numpy(mask).to(user_ids.device)
    return mask
