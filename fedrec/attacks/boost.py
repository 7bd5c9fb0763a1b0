"""Model poisoning (``attack = "boost"``): crafted updates of the target item's rows.

FedRecAttack / PipAttack style. A fake user does not train; its update moves only the rows of
the target item: every bias-like row (one value per item) up, every embedding row towards the
mean embedding of the most popular items (an item that looks like the popular ones is scored
highly by most users; PipAttack's popularity alignment). The update is scaled to the largest
norm the bounds in force let through, which the attacker is assumed to know: the per-user clip
(``clip-norm``, under ``defense = "clip"`` or ``privacy = "user"``), the per-row clip
(``row-clip-norm``, under ``defense = "row-clip"``: the whole update is one item row) and the
server's ``max-update-norm`` on replies (a reply averages its users, so a user under the bound
keeps the reply under it). The node weighs a fake user like any other user (its profile's
examples; 1 under DP-FedAvg; at most ``row-clip-weight`` under ``row-clip``, whose cap a fake
profile cannot exceed however large it is): the node's own clipping then leaves the update
unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

from fedrec.attacks.profiles import item_counts, target_item
from fedrec.config import Config
from fedrec.data.schema import SplitData
from fedrec.models.base import ITEM_TABLE, Recommender
from fedrec.train.cohort import CohortUpdate

POPULAR = 50  # items whose mean embedding the target is pulled towards


def attack_norm(cfg: Config) -> float:
    """The norm of a crafted update: the tightest bound in force (slightly under it)."""
    bounds = [cfg.fed.max_update_norm]
    if cfg.robust.defense == "clip" or cfg.privacy.privacy == "user":
        bounds.append(cfg.privacy.clip_norm)
    if cfg.robust.defense == "row-clip":
        bounds.append(cfg.robust.row_clip_norm)
    return min(bounds) * (1 - 1e-6)


def crafted_update(cfg: Config, model: Recommender, split: SplitData,
                   shared: dict[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
    """``(target, {param: delta of the target row})`` of one fake user, norm
    :func:`attack_norm`."""
    target = target_item(cfg, split)
    counts = item_counts(split)
    popular = np.argsort(-counts, kind="stable")[:POPULAR]
    popular = popular[popular != target]
    delta: dict[str, np.ndarray] = {}
    for spec in model.row_specs(ITEM_TABLE):
        table = np.asarray(shared[spec.name], dtype=np.float64)
        row = table[target]
        if row.size == 1:
            delta[spec.name] = np.ones_like(row)
        else:
            delta[spec.name] = table[popular].mean(axis=0) - row
    norm = np.sqrt(sum(float((d ** 2).sum()) for d in delta.values()))
    scale = attack_norm(cfg) / max(norm, 1e-12)
    return target, {n: d * scale for n, d in delta.items()}


def add_fakes(upd: CohortUpdate, cfg: Config, model: Recommender, split: SplitData,
              shared: dict[str, np.ndarray], fakes: np.ndarray, equal: bool) -> None:
    """Add the sampled ``fakes``' crafted updates to the cohort's ``upd`` (in place), each
    weighted like a user: its profile's examples, or 1 (``equal``, DP-FedAvg), capped at
    ``row-clip-weight`` under ``row-clip``."""
    w = np.ones(len(fakes)) if equal else np.diff(split.train_indptr)[fakes].astype(np.float64)
    if cfg.robust.defense == "row-clip":  # the node caps every user's weight
        w = np.minimum(w, cfg.robust.row_clip_weight)
    target, delta = crafted_update(cfg, model, split, shared)
    for name, d in delta.items():
        upd.sum_update[name][target] += torch.as_tensor(float(w.sum()) * np.asarray(d))
    upd.item_weight[target] += float(w.sum())
    upd.weight_sum += float(w.sum())
    upd.n_users += len(fakes)
