"""Evaluation guards (DESIGN section 4): federation must beat each user training alone."""

import numpy as np

from fedrec.config import TrainConfig
from fedrec.data.prepare import prepare_split
from fedrec.eval.sampled import evaluate_users, means
from fedrec.models.registry import build_model
from fedrec.train.cohort import train_cohort
from fedrec.train.reference import train_user


def test_local_only_training_is_far_below_federated():
    split = prepare_split("synthetic", "loo", seed=0, num_test_negatives=99,
                          synthetic={"n_users": 200, "n_items": 300, "mean_interactions": 25})
    model = build_model("mf", n_users=split.n_users, n_items=split.n_items, dim=16)
    tc = TrainConfig(num_negatives=4, batch_size=32, lr=0.02, device="cpu")
    users = np.arange(split.n_users)
    shared0 = model.init_shared(0)
    state0 = model.init_users(users, 0)
    rounds = 10

    # federated: FedAvg over all users each round
    shared, state = dict(shared0), state0
    for r in range(1, rounds + 1):
        upd = train_cohort(model, shared, state, users, split, tc, 0, r)
        shared = {n: (shared[n].double() + upd.sum_update[n] / upd.weight_sum).float()
                  for n in shared}
        state = upd.user_state
    fed = means(evaluate_users(model, shared, state, users, split))["hr@10"]

    # local only: each user trains its own copy for the same number of epochs, never shares
    local_sums = {"hr@10": 0.0, "count": 0.0}
    for u in users:
        mine = {n: t for n, t in shared0.items()}
        rows = {n: t[u : u + 1] for n, t in state0.items()}
        for r in range(1, rounds + 1):
            delta, rows = train_user(model, mine, rows, int(u), split, tc, 0, r)
            mine = {n: (mine[n].double() + delta[n]).float() for n in mine}
        s = evaluate_users(model, mine, rows, np.array([u]), split)
        local_sums["hr@10"] += s["hr@10"]
        local_sums["count"] += s["count"]
    local = local_sums["hr@10"] / local_sums["count"]
    assert fed > local + 0.15, (fed, local)
