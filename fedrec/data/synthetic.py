"""Seeded synthetic interactions with a planted, learnable latent-factor signal.

Users and items get latent factors drawn around shared cluster centres ("genres"). Each user
picks items without replacement with probability ``softmax(u·v / temperature + log popularity)``
(Gumbel top-k), with a Zipf-like item popularity and a power-law activity per user. Ratings 1-5
follow the affinity ``u·v``; timestamps increase per user with some ties. Item side
information (genres, a text-embedding stand-in and a knowledge graph) is derived from the same
factors, so content- and KG-aware models have something real to find.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from fedrec.data.item_features import ItemFeatures, KnowledgeGraph
from fedrec.data.schema import Interactions

logger = logging.getLogger(__name__)

#: Relation names of ``item_side.kg`` (relation ids index this tuple).
KG_RELATIONS = ("has_genre", "directed_by", "stars", "works_in_genre")
MIN_INTERACTIONS = 5
_BASE_TIME = 1_000_000_000
_CHUNK_CELLS = 1 << 22  # users x items scores held at once
# Standard-normal cut points giving a MovieLens-like rating histogram (6/11/27/34/22 %).
_RATING_CUTS = np.array([-1.555, -0.954, -0.151, 0.772])


def generate(
    n_users: int = 1000,
    n_items: int = 500,
    seed: int = 0,
    dim: int = 16,
    mean_interactions: float = 40,
    *,
    n_genres: int = 12,
    temperature: float = 0.15,
    popularity_exponent: float = 1.5,
    activity_shape: float = 2.0,
    text_dim: int = 32,
    tie_prob: float = 0.1,
) -> Interactions:
    """Generate a synthetic interactions dataset (name ``"synthetic"``).

    Parameters
    ----------
    n_users, n_items : int
        Sizes. Every user has at least 5 interactions and at most ``n_items // 2``.
    seed : int
        Seed of ``numpy.random.default_rng``; equal arguments give identical data.
    dim : int
        Latent dimension of the planted factors.
    mean_interactions : float
        Mean interactions per user (in expectation, clipping to ``n_items // 2`` included).
    n_genres : int
        Number of factor clusters, i.e. genres (at most ``n_items``).
    temperature : float
        Softmax temperature of the affinity; smaller means more personal, less popular.
    popularity_exponent : float
        Zipf exponent of item popularity (``pop ~ rank ** -exponent``).
    activity_shape : float
        Pareto (Lomax) shape (> 0) of the user activity tail; smaller means heavier.
    text_dim : int
        Width of ``item_side.text``.
    tie_prob : float
        Probability that an interaction shares the previous one's timestamp.

    Returns
    -------
    Interactions
        ``df`` grouped by user (0, 1, ...), time-ordered within a user. Ids are the generator's
        ids (``raw_*_ids`` = ``arange``), so items nobody picked still exist. ``item_side``
        (:class:`~fedrec.data.item_features.ItemFeatures`): ``genres`` float32
        ``(n_items, n_genres)`` multi-hot with ``genre_names`` ``"genre 0"``, ...; ``text``
        float32 ``(n_items, text_dim)`` (a text-embedding stand-in); ``kg`` a
        :class:`~fedrec.data.item_features.KnowledgeGraph` whose entities ``0..n_items-1`` are
        the items (``item_entity = arange(n_items)``), then genres, directors and actors, with
        relations :data:`KG_RELATIONS`.

    Raises
    ------
    ValueError
        Inconsistent sizes (e.g. ``n_items < 10``).
    """
    _check_args(n_users, n_items, dim, mean_interactions, temperature, tie_prob)
    if activity_shape <= 0:
        raise ValueError(f"synthetic: activity_shape must be > 0, got {activity_shape}")
    rng = np.random.default_rng(seed)
    n_genres = min(n_genres, n_items)

    centers = _unit(rng.standard_normal((n_genres, dim)))
    item_cluster = rng.integers(n_genres, size=n_items)
    items = _unit(centers[item_cluster] + 0.6 * rng.standard_normal((n_items, dim)) / np.sqrt(dim))
    user_main = rng.integers(n_genres, size=n_users)
    user_second = rng.integers(n_genres, size=n_users)
    users = _unit(
        centers[user_main]
        + 0.5 * centers[user_second]
        + 0.6 * rng.standard_normal((n_users, dim)) / np.sqrt(dim)
    )
    items, users = items.astype(np.float32), users.astype(np.float32)

    popularity_rank = rng.permutation(n_items) + 1
    log_pop = (-popularity_exponent * np.log(popularity_rank)).astype(np.float32)

    max_k = max(MIN_INTERACTIONS, n_items // 2)
    scale = _activity_scale(
        mean_interactions - MIN_INTERACTIONS, max_k - MIN_INTERACTIONS, activity_shape
    )
    counts = MIN_INTERACTIONS + np.floor(scale * rng.pareto(activity_shape, size=n_users))
    counts = np.clip(counts, MIN_INTERACTIONS, max_k).astype(np.int64)

    chosen, affinity = _choose_items(rng, users, items, log_pop, counts, temperature)
    user_ids = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    timestamps = _timestamps(rng, counts, tie_prob)
    ratings = _ratings(rng, affinity)

    df = pd.DataFrame(
        {"user_id": user_ids, "item_id": chosen, "rating": ratings, "timestamp": timestamps}
    )
    genres = _genres(rng, items, centers, item_cluster)
    projection = rng.standard_normal((dim, text_dim)) / np.sqrt(dim)
    text = items @ projection + 0.1 * rng.standard_normal((n_items, text_dim))
    triples, n_entities = _knowledge_graph(rng, genres, item_cluster, n_genres)
    item_side = ItemFeatures(
        year=_years(seed, item_cluster, n_genres),
        genres=genres,
        genre_names=tuple(f"genre {k}" for k in range(n_genres)),
        text=text.astype(np.float32),
        kg=KnowledgeGraph(
            triples=triples,
            n_entities=n_entities,
            relations=KG_RELATIONS,
            item_entity=np.arange(n_items, dtype=np.int64),
            source="synthetic",
        ),
    )
    logger.debug("synthetic: %d users, %d items, %d interactions", n_users, n_items, len(df))
    return Interactions(
        name="synthetic",
        df=df,
        raw_user_ids=np.arange(n_users, dtype=np.int64),
        raw_item_ids=np.arange(n_items, dtype=np.int64),
        has_timestamps=True,
        item_side=item_side,
    )


def _check_args(
    n_users: int,
    n_items: int,
    dim: int,
    mean_interactions: float,
    temperature: float,
    tie_prob: float,
) -> None:
    if n_users < 1:
        raise ValueError(f"synthetic: n_users must be >= 1, got {n_users}")
    if n_items < 2 * MIN_INTERACTIONS:
        raise ValueError(f"synthetic: n_items must be >= {2 * MIN_INTERACTIONS}, got {n_items}")
    if dim < 1:
        raise ValueError(f"synthetic: dim must be >= 1, got {dim}")
    if mean_interactions < MIN_INTERACTIONS:
        raise ValueError(
            f"synthetic: mean_interactions must be >= {MIN_INTERACTIONS}, got {mean_interactions}"
        )
    if temperature <= 0:
        raise ValueError(f"synthetic: temperature must be > 0, got {temperature}")
    if not 0 <= tie_prob < 1:
        raise ValueError(f"synthetic: tie_prob must be in [0, 1), got {tie_prob}")


def _activity_scale(extra_mean: float, cap: float, shape: float) -> float:
    """Lomax scale whose floored, clipped samples have mean ``extra_mean`` (bisection).

    ``E[min(X, c)] = s / (a - 1) * (1 - (1 + c / s) ** (1 - a))`` for ``X ~ Lomax(a, s)``;
    flooring subtracts about 0.5.
    """
    target = extra_mean + 0.5
    if target >= cap:
        return 1e12  # (nearly) everyone at the cap

    def clipped_mean(scale: float) -> float:
        if shape == 1.0:
            return scale * np.log1p(cap / scale)
        return scale / (shape - 1.0) * (1.0 - (1.0 + cap / scale) ** (1.0 - shape))

    lo, hi = 1e-9, 1e12
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if clipped_mean(mid) < target else (lo, mid)
    return float(np.sqrt(lo * hi))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)


def _choose_items(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    log_pop: np.ndarray,
    counts: np.ndarray,
    temperature: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``counts[u]`` distinct items per user from ``softmax(u·v / T + log_pop)``.

    Gumbel top-k (sampling without replacement). The exact top-k of each row is found among
    the keys above a per-row threshold estimated on a random subset of columns; a row with
    fewer than k keys above its threshold uses all columns, so the result is exact. Users are
    processed in chunks of similar activity so that one chunk's score matrix stays small.

    Returns the items grouped by user, shuffled within a user (random time order), and their
    affinity ``u·v``.
    """
    n_users, n_items = len(users), len(items)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    chosen = np.empty(indptr[-1], dtype=np.int64)
    affinity = np.empty(indptr[-1], dtype=np.float32)
    by_activity = np.argsort(-counts, kind="stable")
    chunk = max(1, _CHUNK_CELLS // n_items)
    items_t = np.ascontiguousarray(items.T) / np.float32(temperature)
    n_probe = min(n_items, 128)
    for start in range(0, n_users, chunk):
        rows = by_activity[start : start + chunk]
        k = counts[rows]
        keys = users[rows] @ items_t + log_pop
        noise = rng.random(keys.shape, dtype=np.float32)
        np.clip(noise, np.float32(1e-30), None, out=noise)
        np.log(noise, out=noise)
        np.negative(noise, out=noise)
        np.log(noise, out=noise)
        keys -= noise  # + Gumbel(0, 1)
        picked = _top_k_rows(rng, keys, k, n_probe)
        k_max = int(k[0])
        keep = np.arange(k_max) < k[:, None]
        shuffle = np.where(keep, rng.random(keep.shape), 2.0)
        picked = np.take_along_axis(picked, np.argsort(shuffle, axis=1), axis=1)[:, :k_max]
        dest = (indptr[rows][:, None] + np.arange(k_max))[keep]
        chosen[dest] = picked[keep]
        affinity[dest] = np.einsum(
            "ij,ij->i", np.repeat(users[rows], k, axis=0), items[picked[keep]]
        )
    return chosen, affinity


def _top_k_rows(
    rng: np.random.Generator, keys: np.ndarray, k: np.ndarray, n_probe: int
) -> np.ndarray:
    """Column indices of the ``k[r]`` largest keys of each row (any order; -1 padded)."""
    n_rows, n_items = keys.shape
    k_max = int(k.max())
    # threshold: a high order statistic of a random column subset, aiming at ~2k+10 survivors
    probe = keys[:, rng.choice(n_items, size=n_probe, replace=False)]
    rank = min(n_probe, int(np.ceil(n_probe * (2 * k_max + 10) / n_items)) + 1)
    if rank >= n_probe:
        threshold = np.full(n_rows, -np.inf, dtype=keys.dtype)
    else:
        threshold = -np.partition(-probe, rank - 1, axis=1)[:, rank - 1]
    above = keys >= threshold[:, None]
    counts = above.sum(axis=1)
    out = np.full((n_rows, k_max), -1, dtype=np.int64)
    short = counts < k  # exact fallback for these rows: all columns
    if short.any():
        out[short] = _top_k_dense(keys[short], k[short], k_max)
    ok = ~short
    if ok.any():
        above, counts = above[ok], counts[ok]
        width = int(counts.max())
        row_idx, col_idx = np.nonzero(above)
        slot = np.arange(len(row_idx)) - np.repeat(np.cumsum(counts) - counts, counts)
        cand = np.full((len(counts), width), -np.inf, dtype=keys.dtype)
        cand_col = np.full((len(counts), width), -1, dtype=np.int64)
        cand[row_idx, slot] = keys[np.flatnonzero(ok)[row_idx], col_idx]
        cand_col[row_idx, slot] = col_idx
        top = _top_k_dense(cand, k[ok], k_max)
        out[ok] = np.where(top >= 0, np.take_along_axis(cand_col, top.clip(0), axis=1), -1)
    return out


def _top_k_dense(keys: np.ndarray, k: np.ndarray, k_max: int) -> np.ndarray:
    """Column indices of the ``k[r]`` largest keys per row, -1 padded to ``k_max >= max(k)``."""
    n_rows, width = keys.shape
    if k_max < width:
        top = np.argpartition(-keys, k_max - 1, axis=1)[:, :k_max]
    else:
        top = np.broadcast_to(np.arange(width), keys.shape)
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    if top.shape[1] < k_max:
        top = np.concatenate([top, np.full((n_rows, k_max - top.shape[1]), -1)], axis=1)
    return np.where(np.arange(k_max) < k[:, None], top, -1)


def _timestamps(rng: np.random.Generator, counts: np.ndarray, tie_prob: float) -> np.ndarray:
    """Per-user non-decreasing times: random start plus gaps, some gaps zero (ties)."""
    n = int(counts.sum())
    starts = _BASE_TIME + rng.integers(0, 3 * 365 * 86_400, size=len(counts))
    gaps = np.ceil(rng.exponential(6 * 3600.0, size=n)).astype(np.int64)
    gaps[rng.random(n) < tie_prob] = 0
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    gaps[first] = 0
    within = np.cumsum(gaps)
    within -= np.repeat(within[first], counts)
    return np.repeat(starts, counts) + within


def _ratings(rng: np.random.Generator, affinity: np.ndarray) -> np.ndarray:
    """Ratings 1-5 from standardised affinity plus noise."""
    z = (affinity - affinity.mean()) / max(float(affinity.std()), 1e-6)
    z = (z + 0.5 * rng.standard_normal(len(z))) / np.sqrt(1.25)
    return (1 + np.searchsorted(_RATING_CUTS, z)).astype(np.float32)


def _years(seed: int, cluster: np.ndarray, n_genres: int) -> np.ndarray:
    """Release years that follow the clusters (each cluster has its own era, +- 6 years), from
    a generator of their own so that every other draw of the data is unchanged."""
    rng = np.random.default_rng([seed, 1])
    era = 1950 + rng.permutation(n_genres)[cluster] * (50 / max(n_genres, 1))
    return np.round(era + rng.normal(0, 6, len(cluster))).astype(np.float32)


def _genres(
    rng: np.random.Generator, items: np.ndarray, centers: np.ndarray, cluster: np.ndarray
) -> np.ndarray:
    """Multi-hot genres: the item's cluster, plus its next-closest cluster for ~30 % of items."""
    n_items, n_genres = len(items), len(centers)
    genres = np.zeros((n_items, n_genres), dtype=np.float32)
    genres[np.arange(n_items), cluster] = 1.0
    if n_genres > 1:
        sim = items @ centers.T
        sim[np.arange(n_items), cluster] = -np.inf
        second = np.argmax(sim, axis=1)
        extra = rng.random(n_items) < 0.3
        genres[np.flatnonzero(extra), second[extra]] = 1.0
    return genres


def _knowledge_graph(
    rng: np.random.Generator, genres: np.ndarray, cluster: np.ndarray, n_genres: int
) -> tuple[np.ndarray, int]:
    """Triples linking items to genre, director and actor entities that follow the clusters.

    Entities: items ``0..n_items-1``, then genres, directors, actors. Directors and actors
    belong to a cluster; an item's director (90 %) and actors (70 % each) come from its own
    cluster, the rest at random. Returns the unique triples and the number of entities (an
    actor nobody cast still counts).
    """
    n_items = len(cluster)
    n_directors = max(n_genres, n_items // 8)
    n_actors = max(2 * n_genres, n_items // 3)
    genre0 = n_items
    director0 = genre0 + n_genres
    actor0 = director0 + n_directors
    director_cluster = np.arange(n_directors) % n_genres  # owner j belongs to cluster j % G

    def pick(n_owned: int, p_same: float) -> np.ndarray:
        """One owner per item: of the item's own cluster with probability p_same."""
        per_cluster = n_owned // n_genres + (np.arange(n_genres) < n_owned % n_genres)
        slot = (rng.random(n_items) * per_cluster[cluster]).astype(np.int64)
        same = cluster + n_genres * slot
        other = rng.integers(n_owned, size=n_items)
        return np.where(rng.random(n_items) < p_same, same, other)

    item_idx, genre_idx = np.nonzero(genres)
    triples = [np.column_stack([item_idx, np.zeros_like(item_idx), genre0 + genre_idx])]
    directors = pick(n_directors, 0.9)
    triples.append(
        np.column_stack([np.arange(n_items), np.ones(n_items, int), director0 + directors])
    )
    n_cast = 3
    actors = np.stack([pick(n_actors, 0.7) for _ in range(n_cast)], axis=1)
    triples.append(
        np.column_stack(
            [
                np.repeat(np.arange(n_items), n_cast),
                np.full(n_items * n_cast, 2),
                actor0 + actors.ravel(),
            ]
        )
    )
    triples.append(
        np.column_stack(
            [director0 + np.arange(n_directors), np.full(n_directors, 3), genre0 + director_cluster]
        )
    )
    return np.unique(np.concatenate(triples).astype(np.int64), axis=0), actor0 + n_actors
