"""NeuMF pre-training (He et al. 2017): parts copied, output layer alpha-weighted, scores fused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from fedrec.config import TrainConfig
from fedrec.eval.sampled import evaluate_users, means
from fedrec.models.base import Recommender
from fedrec.models.neumf import from_pretrained
from fedrec.models.pretrain import (
    MLP_SEED_OFFSET,
    PretrainSettings,
    StageSettings,
    build_parts,
    pretrain_neumf,
    stage_config,
)
from fedrec.train.central import train_central
from tests.helpers import tiny_split

ALPHA = 0.3  # not 0.5, so that a swapped alpha / (1 - alpha) cannot pass


def scores(model: Recommender, params: dict[str, Tensor], split) -> np.ndarray:
    """Scores of every user's test item and negatives, ``(U, 1 + n_neg)``."""
    cand = torch.from_numpy(
        np.concatenate([split.test_items[:, None], split.test_negatives], axis=1))
    a = cand.shape[0]
    user = {s.name: params[s.name].unsqueeze(1) for s in model.specs_of("user")}
    item = {s.name: params[s.name][cand] for s in model.specs_of("item")}
    dense = {s.name: params[s.name].unsqueeze(0).expand(a, *params[s.name].shape)
             for s in model.specs_of("dense")}
    with torch.no_grad():
        return model.score(user, item, dense).double().numpy()


@pytest.fixture(scope="module")
def trained_parts():
    """GMF and MLP trained for 2 epochs each on the tiny split (non-trivial weights)."""
    split = tiny_split(n_users=16, n_items=40, planted=True)
    settings = PretrainSettings(dim=4, gmf=StageSettings(2, 0.01, "adam"),
                                mlp=StageSettings(2, 0.01, "adam"),
                                neumf=StageSettings(0, 0.05, "sgd"), alpha=ALPHA, batch_size=16)
    gmf_model, mlp_model, neumf_model = build_parts(split, settings)
    base = TrainConfig(device="cpu")
    gmf = train_central(gmf_model, split, stage_config(base, settings.gmf, settings), 2, 0)
    mlp = train_central(mlp_model, split, stage_config(base, settings.mlp, settings), 2,
                        MLP_SEED_OFFSET)
    return split, settings, (gmf_model, mlp_model, neumf_model), gmf, mlp


def test_from_pretrained_copies_parts_and_weights_the_output_layer(trained_parts) -> None:
    # Prepare
    split, settings, (gmf_model, mlp_model, neumf_model), gmf, mlp = trained_parts

    # Execute
    neumf = from_pretrained(gmf, mlp, ALPHA)

    # Assert: exactly NeuMF's parameters, with NeuMF's shapes
    assert set(neumf) == {s.name for s in neumf_model.specs()}
    for s in neumf_model.specs():
        rows = split.n_users if s.kind == "user" else split.n_items
        want = (rows, *s.shape) if s.kind in ("user", "item") else s.shape
        assert tuple(neumf[s.name].shape) == tuple(want), s.name
    # GMF embeddings and MLP embeddings + tower are copied unchanged
    for name in ("gmf_user", "gmf_item"):
        torch.testing.assert_close(neumf[name], gmf[name], rtol=0, atol=0)
    tower = [s.name for s in mlp_model.specs() if s.name.startswith("mlp_w")
             or s.name.startswith("mlp_b")]
    assert len(tower) == 6
    for name in ("mlp_user", "mlp_item", *tower):
        torch.testing.assert_close(neumf[name], mlp[name], rtol=0, atol=0)
    # output layer h = [alpha h_gmf, (1 - alpha) h_mlp], bias alpha b_gmf + (1 - alpha) b_mlp
    h = torch.cat([neumf["gmf_h"], neumf["mlp_h"]])
    want_h = torch.cat([ALPHA * gmf["gmf_h"], (1 - ALPHA) * mlp["mlp_h"]])
    torch.testing.assert_close(h, want_h, rtol=0, atol=0)
    torch.testing.assert_close(neumf["out_b"], ALPHA * gmf["out_b"] + (1 - ALPHA) * mlp["out_b"])
    assert not torch.equal(gmf["gmf_h"], torch.ones_like(gmf["gmf_h"]))  # GMF really trained


