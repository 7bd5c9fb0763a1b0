"""DP runs end to end on the in-process grid (issue 11): secret randomness, every message inside
the clip and the noise (or outside the guarantee, and said so), secure aggregation, resume."""

import json

import numpy as np
import pytest

from clients.app import app as client_app
from fedrec import checkpoint
from fedrec.config import Config
from fedrec.data.partition import num_partitions, participants, partition_users
from fedrec.node import load_split
from fedrec.privacy.analysis import compute_epsilons, default_delta
from server.loop import run_federation
from server.privacy import UserLevelDP
from simulations.inprocess import InProcessGrid
from tests.server.test_federation_inprocess import SMALL

DP = {"privacy": "user", "fraction-train": 0.5, "clip-norm": 0.5, "users-per-node": 8,
      "num-rounds": 2, "noise-multiplier": 1.0}
SHARED = {"item_emb", "item_bias", "bias"}


def run(tmp_path, name, grid_cls=InProcessGrid, **flat):
    cfg = Config.from_flat({**SMALL, **flat, "out": str(tmp_path / name)})
    split = load_split(cfg)
    grid = grid_cls(client_app, num_partitions(split.n_users, cfg.fed.users_per_node))
    return run_federation(grid, cfg), grid


def released(tmp_path, name, r):
    return checkpoint.load_pickle(tmp_path / name / "checkpoints" / f"round-{r}.pkl")["arrays"]


def test_two_runs_with_the_same_seed_release_different_noise(tmp_path):
    # Execute: same config and seed twice; then twice with a debug dp-seed
    a, _ = run(tmp_path, "a", **DP)
    b, _ = run(tmp_path, "b", **DP)
    c, _ = run(tmp_path, "c", **DP, **{"dp-seed": 4})
    d, _ = run(tmp_path, "d", **DP, **{"dp-seed": 4})
    # Assert: OS entropy -> other noise (and cohorts) for the same seed
    ra, rb = released(tmp_path, "a", 2), released(tmp_path, "b", 2)
    diff = ra["item_emb"] - rb["item_emb"]
    assert np.abs(diff).max() > 0.01 and abs(np.corrcoef(diff.ravel(), ra["item_emb"].ravel()
                                                         - released(tmp_path, "a", 1)["item_emb"]
                                                         .ravel())[0, 1]) < 0.9
    assert a["privacy"]["private"] is True and a["privacy"]["randomness"] == "os-entropy"
    assert json.loads((tmp_path / "a" / "config.json").read_text())["dp-seed"] == -1
    # the debug dp-seed reproduces a run exactly, and the run says it is not private
    for k in SHARED:
        np.testing.assert_array_equal(released(tmp_path, "c", 2)[k], released(tmp_path, "d", 2)[k])
    assert c["privacy"]["private"] is False and "NOT PRIVATE" in c["privacy"]["randomness"]


