"""Flower strategies by name. Every node takes part in every round at the Flower level;
which *users* train is decided per user inside the nodes (seeded Poisson sampling), so results
do not depend on how users are grouped into nodes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp import strategy as S

from fedrec.config import Config


def sum_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Sum every metric over replies (nodes reply sums and counts, never averages)."""
    out: dict[str, float] = {}
    for rec in records:
        for mr in rec.metric_records.values():
            for k, v in mr.items():
                out[k] = out.get(k, 0.0) + float(v)
    return MetricRecord(out)



STRATEGIES: dict[str, tuple[type, Callable[[Config], dict[str, Any]]]] = {
    "fedavg": (S.FedAvg, lambda c: {}),
    "fedprox": (S.FedProx, lambda c: {"proximal_mu": c.fed.proximal_mu}),
    "fedadam": (S.FedAdam, lambda c: {"eta": c.fed.server_lr, "eta_l": c.train.lr}),
    "fedyogi": (S.FedYogi, lambda c: {"eta": c.fed.server_lr, "eta_l": c.train.lr}),
    "fedadagrad": (S.FedAdagrad, lambda c: {"eta": c.fed.server_lr, "eta_l": c.train.lr}),
    "fedavgm": (S.FedAvgM, lambda c: {"server_learning_rate": c.fed.server_lr}),
    "fedmedian": (S.FedMedian, lambda c: {}),
    "fedtrimmedavg": (S.FedTrimmedAvg, lambda c: {}),
    "krum": (S.Krum, lambda c: {}),
    "multikrum": (S.MultiKrum, lambda c: {}),
    "bulyan": (S.Bulyan, lambda c: {}),
}


def build_strategy(cfg: Config, n_nodes: int) -> S.Strategy:
    """The Flower strategy named by setting ``strategy``, waiting for all ``n_nodes``."""
    name = cfg.fed.strategy
    if name not in STRATEGIES:
        raise ValueError(
            f"setting 'strategy' = '{name}' is unknown; known: {', '.join(sorted(STRATEGIES))}"
        )
    cls, extra = STRATEGIES[name]
    return cls(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=n_nodes,
        min_evaluate_nodes=n_nodes,
        min_available_nodes=n_nodes,
        train_metrics_aggr_fn=sum_metrics,
        evaluate_metrics_aggr_fn=sum_metrics,
        **extra(cfg),
    )