def test_pretrained_neumf_scores_are_the_alpha_weighted_logits(trained_parts) -> None:
    # Prepare
    split, settings, (gmf_model, mlp_model, neumf_model), gmf, mlp = trained_parts
    neumf = from_pretrained(gmf, mlp, ALPHA)

    # Execute
    fused = scores(neumf_model, neumf, split)
    g = scores(gmf_model, gmf, split)  # h_g . (p * q) + b_g
    m = scores(mlp_model, mlp, split)  # h_m . MLP([p', q']) + b_m

    # Assert: alpha * GMF logit + (1 - alpha) * MLP logit, before any NeuMF training
    np.testing.assert_allclose(fused, ALPHA * g + (1 - ALPHA) * m, rtol=1e-5, atol=1e-6)
    assert np.std(g) > 1e-3 and np.std(m) > 1e-3  # both parts contribute


def test_pretrain_pipeline_stages_and_neumf_optimiser(trained_parts) -> None:
    # Prepare: the same recipe, plus one NeuMF epoch with plain SGD
    split, settings, (gmf_model, mlp_model, neumf_model), gmf, mlp = trained_parts
    recipe = PretrainSettings(dim=4, gmf=settings.gmf, mlp=settings.mlp,
                              neumf=StageSettings(1, 0.05, "sgd"), alpha=ALPHA, batch_size=16)
    stages: list[tuple[str, int]] = []

    # Execute
    res = pretrain_neumf(split, recipe, seed=0, base=TrainConfig(device="cpu"),
                         on_epoch=lambda stage, model, epoch, params: stages.append(
                             (stage, epoch)))

    # Assert: GMF and MLP stages are the same training as above (seeds 0 and offset)
    for name in gmf:
        torch.testing.assert_close(res.gmf[name], gmf[name])
    for name in mlp:
        torch.testing.assert_close(res.mlp[name], mlp[name])
    assert stages == [("gmf", 1), ("gmf", 2), ("mlp", 1), ("mlp", 2), ("neumf", 1)]
    init = from_pretrained(gmf, mlp, ALPHA)
    for name in init:
        torch.testing.assert_close(res.neumf_init[name], init[name])
    moved = [n for n in init if not torch.equal(res.neumf[n], init[n])]
    assert set(moved) == set(init)  # the NeuMF stage trains every parameter
    assert stage_config(TrainConfig(), recipe.neumf, recipe).optimizer == "sgd"
    assert PretrainSettings().neumf.optimizer == "sgd"  # paper default for the NeuMF stage
    assert PretrainSettings().gmf.optimizer == PretrainSettings().mlp.optimizer == "adam"


def test_pretrained_neumf_learns_the_planted_taste(trained_parts) -> None:
    # Prepare: a longer recipe on the planted split (negatives from the other taste cluster)
    split = trained_parts[0]
    recipe = PretrainSettings(dim=4, gmf=StageSettings(8, 0.02, "adam"),
                              mlp=StageSettings(8, 0.02, "adam"),
                              neumf=StageSettings(2, 0.05, "sgd"), batch_size=16)

    # Execute
    res = pretrain_neumf(split, recipe, seed=1, base=TrainConfig(device="cpu"))
    neumf_model = build_parts(split, recipe)[2]
    shared = {n: res.neumf[n] for n in neumf_model.shared_names}
    private = {n: res.neumf[n] for n in neumf_model.private_names}
    metrics = means(evaluate_users(neumf_model, shared, private, np.arange(split.n_users),
                                   split))

    # Assert: 12 negatives + 1 positive, a random ranking has HR@10 = 10/13 ~ 0.77
    assert metrics["hr@10"] >= 0.9
