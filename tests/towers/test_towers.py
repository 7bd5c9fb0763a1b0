"""Towers in every training mode: DP-SGD, user-level DP clip, federation messages, cold items,
and the click-through / cold-items protocols end to end (synthetic data, seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clients.app import app as client_app
from fedrec.config import Config, ConfigError, TrainConfig
from fedrec.data.partition import num_partitions
from fedrec.node import load_split, make_model
from fedrec.train.cohort import train_cohort
from fedrec.train.dpsgd import train_cohort_dpsgd
from fedrec.train.layout import ItemIndex
from fedrec.train.reference import train_user
from server.loop import run_federation
from simulations.inprocess import InProcessGrid
from tests.helpers import TOWER_MODELS, build_test_model, tiny_split

HUGE_C = 1e12
SMALL = {"dataset": "synthetic", "synthetic-users": 60, "synthetic-items": 200,
         "synthetic-interactions": 12, "test-negatives": 49, "num-rounds": 2, "dim": 8,
         "batch-size": 16, "seed": 3, "device": "cpu", "users-per-node": 16,
         "towers": "kg,text,genre,year", "kg-neighbours": 4}


def federate(tmp_path, name, **flat):
    cfg = Config.from_flat({**SMALL, **flat, "out": str(tmp_path / name)})
    split = load_split(cfg)
    grid = InProcessGrid(client_app, num_partitions(split.n_users, cfg.fed.users_per_node,
                                                    cfg.fed.num_nodes))
    return run_federation(grid, cfg), grid, cfg


@pytest.mark.parametrize("name", TOWER_MODELS)
def test_dpsgd_without_noise_or_clip_equals_reference_sgd(name):
    # Prepare: sigma = 0, C = inf, full batches -> per-user DP-SGD is plain SGD
    split = tiny_split()
    model = build_test_model(name, split)
    shared, users = model.init_shared(0), np.arange(split.n_users)
    state = model.init_users(users, 0)
    tc = TrainConfig(local_epochs=2, num_negatives=3, batch_size=1000, lr=0.05, optimizer="sgd",
                     weight_decay=0.01, device="cpu")
    # Execute
    res = train_cohort_dpsgd(model, shared, state, users, split, tc, 1, 3, noise_multiplier=0.0,
                             clip_norm=HUGE_C, noise_key=1, keep_per_user=True)
    # Assert: tower tables (KG entities, relations) and weights update exactly as torch.optim
    for u in users[::3]:
        delta, _ = train_user(model, shared, {n: t[u : u + 1] for n, t in state.items()},
                              int(u), split, tc, 1, 3)
        for n in delta:
            torch.testing.assert_close(res.per_user[int(u)][n], delta[n], atol=1e-5, rtol=0)


def test_dpsgd_clips_each_unit_across_tower_parameters_and_noises_every_tower_row():
    # Prepare
    split = tiny_split()
    model = build_test_model("mf+kg+text", split)
    shared, users = model.init_shared(0), np.arange(split.n_users)
    state = model.init_users(users, 0)
    tc = TrainConfig(num_negatives=2, batch_size=1000, lr=0.1, optimizer="sgd", device="cpu")
    # Execute: one unit per step would be needed for an exact bound; instead a tiny C binds
    # every unit, so each user's step is at most lr * C per unit sampled (q = 1: all units)
    tiny = train_cohort_dpsgd(model, shared, state, users, split, tc, 0, 1,
                              noise_multiplier=0.0, clip_norm=1e-4, noise_key=1,
                              keep_per_user=True)
    noisy = train_cohort_dpsgd(model, shared, state, users, split, tc, 0, 1,
                               noise_multiplier=1.0, clip_norm=1e-4, noise_key=2,
                               keep_per_user=True)
    # Assert: the clipped update is bounded by n_units * lr * C / (q n) in norm
    n_pos = np.diff(split.train_indptr)
    for u in users:
        norm = math.sqrt(sum(float((d ** 2).sum()) for d in tiny.per_user[int(u)].values()))
        assert norm <= n_pos[u] * tc.lr * 1e-4 / (n_pos[u] * 3) * (1 + 1e-4) + 1e-12
    # noise reaches every row of the KG tables, touched or not
    d = noisy.per_user[0]["kg_entity"]
    assert (d.abs().sum(1) > 0).all() and (noisy.per_user[0]["kg_relation"].abs().sum(1) > 0).all()


def test_user_level_clip_bounds_the_update_including_tower_parameters():
    split = tiny_split()
    model = build_test_model("mf+kg+text+genre+year", split)
    shared, users = model.init_shared(0), np.arange(split.n_users)
    state = model.init_users(users, 0)
    res = train_cohort(model, shared, state, users, split, TrainConfig(lr=0.1, device="cpu"),
                       0, 1, clip_norm=0.05, weighting="equal", keep_per_user=True)
    tower_names = [n for n in shared if n.startswith(("kg_", "text_", "genre_", "year_",
                                                      "fuse_"))]
    for u in users:
        upd = res.per_user[int(u)]
        assert sum(float((upd[n] ** 2).sum()) for n in tower_names) > 0  # towers did move
        f = min(1.0, 0.05 / math.sqrt(res.sq_norms[u]))
        assert math.sqrt(sum(float((f * upd[n] ** 2).sum() * f) for n in upd)) <= 0.05 + 1e-9
    total = math.sqrt(sum(float((res.sum_update[n] ** 2).sum()) for n in shared))
    assert total <= 0.05 * split.n_users * (1 + 1e-6)


def test_towers_travel_and_private_rows_never_do_in_a_federation(tmp_path):
    summary, grid, cfg = federate(tmp_path, "fed", **{"num-rounds": 1})
    model = make_model(cfg, load_split(cfg))
    private = set(model.private_names)
    shared = set(model.shared_names)
    assert {"kg_entity", "kg_relation", "text_w", "genre_w", "year_w"} <= shared
    replies = [m for m in grid.replies if m.content.array_records]
    for msg in grid.sent + grid.replies:
        for rec in msg.content.array_records.values():
            assert not private & set(rec.keys())
            for arr in rec.values():
                assert arr.shape[:1] != (60,)  # nothing shaped like a per-user table
    assert replies and all(set(m.content["arrays"].keys()) == shared for m in replies)
    assert summary["final"]["hr@10"] > 0


def test_user_level_dp_run_with_towers(tmp_path):
    summary, _, _ = federate(tmp_path, "dp", privacy="user", **{"noise-multiplier": 0.5,
                                                                "fraction-train": 0.5})
    assert summary["privacy"]["epsilon"] > 0 and summary["rounds"] == 2


def test_a_cold_item_is_scored_from_its_towers_alone():
    # Prepare: two items no user ever trained on, out of the negative pool too (split=cold-items)
    split = tiny_split()
    cold = np.array([3, 17])
    keep = ~np.isin(split.train_items, cold)
    counts = np.add.reduceat(keep, split.train_indptr[:-1]) * (np.diff(split.train_indptr) > 0)
    split.train_items = split.train_items[keep]
    split.train_ratings = split.train_ratings[keep]
    split.train_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    split.negative_pool = np.setdiff1d(np.arange(split.n_items), cold)
    tc = TrainConfig(lr=0.05, device="cpu")
    users = np.arange(split.n_users)
    for name in ("mf", "mf+text+genre"):
        model = build_test_model(name, split)
        shared = model.init_shared(0)
        # Execute
        upd = train_cohort(model, shared, model.init_users(users, 0), users, split, tc, 0, 1)
        new = {n: shared[n] + (upd.sum_update[n] / upd.weight_sum).float() for n in shared}
        # Assert: nothing moved the cold items' ID rows; with towers those rows are zero, so
        # the score of a cold item comes from its towers alone (and tells the two apart)
        for n in ("item_emb", "item_bias"):
            assert torch.equal(new[n][cold], shared[n][cold])
        if name == "mf":
            assert shared["item_emb"][cold].abs().sum() > 0  # random init: a random ranking
            continue
        assert torch.equal(new["item_emb"][cold], torch.zeros(2, 8))
        index = ItemIndex(model)
        items = torch.from_numpy(np.broadcast_to(cold, (len(users), 2)).copy())
        dense = {n: new[n].unsqueeze(0).expand(len(users), *new[n].shape)
                 for n in model.shared_names if n not in index.table_of}
        user = {n: t.unsqueeze(1) for n, t in upd.user_state.items()}
        item = index.inputs(index.table_gather(new), index.rows(items), items)
        with torch.no_grad():
            s = model.score(user, item, dense)
            z = model.tower_vectors(user, item, dense)
            g = torch.sigmoid(torch.baddbmm(dense["fuse_item_emb_gb"][:, None, :],
                                            torch.cat([torch.zeros_like(z), z], -1),
                                            dense["fuse_item_emb_gw"]))
            towers_only = ((1 - g) * z * user["user_emb"]).sum(-1) + user["user_bias"] \
                + dense["bias"][:, None]
        torch.testing.assert_close(s, towers_only)
        assert not torch.allclose(s[:, 0], s[:, 1])


def test_kg_reach_is_the_item_entity_and_its_sampled_neighbourhood():
    split = tiny_split()
    one = build_test_model("mf+kg", split)
    two = build_test_model("mf+kg2", split)
    kg = split.item_side.kg
    r1, r2 = one.reach("kg_entity"), two.reach("kg_entity")
    assert r1.shape == (split.n_items, 1 + 4) and r2.shape == (split.n_items, 1 + 3 + 9)
    assert (r1[:, 0] == np.where(kg.item_entity >= 0, kg.item_entity, kg.n_entities)).all()
    assert two.reach("kg_relation").shape == (split.n_items, 3 + 9)
    for i in range(split.n_items):  # every sampled neighbour is a real neighbour (or padding)
        e = r1[i, 0]
        if e == kg.n_entities:
            continue
        nb = set(kg.triples[kg.triples[:, 0] == e, 2]) | set(kg.triples[kg.triples[:, 2] == e, 0])
        assert set(r1[i, 1:].tolist()) <= nb


def test_click_through_split_end_to_end_reads_test_once(tmp_path):
    summary, grid, _ = federate(tmp_path, "ctr", split="ctr", towers="kg",
                                **{"num-rounds": 3, "lr": 0.1, "user-lr": 0.01})
    assert set(summary["final"]) == {"auc", "acc", "f1"}
    assert set(summary["validation"]) == {"auc", "acc", "f1"}
    assert 0.5 < summary["baselines"]["popularity"]["auc"] <= 1
    parts = [m.content["config"]["fedrec.eval-parts"] for m in grid.sent
             if m.metadata.message_type == "evaluate"]
    n_nodes = len(grid.contexts)
    assert parts == ["valid"] * (2 * n_nodes) + ["valid,test"] * n_nodes


def test_cold_items_split_end_to_end(tmp_path):
    summary, _, _ = federate(tmp_path, "cold", split="cold-items", towers="text,genre",
                             **{"test-negatives": 20})
    assert "hr@10" in summary["final"] and "hr@10" in summary["validation"]


def test_unknown_tower_and_missing_feature_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown tower.*known towers: genre, kg, text, year"):
        Config.from_flat({"towers": "kg,pictures"})
    split = tiny_split()
    split.item_side.text = None
    with pytest.raises(ValueError, match="item feature 'text' is not available"):
        build_test_model("mf+text", split)


def test_item_weighted_fedavg_with_towers_averages_item_rows_only(tmp_path):
    summary, grid, cfg = federate(tmp_path, "items", strategy="fedavg-items", towers="kg,text")
    assert summary["rounds"] == 2 and summary["final"]["hr@10"] > 0
    weights = [m.content["arrays"]["item-weight"].numpy() for m in grid.replies
               if m.content.array_records]
    assert weights and all(w.shape == (load_split(cfg).n_items,) for w in weights)
