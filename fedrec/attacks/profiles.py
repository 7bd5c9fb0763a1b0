"""Fake users for the attacks: the target item, their number and their profiles."""

from __future__ import annotations

import dataclasses

import numpy as np

from fedrec.config import Config, ConfigError
from fedrec.data.schema import SplitData

#: ``fedrec.rng``-style stream ids of the attack's draws (distinct from training's streams).
_TARGET_STREAM, _PROFILE_STREAM, _SIZE_STREAM = 0xA77AC, 0xFA4E, 0x512E


def item_counts(split: SplitData) -> np.ndarray:
    """Training interactions per item (real users only)."""
    n_real = split.n_users - split.fake_users
    end = int(split.train_indptr[n_real])
    return np.bincount(split.train_items[:end], minlength=split.n_items)


def target_item(cfg: Config, split: SplitData) -> int:
    """``attack-target``, or a seeded pick among items with 1 .. median training interactions
    (an unpopular item that exists)."""
    t = cfg.robust.attack_target
    if t >= 0:
        if t >= split.n_items:
            raise ConfigError(f"setting 'attack-target' = {t} is not an item: {split.name} has "
                              f"{split.n_items} items (0 .. {split.n_items - 1})")
        return t
    counts = item_counts(split)
    pool = np.flatnonzero((counts >= 1) & (counts <= np.median(counts[counts > 0])))
    rs = np.random.default_rng([cfg.run.seed, _TARGET_STREAM])
    return int(rs.choice(pool))


def n_fake_users(cfg: Config, n_real: int) -> int:
    """Fake users of the run: ``round(attack-fraction * n_real)`` (0 without an attack)."""
    if cfg.robust.attack == "none":
        return 0
    return int(round(cfg.robust.attack_fraction * n_real))


def profile_sizes(cfg: Config, split: SplitData, n: int) -> np.ndarray:
    """Items of each of the ``n`` fake profiles (``attack-profile-size``).

    ``0``: drawn (seeded) from the real users' training-profile sizes, so that no fake user
    stands out by its activity (shilling-attack practice: fake profiles mimic real ones) while
    the fakes carry, on average, the real users' weight in FedAvg (a user weighs its examples);
    for ``boost``, whose fakes do not train on their profile (it only sets their weight), 0
    means the median real size; ``-1``: every fake as large as the most active real user (the
    heaviest an honest-looking fake can be: the upper bound of this kind of attack); ``k > 0``:
    ``k`` items. At least 2 (the target and one filler), at most the items there are.
    """
    n_real = split.n_users - split.fake_users
    real = np.diff(split.train_indptr[: n_real + 1])
    k = cfg.robust.attack_profile_size
    if k == 0 and cfg.robust.attack == "boost":
        sizes = np.full(n, int(np.median(real)))
    elif k == 0:
        rs = np.random.default_rng([cfg.run.seed, _SIZE_STREAM])
        sizes = rs.choice(real, size=n, replace=True)
    else:
        sizes = np.full(n, int(real.max()) if k == -1 else k)
    return np.clip(sizes, 2, split.n_items).astype(np.int64)


def poison_split(split: SplitData, cfg: Config) -> SplitData:
    """``split`` with the attack's fake users appended (unchanged without an attack).

    Every fake user holds the target and ``s - 1`` filler items, ``s`` from
    :func:`profile_sizes`: uniformly random items (``fake-random``, the random attack; also
    ``boost``, whose fake users need a plausible profile for their example count) or, for
    ``fake-popular`` (the bandwagon attack), items drawn among the ``2 s`` most popular ones,
    so that the target co-occurs with what most users like and its embedding is pulled
    towards the popular direction. Ratings are 5; no test or validation item. The fake users
    then train honestly on these profiles, inside the normal cohorts.
    """
    if cfg.robust.attack == "none":
        return split
    if split.protocol != "ranking" or split.train_labels is not None:
        raise ConfigError(f"setting 'attack' = {cfg.robust.attack!r} needs a ranking split "
                          f"(loo, ncf, cold-items), not split {cfg.data.split!r}")
    n = n_fake_users(cfg, split.n_users)
    if n == 0:
        return split
    target = target_item(cfg, split)
    counts = item_counts(split)
    others = np.setdiff1d(np.arange(split.n_items), [target])
    if split.negative_pool is not None:  # cold items do not exist at training time
        others = np.intersect1d(others, split.negative_pool)
    by_popularity = others[np.argsort(-counts[others], kind="stable")]
    rs = np.random.default_rng([cfg.run.seed, _PROFILE_STREAM])
    profiles = []
    for size in profile_sizes(cfg, split, n):
        k = int(min(size - 1, len(others)))
        pool = by_popularity[: 2 * k] if cfg.robust.attack == "fake-popular" else others
        profiles.append(np.sort(np.append(rs.choice(pool, size=k, replace=False), target)))
    fake_items = np.concatenate(profiles).astype(np.int64)
    indptr = np.concatenate([split.train_indptr,
                             split.train_indptr[-1] + np.cumsum([len(p) for p in profiles])])

    def minus_ones(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        return np.concatenate([a, np.full((n, *a.shape[1:]), -1, dtype=a.dtype)])

    return dataclasses.replace(
        split,
        n_users=split.n_users + n,
        train_indptr=indptr.astype(np.int64),
        train_items=np.concatenate([split.train_items, fake_items]),
        train_ratings=np.concatenate([split.train_ratings,
                                      np.full(len(fake_items), 5.0, np.float32)]),
        test_items=minus_ones(split.test_items),
        test_negatives=minus_ones(split.test_negatives),
        test_ratings=None if split.test_ratings is None else np.concatenate(
            [split.test_ratings, np.zeros(n, np.float32)]),
        valid_items=minus_ones(split.valid_items),
        valid_negatives=minus_ones(split.valid_negatives),
        fake_users=n,
    )
