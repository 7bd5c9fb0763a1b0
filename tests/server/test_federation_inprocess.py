"""ClientApp + ServerApp handlers end to end on an in-process Grid (no Ray)."""

import json

import numpy as np
import pytest

from clients.app import app as client_app
from fedrec.config import Config
from fedrec.data.partition import num_partitions
from fedrec.node import load_split
from server.loop import run_federation
from simulations.inprocess import InProcessGrid

SMALL = {
    "dataset": "synthetic",
    "synthetic-users": 40,
    "synthetic-items": 150,
    "test-negatives": 49,
    "synthetic-interactions": 12,
    "num-rounds": 3,
    "dim": 8,
    "batch-size": 16,
    "seed": 3,
    "device": "cpu",
}


def run(tmp_path, name, **flat):
    cfg = Config.from_flat({**SMALL, **flat, "out": str(tmp_path / name)})
    split = load_split(cfg)
    n = num_partitions(split.n_users, cfg.fed.users_per_node, cfg.fed.num_nodes)
    grid = InProcessGrid(client_app, n)
    return run_federation(grid, cfg), grid


def test_result_does_not_depend_on_users_per_node(tmp_path):
    a, grid_a = run(tmp_path, "one", **{"users-per-node": 1})
    b, grid_b = run(tmp_path, "eight", **{"users-per-node": 8})
    assert len(grid_a.contexts) == 40 and len(grid_b.contexts) == 5
    for k in ("hr@10", "ndcg@10"):
        assert a["final"][k] == pytest.approx(b["final"][k], abs=1e-6)
    ra = np.genfromtxt(tmp_path / "one" / "metrics.csv", delimiter=",", names=True)
    rb = np.genfromtxt(tmp_path / "eight" / "metrics.csv", delimiter=",", names=True)
    np.testing.assert_allclose(ra["train_loss"], rb["train_loss"], atol=1e-6)


def test_private_parameters_never_travel(tmp_path):
    summary, grid = run(tmp_path, "p", **{"users-per-node": 8, "num-rounds": 1})
    private = {"user_emb", "user_bias"}
    for msg in grid.sent + grid.replies:
        for rec in msg.content.array_records.values():
            assert not private & set(rec.keys())
            for arr in rec.values():  # nothing shaped like a per-user table either
                assert arr.shape[:1] != (40,)
    train_replies = [m for m in grid.replies if m.content.array_records]
    assert train_replies and all(
        set(m.content["arrays"].keys()) == {"item_emb", "item_bias", "bias"} for m in train_replies
    )


def test_run_directory_contract_and_resume(tmp_path):
    summary, _ = run(tmp_path, "r", **{"users-per-node": 16, "num-rounds": 2})
    out = tmp_path / "r"
    for f in ("config.json", "metrics.csv", "summary.json", "negatives.npz"):
        assert (out / f).exists(), f
    s = json.loads((out / "summary.json").read_text())
    assert s["rounds"] == 2 and set(s["final"]) == {"hr@10", "ndcg@10", "recall@20", "ndcg@20-full"}
    assert s["baselines"]["popularity"]["hr@10"] > 0
    assert s["privacy"]["mode"] == "none"
    # resume: a fresh run to 4 rounds in the same directory continues from round 2
    resumed, grid = run(tmp_path, "r", **{"users-per-node": 16, "num-rounds": 4})
    train_msgs = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert {int(m.content["config"]["server-round"]) for m in train_msgs} == {3, 4}
    straight, _ = run(tmp_path, "straight", **{"users-per-node": 16, "num-rounds": 4})
    assert resumed["final"]["hr@10"] == pytest.approx(straight["final"]["hr@10"], abs=1e-6)
    assert resumed["final"]["ndcg@10"] == pytest.approx(straight["final"]["ndcg@10"], abs=1e-6)


def test_federated_beats_popularity_on_synthetic(tmp_path):
    summary, _ = run(tmp_path, "q", **{
        "synthetic-users": 300, "synthetic-items": 200, "synthetic-interactions": 30,
        "num-rounds": 15, "users-per-node": 150, "dim": 16, "batch-size": 32})
    assert summary["final"]["hr@10"] > 1.1 * summary["baselines"]["popularity"]["hr@10"]


def test_node_count_mismatch_is_explained(tmp_path):
    cfg = Config.from_flat({**SMALL, "out": str(tmp_path / "m"), "users-per-node": 8})
    load_split(cfg)
    grid = InProcessGrid(client_app, 6)  # config implies 5
    with pytest.raises(RuntimeError, match="every node failed"):
        run_federation(grid, cfg)
    reasons = {m.error.reason for m in grid.replies if m.has_error()}
    assert any("6 nodes but the config implies 5" in r for r in reasons)


DP = {"privacy": "user", "fraction-train": 0.5, "clip-norm": 0.5, "users-per-node": 8,
      "dp-seed": 1}  # debug: reproducible DP noise and sampling (not private)


def test_user_level_dp_is_independent_of_users_per_node_and_accounted(tmp_path):
    a, _ = run(tmp_path, "dp1", **{**DP, "users-per-node": 1, "target-epsilon": 8.0})
    b, _ = run(tmp_path, "dp8", **{**DP, "target-epsilon": 8.0})
    for k in ("hr@10", "ndcg@10"):
        assert a["final"][k] == pytest.approx(b["final"][k], abs=1e-6)
    priv = b["privacy"]
    assert priv["mode"] == "user" and priv["noise_multiplier"] > 0
    assert priv["epsilon"] <= 8.0 and priv["epsilon_rdp"] >= priv["epsilon"] * 0.9
    assert priv["delta"] == pytest.approx(40 ** -1.1)
    rows = np.genfromtxt(tmp_path / "dp8" / "metrics.csv", delimiter=",", names=True)
    assert np.all(np.diff(rows["epsilon"]) > 0)  # composed over rounds, not per round


