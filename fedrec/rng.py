"""Counter-based random numbers: a value depends only on its keys, never on call order.

Every random choice that belongs to one user (negatives, batch order, initial embedding,
participation in a round) is drawn from ``hash(seed, stream, round, user, ...)``. A user's
randomness is then the same whether it trains alone, in a cohort of 8 or of 6,040 users, which
is what makes results independent of ``users-per-node``.
"""

from __future__ import annotations

import numpy as np

# Streams: one constant per kind of random choice.
NEGATIVES = 1
SHUFFLE = 2
USER_INIT = 3
PARTICIPATION = 4
PARTITION = 5
KG_NEIGHBOURS = 6  # KGCN's fixed-size neighbour sample (fedrec.data.item_features)
SPLIT = 7  # ctr / cold-items splits (fedrec.data.split_ctr, split_cold)
EXPLAIN = 21  # the random other reason of explanation fidelity checks (fedrec.explain)
NOISE = 101  # DP noise under a debug dp-seed only (fedrec.privacy.mechanism; else OS entropy)
DPSGD_BATCH = 102  # Poisson batches of per-user DP-SGD, keyed by a secret key (fedrec.train.dpsgd)
DPSGD_NOISE = 103  # per-step DP-SGD noise (fedrec.train.dpsgd)
DPSGD_FINAL = 104  # end-of-round DP-SGD noise on rows not used since (dpsgd)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (wrapping uint64 arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash64(*keys: np.ndarray | int) -> np.ndarray:
    """Hash broadcastable integer keys to uniformly distributed uint64 values."""
    with np.errstate(over="ignore"):
        h = np.uint64(0x243F6A8885A308D3)
        for k in keys:
            k = np.asarray(k).astype(np.int64).view(np.uint64)
            h = _mix(h ^ k)
        return np.asarray(h, dtype=np.uint64)


def uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Float64 uniform in [0, 1) from keys."""
    return (hash64(*keys) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def normal(*keys: np.ndarray | int) -> np.ndarray:
    """Standard normal from keys (Box-Muller on two derived uniforms)."""
    u1 = uniform(*keys, 0)
    u2 = uniform(*keys, 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
