"""Explanations of a user's recommendations, computed on the node (DESIGN section 9).

Explanations need the user's private rows, so they are computed where those rows live: on the
node that hosts the user, from the global shared parameters and the node's own state file.

Three kinds of reason, each offered only when the model has the tower it acts through:

- ``kg`` (KG tower): a KG path from items the user trained on to the recommended item. The
  item's sampled neighbour entity ``n`` is linked (one KG edge) to a trained item's entity, or
  *is* that entity; the reason names the relations, the entity and the trained items.
  Heuristic weight: the KGCN attention weight of ``n`` for this user (summed over the
  neighbour slots holding it) times the number of trained items that reach ``n``. Reasons
  are the item's first-hop neighbours (with 2 hops, removal also masks ``n`` at second-hop
  slots); paths follow every KG edge, the graph taken as undirected.
- ``genre`` (genre tower): a genre the item shares with the user's trained items. Weight: the
  share of the user's trained items with that genre.
- ``text`` (text tower): one of the ``n_text`` trained items whose frozen text vector is
  nearest (cosine > 0) to the item's. Weight: the cosine similarity.

Weights are heuristics computed without re-scoring. Fidelity checks them against the model:
:func:`score_without` removes one reason by masking the model input it acts through
(``kg``: zero ``kg_entity_mask`` at the neighbour slots holding the entity; ``genre``: drop the
genre from ``genre_vec`` and renormalise; ``text``: project the item's ``text_vec`` off the
cited trained item's text vector) and re-scores the item for the same user;
:func:`fidelity` asks how often removing the top-weighted reason lowers the score more than
removing a random other reason of the same kind.

"Items the user trained on" are the user's training items (positive rows only on
click-through splits, whose training data also holds labelled negatives).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fedrec import rng
from fedrec.data.schema import SplitData
from fedrec.models.base import Recommender
from fedrec.train.layout import ItemIndex

log = logging.getLogger(__name__)

#: Reason kinds, in display order, and the frozen model input each acts through.
KINDS = ("kg", "genre", "text")
_TOWER_OF_KIND = {"kg": "kg", "genre": "genre", "text": "text"}
ENTITY, RELATION, ENTITY_MASK = "kg_entity", "kg_relation", "kg_entity_mask"
#: How many trained items a KG reason names (the count covers all of them).
SHOW_ITEMS = 3


@dataclass(frozen=True)
class Reason:
    """One reason why an item is recommended to a user.

    Attributes
    ----------
    kind : {"kg", "genre", "text"}
    text : str
        Human-readable description.
    weight : float
        Heuristic weight (see the module doc); comparable within a kind only.
    key : int
        What removing the reason masks: the KG entity (``kg``), the genre column (``genre``)
        or the trained item whose text direction is projected out (``text``).
    items : tuple of int
        The user's trained items the reason cites.
    """

    kind: str
    text: str
    weight: float
    key: int
    items: tuple[int, ...] = ()


@dataclass(frozen=True)
class Fidelity:
    """Result of :func:`fidelity` for one kind.

    Attributes
    ----------
    kind : str
    share : float
        Share of cases where removing the top-weighted reason lowered the score more than
        removing a random other reason (NaN when there are no cases).
    cases : int
        Recommended items with at least 2 reasons of the kind.
    skipped : int
        Recommended items with fewer than 2 reasons of the kind.
    top_lowers : float
        Share of cases where removing the top-weighted reason lowers the score at all.
    mean_drop_top, mean_drop_random : float
        Mean score drop (score minus score without the reason) over the cases.
    """

    kind: str
    share: float
    cases: int
    skipped: int
    top_lowers: float
    mean_drop_top: float
    mean_drop_random: float


# ------------------------------------------------------------------------------ scoring
class _Scorer:
    """The model's scoring inputs over the global shared parameters (built once per call)."""

    def __init__(self, model: Recommender, shared: Mapping[str, np.ndarray | Tensor]) -> None:
        self.model = model
        self.index = ItemIndex(model)
        self.shared = {n: torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a)
                       .to(torch.float32) for n, a in shared.items()}
        self.dense = {s.name: self.shared[s.name].unsqueeze(0) for s in model.specs_of("dense")}
        self.gather = self.index.table_gather(self.shared)
        self.user_shapes = {s.name: tuple(s.shape) for s in model.specs_of("user")}
        self.towers = {tw.name: tw for tw in getattr(model, "towers", [])}
        self._kg: _KGLookup | None = None

    def user(self, rows: Mapping[str, np.ndarray | Tensor]) -> dict[str, Tensor]:
        """One user's private rows (``shape`` or ``(1, *shape)``) laid out ``(1, 1, *shape)``."""
        return {n: torch.as_tensor(np.asarray(rows[n]) if not isinstance(rows[n], Tensor)
                                   else rows[n]).to(torch.float32).reshape(1, 1, *shape)
                for n, shape in self.user_shapes.items()}

    def inputs(self, items: np.ndarray) -> dict[str, Tensor]:
        """The ``item`` dict of ``score`` for ``items`` ``(B,)``, laid out ``(1, B, ...)``."""
        c = torch.from_numpy(np.asarray(items, dtype=np.int64)[None, :])
        return self.index.inputs(self.gather, self.index.rows(c), c)

    def score(self, user: dict[str, Tensor], item: dict[str, Tensor]) -> np.ndarray:
        with torch.no_grad():
            return self.model.score(user, item, self.dense)[0].double().numpy()

    def kg(self) -> _KGLookup:
        if self._kg is None:
            self._kg = _KGLookup(self.towers["kg"])
        return self._kg


