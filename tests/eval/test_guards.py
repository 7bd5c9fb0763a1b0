"""Evaluation guards (DESIGN section 4): federation must beat each user training alone."""

import dataclasses

import numpy as np

from fedrec.config import TrainConfig
from fedrec.data.prepare import prepare_split
from fedrec.eval.sampled import evaluate_local, evaluate_users, means
from fedrec.models.registry import build_model
from fedrec.train.cohort import train_cohort


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

    # local only: each user trains its own copy for as many epochs and never shares it
    alone = dataclasses.replace(tc, local_epochs=rounds)
    upd = train_cohort(model, shared0, state0, users, split, alone, 0, 1, keep_local=True)
    local = means(evaluate_local(model, shared0, upd.local, split))["hr@10"]
    assert fed > local + 0.15, (fed, local)
