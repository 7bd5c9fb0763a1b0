"""Per-user DP-SGD (privacy = "sample"): exactness, clipping, noise, sampling, accounting,
and the federation end to end on the in-process grid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fedrec import rng
from fedrec.config import Config, ConfigError, TrainConfig
from fedrec.data.schema import SplitData
from fedrec.models.registry import build_model, known_models
from fedrec.node import load_split
from fedrec.privacy import sample_level
from fedrec.privacy.analysis import compute_epsilons
from fedrec.privacy.calibration import noise_for_target_worst_user
from fedrec.train.dpsgd import (
    normal_from_keys,
    poisson_units,
    train_cohort_dpsgd,
    uniform_from_keys,
)
from fedrec.train.reference import train_user
from simulations.inprocess import run_inprocess
from tests.helpers import tiny_split

HUGE_C = 1e12


def one_positive_split(n_users: int = 10, n_items: int = 30, seed: int = 0) -> SplitData:
    """Every user has exactly one training interaction: one privacy unit per user."""
    rs = np.random.default_rng(seed)
    items = rs.integers(0, n_items, n_users)
    tests = (items + 1) % n_items
    negs = (items[:, None] + 2 + np.arange(5)) % n_items
    return SplitData(
        name="one-positive", n_users=n_users, n_items=n_items,
        train_indptr=np.arange(n_users + 1, dtype=np.int64),
        train_items=items.astype(np.int64), train_ratings=np.ones(n_users, np.float32),
        test_items=tests.astype(np.int64), test_negatives=negs.astype(np.int64),
    )


def setup(model_name: str = "mf", split: SplitData | None = None, dim: int = 8):
    split = split or tiny_split()
    model = build_model(model_name, n_users=split.n_users, n_items=split.n_items, dim=dim)
    users = np.arange(split.n_users)
    return split, model, model.init_shared(0), users, model.init_users(users, 0)


# ---------------------------------------------------------------------------------- RNG
def test_torch_counter_rng_matches_numpy_streams():
    # Prepare
    users = np.arange(50, dtype=np.int64)
    pre = torch.from_numpy(rng.hash64(7, rng.DPSGD_BATCH, 3, users, 1, 2).view(np.int64))
    keys = torch.arange(50)
    # Execute
    got = uniform_from_keys(pre, keys).numpy()
    z = normal_from_keys(pre[:1], torch.arange(400_000), dtype=torch.float64)
    # Assert: bit-identical to fedrec.rng, and standard normal
    np.testing.assert_array_equal(got, rng.uniform(7, rng.DPSGD_BATCH, 3, users, 1, 2, keys))
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z**4).mean()) - 3) < 0.05  # Gaussian kurtosis


def test_poisson_sampling_is_independent_per_unit_with_rate_q():
    # Prepare: 3 users with 200 units each, rates 0.1 / 0.5 / 1
    owner = torch.arange(3).repeat_interleave(200)
    pos = torch.arange(200).repeat(3)
    q = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    users = np.array([11, 12, 13])
    # Execute
    sizes = np.zeros((300, 3))
    for step in range(300):
        sel = poisson_units(5, 1, users, 0, step, owner, pos, q)
        sizes[step] = np.bincount(owner[sel].numpy(), minlength=3)
    alone = poisson_units(5, 1, users[1:2], 0, 7, torch.zeros(200, dtype=torch.long), pos[:200],
                          q[1:2])
    # Assert: mean q*n, binomial variance (not fixed-size batches), keyed by user only
    np.testing.assert_allclose(sizes.mean(0), [20, 100, 200], rtol=0.05)
    np.testing.assert_allclose(sizes.var(0), [18, 50, 0], rtol=0.25, atol=1e-9)
    with_others = poisson_units(5, 1, users, 0, 7, owner, pos, q)
    np.testing.assert_array_equal(alone.numpy() + 200, with_others[(owner[with_others] == 1)])


# ------------------------------------------------------------------------- exactness
CASES = [(m, "bce") for m in known_models()] + [("mf", "bpr"), ("mf", "mse"), ("neumf", "bpr")]


@pytest.mark.parametrize("model_name,loss", CASES)
def test_no_noise_no_clip_full_batch_equals_reference_sgd(model_name, loss):
    # Prepare: sigma = 0, C = inf, batch >= every user's examples -> q = 1, one step per epoch
    split, model, shared, users, state = setup(model_name)
    tc = TrainConfig(local_epochs=2, num_negatives=3, batch_size=1000, lr=0.05, optimizer="sgd",
                     loss=loss, weight_decay=0.01, device="cpu")
    # Execute
    res = train_cohort_dpsgd(model, shared, state, users, split, tc, 1, 3, noise_multiplier=0.0,
                             clip_norm=HUGE_C, noise_key=1, keep_per_user=True)
    # Assert: every user's update and private rows match full-batch torch.optim.SGD
    for u in users:
        delta, rows = train_user(model, shared, {n: t[u : u + 1] for n, t in state.items()},
                                 int(u), split, tc, 1, 3)
        for n in delta:
            torch.testing.assert_close(res.per_user[int(u)][n], delta[n], atol=1e-5, rtol=0)
        for n in rows:
            torch.testing.assert_close(res.user_state[n][u : u + 1], rows[n], atol=1e-5, rtol=0)
    for n in shared:  # every user weighs 1 (a data-dependent weight would not be DP)
        expected = sum(res.per_user[int(u)][n] for u in users)
        torch.testing.assert_close(res.sum_update[n], expected, atol=1e-6, rtol=0)
    assert res.weight_sum == len(users)
    assert (res.sample_rates == 1).all() and (res.steps == 2).all()


@pytest.mark.parametrize("model_name,loss", [("mf", "bpr"), ("neumf", "bce")])
def test_each_units_gradient_is_clipped_jointly_to_C(model_name, loss):
    # Prepare: one unit per user, one full-batch step: the user's whole update (item rows,
    # dense, its own rows) is -lr/(q n) * min(1, C/||g||) * g.  BPR repeats the positive in
    # every pair of the unit, so per-row gradients must be summed before the norm.
    split, model, shared, users, state = setup(model_name, one_positive_split())
    tc = TrainConfig(num_negatives=3, batch_size=64, lr=0.1, optimizer="sgd", loss=loss,
                     device="cpu")
    qn = 3 if loss == "bpr" else 4  # expected examples per batch (= all of them)

    def norms(clip: float) -> np.ndarray:
        res = train_cohort_dpsgd(model, shared, state, users, split, tc, 0, 1,
                                 noise_multiplier=0.0, clip_norm=clip, noise_key=1,
                                 keep_per_user=True)
        out = []
        for u in users:
            sq = sum(float((d**2).sum()) for d in res.per_user[int(u)].values())
            sq += sum(float(((res.user_state[n][u] - state[n][u]) ** 2).sum()) for n in state)
            out.append(math.sqrt(sq))
        return np.array(out)

    # Execute
    free = norms(HUGE_C) * qn / tc.lr  # ||g|| of every unit
    clip = float(np.median(free))
    clipped = norms(clip) * qn / tc.lr
    # Assert: min(||g||, C) for every unit, the bound binding for about half of them
    np.testing.assert_allclose(clipped, np.minimum(free, clip), rtol=1e-4)
    assert (clipped <= clip * (1 + 1e-5)).all() and (free > clip * 1.01).sum() >= 3


def test_update_is_the_same_in_any_cohort():
    # Prepare: noise on, Poisson batches (q < 1), 2 epochs
    split, model, shared, users, state = setup("mf")
    tc = TrainConfig(local_epochs=2, num_negatives=2, batch_size=8, lr=0.1, optimizer="sgd",
                     device="cpu")
    kw = {"noise_multiplier": 1.1, "clip_norm": 0.5, "noise_key": 77, "keep_per_user": True}
    # Execute
    whole = train_cohort_dpsgd(model, shared, state, users, split, tc, 4, 2, **kw)
    chunked = train_cohort_dpsgd(model, shared, state, users, split,
                                 TrainConfig(**{**tc.__dict__, "max_examples_per_chunk": 30}),
                                 4, 2, **kw)
    alone = {int(u): train_cohort_dpsgd(model, shared, {n: t[u : u + 1] for n, t in state.items()},
                                        users[u : u + 1], split, tc, 4, 2, **kw)
             for u in users[::3]}
    # Assert: each user's update and private rows do not depend on who else trains with it
    close = {"atol": 1e-5, "rtol": 0}
    for u, res in alone.items():
        for n in shared:
            torch.testing.assert_close(res.per_user[u][n], whole.per_user[u][n], **close)
            torch.testing.assert_close(chunked.per_user[u][n], whole.per_user[u][n], **close)
        for n in state:
            torch.testing.assert_close(res.user_state[n][0], whole.user_state[n][u], **close)
    for n in shared:
        torch.testing.assert_close(whole.sum_update[n], chunked.sum_update[n], atol=1e-4, rtol=0)
    other_round = train_cohort_dpsgd(model, shared, state, users, split, tc, 4, 3, **kw)
    assert not torch.equal(other_round.sum_update["item_emb"], whole.sum_update["item_emb"])


def test_lazy_and_end_of_round_noise_have_the_per_step_variance():
    # Prepare: sigma >> batch so the clipped gradients (<= |batch| C) are negligible and every
    # coordinate of every parameter moves by noise: summed over T_u SGD steps,
    # N(0, T_u (lr sigma C / (q_u n_u))^2)
    split, model, shared, users, state = setup("mf", tiny_split(n_users=30, n_items=60))
    tc = TrainConfig(local_epochs=2, num_negatives=2, batch_size=8, lr=0.1, optimizer="sgd",
                     device="cpu")
    sigma, clip = 1000.0, 1e-3
    # Execute
    res = train_cohort_dpsgd(model, shared, state, users, split, tc, 0, 1, noise_multiplier=sigma,
                             clip_norm=clip, noise_key=5, keep_per_user=True)
    # Assert: standardised moves are N(0, 1) on item rows read (lazy catch-up), rows never read
    # (one end-of-round draw), user rows and the dense bias (noise every step)
    n_ex = np.diff(split.train_indptr) * 3
    std = tc.lr * sigma * clip * np.sqrt(res.steps) / np.minimum(tc.batch_size, n_ex)
    read, unread, private = [], [], []
    for u in users:
        d = res.per_user[int(u)]["item_emb"].numpy() / std[u]
        used = np.zeros(split.n_items, bool)
        used[split.train_items[split.train_indptr[u] : split.train_indptr[u + 1]]] = True
        read.append(d[used].ravel())
        unread.append(d[~used].ravel())
        private.append((res.user_state["user_emb"][u] - state["user_emb"][u]).numpy() / std[u])
    for z in (np.concatenate(read), np.concatenate(unread), np.concatenate(private)):
        assert abs(z.std() - 1) < 0.05 and abs(z.mean()) < 0.05, (z.std(), z.mean())
    bias = np.array([float(res.per_user[int(u)]["bias"]) / std[u] for u in users])
    assert 0.5 < bias.std() < 1.5


def test_adam_and_fedprox_are_refused_with_a_named_setting():
    split, model, shared, users, state = setup("mf")
    with pytest.raises(ValueError, match="'optimizer'"):
        train_cohort_dpsgd(model, shared, state, users, split, TrainConfig(optimizer="adam"),
                           0, 1, noise_multiplier=1.0, clip_norm=1.0, noise_key=1)
    with pytest.raises(ConfigError, match="'optimizer'"):
        sample_level.check_supported(Config.from_flat({"privacy": "sample"}))
    with pytest.raises(ConfigError, match="'proximal-mu'"):
        sample_level.check_supported(Config.from_flat(
            {"privacy": "sample", "optimizer": "sgd", "proximal-mu": 0.1}))


# -------------------------------------------------------------------------- accounting
def test_rates_and_steps_per_epoch():
    tc = TrainConfig(batch_size=64, num_negatives=4)  # 5 examples per positive
    q, steps = sample_level.per_user_rates(np.array([0, 5, 12, 13, 20, 32, 1000]), tc)
    np.testing.assert_allclose(q, [1, 1, 1, 64 / 65, 0.64, 0.4, 0.0128])
    np.testing.assert_array_equal(steps, [1, 1, 1, 1, 2, 3, 78])


def test_calibration_meets_the_target_for_the_worst_user_and_is_tight():
    # Prepare: 3 rounds of users with q = 0.8 (1 step per epoch), 0.64 (2 steps: q * steps > 1
    # from rounding) and 0.4 (3 steps)
    histories = [(0.8, 3), (0.64, 6), (0.4, 9)]
    delta, target = 1e-3, 6.0
    # Execute
    sigma = noise_for_target_worst_user(target, delta, histories)
    eps = [compute_epsilons([(sigma, q, n)], delta)["prv"] for q, n in histories]
    tighter = compute_epsilons([(sigma * 0.995, *histories[1])], delta)["prv"]
    # Assert: every user within budget, the worst one at the budget (0.5 % less noise breaks it)
    assert max(eps) <= target and tighter > target
    assert int(np.argmax(eps)) == 1  # not the largest q: rounding makes q = 0.64 the worst
    assert noise_for_target_worst_user(math.inf, delta, histories) == 0.0


def test_node_worst_epsilon_is_the_max_over_its_users():
    # Prepare: partial participation, so users have taken part in different numbers of rounds
    cfg = Config.from_flat({**SMALL, "fraction-train": 0.5, "noise-multiplier": 1.3,
                            "batch-size": 48})
    split = load_split(cfg)
    users = np.arange(0, 12)
    # Execute
    worst = sample_level.node_worst_epsilon(cfg, split, users, 4, 1.3)
    # Assert
    q, steps = sample_level.per_user_rates(np.diff(split.train_indptr)[users], cfg.train)
    k = sample_level.participation_counts(users, 0.5, cfg.run.seed, 4)
    assert k.min() < k.max() <= 4 and 0 < (q < 1).sum() < len(users)
    delta = sample_level.sample_delta(cfg, split)
    brute = [compute_epsilons([(1.3, a, b)], delta) for a, b in zip(q, steps * k, strict=True)]
    assert worst["prv"] == pytest.approx(max(e["prv"] for e in brute), rel=1e-12)
    assert worst["rdp"] == pytest.approx(max(e["rdp"] for e in brute), rel=1e-12)
    assert delta == pytest.approx(split.n_train ** -1.1)


# ------------------------------------------------------------------------- federation
SMALL = {
    "dataset": "synthetic", "synthetic-users": 40, "synthetic-items": 150, "test-negatives": 49,
    "synthetic-interactions": 12, "num-rounds": 3, "dim": 8, "batch-size": 16, "seed": 3,
    "device": "cpu", "privacy": "sample", "optimizer": "sgd", "lr": 0.5, "clip-norm": 1.0,
}


def run(tmp_path, name, **flat):
    return run_inprocess(Config.from_flat({**SMALL, **flat, "out": str(tmp_path / name)}))


def test_sample_level_federation_reports_the_worst_users_epsilon(tmp_path):
    # Execute: sigma calibrated so that the worst user spends exactly the budget in 3 rounds
    s = run(tmp_path, "eps", **{"target-epsilon": 8.0, "users-per-node": 8})
    # Assert: summary and metrics.csv carry the worst user's epsilon, composed over rounds
    priv = s["privacy"]
    assert priv["mode"] == "sample" and priv["noise_multiplier"] > 0
    assert 7.5 < priv["epsilon"] <= 8.0 and priv["epsilon_rdp"] >= priv["epsilon"]
    assert priv["delta"] == pytest.approx(load_split(Config.from_flat(SMALL)).n_train ** -1.1)
    rows = np.genfromtxt(tmp_path / "eps" / "metrics.csv", delimiter=",", names=True)
    assert np.all(np.diff(rows["epsilon"]) > 0) and rows["epsilon"][-1] == pytest.approx(
        priv["epsilon"], rel=1e-5)
    assert 0 <= s["final"]["hr@10"] <= 1
    summary = json.loads((tmp_path / "eps" / "summary.json").read_text())
    assert summary["privacy"]["epsilon"] == priv["epsilon"]


def test_sample_level_federation_is_independent_of_users_per_node(tmp_path):
    # Prepare / Execute: same seed, one user per node vs 8 per node, partial participation;
    # the debug dp-seed makes the (otherwise secret) DP-SGD noise reproducible
    flat = {"noise-multiplier": 1.0, "fraction-train": 0.6, "num-rounds": 2, "batch-size": 48,
            "dp-seed": 5}
    a = run(tmp_path, "one", **{**flat, "users-per-node": 1})
    b = run(tmp_path, "eight", **{**flat, "users-per-node": 8})
    # Assert
    for k in ("hr@10", "ndcg@10"):
        assert a["final"][k] == pytest.approx(b["final"][k], abs=1e-6)
    assert a["privacy"]["epsilon"] == pytest.approx(b["privacy"]["epsilon"], rel=1e-12)


def test_resuming_with_a_sigma_calibrated_for_other_rounds_is_refused(tmp_path):
    # Prepare: sigma derived from the target for num-rounds (q = 1 for all: fast calibration)
    flat = {"target-epsilon": 4.0, "batch-size": 1000}
    run(tmp_path, "r", **{**flat, "num-rounds": 1})
    # Execute / Assert: more rounds -> another sigma; the per-user histories would be wrong
    with pytest.raises(ConfigError, match="noise multiplier"):
        run(tmp_path, "r", **{**flat, "num-rounds": 2})
