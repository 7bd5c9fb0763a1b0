"""item-step = newton: per-row Newton statistics on the nodes, one Newton step per row on the
server (fedrec.train.newton, server.strategies.ItemWeightedFedAvg)."""

import numpy as np
import pytest
import torch

from fedrec.config import Config, ConfigError, TrainConfig
from fedrec.train.cohort import train_cohort
from fedrec.train.examples import build_examples
from fedrec.train.newton import diagonal, newton_step, unpack
from tests.helpers import build_test_model, tiny_split

TC = TrainConfig(local_epochs=2, num_negatives=3, batch_size=8, lr=0.05, optimizer="sgd",
                 loss="bce", weight_decay=0.01, device="cpu")


def _cohort(item_step, model_name="mf"):
    split = tiny_split()
    model = build_test_model(model_name, split)
    shared = model.init_shared(0)
    shared["item_bias"] = torch.linspace(-1, 1, split.n_items)  # not all zero
    users = np.arange(split.n_users)
    state = model.init_users(users, 0)
    res = train_cohort(model, shared, state, users, split, TC, seed=1, round_=3,
                       item_step=item_step)
    return split, shared, users, res


def test_newton_statistics_match_a_per_example_loop():
    split, shared, users, res = _cohort("newton")
    ex = build_examples(split, users, TC.local_epochs, TC.num_negatives, TC.loss, 1, 3)
    pos = {int(u): k for k, u in enumerate(users)}
    emb = res.user_state["user_emb"].double().numpy()
    ub = res.user_state["user_bias"].double().numpy()
    q, qb, b = (shared[n].double().numpy() for n in ("item_emb", "item_bias", "bias"))
    dim = q.shape[1]
    grad = np.zeros((split.n_items, dim + 1))
    hess = np.zeros((split.n_items, dim + 1, dim + 1))
    for items, labels in zip(ex.items, ex.labels, strict=True):
        owner = np.repeat(np.arange(len(ex.users)), ex.n_ex)
        for j, i, y in zip(owner, items[:, 0], labels, strict=True):
            u = pos[int(ex.users[j])]
            x = emb[u] @ q[i] + ub[u] + qb[i] + b
            p = 1 / (1 + np.exp(-x))
            jac = np.append(emb[u], 1.0)  # d logit / d [item_emb row, item_bias row]
            row = np.append(q[i], qb[i])
            grad[i] += (p - y) * jac + 2 * TC.weight_decay * row
            hess[i] += p * (1 - p) * np.outer(jac, jac) + 2 * TC.weight_decay * np.eye(dim + 1)
    rate = TC.lr / TC.batch_size
    got = np.concatenate([res.sum_update["item_emb"].numpy(),
                          res.sum_update["item_bias"].numpy()[:, None]], 1)
    np.testing.assert_allclose(got, -rate * grad, rtol=1e-5, atol=1e-9)
    packed = res.item_curvature.numpy()
    assert packed.shape == (split.n_items, (dim + 1) * (dim + 2) // 2)
    np.testing.assert_allclose(unpack(packed), rate * hess, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(diagonal(packed), rate * np.einsum("nii->ni", hess), rtol=1e-5)
    # the dense global bias keeps FedAvg's example-weighted sum of the local updates
    _, _, _, mean = _cohort("mean")
    torch.testing.assert_close(res.sum_update["bias"], mean.sum_update["bias"])
    assert mean.item_curvature is None


def test_newton_step_solves_each_touched_row():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3, 3))
    curv = a @ a.transpose(0, 2, 1) + np.eye(3)
    curv[2] = 0.0  # a row no example touched
    want = rng.normal(size=(4, 3))
    step_flat = np.einsum("nij,nj->ni", curv, want)
    r, c = np.triu_indices(3)
    got = newton_step({"item_emb": step_flat[:, :2], "item_bias": step_flat[:, 2]},
                      curv[:, r, c], ["item_emb", "item_bias"])
    want[2] = 0.0
    np.testing.assert_allclose(got["item_emb"], want[:, :2], atol=1e-10)
    np.testing.assert_allclose(got["item_bias"], want[:, 2], atol=1e-10)


@pytest.mark.parametrize("flat,bad", [
    ({"strategy": "fedavg"}, "strategy 'fedavg-items'"),
    ({"model": "neumf"}, "model 'mf'"),
    ({"loss": "bpr"}, "loss 'bce'"),
    ({"towers": "genre"}, "towers"),
    ({"defense": "row-clip"}, "defense"),
    ({"item-step": "exact"}, "mean|newton"),
])
def test_newton_config_errors_name_the_setting(flat, bad):
    base = {"strategy": "fedavg-items", "item-step": "newton"}
    with pytest.raises(ConfigError, match="item-step") as e:
        Config.from_flat({**base, **flat})
    assert bad in str(e.value)
