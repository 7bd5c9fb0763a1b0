"""Contract tests over every registered model (DESIGN section 8)."""

import numpy as np
import pytest
import torch

from fedrec.config import TrainConfig
from fedrec.eval.sampled import evaluate_users, means
from fedrec.models.registry import build_model, known_models
from fedrec.params import check_shared, to_numpy, to_torch
from fedrec.train.central import train_central
from tests.helpers import tiny_split


@pytest.mark.parametrize("name", known_models())
def test_shared_private_split_round_trips(name):
    model = build_model(name, n_users=7, n_items=11, dim=4)
    specs = model.specs()
    assert model.private_names and model.shared_names
    assert set(model.private_names).isdisjoint(model.shared_names)
    assert all(s.kind == "user" for s in specs if s.name in model.private_names)
    shared = model.init_shared(3)
    assert set(shared) == set(model.shared_names)
    wire = to_numpy(shared)
    check_shared(wire, model, "test")  # exactly the shared names, nothing private
    back = to_torch(wire)
    for n in shared:
        assert back[n].shape == shared[n].shape
        torch.testing.assert_close(back[n], shared[n])
    leaked = {**wire, model.private_names[0]: np.zeros(3)}
    with pytest.raises(ValueError, match="private parameters must not travel"):
        check_shared(leaked, model, "test")


@pytest.mark.parametrize("name", known_models())
def test_user_init_is_per_user_not_per_cohort(name):
    model = build_model(name, n_users=50, n_items=11, dim=4)
    whole = model.init_users(np.arange(50), 9)
    some = model.init_users(np.array([7, 3, 41]), 9)
    for n in whole:
        torch.testing.assert_close(some[n], whole[n][[7, 3, 41]])


@pytest.mark.parametrize("name", known_models())
def test_planted_pattern_is_learned(name):
    # Two user groups, each consuming only its half of the items: a model must rank a held-out
    # item of the user's half above the 12 negatives, all from the other half (random: 1/13).
    split = tiny_split(n_users=24, n_items=40, seed=1, planted=True)
    model = build_model(name, n_users=split.n_users, n_items=split.n_items, dim=8)
    tc = TrainConfig(num_negatives=4, batch_size=32, lr=0.01, device="cpu")
    users = np.arange(split.n_users)
    before = model.init_all_users(0) | model.init_shared(0)
    params = train_central(model, split, tc, epochs=5, seed=0)

    def hr(p):
        user = {n: p[n] for n in model.private_names}
        shared = {n: p[n] for n in model.shared_names}
        return means(evaluate_users(model, shared, user, users, split, ks=(1,)))["hr@1"]

    assert hr(params) >= 0.9
    assert hr(before) < 0.5
