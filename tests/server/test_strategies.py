"""Each strategy of ``server.strategies`` against a hand computation.

Replies are built by hand as Flower would deliver them (one ``ArrayRecord`` of float64 arrays
and one ``MetricRecord`` carrying ``num-examples``); the expected aggregates are written out
with numbers, never computed with Flower's own helpers. The proximal term of FedProx lives in
the client's training loop, so its test runs ``train_cohort`` directly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from fedrec.config import Config, TrainConfig
from fedrec.models.registry import build_model
from fedrec.train.cohort import train_cohort
from server.strategies import STRATEGIES, build_strategy, sum_metrics
from tests.helpers import tiny_split

N_NODES = 3


class ThreeNodeGrid:
    """The part of Flower's Grid that ``configure_train`` uses: three connected node ids."""

    def get_node_ids(self) -> Iterable[int]:
        return [1001, 1002, 1003]


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """What ``run_simulation`` sets before a ServerApp may create messages."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


def reply(weight: float, **arrays: list[float] | float) -> Message:
    """A train reply carrying ``arrays`` (float64) with ``num-examples = weight``."""
    record = ArrayRecord({k: Array(np.array(v, dtype=np.float64)) for k, v in arrays.items()})
    content = RecordDict({"arrays": record, "metrics": MetricRecord({"num-examples": weight})})
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)


def three_replies() -> list[Message]:
    """Weights 1, 3, 6 (factors 0.1, 0.3, 0.6); ``w`` is a vector, ``b`` a 0-d array."""
    return [
        reply(1.0, w=[10.0, 0.0], b=1.0),
        reply(3.0, w=[0.0, 10.0], b=2.0),
        reply(6.0, w=[5.0, 5.0], b=-1.0),
    ]


def strategy_for(name: str, **flat: float):
    """``build_strategy`` for ``name`` with three nodes."""
    return build_strategy(Config.from_flat({"strategy": name, **flat}), N_NODES)


def start_round(strategy, server_round: int, w: list[float], b: float) -> list[Message]:
    """``configure_train`` with the given global arrays (sets the strategy's current arrays)."""
    arrays = ArrayRecord({"w": Array(np.array(w)), "b": Array(np.array(b))})
    return list(strategy.configure_train(server_round, arrays, ConfigRecord({}), ThreeNodeGrid()))


def arrays_of(record: ArrayRecord | None) -> dict[str, np.ndarray]:
    assert record is not None
    return {k: a.numpy() for k, a in record.items()}


# ------------------------------------------------------------------------- FedAvg family
@pytest.mark.parametrize("name", ["fedavg", "fedprox"])
def test_fedavg_and_fedprox_aggregate_the_weighted_mean(name: str) -> None:
    # Prepare
    strategy = strategy_for(name, **{"proximal-mu": 0.1})

    # Execute
    arrays, metrics = strategy.aggregate_train(1, three_replies())

    # Assert: 0.1*[10, 0] + 0.3*[0, 10] + 0.6*[5, 5] = [1 + 0 + 3, 0 + 3 + 3]
    out = arrays_of(arrays)
    np.testing.assert_allclose(out["w"], [4.0, 6.0], rtol=0, atol=1e-12)
    # 0.1*1 + 0.3*2 + 0.6*(-1) = 0.1
    np.testing.assert_allclose(out["b"], 0.1, rtol=0, atol=1e-12)
    assert out["b"].shape == ()
    assert metrics is not None and metrics["num-examples"] == 10.0  # summed, not averaged


def test_fedprox_sends_the_configured_mu_to_the_nodes() -> None:
    # Prepare
    strategy = strategy_for("fedprox", **{"proximal-mu": 0.25})

    # Execute
    messages = start_round(strategy, 1, [0.0, 0.0], 0.0)

    # Assert: the client reads 'proximal-mu' from the message config (a known setting)
    assert len(messages) == N_NODES
    assert {float(m.content["config"]["proximal-mu"]) for m in messages} == {0.25}
    assert {int(m.content["config"]["server-round"]) for m in messages} == {1}


def test_fedavgm_server_learning_rate_over_two_rounds() -> None:
    # Prepare: x0 = w [2, 2], b 0; server lr 0.5; fedrec configures no server momentum
    strategy = strategy_for("fedavgm", **{"server-lr": 0.5})
    assert strategy.server_momentum == 0.0

    # Execute
    start_round(strategy, 1, [2.0, 2.0], 0.0)
    first = arrays_of(strategy.aggregate_train(1, three_replies())[0])
    start_round(strategy, 2, list(first["w"]), float(first["b"]))
    second = arrays_of(strategy.aggregate_train(2, three_replies())[0])

    # Assert. Round 1: average [4, 6] / 0.1; pseudo-gradient x0 - avg = [-2, -4] / -0.1;
    # x1 = x0 - 0.5 * g = [3, 4] / 0.05.
    np.testing.assert_allclose(first["w"], [3.0, 4.0], atol=1e-12)
    np.testing.assert_allclose(first["b"], 0.05, atol=1e-12)
    # Round 2: g = x1 - avg = [-1, -2] / -0.05; x2 = [3.5, 5] / 0.075.
    np.testing.assert_allclose(second["w"], [3.5, 5.0], atol=1e-12)
    np.testing.assert_allclose(second["b"], 0.075, atol=1e-12)


def test_fedavgm_momentum_accumulates_pseudo_gradients() -> None:
    # Prepare: setting 'server-momentum' reaches Flower's FedAvgM
    strategy = strategy_for("fedavgm", **{"server-lr": 0.5, "server-momentum": 0.9})
    assert strategy.server_momentum == 0.9

    # Execute
    start_round(strategy, 1, [2.0, 2.0], 0.0)
    first = arrays_of(strategy.aggregate_train(1, three_replies())[0])
    start_round(strategy, 2, list(first["w"]), float(first["b"]))
    second = arrays_of(strategy.aggregate_train(2, three_replies())[0])

    # Assert. Round 1: m1 = g1 = [-2, -4]; x1 = [2, 2] - 0.5 * m1 = [3, 4] (momentum starts
    # at the first pseudo-gradient).
    np.testing.assert_allclose(first["w"], [3.0, 4.0], atol=1e-12)
    # Round 2: g2 = [3, 4] - [4, 6] = [-1, -2]; m2 = 0.9 * [-2, -4] + [-1, -2] = [-2.8, -5.6];
    # x2 = [3, 4] - 0.5 * m2 = [4.4, 6.8].
    np.testing.assert_allclose(second["w"], [4.4, 6.8], atol=1e-12)
    # b: g1 = -0.1, x1 = 0.05; g2 = 0.05 - 0.1 = -0.05; m2 = -0.09 - 0.05 = -0.14; x2 = 0.12
    np.testing.assert_allclose(second["b"], 0.12, atol=1e-12)


def test_fedavg_items_averages_each_item_row_over_the_users_holding_it() -> None:
    # Prepare: MF's shared params (item rows item_emb, item_bias; dense bias). Nodes reply
    # their own row averages plus the users' weight per row ('item-weight').
    strategy = strategy_for("fedavg-items", model="mf")
    base = {"item_emb": np.array([[0.0], [0.0], [5.0]]), "item_bias": np.array([0.0, 0.0, 7.0]),
            "bias": np.array(0.0)}
    strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in base.items()}),
                             ConfigRecord({}), ThreeNodeGrid())
    replies = [
        reply(2.0, item_emb=[[2.0], [0.0], [5.0]], item_bias=[1.0, 0.0, 7.0], bias=1.0,
              **{"item-weight": [2.0, 0.0, 0.0]}),
        reply(6.0, item_emb=[[-1.0], [4.0], [5.0]], item_bias=[4.0, 2.0, 7.0], bias=-1.0,
              **{"item-weight": [1.0, 3.0, 0.0]}),
    ]

    # Execute
    out = arrays_of(strategy.aggregate_train(1, replies)[0])

    # Assert: row 0 (2 * 1 + 1 * 4) / 3 = 2, row 1 (3 * 2) / 3 = 2, row 2 untouched keeps 7
    np.testing.assert_allclose(out["item_bias"], [2.0, 2.0, 7.0], atol=1e-12)
    # item_emb: row 0 (2 * 2 + 1 * (-1)) / 3 = 1, row 1 (3 * 4) / 3 = 4, row 2 keeps 5
    np.testing.assert_allclose(out["item_emb"], [[1.0], [4.0], [5.0]], atol=1e-12)
    # dense bias weighted by num-examples: (2 * 1 + 6 * (-1)) / 8 = -0.5
    np.testing.assert_allclose(out["bias"], -0.5, atol=1e-12)
    assert set(out) == set(base)  # the weights are not part of the model