def test_user_level_dp_stops_when_budget_is_spent_and_resumes_accountant(tmp_path):
    flat = {**DP, "noise-multiplier": 1.0, "target-epsilon": 2.0, "num-rounds": 30}
    s, _ = run(tmp_path, "stop", **flat)
    assert s["stopped"] and "privacy budget" in s["stopped"]
    assert 0 < s["rounds"] < 30 and s["privacy"]["epsilon"] <= 2.0
    # a resumed run restores the accountant: epsilon continues from the checkpoint
    part, _ = run(tmp_path, "res", **{**flat, "target-epsilon": 0.0, "num-rounds": 2})
    full, _ = run(tmp_path, "res", **{**flat, "target-epsilon": 0.0, "num-rounds": 4})
    straight, _ = run(tmp_path, "str", **{**flat, "target-epsilon": 0.0, "num-rounds": 4})
    assert full["privacy"]["epsilon"] == pytest.approx(straight["privacy"]["epsilon"], rel=1e-9)
    assert full["final"]["hr@10"] == pytest.approx(straight["final"]["hr@10"], abs=1e-6)


def test_item_weighted_fedavg_is_cohort_independent_and_differs_from_fedavg(tmp_path):
    a, _ = run(tmp_path, "i1", **{"strategy": "fedavg-items", "users-per-node": 1})
    b, _ = run(tmp_path, "i8", **{"strategy": "fedavg-items", "users-per-node": 8})
    c, _ = run(tmp_path, "f8", **{"users-per-node": 8})
    for k in ("hr@10", "ndcg@10"):
        assert a["final"][k] == pytest.approx(b["final"][k], abs=1e-6)
    ca = np.genfromtxt(tmp_path / "i8" / "metrics.csv", delimiter=",", names=True)
    cc = np.genfromtxt(tmp_path / "f8" / "metrics.csv", delimiter=",", names=True)
    assert not np.allclose(ca["train_loss"][1:], cc["train_loss"][1:])


def test_finetuning_and_explicit_rmse_run(tmp_path):
    ft, _ = run(tmp_path, "ft", **{"finetune-epochs": 1, "users-per-node": 8})
    base, _ = run(tmp_path, "nf", **{"users-per-node": 8})
    assert ft["final"]["ndcg@10"] != pytest.approx(base["final"]["ndcg@10"], abs=1e-4)
    ex, _ = run(tmp_path, "ex", **{"loss": "mse", "users-per-node": 8, "num-rounds": 10,
                                  "lr": 0.3})
    assert 0 < ex["final"]["rmse"] < 2.0


def test_a_run_without_a_run_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.from_flat(SMALL)
    with pytest.raises(ValueError, match="setting 'out' is empty"):
        run_federation(InProcessGrid(client_app, 1), cfg)
    assert not list(tmp_path.iterdir())  # nothing written into the working directory


def test_checkpoint_identity_tolerates_settings_added_later_at_their_default():
    from server.loop import config_identity, same_identity

    current = config_identity(Config.from_flat({**SMALL, "dim": 16}))
    saved = dict(current)
    saved.pop("item-bias-init")  # a checkpoint written before the setting existed
    assert same_identity(saved, current)
    assert not same_identity(saved, config_identity(
        Config.from_flat({**SMALL, "dim": 16, "item-bias-init": "popularity"})))
    assert not same_identity({**current, "dim": 8}, current)
    assert not same_identity({**current, "gone-setting": 1}, current)


def test_newton_item_step_federation_learns_and_ignores_grouping(tmp_path):
    newton = {"strategy": "fedavg-items", "item-step": "newton", "optimizer": "sgd",
              "lr": 0.5, "synthetic-users": 300, "synthetic-items": 200,
              "synthetic-interactions": 30, "num-rounds": 6, "dim": 8, "batch-size": 32,
              "weight-decay": 0.01}
    a, _ = run(tmp_path, "n150", **{**newton, "users-per-node": 150})
    b, grid = run(tmp_path, "n60", **{**newton, "users-per-node": 60})
    assert a["final"]["hr@10"] > 1.1 * a["baselines"]["popularity"]["hr@10"]
    for k in ("hr@10", "ndcg@10"):  # per-row sums: the grouping of users changes nothing
        assert a["final"][k] == pytest.approx(b["final"][k], abs=1e-6)
    replies = [m for m in grid.replies if m.content.array_records]
    assert all(m.content["arrays"]["item-curvature"].numpy().shape == (200, 45)
               for m in replies)
    rows = np.genfromtxt(tmp_path / "n60" / "metrics.csv", delimiter=",", names=True)
    assert (rows["rejected"] == 0).all()


def test_inprocess_runs_keep_no_messages(tmp_path):
    cfg = Config.from_flat({**SMALL, "out": str(tmp_path / "k"), "users-per-node": 8})
    grid = InProcessGrid(client_app, 5, record=False)
    run_federation(grid, cfg)  # a long run would otherwise hold every round's arrays
    assert grid.sent == [] and grid.replies == [] and grid._pending == {}
