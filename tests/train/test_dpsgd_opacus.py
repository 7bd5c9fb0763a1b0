"""opacus as the reference of per-user DP-SGD (issue 11, requirement 6).

One user alone: fedrec's DP-SGD step (Poisson-sampled privacy units, each unit's gradient of
*all* its parameters -- its own rows, every item row, the dense bias -- clipped jointly to C,
summed, Gaussian noise) against opacus' ``PrivacyEngine`` (``make_private``, Poisson sampling,
per-sample clipping, ``loss_reduction="sum"``) on the same units: the clipped gradient sums agree
to 1e-6 with the noise off, and the noise has the same std (``sigma C`` per coordinate) with it on.

fedrec divides the noisy sum by the expected batch size in examples and steps with ``lr``; opacus
with a summed loss takes ``lr`` times the noisy sum: both updates are rescaled to the sum.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedrec.config import TrainConfig
from fedrec.data.schema import SplitData
from fedrec.models.registry import build_model
from fedrec.train.dpsgd import build_units, poisson_units, train_cohort_dpsgd

N_ITEMS, DIM, N_POS, NEG = 400, 8, 30, 4
LR, CLIP, KEY, ROUND = 120.0, 0.05, 1234, 1  # lr = qn: the update is the sum (float32-exact)
# 30 units of 5 examples, batch-size 120: q = 0.8 and round(1 / q) = 1 step per epoch
TC = TrainConfig(local_epochs=1, num_negatives=NEG, batch_size=120, lr=LR, optimizer="sgd",
                 loss="bce", device="cpu")
QN = 120.0  # expected examples per batch: fedrec's divisor


def one_user_split() -> SplitData:
    rs = np.random.default_rng(4)
    items = np.sort(rs.choice(N_ITEMS, N_POS + 1, replace=False))
    return SplitData(
        name="one-user", n_users=1, n_items=N_ITEMS,
        train_indptr=np.array([0, N_POS], dtype=np.int64), train_items=items[:N_POS],
        train_ratings=np.ones(N_POS, np.float32), test_items=items[N_POS:],
        test_negatives=np.setdiff1d(np.arange(N_ITEMS), items)[None, :20],
    )


def fedrec_sum(split, model, shared, state, sigma: float) -> dict[str, np.ndarray]:
    """fedrec's one-step update of every parameter, rescaled to the (noisy) clipped sum."""
    res = train_cohort_dpsgd(model, shared, state, np.array([0]), split, TC, 0, ROUND,
                             noise_multiplier=sigma, clip_norm=CLIP, noise_key=KEY,
                             keep_per_user=True)
    assert res.steps.tolist() == [1] and res.sample_rates[0] == 0.8
    upd = {n: t.numpy() for n, t in res.per_user[0].items()}
    upd.update({n: (res.user_state[n][0] - state[n][0]).numpy() for n in state})
    return {n: -v * QN / LR for n, v in upd.items()}


class UserModel(nn.Module):
    """MF for one user, as opacus sees it: a sample is a unit (a positive and its negatives)."""

    def __init__(self, shared: dict[str, torch.Tensor], state: dict[str, torch.Tensor]):
        super().__init__()
        self.user_emb = nn.Parameter(state["user_emb"][0].clone().double())
        self.user_bias = nn.Parameter(state["user_bias"][0].clone().double().reshape(()))
        self.item_emb = nn.Parameter(shared["item_emb"].clone().double())
        self.item_bias = nn.Parameter(shared["item_bias"].clone().double())
        self.bias = nn.Parameter(shared["bias"].clone().double().reshape(()))

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # (B, m) -> (B, m)
        dot = (self.item_emb[items] * self.user_emb).sum(-1)
        return dot + self.user_bias + self.item_bias[items] + self.bias


def opacus_sum(split, shared, state, sigma: float) -> dict[str, np.ndarray]:
    """opacus' noisy clipped sum on the units fedrec's Poisson draw selected."""
    units = build_units(split, np.array([0]), 1, NEG, "bce", 0, ROUND)
    items = torch.from_numpy(units.items[0][:, :, 0])
    labels = torch.from_numpy(units.labels[0]).double()
    sel = poisson_units(KEY, ROUND, units.users, 0, 0, torch.zeros(N_POS, dtype=torch.long),
                        torch.arange(N_POS), torch.tensor([0.8], dtype=torch.float64))
    assert 15 < len(sel) < N_POS  # a Poisson sample, not the whole data
    model = UserModel(shared, state)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loader = DataLoader(TensorDataset(items, labels), batch_size=24)
    engine = PrivacyEngine()
    gsm, opt, _ = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        data_loader=loader, noise_multiplier=sigma, max_grad_norm=CLIP, poisson_sampling=True,
        loss_reduction="sum")
    opt.zero_grad()
    F.binary_cross_entropy_with_logits(gsm(items[sel]), labels[sel], reduction="sum").backward()
    opt.step()
    return {n: (before[n] - p.detach()).numpy() for n, p in model.named_parameters()}


def setup():
    split = one_user_split()
    model = build_model("mf", n_users=1, n_items=N_ITEMS, dim=DIM, init_std=0.3)
    return split, model, model.init_shared(0), model.init_users(np.array([0]), 0)


def test_clipped_gradient_sum_equals_opacus_without_noise():
    split, model, shared, state = setup()
    ours = fedrec_sum(split, model, shared, state, 0.0)
    ref = opacus_sum(split, shared, state, 0.0)
    norms = {n: float(np.linalg.norm(ref[n])) for n in ref}
    assert norms["item_emb"] > 1e-3 and sum(v**2 for v in norms.values()) ** 0.5 > CLIP
    for n in ref:
        np.testing.assert_allclose(ours[n].reshape(ref[n].shape), ref[n], atol=1e-6, rtol=0,
                                   err_msg=n)


def test_noise_std_equals_opacus():
    split, model, shared, state = setup()
    sigma = 1.3
    ours = fedrec_sum(split, model, shared, state, sigma)
    ours0 = fedrec_sum(split, model, shared, state, 0.0)
    ref = opacus_sum(split, shared, state, sigma)
    ref0 = opacus_sum(split, shared, state, 0.0)
    ours_noise = (ours["item_emb"] - ours0["item_emb"]).ravel()
    ref_noise = (ref["item_emb"] - ref0["item_emb"]).ravel()  # 3,200 coordinates each
    assert abs(ours_noise.std() / (sigma * CLIP) - 1) < 0.05, ours_noise.std()
    assert abs(ref_noise.std() / (sigma * CLIP) - 1) < 0.05, ref_noise.std()
    assert abs(ours_noise.mean()) < 0.1 * sigma * CLIP
