"""loss = ials: exact user rows on the nodes, the items' exact Newton step on the server
(fedrec.train.ials); federated iALS is central iALS whatever the users' partition."""

import numpy as np
import pytest
import torch

from clients.app import app as client_app
from fedrec.config import Config, ConfigError, TrainConfig
from fedrec.data.partition import num_partitions
from fedrec.node import load_split
from fedrec.train.cohort import train_cohort
from fedrec.train.ials import item_stats, solve_users
from fedrec.train.newton import newton_step
from server.loop import run_federation
from simulations.inprocess import InProcessGrid
from tests.helpers import build_test_model, tiny_split

ALPHA, WD = 0.05, 0.03


def _objective(y, p, bu, q, qb, b):
    """iALS loss L (fedrec.train.ials) of the users in ``y``'s rows, all float64 tensors."""
    s = p @ q.T + bu[:, None] + qb[None, :] + b
    n_users, n_items = y.shape
    data = 0.5 * (y * (s - 1) ** 2).sum() + 0.5 * ALPHA * (s**2).sum()
    reg_u = (WD * (y.sum(1) + ALPHA * n_items) * ((p**2).sum(1) + bu**2)).sum()
    reg_i = (WD * (y.sum(0) + ALPHA * n_users) * ((q**2).sum(1) + qb**2)).sum()
    return data + reg_u + reg_i


def _problem(seed=0, n_users=30, n_items=20, dim=4):
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n_users, n_items, generator=g) < 0.2).double()
    shared = {"item_emb": torch.randn(n_items, dim, generator=g, dtype=torch.float64) * 0.3,
              "item_bias": torch.randn(n_items, generator=g, dtype=torch.float64) * 0.1,
              "bias": torch.tensor([0.2], dtype=torch.float64)}
    return y, shared


def test_users_are_solved_exactly():
    y, shared = _problem()
    rows, loss = solve_users(y, shared, ALPHA, WD)
    p = rows["user_emb"].clone().requires_grad_()
    bu = rows["user_bias"].clone().requires_grad_()
    _objective(y, p, bu, shared["item_emb"], shared["item_bias"], shared["bias"]).backward()
    assert p.grad.abs().max() < 1e-6 and bu.grad.abs().max() < 1e-6  # float32 GEMM
    s = rows["user_emb"] @ shared["item_emb"].T + rows["user_bias"][:, None] + \
        shared["item_bias"][None, :] + shared["bias"]
    want = (0.5 * (y * (s - 1) ** 2).sum(1) + 0.5 * ALPHA * (s**2).sum(1)) / y.sum(1).clamp_min(1)
    torch.testing.assert_close(loss, want)


def test_summed_item_statistics_of_two_nodes_give_the_exact_item_rows():
    # Prepare: new user rows, split over two "nodes"
    y, shared = _problem(1)
    users, _ = solve_users(y, shared, ALPHA, WD)
    halves = [slice(0, 13), slice(13, None)]

    # Execute: per-node statistics, summed, one Newton step per row
    stats = [item_stats(y[h], {k: v[h] for k, v in users.items()}, shared, ALPHA, WD)
             for h in halves]
    step = {k: sum(s[0][k] for s in stats).numpy() for k in ("item_emb", "item_bias")}
    curv = sum(s[1] for s in stats).numpy()
    move = newton_step(step, curv, ["item_emb", "item_bias"])

    # Assert: the new item rows minimise L at the users' rows
    q = (shared["item_emb"] + torch.from_numpy(move["item_emb"])).requires_grad_()
    qb = (shared["item_bias"] + torch.from_numpy(move["item_bias"])).requires_grad_()
    _objective(y, users["user_emb"], users["user_bias"], q, qb, shared["bias"]).backward()
    assert q.grad.abs().max() < 1e-6 and qb.grad.abs().max() < 1e-6


def test_a_cohort_solves_its_users_and_replies_item_statistics():
    split = tiny_split()
    model = build_test_model("mf", split)
    shared = model.init_shared(0)
    users = np.arange(split.n_users)
    tc = TrainConfig(loss="ials", unobserved_weight=ALPHA, weight_decay=WD, device="cpu",
                     max_examples_per_chunk=7)  # several chunks: the sums do not care
    res = train_cohort(model, shared, model.init_users(users, 0), users, split, tc, seed=0,
                       round_=1, item_step="newton")
    y = torch.zeros(split.n_users, split.n_items, dtype=torch.float64)
    for u in users:
        y[u, split.train_items[split.train_indptr[u]:split.train_indptr[u + 1]]] = 1.0
    sh = {k: v.double() for k, v in shared.items()}
    want_rows, _ = solve_users(y, sh, ALPHA, WD)
    want_step, want_curv = item_stats(y, want_rows, sh, ALPHA, WD)
    want_step = {k: v / split.n_users for k, v in want_step.items()}  # per-user mean shares
    want_curv = want_curv / split.n_users
    torch.testing.assert_close(res.user_state["user_emb"].double(), want_rows["user_emb"],
                               rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.sum_update["item_emb"], want_step["item_emb"],
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.item_curvature, want_curv, rtol=1e-4, atol=1e-6)
    assert float(res.sum_update["bias"].abs().max()) == 0.0  # the global bias stays


SMALL = {"dataset": "synthetic", "synthetic-users": 40, "synthetic-items": 150,
         "test-negatives": 49, "synthetic-interactions": 12, "num-rounds": 4, "dim": 8,
         "seed": 3, "device": "cpu", "model": "mf", "strategy": "fedavg-items",
         "item-step": "newton", "loss": "ials", "unobserved-weight": 0.05,
         "weight-decay": 0.02}


def _run(tmp_path, name, **flat):
    cfg = Config.from_flat({**SMALL, **flat, "out": str(tmp_path / name)})
    split = load_split(cfg)
    grid = InProcessGrid(client_app, num_partitions(split.n_users, cfg.fed.users_per_node,
                                                    cfg.fed.num_nodes))
    return run_federation(grid, cfg)


def test_federated_ials_is_central_ials_and_learns(tmp_path):
    one = _run(tmp_path, "one", **{"users-per-node": 40})
    five = _run(tmp_path, "five", **{"users-per-node": 8})
    for k in ("hr@10", "ndcg@10"):
        assert one["final"][k] == pytest.approx(five["final"][k], abs=1e-9)
    rows = np.genfromtxt(tmp_path / "one" / "metrics.csv", delimiter=",", names=True)
    assert np.all(np.diff(rows["train_loss"]) < 0)  # alternating exact solves never go up
    assert one["final"]["hr@10"] > one["baselines"]["popularity"]["hr@10"]


@pytest.mark.parametrize("flat,bad", [
    ({"item-step": "mean"}, "needs item-step 'newton'"),
    ({"unobserved-weight": 0.0}, "unobserved-weight > 0"),
    ({"unobserved-weight": -1.0}, "'unobserved-weight' = -1.0 must be >= 0"),
    ({"model": "gmf"}, "model 'mf'"),
])
def test_bad_ials_settings_name_the_setting(flat, bad):
    with pytest.raises(ConfigError, match=bad):
        Config.from_flat({**SMALL, **flat})


def test_central_training_refuses_ials_and_names_the_way():
    from fedrec.train.central import train_central

    split = tiny_split()
    with pytest.raises(ValueError, match="simulations/launch.py"):
        train_central(build_test_model("mf", split), split,
                      TrainConfig(loss="ials", unobserved_weight=ALPHA), 1, 0)
