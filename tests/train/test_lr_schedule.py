"""``user-lr`` and ``lr-decay``: the rates a round actually trains with."""

import dataclasses

import numpy as np
import pytest
import torch

from fedrec.config import Config, TrainConfig
from fedrec.models.registry import build_model
from fedrec.node import initial_state, load_split, make_model, train_round
from fedrec.train.central import train_central
from tests.helpers import tiny_split

SMALL = {"dataset": "synthetic", "synthetic-users": 30, "synthetic-items": 80,
         "synthetic-interactions": 10, "test-negatives": 20, "dim": 4, "batch-size": 8,
         "seed": 2, "device": "cpu"}


def test_at_round_scales_both_rates_once():
    tc = Config.from_flat({"lr": 0.4, "user-lr": 0.05, "lr-decay": 0.5}).train.at_round(3)
    assert (tc.lr, tc.user_lr, tc.lr_decay) == (0.1, 0.0125, 1.0)
    same = Config.from_flat({"lr": 0.4, "lr-decay": 0.5}).train.at_round(3)
    assert same.users_lr == 0.1  # user-lr 0 follows lr
    with pytest.raises(ValueError, match="'lr-decay' = 1.5"):
        Config.from_flat({"lr-decay": 1.5})


@pytest.mark.parametrize("optimizer", ["sparse-adam", "sgd"])
def test_a_decayed_round_trains_as_the_decayed_rates_would(optimizer):
    # Prepare: round 3 of a run with lr-decay 0.5 vs a run at lr / 4 with no decay
    decayed = Config.from_flat({**SMALL, "optimizer": optimizer, "lr": 0.4, "user-lr": 0.08,
                                "lr-decay": 0.5})
    plain = decayed.replace(lr=0.1, user_lr=0.02, lr_decay=1.0)
    slow = decayed.replace(lr=0.1, user_lr=0.005, lr_decay=1.0)  # only the users slower
    split = load_split(decayed)
    users = np.arange(split.n_users)
    shared = {n: t.numpy() for n, t in make_model(decayed, split).init_shared(2).items()}

    def round3(cfg):
        reply, state = train_round(cfg, 3, shared, users, initial_state(cfg, users))
        return reply.arrays, state

    # Execute
    a_arr, a_state = round3(decayed)
    b_arr, b_state = round3(plain)
    c_arr, c_state = round3(slow)
    # Assert: identical to the explicitly decayed rates; a different user-lr moves users less
    for n in a_arr:
        np.testing.assert_allclose(a_arr[n], b_arr[n], rtol=0, atol=1e-7)
    for n in a_state:
        torch.testing.assert_close(a_state[n], b_state[n], rtol=0, atol=1e-7)
    start = initial_state(decayed, users)
    moved = {n: float((a_state[n] - start[n]).abs().sum()) for n in a_state}
    moved_slow = {n: float((c_state[n] - start[n]).abs().sum()) for n in c_state}
    assert all(moved_slow[n] < 0.5 * moved[n] for n in moved)


@pytest.mark.parametrize("optimizer", ["sparse-adam", "sgd"])
def test_central_training_decays_per_epoch(optimizer):
    # Prepare: a decay so strong that epoch 2 trains at ~1e-12 of the rates
    split = tiny_split()
    model = build_model("mf", n_users=split.n_users, n_items=split.n_items, dim=4)
    tc = TrainConfig(optimizer=optimizer, lr=0.05, user_lr=0.01, lr_decay=1e-12, device="cpu",
                     batch_size=8)
    seen = {}
    # Execute
    final = train_central(model, split, tc, 2, seed=0,
                          on_epoch=lambda e, p: seen.setdefault(e, {k: v.clone()
                                                                    for k, v in p.items()}))
    undecayed = train_central(model, split, dataclasses.replace(tc, lr_decay=1.0), 2, seed=0)
    # Assert: epoch 2 barely moves anything; without decay it does
    for n in final:
        torch.testing.assert_close(final[n], seen[1][n].view(final[n].shape), rtol=0, atol=1e-9)
    assert any(float((undecayed[n] - seen[1][n].view(final[n].shape)).abs().max()) > 1e-4
               for n in final)
