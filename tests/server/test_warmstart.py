"""item-bias-init = popularity: the item biases start from the users' item histogram, exact
without privacy, Gaussian-noised and accounted with the rounds under user-level DP."""

import math

import numpy as np
import pytest

from fedrec import checkpoint
from fedrec.config import Config, ConfigError
from fedrec.data.partition import partition_users
from fedrec.models.popularity import popularity_bias, user_normalised_counts
from fedrec.node import COUNTS_KEY, load_split, make_model
from fedrec.privacy.analysis import compute_epsilons, default_delta
from fedrec.privacy.calibration import noise_for_target
from fedrec.train.central import init_params
from tests.server.test_dp_federation import DP, SMALL, released, run

POP = {"item-bias-init": "popularity"}


def test_each_user_moves_the_histogram_by_one_and_nodes_add_up():
    split = load_split(Config.from_flat(SMALL))
    users = np.arange(split.n_users)
    total = user_normalised_counts(split, users)
    parts = sum(user_normalised_counts(split, u) for u in partition_users(split.n_users, 3))
    np.testing.assert_allclose(parts, total, rtol=1e-12)
    for u in (0, 7, 21):
        without = user_normalised_counts(split, np.delete(users, u))
        assert np.linalg.norm(total - without) == pytest.approx(1.0, rel=1e-12)
    # ranked like the plain counts where users are alike; the floor groups the tail
    b = popularity_bias(np.array([0.0, 0.1, 2.0, 8.0]), floor=0.5)
    assert b[0] == b[1] < b[2] < b[3] and b.mean() == pytest.approx(0.0)


def test_without_privacy_the_run_starts_from_the_exact_popularity(tmp_path):
    run(tmp_path, "p", **POP, **{"num-rounds": 1})
    split = load_split(Config.from_flat(SMALL))
    start = released(tmp_path, "p", 0)["item_bias"]
    expect = popularity_bias(user_normalised_counts(split, np.arange(split.n_users)))
    np.testing.assert_allclose(start, expect, rtol=1e-6, atol=1e-6)
    # central training starts from the same biases
    central = init_params(make_model(Config.from_flat(SMALL), split), 3, split, "popularity")
    np.testing.assert_allclose(central["item_bias"].numpy(), start, rtol=1e-6, atol=1e-6)


def test_dp_histogram_is_noised_accounted_and_released_once(tmp_path):
    # Execute: target epsilon 4 over 1 round, with the histogram before it
    flat = {**DP, **POP, "noise-multiplier": 0.0, "target-epsilon": 4.0, "num-rounds": 1}
    summary, grid = run(tmp_path, "d", **flat)
    cfg = Config.from_flat({**SMALL, **flat})
    split = load_split(cfg)
    n = split.n_users
    # Assert: z calibrated with the histogram step; the release is noised (not the exact one)
    z = summary["privacy"]["noise_multiplier"]
    delta = default_delta(n)
    assert z == pytest.approx(noise_for_target(4.0, delta, 0.5, 1, histogram_ratio=2.0))
    assert z > noise_for_target(4.0, delta, 0.5, 1)
    hist = summary["privacy"]["popularity_histogram"]
    assert hist["noise_multiplier"] == pytest.approx(2.0 * z)
    eps = compute_epsilons([(2.0 * z, 1.0, 1), (z, 0.5, 1)], delta)["prv"]
    assert summary["privacy"]["epsilon"] == pytest.approx(eps, rel=1e-6) and eps <= 4.0
    assert summary["privacy"]["rounds_accounted"] == 1
    exact = popularity_bias(user_normalised_counts(split, np.arange(n)),
                            max(0.5, 2.0 * z))
    assert np.abs(released(tmp_path, "d", 0)["item_bias"] - exact).max() > 1e-3
    # each node's histogram reply is a sum of its users' unit-norm vectors, nothing else
    queries = [m for m in grid.replies if m.metadata.message_type == "query"]
    assert len(queries) == len(grid.contexts)
    per_node = max(len(u) for u in partition_users(n, len(grid.contexts)))
    for m in queries:
        assert set(m.content["arrays"].keys()) == {COUNTS_KEY} and not m.content.metric_records
        assert np.linalg.norm(m.content["arrays"][COUNTS_KEY].numpy()) <= per_node + 1e-9


def test_a_run_resumed_from_the_warm_start_does_not_release_it_again(tmp_path):
    flat = {**DP, **POP, "noise-multiplier": 0.0, "target-epsilon": 4.0, "num-rounds": 1}
    first, _ = run(tmp_path, "r", **flat)
    (tmp_path / "r" / "checkpoints" / "round-1.pkl").unlink()
    (tmp_path / "r" / "summary.json").unlink()
    ck = checkpoint.load_pickle(tmp_path / "r" / "checkpoints" / "round-0.pkl")
    again, grid = run(tmp_path, "r", **flat)  # resumes from round 0
    assert not [m for m in grid.replies if m.metadata.message_type == "query"]
    assert again["privacy"]["epsilon"] == pytest.approx(first["privacy"]["epsilon"], rel=1e-9)
    assert ck["strategy"]["histogram"] == 1


@pytest.mark.parametrize("flat, words", [
    ({"model": "gmf"}, "model 'mf'"),
    ({"privacy": "sample"}, "privacy='sample'"),
    ({"privacy": "user", "dp-trust": "secagg"}, "secagg"),
    ({"item-bias-init": "ones"}, "zeros|popularity"),
])
def test_unsupported_combinations_are_config_errors(flat, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        Config.from_flat({**SMALL, **POP, **flat})


def test_calibration_with_the_histogram_meets_the_target():
    delta = 1e-5
    for eps in (1.0,):  # the sweep's hardest point
        z = noise_for_target(eps, delta, 0.25, 30, histogram_ratio=2.0)
        got = compute_epsilons([(2 * z, 1.0, 1), (z, 0.25, 30)], delta)["prv"]
        assert got <= eps and got > 0.99 * eps and math.isfinite(z)


def test_fedavgm_without_server_optimisation_checkpoints(tmp_path):
    # FedAvgM with server-lr 1 and no momentum keeps the first round's ArrayRecord, whose
    # arrays may be memoryviews: the checkpoint copies them (it used to fail to pickle)
    summary, _ = run(tmp_path, "m", **{**DP, "strategy": "fedavgm", "server-lr": 1.0,
                                        "num-rounds": 1})
    ck = checkpoint.load_pickle(tmp_path / "m" / "checkpoints" / "round-1.pkl")
    assert summary["rounds"] == 1 and "current_arrays" in ck["strategy"]["inner"]
