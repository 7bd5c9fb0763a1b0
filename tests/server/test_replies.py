"""Reply validation before aggregation: one test per kind of bad reply, and a federation that
goes on when a node sends garbage, raises or never answers."""

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from clients.app import app as client_app
from fedrec import rundir
from fedrec.config import Config
from fedrec.data.partition import num_partitions
from fedrec.node import load_split
from server.loop import run_federation
from server.replies import (
    EvalRules,
    ReplyRules,
    check_eval_reply,
    check_reply,
    screen_replies,
)
from simulations.inprocess import InProcessGrid

# what run_simulation sets up before a ServerApp may create messages (cases are built at import)
TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
BASE = {"item_emb": np.zeros((5, 3)), "bias": np.zeros(())}
RULES = ReplyRules(BASE, {}, max_weight=100.0, max_norm=10.0)


def reply(arrays=None, metrics=None, drop=(), add=None):
    arrays = {k: np.array(v, copy=True) for k, v in (arrays or BASE).items() if k not in drop}
    arrays.update(add or {})
    metrics = {"num-examples": 10.0, "loss-sum": 1.0, "users": 2.0, **(metrics or {})}
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord(metrics)})
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)


def with_value(name, idx, value, dtype=np.float64):
    arrays = {k: np.array(v, dtype=dtype if k == name else v.dtype) for k, v in BASE.items()}
    arrays[name][idx] = value
    return reply(arrays)


def test_valid_reply_passes():
    good = {"item_emb": np.full((5, 3), 0.5), "bias": np.array(0.1)}
    assert check_reply(reply(good), RULES) is None
    assert check_reply(reply(good, {"num-examples": 0.0}), RULES) is None  # nobody sampled


@pytest.mark.parametrize("msg, why", [
    (with_value("item_emb", (1, 2), np.nan), "non-finite"),
    (with_value("item_emb", (0, 0), np.inf), "non-finite"),
    (with_value("item_emb", (0, 0), -np.inf), "non-finite"),
    (reply({"item_emb": np.zeros((4, 3)), "bias": np.zeros(())}), "shape (4, 3), expected (5, 3)"),
    (reply({"item_emb": np.zeros((5, 3)), "bias": np.zeros(1)}), "shape (1,), expected ()"),
    (reply(drop=("bias",)), "missing array(s) ['bias']"),
    (reply(add={"user_emb": np.zeros((2, 3))}), "unexpected array(s) ['user_emb']"),
    (reply({"item_emb": np.zeros((5, 3), np.int64), "bias": np.zeros(())}), "dtype int64"),
    (reply({"item_emb": np.zeros((5, 3), np.complex128), "bias": np.zeros(())}),
     "dtype complex128"),
    (reply(metrics={"num-examples": -1.0}), "outside [0, 100]"),
    (reply(metrics={"num-examples": 1e9}), "outside [0, 100]"),
    (reply(metrics={"num-examples": math.nan}), "'num-examples' is not finite"),
    (reply(metrics={"num-examples": math.inf}), "'num-examples' is not finite"),
    (reply(metrics={"loss-sum": math.nan}), "'loss-sum' is not finite"),
    (reply({"item_emb": np.full((5, 3), 3.0), "bias": np.zeros(())}),
     "update norm 11.62 exceeds max-update-norm 10"),
])
def test_bad_reply_is_rejected_with_reason(msg, why):
    assert why in check_reply(msg, RULES)


def test_missing_weight_and_records():
    msg = reply()
    del msg.content["metrics"]["num-examples"]
    assert "'num-examples' is missing" in check_reply(msg, RULES)
    bare = Message(content=RecordDict({"metrics": MetricRecord({"num-examples": 1.0})}),
                   dst_node_id=0, message_type=MessageType.TRAIN)
    assert "lacks its 'arrays'" in check_reply(bare, RULES)


def test_item_weights_are_checked():
    rules = ReplyRules(BASE, {"item-weight": (5,)}, max_weight=100.0, max_norm=10.0)
    assert "missing array(s) ['item-weight']" in check_reply(reply(), rules)
    ok = reply(add={"item-weight": np.array([0.0, 1, 2, 10, 10])})
    assert check_reply(ok, rules) is None
    over = reply(add={"item-weight": np.array([0.0, 1, 2, 10, 11])})
    assert "outside [0, num-examples=10]" in check_reply(over, rules)
    neg = reply(add={"item-weight": np.array([0.0, -1, 2, 3, 4])})
    assert "outside [0, num-examples=10]" in check_reply(neg, rules)
    # item-step newton: per-row curvature matrices (packed upper triangles of 2 x 2), any
    # size, a non-negative diagonal
    curv = ReplyRules(BASE, {"item-curvature": (5, 3)}, max_weight=100.0, max_norm=10.0)
    big = np.tile(np.array([1e6, -3.0, 2.0]), (5, 1))
    assert check_reply(reply(add={"item-curvature": big}), curv) is None
    bad = big.copy()
    bad[3, 2] = -1.0  # the second diagonal entry
    assert "negative diagonal" in check_reply(reply(add={"item-curvature": bad}), curv)


def test_error_and_missing_replies_are_counted():
    sent = Message(content=RecordDict(), dst_node_id=0, message_type=MessageType.TRAIN)
    err = Message(Error(code=0, reason="RuntimeError: boom"), reply_to=sent)
    good, rejected = screen_replies(4, [reply(), err, with_value("bias", (), np.nan)], RULES)
    assert len(good) == 1 and rejected == 3  # error + NaN + one node that never replied
    assert check_reply(err, RULES) == "node error: RuntimeError: boom"


def eval_reply(metrics):
    content = RecordDict({"metrics": MetricRecord(metrics)})
    return Message(content=content, dst_node_id=0, message_type=MessageType.EVALUATE)