def test_fedavg_items_server_lr_and_momentum_step_the_item_rows_only() -> None:
    # Prepare: the replies of the test above; server-lr 10, server-momentum 0.5
    strategy = strategy_for("fedavg-items", model="mf", **{"server-lr": 10.0,
                                                          "server-momentum": 0.5})
    base = {"item_emb": np.array([[0.0], [0.0], [5.0]]), "item_bias": np.array([0.0, 0.0, 7.0]),
            "bias": np.array(0.0)}

    def round_(arrays: dict[str, np.ndarray], shift: float) -> dict[str, np.ndarray]:
        strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                                 ConfigRecord({}), ThreeNodeGrid())
        a = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        replies = [  # each node moves item_bias rows 0, 1 by the same deltas from the global
            reply(2.0, item_emb=a["item_emb"], item_bias=a["item_bias"] + [1.0, 0.0, 0.0],
                  bias=float(a["bias"]) + shift, **{"item-weight": [2.0, 0.0, 0.0]}),
            reply(6.0, item_emb=a["item_emb"], item_bias=a["item_bias"] + [4.0, 2.0, 0.0],
                  bias=float(a["bias"]) - shift, **{"item-weight": [1.0, 3.0, 0.0]}),
        ]
        return arrays_of(strategy.aggregate_train(1, replies)[0])

    # Execute
    first = round_(base, 1.0)
    second = round_(first, 2.0)

    # Assert. Round 1: per-row mean update d1 = [2, 2, 0] (as above); v1 = d1;
    # rows = [0, 0, 7] + 10 * [2, 2, 0] = [20, 20, 7]. Untouched row 2 keeps 7.
    np.testing.assert_allclose(first["item_bias"], [20.0, 20.0, 7.0], atol=1e-12)
    np.testing.assert_allclose(first["item_emb"], [[0.0], [0.0], [5.0]], atol=1e-12)
    # the dense bias takes the plain example-weighted mean: (2 * 1 + 6 * (-1)) / 8 = -0.5
    np.testing.assert_allclose(first["bias"], -0.5, atol=1e-12)
    # Round 2: d2 = [2, 2, 0]; v2 = 0.5 * v1 + d2 = [3, 3, 0]; rows = [20, 20, 7] + 30
    np.testing.assert_allclose(second["item_bias"], [50.0, 50.0, 7.0], atol=1e-12)
    # bias: -0.5 + (2 * 2 + 6 * (-2)) / 8 = -1.5 (no server lr, no momentum on dense params)
    np.testing.assert_allclose(second["bias"], -1.5, atol=1e-12)


