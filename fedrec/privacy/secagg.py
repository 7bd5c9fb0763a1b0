"""Distributed DP (``dp-trust = secagg``): noise shares, quantisation and pairwise masks.

Each of the ``n`` nodes of a round adds its share ``N(0, z^2 C^2 / n)`` of the noise to its sum of
clipped user updates, quantises it to integers modulo ``M = 2^62`` and adds pairwise masks that
cancel in the sum (Bonawitz et al. 2017, the masking layer of SecAgg/SecAgg+): node ``i`` adds
``m_ij`` for every peer ``j > i`` and subtracts ``m_ji`` for every ``j < i``, where ``m_ij`` is
expanded from the Diffie-Hellman key node ``i`` and node ``j`` agree on (the key agreement itself,
Flower's ``generate_key_pairs`` / ``generate_shared_key``, lives in ``clients/secagg.py``). The
server adds the masked vectors modulo ``M``, the masks cancel, and it learns the sum of the
noisy sums only: one node's masked vector is uniform on ``[0, M)`` to it.

**Noise shares.** The shares are independent, so their sum is ``N(0, z^2 C^2)``: the same
mechanism as the central one, accounted the same way. A node that does not reply leaves masks
that cannot be removed (SecAgg+'s secret sharing of the masks is not implemented) *and* would
lower the total noise to ``(n - k) / n`` of its variance, so the round fails with an error
naming the node (:func:`check_complete`); the run stops and resumes from its checkpoint.

**Quantisation.** A node's noisy sum is rounded to the grid of step ``2R / T`` on ``[-R, R]``
(``T = min(2^50, floor((M - 1) / n))`` levels, so the sum of ``n`` values never wraps modulo
``M``), with
``R`` the public bound :func:`quantisation_bound` (every user of the largest node at ``C`` in the
same coordinate, plus 20 standard deviations of the share). A value outside ``[-R, R]`` is an
error, never a silent clip. Rounding moves each coordinate of the sum by at most ``3 n R / T``;
:func:`quantisation_slack` bounds the L2 norm of that error (an extra sensitivity the accountant
does not count); the server refuses a round where it exceeds ``1e-6 C`` (ML-1M: ~1e-7 of C).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "BOUND_KEY",
    "MODULUS",
    "PEERS_KEY",
    "PUBLIC_KEY",
    "PUBLIC_KEYS_KEY",
    "STAGE_KEY",
    "add_masks",
    "check_complete",
    "dequantize_sum",
    "expand_mask",
    "quantisation_bound",
    "quantisation_slack",
    "quantize",
    "sum_masked",
]

MODULUS_BITS = 62
MODULUS = 1 << MODULUS_BITS
_LOW = np.uint64(MODULUS - 1)


def _levels(n_nodes: int) -> int:
    """``T``: 2^50 (float64 holds the grid points exactly, within a quarter step), fewer when
    ``n`` values of ``T`` would wrap modulo ``M``."""
    if n_nodes < 1:
        raise ValueError(f"secure aggregation needs at least one node, got {n_nodes}")
    return min(1 << 50, (MODULUS - 1) // n_nodes)


def quantisation_bound(max_users: int, clip: float, z: float, n_nodes: int) -> float:
    """Public range ``R`` of one node's noisy sum per coordinate."""
    return max_users * float(clip) + 20.0 * float(z) * float(clip) / math.sqrt(n_nodes) + 1e-12


def quantisation_slack(n_params: int, bound: float, n_nodes: int) -> float:
    """Largest L2 norm of the error of the decoded sum: per coordinate and node, half a step
    of rounding plus a quarter step of float64 rounding in the division, and float64 rounding
    of the integer total (at most ``n / 4`` steps); 1.5 ``n`` steps bounds all of it."""
    step = 2.0 * bound / _levels(n_nodes)
    return math.sqrt(n_params) * 1.5 * n_nodes * step


