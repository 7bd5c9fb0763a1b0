"""Central NeuMF pre-training as in He et al. (WWW 2017), section 3.4.1.

1. train GMF and MLP from random initialisations (the paper: Adam);
2. build NeuMF from them with ``neumf.from_pretrained``: embeddings and the MLP tower are
   copied, the output layer is the concatenation ``[alpha * h_gmf, (1 - alpha) * h_mlp]``
   (``alpha = 0.5``), so before any further training NeuMF scores
   ``alpha * GMF(u, i) + (1 - alpha) * MLP(u, i)`` (logits);
3. continue training NeuMF (the paper: vanilla SGD, because Adam's momentum state of the
   parts is not carried over; the authors' public code uses Adam at lr 0.001 instead).

Every stage runs ``train_central`` (same model code as federated training); learning rates,
optimisers and epochs of each stage are settings of ``PretrainSettings``. A config with
``pretrain-epochs > 0`` describes one (:func:`settings_of`; ``simulations/central.py`` runs it).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from fedrec.config import Config, TrainConfig
from fedrec.data.schema import SplitData
from fedrec.models.base import Recommender
from fedrec.models.neumf import from_pretrained
from fedrec.models.registry import build_model
from fedrec.train.central import train_central

log = logging.getLogger(__name__)

#: Seed offsets of the GMF and MLP stages, so that the two parts do not start from
#: correlated user embeddings (the counter-based initialiser keys by the parameter's position,
#: and ``gmf_user`` / ``mlp_user`` are both the first user parameter of their model).
GMF_SEED_OFFSET = 0
MLP_SEED_OFFSET = 100_003
NEUMF_SEED_OFFSET = 200_003


@dataclass
class StageSettings:
    """Optimisation of one stage (central training).

    Attributes
    ----------
    epochs : int
    lr : float
    optimizer : {"adam", "sgd"}
    """

    epochs: int
    lr: float
    optimizer: str


@dataclass
class PretrainSettings:
    """NeuMF pre-training recipe; defaults follow the paper on ML-1M.

    Attributes
    ----------
    dim : int
        Predictive factors: GMF embeddings ``dim``, MLP embeddings ``4 * dim``, tower
        ``8d -> 4d -> 2d -> d`` (the paper's 64-32-16-8 at ``dim = 8``).
    gmf, mlp, neumf : StageSettings
        Epochs, learning rate and optimiser of each stage (paper: Adam for GMF and MLP,
        SGD without momentum for NeuMF).
    alpha : float
        Weight of GMF in the fused output layer.
    batch_size, num_negatives : int
        Central mini-batch size and sampled negatives per positive (paper: 256, 4).
    init_std : float
        Standard deviation of the normal embedding initialisation.
    """

    dim: int = 8
    gmf: StageSettings = field(default_factory=lambda: StageSettings(20, 0.001, "adam"))
    mlp: StageSettings = field(default_factory=lambda: StageSettings(20, 0.001, "adam"))
    neumf: StageSettings = field(default_factory=lambda: StageSettings(10, 0.05, "sgd"))
    alpha: float = 0.5
    batch_size: int = 256
    num_negatives: int = 4
    init_std: float = 0.01


@dataclass
class PretrainResult:
    """Parameters (private and shared, as full tables) after each stage.

    Attributes
    ----------
    gmf, mlp : dict of str to Tensor
        Trained GMF and MLP parameters.
    neumf_init : dict of str to Tensor
        NeuMF right after ``from_pretrained`` (before NeuMF training).
    neumf : dict of str to Tensor
        NeuMF after its own training stage.
    """

    gmf: dict[str, Tensor]
    mlp: dict[str, Tensor]
    neumf_init: dict[str, Tensor]
    neumf: dict[str, Tensor]


def settings_of(cfg: Config) -> PretrainSettings:
    """The recipe of a config with ``pretrain-epochs > 0``: GMF and MLP ``pretrain-epochs``
    each at ``pretrain-lr`` with ``pretrain-optimizer``; NeuMF ``num-rounds`` epochs at ``lr``
    with ``optimizer``; ``dim``, ``batch-size``, ``num-negatives``, ``init-std`` of the config
    (``alpha`` 0.5)."""
    tc = cfg.train
    part = StageSettings(tc.pretrain_epochs, tc.pretrain_lr, tc.pretrain_optimizer)
    return PretrainSettings(
        dim=cfg.model.dim, gmf=part, mlp=dataclasses.replace(part),
        neumf=StageSettings(cfg.fed.num_rounds, tc.lr, tc.optimizer),
        batch_size=tc.batch_size, num_negatives=tc.num_negatives, init_std=cfg.model.init_std,
    )


EpochHook = Callable[[str, Recommender, int, dict[str, Tensor]], None]


def stage_config(
    base: TrainConfig, stage: StageSettings, settings: PretrainSettings
) -> TrainConfig:
    """``base`` with the stage's learning rate and optimiser and the recipe's batching."""
    return dataclasses.replace(
        base, lr=stage.lr, optimizer=stage.optimizer, batch_size=settings.batch_size,
        num_negatives=settings.num_negatives, loss="bce",
    )


def build_parts(
    split: SplitData, settings: PretrainSettings
) -> tuple[Recommender, Recommender, Recommender]:
    """GMF, MLP and NeuMF models with matching shapes for ``split``."""
    kw = {"n_users": split.n_users, "n_items": split.n_items, "dim": settings.dim,
          "init_std": settings.init_std}
    return build_model("gmf", **kw), build_model("mlp", **kw), build_model("neumf", **kw)


def pretrain_neumf(
    split: SplitData,
    settings: PretrainSettings,
    seed: int,
    base: TrainConfig | None = None,
    on_epoch: EpochHook | None = None,
) -> PretrainResult:
    """Train GMF and MLP, fuse them into NeuMF and continue training NeuMF.

    Parameters
    ----------
    split : SplitData
        Training data (the test items are never touched).
    settings : PretrainSettings
        The recipe (epochs, learning rates, optimisers per stage, ``alpha``).
    seed : int
        GMF uses ``seed``, MLP ``seed + MLP_SEED_OFFSET`` and the NeuMF stage
        ``seed + NEUMF_SEED_OFFSET`` (initialisation, negatives and batch order).
    base : TrainConfig, optional
        Other training settings (``device``, ``weight-decay``); default ``TrainConfig()``.
    on_epoch : callable, optional
        ``on_epoch(stage, model, epoch, params)`` after every epoch of every stage
        (``stage`` is ``"gmf"``, ``"mlp"`` or ``"neumf"``); e.g. for learning curves.

    Returns
    -------
    PretrainResult
    """
    base = base or TrainConfig()
    gmf_model, mlp_model, neumf_model = build_parts(split, settings)

    def hook(stage: str, model: Recommender) -> Callable[[int, dict[str, Tensor]], None] | None:
        if on_epoch is None:
            return None
        return lambda epoch, params: on_epoch(stage, model, epoch, params)

    log.info("NeuMF pre-training: GMF stage (%d epochs)", settings.gmf.epochs)
    gmf = train_central(gmf_model, split, stage_config(base, settings.gmf, settings),
                        settings.gmf.epochs, seed + GMF_SEED_OFFSET,
                        on_epoch=hook("gmf", gmf_model))
    log.info("NeuMF pre-training: MLP stage (%d epochs)", settings.mlp.epochs)
    mlp = train_central(mlp_model, split, stage_config(base, settings.mlp, settings),
                        settings.mlp.epochs, seed + MLP_SEED_OFFSET,
                        on_epoch=hook("mlp", mlp_model))
    neumf_init = from_pretrained(gmf, mlp, settings.alpha)
    log.info("NeuMF pre-training: NeuMF stage (%d epochs, %s lr %g)", settings.neumf.epochs,
             settings.neumf.optimizer, settings.neumf.lr)
    neumf = neumf_init
    if settings.neumf.epochs > 0:
        neumf = train_central(neumf_model, split, stage_config(base, settings.neumf, settings),
                              settings.neumf.epochs, seed + NEUMF_SEED_OFFSET,
                              params=neumf_init, on_epoch=hook("neumf", neumf_model))
    return PretrainResult(gmf=gmf, mlp=mlp, neumf_init=neumf_init, neumf=neumf)