# ------------------------------------------------------------------------- FedOpt family
def test_fedadam_moments_eta_and_tau_over_two_rounds() -> None:
    # Prepare: eta = server-lr = 0.1; Flower's defaults beta1 0.9, beta2 0.99, tau 1e-3
    strategy = strategy_for("fedadam", **{"server-lr": 0.1, "lr": 0.02})
    assert (strategy.eta, strategy.eta_l) == (0.1, 0.02)
    assert (strategy.beta_1, strategy.beta_2, strategy.tau) == (0.9, 0.99, 1e-3)

    # Execute
    start_round(strategy, 1, [2.0, 2.0], 0.0)
    first = arrays_of(strategy.aggregate_train(1, three_replies())[0])
    x1 = first["w"].tolist()
    start_round(strategy, 2, x1, float(first["b"]))
    second = arrays_of(strategy.aggregate_train(2, three_replies())[0])

    # Assert. Round 1: delta = avg - x0 = [2, 4]; m1 = 0.1 * delta = [0.2, 0.4];
    # v1 = 0.01 * delta^2 = [0.04, 0.16]; bias-corrected step (Flower counts round + 1):
    eta1 = 0.1 * math.sqrt(1 - 0.99**2) / (1 - 0.9**2)
    want1 = [2 + eta1 * 0.2 / (0.2 + 1e-3), 2 + eta1 * 0.4 / (0.4 + 1e-3)]
    np.testing.assert_allclose(x1, want1, rtol=1e-12)
    # b: delta 0.1, m1 0.01, v1 1e-4 -> x1 = 0 + eta1 * 0.01 / (0.01 + 1e-3)
    np.testing.assert_allclose(first["b"], eta1 * 0.01 / 0.011, rtol=1e-12)
    # Round 2: delta = [4, 6] - x1; m2 = 0.9 m1 + 0.1 delta; v2 = 0.99 v1 + 0.01 delta^2
    eta2 = 0.1 * math.sqrt(1 - 0.99**3) / (1 - 0.9**3)
    want2 = []
    for avg, x, m1, v1 in zip([4.0, 6.0], x1, [0.2, 0.4], [0.04, 0.16], strict=True):
        d = avg - x
        m2, v2 = 0.9 * m1 + 0.1 * d, 0.99 * v1 + 0.01 * d * d
        want2.append(x + eta2 * m2 / (math.sqrt(v2) + 1e-3))
    np.testing.assert_allclose(second["w"], want2, rtol=1e-12)


