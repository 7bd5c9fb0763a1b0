"""Flower ClientApp. A node hosts a cohort of users; their private state never leaves it.

``train``: for each of the node's users sampled this round, load its private rows, train from
the received shared parameters, and reply with the cohort's weighted average of the new shared
parameters (weight ``num-examples``). ``evaluate``: HR/NDCG sums and counts over the node's
users, scored with their private rows.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import secagg as node_secagg
from fedrec import node
from fedrec.config import Config
from fedrec.params import to_numpy, to_torch
from fedrec.privacy import secagg

log = logging.getLogger(__name__)

STATE_KEY = "fedrec.users"
META_KEY = "fedrec.meta"

app = ClientApp()


def _config(msg: Message) -> tuple[Config, int]:
    rec = msg.content["config"]
    known = Config().to_flat()
    flat = {k: v for k, v in rec.items() if k in known}
    return Config.from_flat(flat, source="message config"), int(rec["server-round"])


def _shared(msg: Message) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in msg.content["arrays"].items()}


def _users(cfg: Config, context: Context) -> tuple[int, np.ndarray]:
    pid = int(context.node_config["partition-id"])
    n_parts = int(context.node_config["num-partitions"])
    # node-config cache-dir: the split and model are prepared once per node, not per message
    cache = context.node_config.get("cache-dir") or None
    split = node.load_split(cfg, cache)
    node.make_model(cfg, split, cache)
    return pid, node.node_users(cfg, split, pid, n_parts)


def _state(cfg: Config, context: Context, pid: int, users: np.ndarray, round_: int) -> dict:
    """Private rows as of the end of ``round_``: memory, else node disk, else fresh."""
    meta = context.state.get(META_KEY)
    if meta is not None and int(meta["round"]) == round_ and STATE_KEY in context.state:
        return to_torch({k: a.numpy() for k, a in context.state[STATE_KEY].items()})
    directory = node.state_dir(cfg, pid, context.node_config.get("state-dir"))
    found = node.latest_state(directory, round_)
    who = f"partition {pid} (Flower node {context.node_id})"
    if found is not None:
        if found[0] != round_:
            log.warning("%s: no private state of round %d; restored round %d's from %s (its "
                        "users missed the rounds in between)", who, round_, found[0], directory)
        return found[1]
    if round_ > 0:
        log.warning("%s: no private state of round %d or earlier in %s; starting its users "
                    "fresh", who, round_, directory)
    return node.initial_state(cfg, users)


def _keep_state(cfg: Config, context: Context, pid: int, round_: int, state: dict) -> None:
    arrays = to_numpy(state, np.float32)
    context.state[STATE_KEY] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    context.state[META_KEY] = ConfigRecord({"round": round_})
    directory = node.state_dir(cfg, pid, context.node_config.get("state-dir"))
    node.save_state(directory, round_, state)


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, round_ = _config(msg)
    torch.set_num_threads(int(os.environ.get("FEDREC_THREADS", "1")))
    pid, users = _users(cfg, context)
    state = _state(cfg, context, pid, users, round_ - 1)
    reply, new_state = node.train_round(cfg, round_, _shared(msg), users, state)
    _keep_state(cfg, context, pid, round_, new_state)
    arrays = reply.arrays
    if cfg.privacy.privacy == "user" and cfg.privacy.dp_trust == "secagg":
        arrays = node_secagg.masked_share(cfg, msg, context, round_, arrays)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": reply.weight, **reply.metrics}),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, round_ = _config(msg)
    pid, users = _users(cfg, context)
    state = _state(cfg, context, pid, users, round_)
    parts = tuple(str(msg.content["config"].get(node.EVAL_PARTS_KEY, "test")).split(","))
    sums = node.evaluate_round(cfg, round_, _shared(msg), users, state, parts)
    count = sums.get("count", sums.get("val-count", 0.0))
    metrics = {"num-examples": count, **{f"{k}-sum": v for k, v in sums.items()}}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Key exchange of secure aggregation (``dp-trust = secagg``): a fresh public key; or the
    node's item histogram for ``item-bias-init = popularity`` (server/warmstart.py)."""
    conf = msg.content["config"]
    if conf.get(secagg.STAGE_KEY) == node.POPULARITY_STAGE:
        cfg, _ = _config(msg)
        _, users = _users(cfg, context)
        counts = node.popularity_counts(cfg, users)
        return Message(content=RecordDict({"arrays": ArrayRecord(
            {node.COUNTS_KEY: Array(counts)})}), reply_to=msg)
    if conf.get(secagg.STAGE_KEY) != "keys":
        raise ValueError(f"unknown query: {dict(conf)}")
    key = node_secagg.new_public_key(context, int(conf["server-round"]))
    return Message(content=RecordDict({"config": ConfigRecord({secagg.PUBLIC_KEY: key})}),
                   reply_to=msg)
