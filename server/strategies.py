"""Flower strategies by name. Every node takes part in every round at the Flower level;
which *users* train is decided per user inside the nodes (seeded Poisson sampling), so results
do not depend on how users are grouped into nodes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp import strategy as S

from fedrec.config import STRATEGY_NAMES, Config
from fedrec.models.base import ITEM_TABLE
from fedrec.node import ITEM_CURVATURE_KEY, ITEM_WEIGHT_KEY
from fedrec.train.newton import newton_step


def sum_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Sum every metric over replies (nodes reply sums and counts, never averages)."""
    out: dict[str, float] = {}
    for rec in records:
        for mr in rec.metric_records.values():
            for k, v in mr.items():
                out[k] = out.get(k, 0.0) + float(v)
    return MetricRecord(out)





class ItemWeightedFedAvg(S.FedAvg):
    """FedAvg in which each item row is averaged over the users who touched it.

    Plain FedAvg divides every row by the total weight of all users, so a row that few users
    touched is pulled towards its old value (rare items are diluted). Here nodes reply, per item,
    the average over their users holding that row plus the users' total weight on it (array
    ``item-weight``); the server combines rows with those weights. Dense parameters are averaged
    as in FedAvg (weight ``num-examples``).

    A server step on the item rows (FedAvgM's form, applied to the per-row mean): with
    ``d_r`` the per-row mean update of round ``r`` (rows no user touched: 0),
    ``v_r = server_momentum * v_{r-1} + d_r`` and ``rows_r = rows_{r-1} + server_lr * v_r``.
    The mean over the users who touched a row moves it by about one user's step, where central
    SGD moves it by the sum of its users' steps; ``server_lr > 1`` recovers part of that without
    the sum's overshoot on popular rows (its step grows with the row's user count, the row's
    curvature too). Dense parameters take the plain mean (they are touched by every user: the
    mean is already one full step). ``server_lr = 1``, ``server_momentum = 0``: the mean itself.

    With ``item_step = "newton"`` (MF) the nodes reply, per item row, the gradient step of the
    row's loss at their users' new rows (``rows + step``) and its Gauss-Newton matrix
    (array ``item-curvature``; :mod:`fedrec.train.newton`); ``d_r`` is then the Newton step
    ``(sum of matrices)^-1 (sum of steps)`` per row, and the same momentum and ``server_lr``
    apply (``server_lr = 1``: the full Newton step).
    """

    def __init__(self, item_params: list[str], server_lr: float = 1.0,
                 server_momentum: float = 0.0, item_step: str = "mean", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.item_params = list(item_params)  # item-step newton: the row layout's order
        self.item_step = item_step
        self.server_lr = float(server_lr)
        self.server_momentum = float(server_momentum)
        self.current: dict[str, np.ndarray] | None = None
        self.momentum: dict[str, np.ndarray] = {}  # v per item parameter

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.current = {k: a.numpy() for k, a in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = [m for m in replies if not m.has_error()]
        if not replies or self.current is None:
            return None, None
        base = self.current
        total_w = sum(float(m.content["metrics"]["num-examples"]) for m in replies)
        newton = self.item_step == "newton"
        if newton:
            curv = sum(m.content["arrays"][ITEM_CURVATURE_KEY].numpy() for m in replies)
        else:
            row_w = sum(m.content["arrays"][ITEM_WEIGHT_KEY].numpy() for m in replies)
        steps: dict[str, np.ndarray] = {}
        out: dict[str, np.ndarray] = {}
        for name, g in base.items():
            acc = np.zeros_like(g, dtype=np.float64)
            for m in replies:
                a = m.content["arrays"][name].numpy()
                if name in self.item_params and newton:
                    acc += a - g  # the node's summed gradient step
                elif name in self.item_params:
                    w = m.content["arrays"][ITEM_WEIGHT_KEY].numpy()
                    acc += w.reshape(-1, *[1] * (g.ndim - 1)) * (a - g)
                else:
                    acc += float(m.content["metrics"]["num-examples"]) * (a - g)
            if name in self.item_params and newton:
                steps[name] = acc
            elif name in self.item_params:
                denom = np.maximum(row_w, 1e-300).reshape(-1, *[1] * (g.ndim - 1))
                steps[name] = np.where(denom > 1e-300, acc / denom, 0.0)
            else:
                out[name] = g + acc / max(total_w, 1e-300)
        if newton:
            steps = newton_step(steps, curv, self.item_params)
        for name, step in steps.items():
            if self.server_momentum:
                prev = self.momentum.get(name)
                step = step if prev is None else self.server_momentum * prev + step
                self.momentum[name] = step
            out[name] = base[name] + self.server_lr * step
        metrics = self.train_metrics_aggr_fn([m.content for m in replies], self.weighted_by_key)
        return ArrayRecord({k: Array(np.asarray(v)) for k, v in out.items()}), metrics


STRATEGIES: dict[str, tuple[type, Callable[[Config], dict[str, Any]]]] = {
    "fedavg": (S.FedAvg, lambda c: {}),
    "fedavg-items": (ItemWeightedFedAvg, lambda c: {"server_lr": c.fed.server_lr,
                                                     "server_momentum": c.fed.server_momentum,
                                                     "item_step": c.fed.item_step}),
    "fedprox": (S.FedProx, lambda c: {"proximal_mu": c.fed.proximal_mu}),
    "fedadam": (S.FedAdam, lambda c: {"eta": c.fed.server_lr, "eta_l": c.train.lr}),
    "fedyogi": (S.FedYogi, lambda c: {"eta": c.fed.server_lr, "eta_l": c.train.lr}),
    "fedadagrad": (S.FedAdagrad, lambda c: {"eta": c.fed.server_lr, "eta_l": c.train.lr}),
    "fedavgm": (S.FedAvgM, lambda c: {"server_learning_rate": c.fed.server_lr,
                                      "server_momentum": c.fed.server_momentum}),
    "fedmedian": (S.FedMedian, lambda c: {}),
    "fedtrimmedavg": (S.FedTrimmedAvg, lambda c: {}),
    "krum": (S.Krum, lambda c: {}),
    "multikrum": (S.MultiKrum, lambda c: {}),
    "bulyan": (S.Bulyan, lambda c: {}),
}


if set(STRATEGIES) != set(STRATEGY_NAMES):  # config validation names the same strategies
    raise ImportError(f"server.strategies and fedrec.config.STRATEGY_NAMES disagree: "
                      f"{sorted(set(STRATEGIES) ^ set(STRATEGY_NAMES))}")


def build_strategy(cfg: Config, n_nodes: int) -> S.Strategy:
    """The Flower strategy named by setting ``strategy``, waiting for all ``n_nodes``."""
    name = cfg.fed.strategy
    if name not in STRATEGIES:
        raise ValueError(
            f"setting 'strategy' = '{name}' is unknown; known: {', '.join(sorted(STRATEGIES))}"
        )
    cls, extra = STRATEGIES[name]
    kwargs = extra(cfg)
    if cls is ItemWeightedFedAvg:
        kwargs.update(_item_kwargs(cfg))
    return cls(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=n_nodes,
        min_evaluate_nodes=n_nodes,
        min_available_nodes=n_nodes,
        train_metrics_aggr_fn=sum_metrics,
        evaluate_metrics_aggr_fn=sum_metrics,
        **kwargs,
    )


def _item_kwargs(cfg: Config) -> dict[str, Any]:
    from fedrec.node import load_split, make_model

    model = make_model(cfg, load_split(cfg))
    return {"item_params": [s.name for s in model.row_specs(ITEM_TABLE)]}