def supported_kinds(model: Recommender) -> list[str]:
    """The reason kinds ``model`` can be explained with (those of its towers), in
    :data:`KINDS` order; empty for a model without towers."""
    towers = {tw.name for tw in getattr(model, "towers", [])}
    return [k for k in KINDS if _TOWER_OF_KIND[k] in towers]


def trained_items(split: SplitData, user: int) -> np.ndarray:
    """Items ``user`` trained on (positives only where the split has training labels)."""
    lo, hi = split.train_indptr[user], split.train_indptr[user + 1]
    items = split.train_items[lo:hi]
    if split.train_labels is not None:
        items = items[split.train_labels[lo:hi] > 0.5]
    return np.unique(items)


def recommend(
    model: Recommender,
    shared: Mapping[str, np.ndarray | Tensor],
    user_rows: Mapping[str, np.ndarray | Tensor],
    user: int,
    split: SplitData,
    k: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """The user's top-``k`` items among those it has not trained on.

    Parameters
    ----------
    model : Recommender
    shared : dict of str to array
        Global shared parameters (e.g. a checkpoint's ``arrays``).
    user_rows : dict of str to array
        The user's private rows (each ``shape`` or ``(1, *shape)``).
    user : int
        Global user id (selects its training items).
    split : SplitData
    k : int

    Returns
    -------
    (items, scores)
        int64 and float64 ``(min(k, candidates),)``, best first (ties: lower item id first).
    """
    return _recommend(_Scorer(model, shared), user_rows, user, split, k)


def _recommend(sc: _Scorer, user_rows, user: int, split: SplitData, k: int):
    scores = sc.score(sc.user(user_rows), sc.inputs(np.arange(split.n_items)))
    seen = split.user_items(int(user))
    cand = np.setdiff1d(np.arange(split.n_items), seen)
    order = np.lexsort((cand, -scores[cand]))[:k]
    return cand[order].astype(np.int64), scores[cand[order]]


# ------------------------------------------------------------------------------ reasons
def explain_item(
    model: Recommender,
    shared: Mapping[str, np.ndarray | Tensor],
    user_rows: Mapping[str, np.ndarray | Tensor],
    user: int,
    item: int,
    split: SplitData,
    kinds: Sequence[str] | None = None,
    n_text: int = 3,
) -> list[Reason]:
    """Reasons why ``item`` is recommended to ``user``, strongest first within each kind.

    Parameters
    ----------
    model, shared, user_rows, user, split
        As in :func:`recommend`.
    item : int
    kinds : sequence of str, optional
        Kinds to compute (default: every kind the model supports, :func:`supported_kinds`).
    n_text : int
        How many nearest trained items by text to cite.

    Returns
    -------
    list of Reason
        Ordered by :data:`KINDS`, then by decreasing weight; empty for a model without towers.
    """
    sc = _Scorer(model, shared)
    return _explain(sc, sc.user(user_rows), trained_items(split, user), int(item),
                    _check_kinds(model, kinds), split, n_text)


def _check_kinds(model: Recommender, kinds: Sequence[str] | None) -> list[str]:
    have = supported_kinds(model)
    if kinds is None:
        return have
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown explanation kind '{k}'; known kinds: {', '.join(KINDS)}")
        if k not in have:
            raise ValueError(f"model '{model.name}' has no '{k}' tower to explain with; it "
                             f"supports: {', '.join(have) or 'none'}")
    return list(kinds)


def _explain(sc: _Scorer, user: dict[str, Tensor], liked: np.ndarray, item: int,
             kinds: Sequence[str], split: SplitData, n_text: int) -> list[Reason]:
    out: list[Reason] = []
    for kind in kinds:
        if len(liked) == 0:
            break
        if kind == "kg":
            found = _kg_reasons(sc, user, liked, item, split)
        elif kind == "genre":
            found = _genre_reasons(split, liked, item)
        else:
            found = _text_reasons(split, liked, item, n_text)
        out += sorted(found, key=lambda r: (-r.weight, r.key))
    return out


def _title(split: SplitData, item: int) -> str:
    titles = split.item_side.titles
    if titles is not None and titles[item]:
        return f"'{titles[item]}'"
    return f"item {item}"


class _KGLookup:
    """KG edges (undirected) keyed ``src * (n + 1) + dst`` and each entity's item, if any."""

    def __init__(self, tower) -> None:
        kg = tower.kg
        self.tower, self.kg, self.n = tower, kg, kg.n_entities
        h, r, t = kg.triples[:, 0], kg.triples[:, 1], kg.triples[:, 2]
        keys = np.concatenate([h * (self.n + 1) + t, t * (self.n + 1) + h])
        order = np.argsort(keys, kind="stable")
        self.keys, self.rel = keys[order], np.concatenate([r, r])[order]
        self.entity_item = np.full(self.n + 1, -1, dtype=np.int64)
        has = np.flatnonzero(kg.item_entity >= 0)
        self.entity_item[kg.item_entity[has]] = has
        self.reach_e = tower.reach(ENTITY)
        self.reach_r = tower.reach(RELATION)

    def relation(self, a: np.ndarray, b: int) -> np.ndarray:
        """Relation id of an edge between entities ``a`` (array) and ``b``; -1 where none."""
        key = a * (self.n + 1) + b
        at = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        return np.where(self.keys[at] == key, self.rel[at], -1) if len(self.keys) else \
            np.full(len(a), -1)

    def name(self, split: SplitData, e: int) -> str:
        i = self.entity_item[e]
        return _title(split, int(i)) if i >= 0 else f"entity {e}"


def _kg_reasons(sc: _Scorer, user: dict[str, Tensor], liked: np.ndarray, item: int,
                split: SplitData) -> list[Reason]:
    kg = sc.kg()
    K, n = kg.tower.neighbours, kg.n
    ents, rels = kg.reach_e[item, 1 : K + 1], kg.reach_r[item, :K]
    valid = ents < n
    if not valid.any():
        return []
    # KGCN's attention of this user over the item's first-hop neighbours (as in KGTower.encode)
    r = sc.shared[RELATION][torch.from_numpy(rels)] * torch.from_numpy(
        (rels < kg.kg.n_relations).astype(np.float32))[:, None]
    query = user.get(sc.model.query_user) if sc.model.query_user else None
    if query is not None:
        pi = torch.softmax((query.reshape(1, -1) * r).mean(-1), dim=-1).double().numpy()
    else:
        pi = np.full(K, 1.0 / K)
    liked_e = kg.kg.item_entity[liked]
    has_e = liked_e >= 0
    liked, liked_e = liked[has_e], liked_e[has_e]
    out = []
    for e in np.unique(ents[valid]):
        slots = np.flatnonzero(ents == e)
        rel_j = kg.relation(liked_e, int(e))
        direct = liked_e == e
        reach = direct | (rel_j >= 0)
        count = int(reach.sum())
        if count == 0:
            continue
        via = kg.kg.relations[int(rels[slots[0]])]
        name = kg.name(split, int(e))
        if direct.any():
            text = f"linked to {name}, which you interacted with ({via})"
            others = int(count - direct.sum())
            if others:
                text += f"; {others} more of your items link to it"
        else:
            cited = [f"{_title(split, int(j))} ({kg.kg.relations[int(q)]})"
                     for j, q in zip(liked[reach][:SHOW_ITEMS], rel_j[reach][:SHOW_ITEMS],
                                     strict=True)]
            more = f" and {count - SHOW_ITEMS} more" if count > SHOW_ITEMS else ""
            text = (f"{via} {name}, shared with {count} of your items: "
                    f"{', '.join(cited)}{more}")
        # weight: the user's KGCN attention on the entity (times the count of the user's items
        # reaching it ranked reasons no better than chance: fidelity .50 against .59 on the
        # synthetic default, since widely shared entities such as genres matter less)
        out.append(Reason("kg", text, float(pi[slots].sum()), int(e),
                          tuple(int(j) for j in liked[reach])))
    return out


def _genre_reasons(split: SplitData, liked: np.ndarray, item: int) -> list[Reason]:
    side = split.item_side
    g = np.asarray(side.genres)
    have = g[liked] > 0
    out = []
    for c in np.flatnonzero(g[item] > 0):
        count = int(have[:, c].sum())
        if count == 0:
            continue
        name = side.genre_names[c] if c < len(side.genre_names) else f"genre {c}"
        share = count / len(liked)
        out.append(Reason("genre", f"genre '{name}', like {count} of your {len(liked)} items "
                          f"({share:.0%})", share, int(c),
                          tuple(int(j) for j in liked[have[:, c]])))
    return out


def _text_reasons(split: SplitData, liked: np.ndarray, item: int, n_text: int) -> list[Reason]:
    t = np.asarray(split.item_side.text, dtype=np.float64)
    norm = np.linalg.norm(t[liked], axis=1) * np.linalg.norm(t[item])
    cos = np.where(norm > 0, t[liked] @ t[item] / np.maximum(norm, 1e-300), 0.0)
    out = []
    for j in np.lexsort((liked, -cos))[:n_text]:
        if cos[j] <= 0:
            break
        out.append(Reason("text", f"text close to {_title(split, int(liked[j]))} "
                          f"(cosine {cos[j]:.2f})", float(cos[j]), int(liked[j]),
                          (int(liked[j]),)))
    return out


# ------------------------------------------------------------------------------ removal
def _remove(sc: _Scorer, item: dict[str, Tensor], col: int, reason: Reason, item_id: int):
    """Edit column ``col`` of the ``(1, B, ...)`` item inputs so that ``reason`` is removed."""
    if reason.kind == "kg":
        ents = sc.kg().reach_e[item_id]
        slots = np.flatnonzero(ents == reason.key)
        slots = torch.from_numpy(slots[slots > 0])  # neighbour slots only (not the item's own)
        item[ENTITY_MASK][0, col, slots] = 0.0
    elif reason.kind == "genre":
        v = item["genre_vec"][0, col].clone()
        v[reason.key] = 0.0
        s = v.sum()
        item["genre_vec"][0, col] = v / s if s > 0 else v
    elif reason.kind == "text":
        t = item["text_vec"][0, col].double()
        d = sc.index.frozen["text_vec"][reason.key].double()
        dd = float(d @ d)
        if dd > 0:
            item["text_vec"][0, col] = (t - (t @ d) / dd * d).to(torch.float32)
    else:
        raise ValueError(f"unknown explanation kind '{reason.kind}'; known: {', '.join(KINDS)}")


def _scores_without(sc: _Scorer, user: dict[str, Tensor], item: int,
                    reasons: Sequence[Reason]) -> tuple[float, np.ndarray]:
    """The item's score, and its score with each of ``reasons`` removed (one at a time)."""
    inputs = sc.inputs(np.full(1 + len(reasons), item))
    for c, reason in enumerate(reasons, start=1):
        _remove(sc, inputs, c, reason, item)
    s = sc.score(user, inputs)
    return float(s[0]), s[1:]


def score_without(
    model: Recommender,
    shared: Mapping[str, np.ndarray | Tensor],
    user_rows: Mapping[str, np.ndarray | Tensor],
    item: int,
    reason: Reason | Sequence[Reason],
) -> tuple[float, float | np.ndarray]:
    """The item's score for the user, and its score with ``reason`` removed.

    Parameters
    ----------
    model, shared, user_rows
        As in :func:`recommend`.
    item : int
    reason : Reason or sequence of Reason
        Removed one at a time (see the module doc for how each kind is masked).

    Returns
    -------
    (score, without)
        ``without`` is a float for one reason, an array aligned with a sequence of them.
    """
    sc = _Scorer(model, shared)
    many = not isinstance(reason, Reason)
    base, out = _scores_without(sc, sc.user(user_rows), int(item),
                                list(reason) if many else [reason])
    return base, out if many else float(out[0])


# ------------------------------------------------------------------------------ fidelity
def fidelity(
    model: Recommender,
    shared: Mapping[str, np.ndarray | Tensor],
    user_rows: Mapping[str, np.ndarray | Tensor],
    users: np.ndarray,
    split: SplitData,
    k: int,
    kind: str,
    seed: int,
    n_text: int = 3,
    progress: Callable[[int], None] | None = None,
) -> Fidelity:
    """How often the top-weighted reason of ``kind`` matters more to the score than another.

    For every user's top-``k`` items (:func:`recommend`) with at least two reasons of ``kind``
    (a *case*), compare the score drop of removing the top-weighted reason with that of
    removing one other reason of the kind, drawn uniformly (keyed by ``seed``, user and item,
    so the draw does not depend on the order or the set of users). Items with fewer than two
    reasons are skipped and counted. A share near 0.5 means the weights rank reasons no better
    than chance.

    Parameters
    ----------
    model, shared, split, k
        As in :func:`recommend`.
    user_rows : dict of str to array
        Private rows aligned with ``users`` (``(len(users), *shape)`` each).
    users : numpy.ndarray
        Global user ids.
    kind : {"kg", "genre", "text"}
    seed : int
    n_text : int
        As in :func:`explain_item`.
    progress : callable, optional
        Called with the number of users done.

    Returns
    -------
    Fidelity
    """
    _check_kinds(model, [kind])
    sc = _Scorer(model, shared)
    users = np.asarray(users, dtype=np.int64)
    wins = cases = skipped = 0
    drops_top: list[float] = []
    drops_rand: list[float] = []
    for a, u in enumerate(users):
        rows = {n: t[a] for n, t in user_rows.items()}
        user = sc.user(rows)
        liked = trained_items(split, int(u))
        items, _ = _recommend(sc, rows, int(u), split, k)
        for i in items:
            reasons = _explain(sc, user, liked, int(i), [kind], split, n_text)
            if len(reasons) < 2:
                skipped += 1
                continue
            # reasons are sorted by decreasing weight (ties: key): the first is the top one
            pick = 1 + int(rng.uniform(seed, rng.EXPLAIN, u, i) * (len(reasons) - 1))
            base, without = _scores_without(sc, user, int(i), [reasons[0], reasons[pick]])
            d_top, d_rand = base - without[0], base - without[1]
            wins += int(d_top > d_rand)
            cases += 1
            drops_top.append(d_top)
            drops_rand.append(d_rand)
        if progress is not None:
            progress(a + 1)
    log.debug("fidelity %s: %d/%d cases, %d skipped", kind, wins, cases, skipped)
    if not cases:
        return Fidelity(kind, float("nan"), 0, skipped, *[float("nan")] * 3)
    top = np.asarray(drops_top)
    return Fidelity(kind, wins / cases, cases, skipped, float((top > 0).mean()),
                    float(top.mean()), float(np.mean(drops_rand)))