def test_fedyogi_moments_eta_and_tau_over_two_rounds() -> None:
    # Prepare: eta = 0.1; Flower's defaults beta1 0.9, beta2 0.99, tau 1e-3
    strategy = strategy_for("fedyogi", **{"server-lr": 0.1})
    assert (strategy.beta_1, strategy.beta_2, strategy.tau) == (0.9, 0.99, 1e-3)

    # Execute
    start_round(strategy, 1, [2.0, 2.0], 0.0)
    first = arrays_of(strategy.aggregate_train(1, three_replies())[0])
    x1 = first["w"].tolist()
    start_round(strategy, 2, x1, float(first["b"]))
    second = arrays_of(strategy.aggregate_train(2, three_replies())[0])

    # Assert. Round 1: delta [2, 4]; m1 = [0.2, 0.4]; v0 = 0 so sign(v0 - delta^2) = -1 and
    # v1 = 0 + 0.01 * delta^2 = [0.04, 0.16]; no bias correction: x1 = x0 + 0.1 m1/(sqrt v1+tau)
    want1 = [2 + 0.1 * 0.2 / (0.2 + 1e-3), 2 + 0.1 * 0.4 / (0.4 + 1e-3)]
    np.testing.assert_allclose(x1, want1, rtol=1e-12)
    # Round 2: delta = [4, 6] - x1 ~ [1.9, 3.9]; v1 < delta^2, so v2 = v1 + 0.01 delta^2
    # (Adam would give 0.99 v1 + 0.01 delta^2)
    want2 = []
    for avg, x, m1, v1 in zip([4.0, 6.0], x1, [0.2, 0.4], [0.04, 0.16], strict=True):
        d = avg - x
        assert v1 < d * d
        m2, v2 = 0.9 * m1 + 0.1 * d, v1 + 0.01 * d * d
        want2.append(x + 0.1 * m2 / (math.sqrt(v2) + 1e-3))
    np.testing.assert_allclose(second["w"], want2, rtol=1e-12)