def test_every_message_of_a_dp_run_is_clipped_and_noised_or_outside_the_guarantee(tmp_path):
    # Execute
    summary, grid = run(tmp_path, "m", **DP)
    n_users = load_split(Config.from_flat(SMALL)).n_users
    per_node = max(len(u) for u in partition_users(n_users, len(grid.contexts)))
    # Assert: a train reply is a sum of at most `per_node` updates clipped to C, nothing else
    kinds = set()
    for msg in grid.replies:
        kind = msg.metadata.message_type
        kinds.add(kind)
        content = msg.content
        assert not content.config_records
        if kind == "train":
            assert set(content["arrays"].keys()) == SHARED
            norm = np.sqrt(sum(float((a.numpy() ** 2).sum()) for a in content["arrays"].values()))
            assert norm <= per_node * DP["clip-norm"] * (1 + 1e-9)
            assert dict(content["metrics"]) == {"num-examples": 1.0}  # a constant
        else:  # evaluation sums: outside the guarantee, and the run says so
            assert kind == "evaluate" and not content.array_records
            assert all(k == "num-examples" or k.endswith("-sum") for k in content["metrics"])
    assert kinds == {"train", "evaluate"}
    assert any("evaluation" in s for s in summary["privacy"]["outside_guarantee"])
    # messages to nodes carry the public config and the global model only
    for msg in grid.sent:
        assert set(msg.content.array_records) <= {"arrays"}
    # metrics.csv publishes no user count and no training loss
    rows = (tmp_path / "m" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for row in rows[1:]:
        vals = dict(zip(header, row.split(","), strict=True))
        assert vals["users"] == "" and vals["train_loss"] == "" and float(vals["epsilon"]) > 0


def test_sample_level_replies_carry_only_dp_outputs_and_public_counts(tmp_path):
    flat = {"privacy": "sample", "optimizer": "sgd", "noise-multiplier": 1.0,
            "fraction-train": 0.5, "users-per-node": 8, "num-rounds": 1}
    _, grid = run(tmp_path, "s", **flat)
    cfg = Config.from_flat({**SMALL, **flat})
    users = partition_users(load_split(cfg).n_users, len(grid.contexts))
    for msg in grid.replies:
        if msg.metadata.message_type == "train":
            pid = msg.metadata.src_node_id - 1000
            public = len(participants(users[pid], 0.5, cfg.run.seed, 1))
            assert dict(msg.content["metrics"]) == {"num-examples": float(public)}


# ------------------------------------------------------------------ secure aggregation
def test_secure_aggregation_hides_each_node_and_gives_the_central_sum(tmp_path):
    # Prepare: no noise and one debug dp-seed, so both trust modes train the same cohorts
    flat = {**DP, "noise-multiplier": 0.0, "dp-seed": 9}
    # Execute
    central, _ = run(tmp_path, "server", **flat)
    secure, grid = run(tmp_path, "secagg", **{**flat, "dp-trust": "secagg"})
    # Assert: the masked sum decodes to the central sum (quantisation error only)
    for r in (1, 2):
        for k in SHARED:
            np.testing.assert_allclose(released(tmp_path, "secagg", r)[k],
                                       released(tmp_path, "server", r)[k], atol=1e-9, rtol=0)
    assert secure["privacy"]["trust"] == "secagg"
    # one node's reply is a masked integer vector, uniform on [0, 2^62): nothing of its sum
    train = [m for m in grid.replies if m.metadata.message_type == "train"]
    queries = [m for m in grid.replies if m.metadata.message_type == "query"]
    assert len(queries) == len(train) == 2 * len(grid.contexts)
    emb = train[0].content["arrays"]["item_emb"].numpy()
    assert emb.dtype == np.int64 and emb.min() >= 0
    u = emb.ravel() / 2.0**62
    assert abs(u.mean() - 0.5) < 0.05 and abs(u.std() - 12**-0.5) < 0.03


class DropOneNode(InProcessGrid):
    """Node 1002 fails its train messages (a dropout after the key exchange)."""

    def send_and_receive(self, messages, *, timeout=None):
        msgs = list(messages)
        out = super().send_and_receive(msgs, timeout=timeout)
        for i, m in enumerate(out):
            if m.metadata.message_type == "train" and m.metadata.src_node_id == 1002:
                from flwr.app import Error, Message
                out[i] = Message(Error(code=0, reason="node went away"), reply_to=msgs[i])
        return out


def test_a_dropout_fails_the_secure_round_clearly(tmp_path):
    with pytest.raises(RuntimeError, match=r"no reply from node\(s\) \[1002\]"):
        run(tmp_path, "drop", DropOneNode, **{**DP, "dp-trust": "secagg"})


# ------------------------------------------------------------------ resume
class CrashInRound7(InProcessGrid):
    def send_and_receive(self, messages, *, timeout=None):
        msgs = list(messages)
        if any(int(m.content["config"]["server-round"]) == 7 for m in msgs):
            raise RuntimeError("crash")
        return super().send_and_receive(msgs, timeout=timeout)


def test_resuming_with_other_num_rounds_keeps_the_noise_and_reports_the_true_epsilon(tmp_path):
    # Prepare: z calibrated for target 8 over 20 rounds; the run crashes in round 7
    flat = {**DP, "noise-multiplier": 0.0, "target-epsilon": 8.0, "eval-every": 100}
    with pytest.raises(RuntimeError, match="crash"):
        run(tmp_path, "r", CrashInRound7, **{**flat, "num-rounds": 20})
    # Execute: resume with num-rounds = 8
    s, _ = run(tmp_path, "r", **{**flat, "num-rounds": 8})
    # Assert: the noise of the first rounds is kept, and epsilon is that of 8 rounds of it
    delta = default_delta(40)
    z20 = UserLevelDP.calibrate(Config.from_flat({**SMALL, **flat, "num-rounds": 20}), 0.5, delta)
    z8 = UserLevelDP.calibrate(Config.from_flat({**SMALL, **flat, "num-rounds": 8}), 0.5, delta)
    assert z8 < 0.9 * z20
    assert s["privacy"]["noise_multiplier"] == z20 and s["rounds"] == 8
    assert s["privacy"]["epsilon"] == pytest.approx(
        compute_epsilons([(z20, 0.5, 8)], delta)["prv"], rel=1e-9)
    assert s["privacy"]["epsilon"] < 7.0  # not the target: fewer rounds of the larger noise
