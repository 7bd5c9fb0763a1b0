"""Replies and node waits within deadlines (server/exchange.py), on an in-process Grid whose
nodes can be made silent (a killed or stuck node) or absent (a node that never reconnects)."""

from __future__ import annotations

import logging
import time

import pytest

from clients.app import app as client_app
from fedrec.config import Config
from server.exchange import await_nodes, payload_bytes, send_and_collect
from server.loop import run_federation
from server.strategies import build_strategy
from simulations.inprocess import InProcessGrid

SMALL = {
    "dataset": "synthetic", "synthetic-users": 40, "synthetic-items": 150,
    "test-negatives": 49, "synthetic-interactions": 12, "num-rounds": 3, "dim": 8,
    "batch-size": 16, "seed": 3, "device": "cpu", "users-per-node": 10, "timeout": 0.3,
}


class FaultyGrid(InProcessGrid):
    """Node ``silent`` takes messages but never replies from round ``from_round`` on; it
    stays connected (heartbeating) like a stuck node, unless ``gone`` (then it also
    disappears from the connected nodes, like a killed one)."""

    def __init__(self, n: int, silent: int, from_round: int, gone: bool = False):
        super().__init__(client_app, n)
        self.silent, self.from_round, self.gone = silent, from_round, gone
        self.round = 0

    def get_node_ids(self):
        ids = list(self.contexts)
        if self.gone and self.round >= self.from_round:
            ids.remove(self.silent)
        return ids

    def push_messages(self, messages):
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            self.round += 1
        ids = super().push_messages(messages)
        if self.round >= self.from_round:
            for m, mid in zip(messages, ids, strict=True):
                if m.metadata.dst_node_id == self.silent:
                    self._pending.pop(mid)  # the reply never comes
        return ids


def test_silent_node_is_named_counted_and_the_round_finishes(tmp_path, caplog):
    # Prepare
    cfg = Config.from_flat({**SMALL, "out": str(tmp_path / "run")})
    grid = FaultyGrid(4, silent=1002, from_round=2)

    # Execute
    with caplog.at_level(logging.WARNING, logger="fedrec.server"):
        summary = run_federation(grid, cfg)

    # Assert
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    missing = [int(r.split(",")[header.index("missing")]) for r in rows[1:]]
    users = [int(r.split(",")[header.index("users")]) for r in rows[1:]]
    assert missing == [0, 2, 2]  # train and evaluate of rounds 2 and 3
    assert users == [40, 30, 30]  # the other three nodes' users trained
    sent = [int(r.split(",")[header.index("train_bytes")]) for r in rows[1:]]
    assert sent[1] < sent[0]  # one reply fewer (its arrays are most of the bytes)
    assert summary["rounds"] == 3 and "hr@10" in summary["final"]
    warned = [r.getMessage() for r in caplog.records if "no reply from node 1002" in
              r.getMessage()]
    assert len(warned) == 4 and "round 2 train" in warned[0]


def test_gone_node_does_not_block_the_next_round(tmp_path, caplog):
    # Prepare: the node vanishes at round 2; Flower's strategy would wait for it forever
    cfg = Config.from_flat({**SMALL, "out": str(tmp_path / "run")})
    grid = FaultyGrid(4, silent=1003, from_round=2, gone=True)

    # Execute
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="fedrec.server"):
        summary = run_federation(grid, cfg)

    # Assert
    assert time.monotonic() - t0 < 60
    assert summary["rounds"] == 3
    text = caplog.text
    assert "3 of 4 nodes connected" in text and "node 1003 gone" in text


def test_await_nodes_has_a_deadline_and_lowers_the_strategy_minimum():
    # Prepare
    cfg = Config.from_flat(SMALL)
    grid = FaultyGrid(4, silent=1000, from_round=0, gone=True)
    strategy = build_strategy(cfg, 4)

    # Execute
    t0 = time.monotonic()
    nodes = await_nodes(grid, strategy, 4, timeout=0.5)

    # Assert
    assert 0.5 <= time.monotonic() - t0 < 5
    assert nodes == {1001, 1002, 1003}
    assert strategy.min_available_nodes == strategy.min_train_nodes == 3


def test_no_node_at_all_is_an_error():
    class Empty(InProcessGrid):
        def get_node_ids(self):
            return []

    with pytest.raises(RuntimeError, match="no node connected within 0.2 s"):
        await_nodes(Empty(client_app, 1), build_strategy(Config.from_flat(SMALL), 1), 1, 0.2)


def test_send_and_collect_returns_every_reply_when_all_answer():
    # Prepare
    cfg = Config.from_flat({**SMALL, "out": ""})
    grid = InProcessGrid(client_app, 4)
    strategy = build_strategy(cfg, 4)
    from flwr.app import ArrayRecord, ConfigRecord

    msgs = list(strategy.configure_evaluate(1, ArrayRecord(), ConfigRecord({"x": 1}), grid))

    # Execute
    replies, missing, nbytes = send_and_collect(grid, msgs, 5.0, "evaluate")

    # Assert: four (error) replies, one per node, nothing missing
    assert missing == [] and len(replies) == 4
    assert nbytes == payload_bytes(msgs) + payload_bytes(replies) > 0
    assert {m.metadata.src_node_id for m in replies} == set(grid.contexts)