def test_fedadam_refuses_to_aggregate_before_configure_train() -> None:
    # Prepare
    strategy = strategy_for("fedadam")

    # Execute / Assert: the loop must call configure_train first (it always does)
    with pytest.raises(Exception, match="configure_train"):
        strategy.aggregate_train(1, three_replies())


# ------------------------------------------------------------------------- robust
def test_fedmedian_takes_the_elementwise_median_ignoring_weights() -> None:
    # Prepare
    strategy = strategy_for("fedmedian")

    # Execute
    out = arrays_of(strategy.aggregate_train(1, three_replies())[0])

    # Assert: w columns {10, 0, 5} and {0, 10, 5} -> [5, 5]; b {1, 2, -1} -> 1
    np.testing.assert_allclose(out["w"], [5.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(out["b"], 1.0, atol=1e-12)


def test_fedtrimmedavg_with_three_replies_trims_nothing() -> None:
    # Prepare: Flower's default cut 0.2 removes int(0.2 * 3) = 0 replies per tail
    strategy = strategy_for("fedtrimmedavg")
    assert strategy.beta == 0.2

    # Execute
    out = arrays_of(strategy.aggregate_train(1, three_replies())[0])

    # Assert: the unweighted mean: [(10 + 0 + 5) / 3, (0 + 10 + 5) / 3] = [5, 5]; b 2/3
    np.testing.assert_allclose(out["w"], [5.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(out["b"], 2.0 / 3.0, atol=1e-12)


def test_fedtrimmedavg_with_five_replies_drops_each_tail() -> None:
    # Prepare: int(0.2 * 5) = 1 value cut from each tail, per element
    strategy = strategy_for("fedtrimmedavg")
    replies = [*three_replies(), reply(1.0, w=[100.0, -100.0], b=50.0),
               reply(1.0, w=[-50.0, 7.0], b=0.0)]

    # Execute
    out = arrays_of(strategy.aggregate_train(1, replies)[0])

    # Assert: w[0] sorted -50, 0, 5, 10, 100 -> (0 + 5 + 10) / 3 = 5;
    # w[1] sorted -100, 0, 5, 7, 10 -> (0 + 5 + 7) / 3 = 4; b -1, 0, 1, 2, 50 -> 1
    np.testing.assert_allclose(out["w"], [5.0, 4.0], atol=1e-12)
    np.testing.assert_allclose(out["b"], 1.0, atol=1e-12)


def test_krum_selects_the_reply_closest_to_its_neighbours() -> None:
    # Prepare: four replies, 0 malicious -> each scored by its n - f - 2 = 2 nearest neighbours
    strategy = strategy_for("krum")
    replies = [reply(1.0, w=[1.0, 1.0]), reply(2.0, w=[2.0, 1.0]), reply(3.0, w=[1.0, 3.0]),
               reply(4.0, w=[11.0, 11.0])]

    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)

    # Assert. Squared distances: 12 = 1, 13 = 4, 14 = 200, 23 = 5, 24 = 181, 34 = 164.
    # Scores: 1 -> 1 + 4 = 5, 2 -> 1 + 5 = 6, 3 -> 4 + 5 = 9, 4 -> 164 + 181 = 345: reply 1.
    np.testing.assert_allclose(arrays_of(arrays)["w"], [1.0, 1.0], atol=1e-12)
    assert metrics is not None and metrics["num-examples"] == 1.0  # metrics of the chosen one


# ------------------------------------------------------------------------- wiring
def test_sum_metrics_sums_every_metric_over_replies() -> None:
    # Prepare: nodes reply sums and counts; one reply carries two metric records
    records = [
        RecordDict({"metrics": MetricRecord({"num-examples": 4.0, "hr@10-sum": 1.0})}),
        RecordDict({"metrics": MetricRecord({"num-examples": 6.0, "hr@10-sum": 3.0})}),
        RecordDict({"metrics": MetricRecord({"num-examples": 0.0, "hr@10-sum": 0.0}),
                    "extra": MetricRecord({"users": 2})}),
    ]

    # Execute
    out = sum_metrics(records, "num-examples")

    # Assert: 4 + 6 + 0 = 10 and 1 + 3 + 0 = 4 (the loop divides: HR@10 = 0.4, not a mean of
    # the per-node means 0.25, 0.5, 0)
    assert dict(out) == {"num-examples": 10.0, "hr@10-sum": 4.0, "users": 2.0}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_waits_for_all_nodes(name: str) -> None:
    # Prepare / Execute
    strategy = strategy_for(name)

    # Assert: every node trains and evaluates every round (users are sampled inside nodes)
    assert strategy.fraction_train == 1.0 and strategy.fraction_evaluate == 1.0
    assert strategy.min_train_nodes == N_NODES and strategy.min_available_nodes == N_NODES
    assert strategy.train_metrics_aggr_fn is sum_metrics


def test_unknown_strategy_lists_the_known_ones() -> None:
    # Execute / Assert: config validation refuses it, naming the known ones
    with pytest.raises(ValueError, match="'strategy' = 'fedsomething' is unknown.*fedavg.*fedprox"):
        Config.from_flat({"strategy": "fedsomething"})
    cfg = Config()
    cfg.fed.strategy = "fedsomething"  # bypassing validation: build_strategy refuses it too
    with pytest.raises(ValueError, match="fedavg.*fedprox"):
        build_strategy(cfg, N_NODES)


# ------------------------------------------------------------------------- proximal term
def test_proximal_term_adds_exactly_mu_times_the_drift_on_the_second_step() -> None:
    # Prepare: SGD, one batch covers all of a user's examples, so 2 local epochs = 2 steps.
    # Step 1 starts at w0 (the proximal gradient mu (w - w0) is 0 there), so
    # w1 = w0 - lr g(w0) for any mu; step 2: w2 = w1 - lr (g(w1) + mu (w1 - w0)).
    # Hence delta(mu) - delta(0) = -lr * mu * (w1 - w0), row by row.
    split = tiny_split()
    model = build_model("mlp", n_users=split.n_users, n_items=split.n_items, dim=4)
    shared = model.init_shared(0)
    users = np.arange(split.n_users)
    state = model.init_users(users, 0)
    lr, mu = 0.5, 0.8
    tc2 = TrainConfig(local_epochs=2, num_negatives=2, batch_size=1000, lr=lr, optimizer="sgd",
                      device="cpu")
    tc1 = TrainConfig(**{**tc2.__dict__, "local_epochs": 1})

    # Execute
    def run(tc: TrainConfig, proximal_mu: float) -> dict[int, dict[str, torch.Tensor]]:
        return train_cohort(model, shared, state, users, split, tc, seed=4, round_=2,
                            proximal_mu=proximal_mu, keep_per_user=True).per_user

    one_step = run(tc1, 0.0)
    plain, prox = run(tc2, 0.0), run(tc2, mu)

    # Assert: for every user and every shared parameter (item rows and the dense tower)
    checked, largest = 0, 0.0
    for u in users.tolist():
        for name in model.shared_names:
            drift = one_step[u][name]  # w1 - w0
            want = -lr * mu * drift
            got = prox[u][name] - plain[u][name]
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
            checked += int((drift != 0).sum())
            largest = max(largest, float(want.abs().max()))
    assert checked > 1000 and largest > 1e-3  # the effect is far above the tolerance
