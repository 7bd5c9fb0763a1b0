"""Assigning users to nodes (each node hosts a cohort of users)."""

from __future__ import annotations

import numpy as np


def num_partitions(n_users: int, users_per_node: int, num_nodes: int = 0) -> int:
    """Number of nodes: ``num_nodes`` when > 0, else ``ceil(n_users / users_per_node)``."""
    if num_nodes > 0:
        if num_nodes > n_users:
            from fedrec.config import ConfigError

            raise ConfigError(f"setting 'num-nodes' = {num_nodes} exceeds the {n_users} users")
        return num_nodes
    return -(-n_users // users_per_node)


def partition_users(n_users: int, n_parts: int, n_fake: int = 0) -> list[np.ndarray]:
    """Users of each node: contiguous, near-equal blocks of user ids (sorted per node).

    The assignment is a pure function of ``(n_users, n_parts, n_fake)``; results do not depend
    on it because every random draw is keyed by user, not by node. The last ``n_fake`` users
    (simulated attackers, ``SplitData.fake_users``) are dealt round-robin over the nodes, so
    they sit inside the normal cohorts rather than filling the last node.
    """
    real = np.array_split(np.arange(n_users - n_fake), n_parts)
    fakes = np.arange(n_users - n_fake, n_users)
    return [np.concatenate([p, fakes[i::n_parts]]).astype(np.int64) for i, p in enumerate(real)]


def participants(users: np.ndarray, fraction: float, seed: int, round_: int) -> np.ndarray:
    """Users taking part in ``round_``: each independently with probability ``fraction``.

    Poisson sampling keyed by ``(seed, round, user)`` only, so it does not depend on how users
    are split across nodes.
    """
    from fedrec import rng

    users = np.asarray(users, dtype=np.int64)
    if fraction >= 1.0:
        return users
    return users[rng.uniform(seed, rng.PARTICIPATION, round_, users) < fraction]
