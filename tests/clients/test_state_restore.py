"""A node that lost its memory (a restarted SuperNode) restores its users' private rows from
the newest state file on its disk, and says which node and which round."""

from __future__ import annotations

import logging

import numpy as np
import torch
from flwr.app import Context, RecordDict

from clients import app as client_module
from fedrec import node
from fedrec.config import Config

SMALL = {"dataset": "synthetic", "synthetic-users": 40, "synthetic-items": 150,
         "test-negatives": 49, "synthetic-interactions": 12, "dim": 8, "seed": 3,
         "device": "cpu", "users-per-node": 20}


def _state(value: float, n: int = 20) -> dict[str, torch.Tensor]:
    return {"user_emb": torch.full((n, 8), value), "user_bias": torch.full((n,), value)}


def test_latest_state_is_the_newest_round_not_after_the_one_asked(tmp_path):
    # Prepare: a node that saved rounds 1 and 2 (then went down)
    node.save_state(tmp_path, 1, _state(1.0))
    node.save_state(tmp_path, 2, _state(2.0))

    # Execute / Assert
    r, st = node.latest_state(tmp_path, 5)
    assert r == 2 and float(st["user_emb"][0, 0]) == 2.0
    r, st = node.latest_state(tmp_path, 1)  # a resumed round 2 must not see round 2's rows
    assert r == 1 and float(st["user_bias"][3]) == 1.0
    assert node.latest_state(tmp_path, 0) is None
    assert node.latest_state(tmp_path / "nothing", 3) is None
    assert node.latest_state(None, 3) is None


def test_restarted_node_restores_latest_state_and_names_itself(tmp_path, caplog):
    # Prepare: partition 1 kept round 2's rows on disk; its memory is empty (new process)
    cfg = Config.from_flat({**SMALL, "out": str(tmp_path / "run")})
    split = node.load_split(cfg)
    users = node.node_users(cfg, split, 1, 2)
    saved = node.initial_state(cfg, users)
    saved = {k: v + 0.5 for k, v in saved.items()}
    node.save_state(node.state_dir(cfg, 1), 2, saved)
    context = Context(run_id=1, node_id=777, node_config={"partition-id": 1,
                      "num-partitions": 2}, state=RecordDict(), run_config={})

    # Execute: round 5's training needs the rows as of round 4
    with caplog.at_level(logging.WARNING):
        state = client_module._state(cfg, context, 1, users, 4)

    # Assert
    for k in saved:
        np.testing.assert_array_equal(state[k].numpy(), saved[k].numpy().astype(np.float32))
    text = caplog.text
    assert "partition 1 (Flower node 777)" in text and "restored round 2's" in text


def test_node_without_state_on_disk_starts_fresh_and_says_so(tmp_path, caplog):
    cfg = Config.from_flat({**SMALL, "out": str(tmp_path / "run")})
    users = node.node_users(cfg, node.load_split(cfg), 0, 2)
    context = Context(run_id=1, node_id=5, node_config={"partition-id": 0,
                      "num-partitions": 2}, state=RecordDict(), run_config={})
    with caplog.at_level(logging.WARNING):
        state = client_module._state(cfg, context, 0, users, 3)
    fresh = node.initial_state(cfg, users)
    for k in fresh:
        torch.testing.assert_close(state[k], fresh[k])
    assert "partition 0 (Flower node 5): no private state of round 3 or earlier" in caplog.text


def test_split_and_model_are_cached_on_node_disk(tmp_path, monkeypatch):
    # Prepare
    cfg = Config.from_flat({**SMALL, "seed": 11})
    cache = tmp_path / "cache"
    monkeypatch.setattr(node, "_SPLITS", {})
    monkeypatch.setattr(node, "_MODELS", {})
    split = node.load_split(cfg, cache)
    node.make_model(cfg, split, cache)
    files = sorted(p.name.split("-")[0] for p in cache.iterdir())
    assert files == ["model", "split"]

    # Execute: a fresh process (empty memo) reads them back instead of rebuilding
    monkeypatch.setattr(node, "_SPLITS", {})
    monkeypatch.setattr(node, "_MODELS", {})
    import fedrec.data.prepare as prepare

    def no_rebuild(*a, **k):
        raise AssertionError("the split was rebuilt")

    monkeypatch.setattr(prepare, "prepare_split", no_rebuild)
    again = node.load_split(cfg, cache)
    model = node.make_model(cfg, again, cache)

    # Assert
    np.testing.assert_array_equal(again.test_items, split.test_items)
    np.testing.assert_array_equal(again.test_negatives, split.test_negatives)
    assert sorted(model.init_shared(0)) == sorted(node.make_model(cfg, split).init_shared(0))
    monkeypatch.undo()
    monkeypatch.setattr(node, "_SPLITS", {})
    node.load_split(Config.from_flat({**SMALL, "seed": 12}), cache)  # another key, another file
    assert sum(p.name.startswith("split-") for p in cache.iterdir()) == 2