def quantize(values: Mapping[str, np.ndarray], bound: float,
             n_nodes: int) -> dict[str, np.ndarray]:
    """``round((x + R) / step)`` as uint64 in ``[0, T]``; raises if some ``|x| > R``."""
    step = 2.0 * bound / _levels(n_nodes)
    out = {}
    for name, x in values.items():
        x = np.asarray(x, dtype=np.float64)
        if x.size and not (np.isfinite(x).all() and np.abs(x).max() <= bound):
            raise ValueError(
                f"secure aggregation: parameter '{name}' has a value outside the quantisation "
                f"range +-{bound:.6g} (max |x| = {np.abs(x).max():.6g})")
        out[name] = np.rint((x + bound) / step).astype(np.uint64)
    return out


def dequantize_sum(total: Mapping[str, np.ndarray], bound: float,
                   n_nodes: int) -> dict[str, np.ndarray]:
    """The float sum of ``n_nodes`` quantised values from their integer sum."""
    step = 2.0 * bound / _levels(n_nodes)
    return {k: np.asarray(v, dtype=np.uint64).astype(np.float64) * step - n_nodes * bound
            for k, v in total.items()}


def expand_mask(key: bytes, round_: int, shapes: Mapping[str, Sequence[int]]
                ) -> dict[str, np.ndarray]:
    """Uniform uint64 masks on ``[0, M)`` expanded from a shared key (Philox keyed by
    ``blake2b(key, round)``, 128 bits)."""
    digest = hashlib.blake2b(key + int(round_).to_bytes(8, "little"), digest_size=16).digest()
    gen = np.random.Generator(np.random.Philox(key=int.from_bytes(digest, "little")))
    return {name: gen.integers(0, MODULUS, size=tuple(shapes[name]), dtype=np.uint64)
            for name in sorted(shapes)}


def add_masks(quantised: Mapping[str, np.ndarray], me: int, peer_keys: Mapping[int, bytes],
              round_: int) -> dict[str, np.ndarray]:
    """``q + sum_{j > me} m_{me,j} - sum_{j < me} m_{j,me}`` modulo ``M``.

    Parameters
    ----------
    quantised : mapping of str to uint64 array
    me : int
        This node's id.
    peer_keys : mapping of int to bytes
        The key agreed with each other node of the round.
    """
    out = {k: np.asarray(v, dtype=np.uint64).copy() for k, v in quantised.items()}
    shapes = {k: v.shape for k, v in out.items()}
    with np.errstate(over="ignore"):
        for peer, key in peer_keys.items():
            if peer == me:
                continue
            masks = expand_mask(key, round_, shapes)
            for k in out:
                out[k] = out[k] + masks[k] if me < peer else out[k] - masks[k]
        return {k: np.asarray(v & _LOW, dtype=np.uint64) for k, v in out.items()}


def sum_masked(replies: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Sum of masked vectors modulo ``M`` (the masks cancel)."""
    total: dict[str, np.ndarray] = {}
    with np.errstate(over="ignore"):
        for rep in replies:
            for k, v in rep.items():
                v = np.asarray(v).view(np.uint64) if np.asarray(v).dtype == np.int64 else \
                    np.asarray(v, dtype=np.uint64)
                total[k] = total[k] + v if k in total else v.copy()
        return {k: np.asarray(v & _LOW, dtype=np.uint64) for k, v in total.items()}


def check_complete(expected: Sequence[int], replied: Sequence[int], round_: int) -> None:
    """Raise when a node of the key exchange did not reply (its masks cannot be removed and the
    noise would fall short)."""
    missing = sorted(set(expected) - set(replied))
    extra = sorted(set(replied) - set(expected))
    if missing or extra:
        raise RuntimeError(
            f"secure aggregation, round {round_}: "
            + (f"no reply from node(s) {missing}: their pairwise masks cannot be removed and "
               "their noise shares are missing, so the round fails (resume the run)"
               if missing else f"replies from node(s) {extra} outside the key exchange"))


#: Config keys of the key exchange (server -> nodes) shared by ``clients/`` and ``server/``.
STAGE_KEY = "fedrec.secagg-stage"  # query message: "keys"
PEERS_KEY = "fedrec.secagg-peers"  # train message: node ids of the round, in key order
PUBLIC_KEYS_KEY = "fedrec.secagg-public-keys"  # train message: their public keys
BOUND_KEY = "fedrec.secagg-bound"  # train message: quantisation range R
PUBLIC_KEY = "public-key"  # query reply: the node's public key for this round