GOOD_EVAL = {"num-examples": 10.0, "count-sum": 10.0, "hr@10-sum": 4.0, "ndcg@10-sum": 2.5}


@pytest.mark.parametrize("change, why", [
    ({"hr@10-sum": math.nan}, "metric 'hr@10-sum' is not finite"),
    ({"ndcg@10-sum": math.inf}, "metric 'ndcg@10-sum' is not finite"),
    ({"hr@10-sum": -1.0}, "metric 'hr@10-sum' is negative"),
    ({"num-examples": 1e9}, "num-examples=1e+09 exceeds the 50"),
])
def test_bad_evaluate_replies_are_rejected(change, why):
    rules = EvalRules(max_count=50.0)
    assert check_eval_reply(eval_reply(GOOD_EVAL), rules) is None
    assert why in check_eval_reply(eval_reply({**GOOD_EVAL, **change}), rules)
    no_count = {k: v for k, v in GOOD_EVAL.items() if k != "num-examples"}
    assert "'num-examples' is missing" in check_eval_reply(eval_reply(no_count), rules)
    good, rejected = screen_replies(3, [eval_reply(GOOD_EVAL), eval_reply({**GOOD_EVAL,
                                                                           **change})], rules)
    assert len(good) == 1 and rejected == 2  # the bad one + one that never came


# ------------------------------------------------------------------ inside a federation
SMALL = {"dataset": "synthetic", "synthetic-users": 40, "synthetic-items": 150,
         "test-negatives": 49, "synthetic-interactions": 12, "num-rounds": 3, "dim": 8,
         "batch-size": 16, "seed": 3, "device": "cpu", "users-per-node": 10}


class HostileGrid(InProcessGrid):
    """Node 0 poisons its train reply (``mode``); ``mode='silent'`` drops it (a timeout)."""

    def __init__(self, n, mode):
        super().__init__(client_app, n)
        self.mode = mode

    def send_and_receive(self, messages, *, timeout=None):
        out = super().send_and_receive(messages, timeout=timeout)
        if not out or out[0].metadata.message_type != MessageType.TRAIN:
            return out
        first = out[0]
        if self.mode == "silent":
            return out[1:]
        if self.mode == "nan":
            arr = first.content["arrays"]["item_emb"].numpy().copy()
            arr[0, 0] = np.nan
            first.content["arrays"]["item_emb"] = Array(arr)
        elif self.mode == "boost":
            arr = first.content["arrays"]["item_emb"].numpy() * 1e4
            first.content["arrays"]["item_emb"] = Array(arr)
        elif self.mode == "weight":
            first.content["metrics"]["num-examples"] = 1e12
        return out


def _run(tmp_path, mode):
    cfg = Config.from_flat({**SMALL, "out": str(tmp_path / mode)})
    n = num_partitions(load_split(cfg).n_users, cfg.fed.users_per_node)
    return run_federation(HostileGrid(n, mode), cfg), cfg


@pytest.mark.parametrize("mode", ["nan", "boost", "weight", "silent"])
def test_federation_rejects_one_bad_node_and_goes_on(tmp_path, mode):
    summary, cfg = _run(tmp_path, mode)
    rows = rundir.read_metrics(tmp_path / mode / "metrics.csv")
    # a reply that never came is `missing` (server/exchange.py), a bad one `rejected`
    lost, bad = ("missing", "rejected") if mode == "silent" else ("rejected", "missing")
    assert [int(r[lost]) for r in rows] == [1, 1, 1]
    assert [int(r[bad]) for r in rows] == [0, 0, 0]
    assert [int(r["users"]) for r in rows] == [30, 30, 30]  # node 0's 10 users not counted
    assert summary["rounds"] == 3 and np.isfinite(summary["final"]["hr@10"])
    clean, _ = _run(tmp_path, "none")
    clean_rows = rundir.read_metrics(tmp_path / "none" / "metrics.csv")
    assert [int(r["rejected"]) for r in clean_rows] == [0, 0, 0]


def test_a_node_that_raises_is_rejected_and_counted(tmp_path):
    cfg = Config.from_flat({**SMALL, "out": str(tmp_path / "raise")})
    n = num_partitions(load_split(cfg).n_users, cfg.fed.users_per_node)
    grid = InProcessGrid(client_app, n)
    real = grid.app

    def flaky(msg, context):  # node 2 raises in training
        if msg.metadata.message_type == MessageType.TRAIN and context.node_id == 1002:
            raise RuntimeError("disk full")
        return real(msg, context)

    grid.app = flaky
    run_federation(grid, cfg)
    rows = rundir.read_metrics(tmp_path / "raise" / "metrics.csv")
    assert [int(r["rejected"]) for r in rows] == [1, 1, 1]


class NanEvalGrid(InProcessGrid):
    """Node 0 answers every evaluate message with a NaN hit count."""

    def send_and_receive(self, messages, *, timeout=None):
        out = super().send_and_receive(messages, timeout=timeout)
        if out and out[0].metadata.message_type == MessageType.EVALUATE:
            out[0].content["metrics"]["hr@10-sum"] = math.nan
        return out


def test_a_bad_evaluate_reply_is_rejected_and_counted(tmp_path):
    cfg = Config.from_flat({**SMALL, "out": str(tmp_path / "eval"), "eval-every": 1})
    n = num_partitions(load_split(cfg).n_users, cfg.fed.users_per_node)
    summary = run_federation(NanEvalGrid(client_app, n), cfg)
    rows = rundir.read_metrics(tmp_path / "eval" / "metrics.csv")
    assert [int(r["rejected"]) for r in rows] == [1, 1, 1]  # one evaluate reply a round
    assert 0 <= summary["final"]["hr@10"] <= 1  # the NaN never reached the sums
