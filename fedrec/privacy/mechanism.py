"""Numerical pieces of user-level DP-FedAvg: secret randomness, Poisson sampling, Gaussian noise.

Pure numpy, no Flower. Used as follows (DESIGN section 5):

1. :func:`dp_participants` decides, on the node that hosts the users, which of them take part in
   a round: each independently with probability ``q`` (Poisson sampling, as the accountant
   assumes), from :func:`secret_rng`.
2. Each sampled user's update of the shared parameters is clipped to ``C`` and summed on the
   node (:mod:`fedrec.train.cohort`).
3. :func:`gaussian_noise` draws ``N(0, std^2)`` from :func:`secret_rng`: the server adds
   ``N(0, z^2 C^2)`` once to the total (``dp-trust = server``), or each of ``n`` nodes adds
   ``N(0, z^2 C^2 / n)`` to its own sum before secure aggregation (``dp-trust = secagg``,
   :mod:`fedrec.privacy.secagg`); the total is divided by the fixed expected count ``qN``.

**Secret randomness.** The run ``seed`` is published (``config.json``, ``summary.json``), so
nothing that protects privacy may derive from it: with the seed an attacker regenerates the
noise and predicts every cohort (then sampling amplifies nothing). :func:`secret_rng` keys a
Philox generator (a counter-based generator built from a block cipher, Salmon et al. 2011) with
128 bits of OS entropy (``secrets``), drawn afresh for every use and never stored. A debug
``dp-seed >= 0`` keys it by ``(dp-seed, stream, keys)`` instead: runs become reproducible and the
run says in ``summary.json`` that it is not private. Philox is not a certified CSPRNG and the
sampler is the usual floating-point Gaussian (Mironov 2012's attack on the low bits of
floating-point noise is not addressed).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence

import numpy as np

from fedrec import rng

__all__ = [
    "DP_NOISE",
    "DP_PARTICIPATION",
    "DP_SECAGG",
    "dp_participants",
    "gaussian_noise",
    "secret_rng",
]

#: Streams of the debug ``dp-seed`` keys (never used with OS entropy).
DP_NOISE = rng.NOISE
DP_PARTICIPATION = 105
DP_SECAGG = 106


def secret_rng(dp_seed: int, stream: int, *keys: int) -> np.random.Generator:
    """A generator for DP randomness: OS entropy, or the debug ``dp-seed``.

    Parameters
    ----------
    dp_seed : int
        ``< 0``: 128 bits from :mod:`secrets` (the private mode); ``>= 0``: the generator is a
        function of ``(dp_seed, stream, *keys)`` (debug runs; not private).
    stream, keys : int
        What the randomness is for (only used with a debug ``dp-seed``).
    """
    if dp_seed < 0:
        key = secrets.randbits(128)
    else:
        key = int(rng.hash64(dp_seed, stream, *keys)) | (int(rng.hash64(dp_seed, stream, *keys,
                                                                        1)) << 64)
    return np.random.Generator(np.random.Philox(key=key))


def dp_participants(users: np.ndarray, q: float, round_: int, dp_seed: int) -> np.ndarray:
    """Users of ``users`` taking part in ``round_``: each independently with probability ``q``.

    With OS entropy nobody (the server, a reader of the run directory) can predict the cohort,
    which is what the amplification by sampling in the accountant assumes. With a debug
    ``dp-seed`` the draw of user ``u`` is ``rng.uniform(dp_seed, DP_PARTICIPATION, round, u)``,
    so any split of users across nodes gives the same cohort (tests).
    """
    users = np.asarray(users, dtype=np.int64)
    q = float(q)
    if not (0.0 <= q <= 1.0):
        raise ValueError(f"q must be in [0, 1], got {q}")
    if q >= 1.0:
        return users
    if dp_seed >= 0:
        u = rng.uniform(dp_seed, DP_PARTICIPATION, round_, users)
    else:
        u = secret_rng(dp_seed, DP_PARTICIPATION).random(len(users))
    return users[u < q]


def gaussian_noise(
    shapes: Mapping[str, Sequence[int]], std: float, gen: np.random.Generator
) -> dict[str, np.ndarray]:
    """``N(0, std^2)`` float64 noise for named tensors, drawn in sorted name order from ``gen``.

    Parameters
    ----------
    shapes : mapping of str to shape
        Tensor names and shapes.
    std : float
        Standard deviation (``0`` gives zeros).
    gen : numpy.random.Generator
        From :func:`secret_rng`.
    """
    std = float(std)
    if not (std >= 0 and math.isfinite(std)):
        raise ValueError(f"std must be finite and >= 0, got {std}")
    out: dict[str, np.ndarray] = {}
    for name in sorted(shapes):
        shape = tuple(int(s) for s in shapes[name])
        out[name] = (gen.standard_normal(shape) * std if std > 0
                     else np.zeros(shape, dtype=np.float64))
    return {name: out[name] for name in shapes}
