"""The server's round loop on a Flower Grid: train, aggregate, evaluate, checkpoint.

Written against Flower's ``Strategy`` interface (``configure_train`` / ``aggregate_train`` /
``configure_evaluate`` / ``aggregate_evaluate``) rather than ``Strategy.start`` so that every
round is checkpointed (global arrays, strategy state, RNG state, metrics) and a crashed or
interrupted run resumes from its last completed round.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
)
from flwr.serverapp import Grid

from fedrec import checkpoint, rundir
from fedrec.config import Config, as_dict
from fedrec.data.partition import num_partitions, partition_users
from fedrec.eval.sampled import VALID, evaluate_item_scores, summarize
from fedrec.models.popularity import popularity_scores
from fedrec.node import (
    EVAL_PARTS_KEY,
    eval_parts,
    item_extras,
    load_split,
    make_model,
)
from fedrec.params import check_shared, to_numpy
from server.exchange import await_nodes, send_and_collect
from server.privacy import PrivateStrategy, strategy_vars, with_privacy
from server.replies import EvalRules, ReplyRules, screen_replies
from server.strategies import build_strategy, sum_metrics
from server.warmstart import popularity_start

log = logging.getLogger("fedrec.server")

CKPT_DIR = "checkpoints"
EVAL_FIELDS = ("hr@10", "ndcg@10", "recall@20", "ndcg@20-full", "rmse", "auc", "acc", "f1",
               "er@10", "er@100")
TEST_KEYS = ("hr@10", "auc")
VAL_KEYS = tuple(VALID + k for k in EVAL_FIELDS)


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.array(v, order="C")) for k, v in arrays.items()})


def _strategy_state(strategy: Any) -> dict[str, Any]:
    if isinstance(strategy, PrivateStrategy):
        return strategy.state_dict()
    return strategy_vars(strategy)


def run_federation(grid: Grid, cfg: Config) -> dict[str, Any]:
    """Run ``num-rounds`` rounds (resuming from the run directory) and write the summary."""
    cfg.check_federated()
    if not cfg.run.out:
        raise ValueError("setting 'out' is empty: a run needs a run directory (checkpoints, "
                         "metrics, summary); the launcher and the ServerApp choose one")
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    split = load_split(cfg)
    model = make_model(cfg, split)
    n_nodes = num_partitions(split.n_users, cfg.fed.users_per_node, cfg.fed.num_nodes)
    strategy = with_privacy(build_strategy(cfg, n_nodes), cfg, split, n_nodes)
    private = strategy if isinstance(strategy, PrivateStrategy) else None
    random.seed(cfg.run.seed)  # Flower strategies sample nodes with the global `random`

    arrays = to_numpy(model.init_shared(cfg.run.seed))
    rows: list[dict[str, Any]] = []
    start = 1
    ckpts = checkpoint.round_files(out / CKPT_DIR)
    if cfg.run.resume and ckpts:
        last = max(ckpts)
        ck = checkpoint.load_pickle(ckpts[last])
        if not same_identity(ck["config"], config_identity(cfg)):
            raise ValueError(
                f"{out}: checkpoint was written by a different config; use another --out "
                "or set resume=false"
            )
        arrays = ck["arrays"]
        if private is not None:  # the accountant and the noise multiplier it accounts
            private.load_state_dict(ck["strategy"])
        else:
            vars(strategy).update(ck["strategy"])
        random.setstate(ck["random"])
        rows = ck["rows"]
        start = last + 1
        log.info("resuming %s from round %d", out, last)
    elif not cfg.run.resume:
        for p in ckpts.values():
            p.unlink()
    check_shared(arrays, model, "server arrays")
    nodes: set[int] | None = None
    if start == 1 and not (cfg.run.resume and ckpts) and cfg.model.item_bias_init == "popularity":
        nodes = await_nodes(grid, strategy, n_nodes, cfg.fed.timeout)
        arrays = popularity_start(grid, cfg, arrays, private, nodes)
        _save_checkpoint(out, 0, arrays, strategy, rows, cfg)  # the histogram is released once

    rundir.write_json(out / "config.json", cfg.to_flat())
    rundir.save_negatives(out / "negatives.npz", split)
    popularity = evaluate_item_scores(popularity_scores(split), split)
    flat = cfg.to_flat()
    log.info(
        "%s: %d users, %d items, %d train interactions; %d nodes; popularity %s", split.name,
        split.n_users, split.n_items, split.n_train, n_nodes,
        " ".join(f"{k} {v:.4f}" for k, v in popularity.items() if k in EVAL_FIELDS[:2] + ("auc",)),
    )
    n_rounds = cfg.fed.num_rounds
    rules = _reply_rules(cfg, split, model, arrays, n_nodes)  # once; a round's arrays: its base
    from_global = cfg.privacy.privacy != "user"  # (DP replies are sums: measured from zero)
    eval_rules = EvalRules(_max_count(split))
    stopped = None
    for r in range(start, n_rounds + 1):
        if private is not None and (stopped := private.stop_reason(r)):
            log.info("stopping: %s", stopped)
            break
        t0 = time.time()
        # all nodes before the first round (deadline: timeout); later, whoever is connected
        nodes = await_nodes(grid, strategy, n_nodes, cfg.fed.timeout if nodes is None else 0.0,
                            nodes)
        msgs = list(strategy.configure_train(r, _record(arrays), ConfigRecord(dict(flat)), grid))
        replies, missing, nbytes = send_and_collect(grid, msgs, cfg.fed.timeout,
                                                    f"round {r} train")
        # a node that did not answer is `missing` (named by send_and_collect), not `rejected`
        replies, rejected = screen_replies(
            len(msgs) - len(missing), replies,
            dataclasses.replace(rules, base=arrays) if from_global else rules)
        if not replies:
            raise RuntimeError("train: every node failed (see the warnings above)")
        train_sums = dict(sum_metrics([m.content for m in replies], "num-examples"))
        weighted = [m for m in replies if float(m.content["metrics"]["num-examples"]) > 0]
        if weighted:
            agg, _ = strategy.aggregate_train(r, weighted)
            if agg is not None:
                arrays = {k: a.numpy() for k, a in agg.items()}
        row: dict[str, Any] = {"round": r, "rejected": rejected, "missing": len(missing),
                               "train_bytes": nbytes}
        if "users" in train_sums:  # DP replies carry no count and no loss
            row["users"] = int(train_sums["users"])
            row["train_loss"] = train_sums.get("loss-sum", 0.0) / max(train_sums["users"], 1.0)
        if private is not None:
            eps = private.epsilon()
            row["epsilon"], row["epsilon_rdp"] = eps["prv"], eps["rdp"]
        if r % cfg.fed.eval_every == 0 or r == n_rounds:
            parts = eval_parts(split, final=r == n_rounds)
            row.update(_evaluate(grid, strategy, r, arrays, flat, cfg.fed.timeout, parts,
                                 n_nodes, eval_rules))
            row["missing"] += row.pop("missing-evaluate")
            row["rejected"] += row.pop("rejected-evaluate")
            row["evaluate_bytes"] = row.pop("bytes-evaluate")
        row["round_s"] = time.time() - t0
        prev = float(rows[-1]["elapsed_s"]) if rows else 0.0
        row["elapsed_s"] = prev + row["round_s"]
        rows.append(row)
        _save_checkpoint(out, r, arrays, strategy, rows, cfg)
        rundir.write_metrics(out / "metrics.csv", rows, rundir.METRIC_FIELDS)
        log.info(_progress(row, n_rounds))

    if rows and split.has_validation and not any(k in rows[-1] for k in TEST_KEYS):
        # stopped early (privacy budget): the test part is read once, for the last model
        rows[-1].update(_evaluate(grid, strategy, int(rows[-1]["round"]), arrays, flat,
                                  cfg.fed.timeout, ("test",), n_nodes, eval_rules))
        rows[-1]["missing"] = rows[-1].get("missing", 0) + rows[-1].pop("missing-evaluate")
        rows[-1]["rejected"] = rows[-1].get("rejected", 0) + rows[-1].pop("rejected-evaluate")
        rows[-1]["evaluate_bytes"] = (rows[-1].get("evaluate_bytes") or 0) + rows[-1].pop(
            "bytes-evaluate")
        rundir.write_metrics(out / "metrics.csv", rows, rundir.METRIC_FIELDS)
    final = next((r for r in reversed(rows) if any(r.get(k, "") != "" for k in TEST_KEYS)), {})
    valid = next((r for r in reversed(rows) if any(r.get(k, "") != "" for k in VAL_KEYS)), {})
    summary = {
        "config": as_dict(cfg),
        "dataset": {
            "name": split.name,
            "users": split.n_users,
            "items": split.n_items,
            "train_interactions": split.n_train,
            "test_users": int((split.test_items >= 0).sum()) if split.protocol == "ranking"
            else int((np.diff(split.ctr_test.indptr) > 0).sum()),
            "protocol": split.protocol,
            "split": cfg.data.split,
        },
        "rounds": len(rows),
        "final": {k: final[k] for k in EVAL_FIELDS if final.get(k, "") != ""},
        "validation": {k[len(VALID):]: valid[k] for k in VAL_KEYS if valid.get(k, "") != ""},
        "baselines": {"popularity": popularity},
        "privacy": private.privacy_summary() if private is not None else {
            "mode": cfg.privacy.privacy, "epsilon": None, "delta": None},
        "stopped": stopped,
        "timing": {
            "total_s": time.time() - t_start,
            "per_round_s": float(np.mean([float(r["round_s"]) for r in rows])) if rows else 0.0,
        },
        "nodes": n_nodes,
    }
    rundir.write_json(out / "summary.json", summary)
    return summary


def _save_checkpoint(out: Path, r: int, arrays: dict[str, np.ndarray], strategy: Any,
                     rows: list[dict[str, Any]], cfg: Config) -> None:
    """Everything a resumed run needs after round ``r`` (0: the warm start)."""
    checkpoint.save_pickle(
        out / CKPT_DIR / f"round-{r}.pkl",
        {
            "round": r,
            "arrays": arrays,
            "strategy": _strategy_state(strategy),
            "random": random.getstate(),
            "rows": rows,
            "config": config_identity(cfg),
        },
    )
    checkpoint.prune(out / CKPT_DIR, keep=2)


def _reply_rules(cfg: Config, split: Any, model: Any, arrays: dict[str, np.ndarray],
                 n_nodes: int) -> ReplyRules:
    """What a valid train reply carries (see ``server.replies``); built once per run. Without
    user-level DP the update is measured from the global ``arrays`` (the caller puts each
    round's in); under it from zero."""
    extra = {k: a.shape for k, a in item_extras(cfg, model, split).items()}
    if cfg.privacy.privacy != "user":  # num-examples: training positives
        return ReplyRules(arrays, extra, float(split.n_train), cfg.fed.max_update_norm)
    # user-level DP: a reply is the node's sum of clipped user updates with num-examples 1,
    # so its norm is at most C times the node's user count; under secure aggregation it is
    # masked (uniform in the quantisation group) and only the total can be checked
    zero = {k: np.zeros_like(v) for k, v in arrays.items()}
    if cfg.privacy.dp_trust == "secagg":
        return ReplyRules(zero, extra, 1.0, math.inf, dtype_kind="i")
    node_users = max(len(u) for u in partition_users(split.n_users, n_nodes))
    # (1e-5: the clip is applied in float32)
    return ReplyRules(zero, extra, 1.0, cfg.privacy.clip_norm * node_users * (1 + 1e-5))


def _max_count(split: Any) -> float:
    """The most a node can count in an evaluate reply: every user (ranking), every labelled
    row of the larger evaluation part (click-through)."""
    if split.protocol != "ctr":
        return float(split.n_users)
    return float(max(len(p.items) for p in (split.ctr_test, split.ctr_valid) if p is not None))


def _evaluate(
    grid: Grid, strategy: Any, r: int, arrays: dict, flat: dict, timeout: float,
    parts: tuple[str, ...] = ("test",), n_nodes: int = 1, rules: EvalRules | None = None,
) -> dict[str, float]:
    config = ConfigRecord({**flat, EVAL_PARTS_KEY: ",".join(parts)})
    await_nodes(grid, strategy, n_nodes, 0.0)  # a node lost since training is not waited for
    msgs = strategy.configure_evaluate(r, _record(arrays), config, grid)
    replies, missing, nbytes = send_and_collect(grid, msgs, timeout, f"round {r} evaluate")
    replies, rejected = screen_replies(len(msgs) - len(missing), replies, rules or EvalRules(),
                                       f"round {r} evaluate")
    if not replies:
        raise RuntimeError("evaluate: every node failed (see the warnings above)")
    sums = dict(strategy.aggregate_evaluate(r, replies) or {})
    out = summarize({k[: -len("-sum")]: v for k, v in sums.items() if k.endswith("-sum")})
    return {**out, "missing-evaluate": len(missing), "rejected-evaluate": rejected,
            "bytes-evaluate": nbytes}


def same_identity(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a checkpoint's config identity is the current one. A setting the checkpoint lacks
    (added to fedrec after it was written) matches when the current value is its default."""
    defaults = Config().to_flat()
    return all(saved[k] == v if k in saved else v == defaults.get(k)
               for k, v in current.items()) and set(saved) <= set(current)


def config_identity(cfg: Config) -> dict[str, Any]:
    """Settings that must match for a checkpoint to be resumed (all but run bookkeeping)."""
    flat = cfg.to_flat()
    for k in ("num-rounds", "out", "resume", "timeout", "eval-every", "device",
              "max-examples-per-chunk"):
        flat.pop(k, None)
    return flat


def _progress(row: dict[str, Any], n_rounds: int) -> str:
    parts = [f"round {row['round']:>3}/{n_rounds}"]
    if "train_loss" in row:
        parts += [f"loss {row['train_loss']:.4f}", f"users {row['users']}"]
    if "epsilon" in row:
        parts.append(f"epsilon {row['epsilon']:.3f}")
    for key, label in (("val-hr@10", "val HR@10"), ("val-auc", "val AUC"), ("val-acc", "val ACC"),
                       ("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"), ("auc", "AUC"),
                       ("acc", "ACC"), ("f1", "F1")):
        if key in row:
            parts.append(f"{label} {row[key]:.4f}")
    parts.append(f"{row['round_s']:.2f}s")
    return " | ".join(parts)
