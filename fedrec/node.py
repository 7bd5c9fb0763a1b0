"""What a node does in a round: train its sampled users, evaluate all its users.

Flower-free: ``clients/`` unpacks messages, calls these functions and packs the replies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fedrec import checkpoint, rng
from fedrec.attacks.boost import add_fakes
from fedrec.attacks.profiles import target_item
from fedrec.config import Config
from fedrec.data.partition import num_partitions, participants, partition_users
from fedrec.data.schema import SplitData
from fedrec.eval.sampled import evaluate_parts
from fedrec.models.base import ITEM_TABLE, Recommender
from fedrec.models.popularity import user_normalised_counts
from fedrec.models.registry import build_model
from fedrec.params import check_shared, to_numpy, to_torch
from fedrec.privacy.mechanism import dp_participants, secret_rng
from fedrec.towers.fusion import with_towers
from fedrec.towers.registry import parse_towers
from fedrec.train.cohort import train_cohort
from fedrec.train.newton import packed_size

log = logging.getLogger(__name__)

_SPLITS: dict[tuple, SplitData] = {}
CACHE_VERSION = 1  # bump when SplitData or a model's pickled layout changes
ITEM_WEIGHTED = "fedavg-items"  # strategy whose replies carry per-item user weights
ITEM_WEIGHT_KEY = "item-weight"
ITEM_CURVATURE_KEY = "item-curvature"  # item-step newton: per-row Gauss-Newton matrices
# (packed upper triangles, fedrec.train.newton)
EVAL_PARTS_KEY = "fedrec.eval-parts"  # evaluate messages: "test" or "valid[,test]"
POPULARITY_STAGE = "popularity"  # query stage of item-bias-init = popularity (server/warmstart)
COUNTS_KEY = "counts"  # its reply: the node's users' unit-norm item histograms, summed
DPSGD_KEY_STREAM = rng.DPSGD_NOISE  # debug dp-seed stream of the DP-SGD noise key


def _split_key(cfg: Config) -> tuple:
    d, a = cfg.data, cfg.robust
    return (d.dataset, d.split, d.data_dir, cfg.run.seed, d.test_negatives, d.synthetic_users,
            d.synthetic_items, d.synthetic_interactions, a.attack, a.attack_fraction,
            a.attack_target, a.attack_profile_size)


def _model_key(cfg: Config) -> tuple:
    m = cfg.model
    return (m.model, m.dim, m.init_std, m.towers, m.kg_neighbours, m.kg_hops, m.text_components,
            cfg.run.seed)


def _disk_cached(cache_dir: Path | str | None, kind: str, key: tuple, build):
    """``build()``, kept in ``cache_dir/<kind>-<hash of key>.pkl`` when ``cache_dir`` is set
    (a node's disk: Flower's deployment engine starts a fresh process for every message)."""
    if not cache_dir:
        return build()
    digest = hashlib.sha256(repr((CACHE_VERSION, key)).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{kind}-{digest}.pkl"
    if path.exists():
        return checkpoint.load_pickle(path)
    obj = build()
    checkpoint.save_pickle(path, obj)
    return obj


def load_split(cfg: Config, cache_dir: Path | str | None = None) -> SplitData:
    """The run's train/test split (memoised per process, and on disk under ``cache_dir`` when
    given; deterministic from the config)."""
    from fedrec.attacks.profiles import poison_split
    from fedrec.data.prepare import prepare_split

    d = cfg.data
    key = _split_key(cfg)
    if key not in _SPLITS:
        synthetic = {
            "n_users": d.synthetic_users,
            "n_items": d.synthetic_items,
            "mean_interactions": d.synthetic_interactions,
        }
        _SPLITS[key] = _disk_cached(cache_dir, "split", key, lambda: poison_split(prepare_split(
            d.dataset, d.split, d.data_dir or None, cfg.run.seed, d.test_negatives,
            synthetic if d.dataset == "synthetic" else None,
        ), cfg))
    return _SPLITS[key]


_MODELS: dict[tuple, Recommender] = {}


def make_model(cfg: Config, split: SplitData, cache_dir: Path | str | None = None) -> Recommender:
    """The configured model for ``split``, with its towers (memoised per process, and on disk
    under ``cache_dir`` when given: a tower's neighbour sample and frozen inputs are prepared
    once)."""
    m = cfg.model
    key = (id(split), *_model_key(cfg))
    if key not in _MODELS:
        def build() -> Recommender:
            base = build_model(m.model, n_users=split.n_users, n_items=split.n_items, dim=m.dim,
                               init_std=m.init_std)
            return with_towers(base, parse_towers(m.towers), split.item_side, cfg.run.seed,
                               neighbours=m.kg_neighbours, hops=m.kg_hops,
                               text_components=m.text_components)

        if len(_MODELS) > 8:
            _MODELS.clear()
        _MODELS[key] = _disk_cached(cache_dir, "model", (_split_key(cfg), *_model_key(cfg)),
                                    build)
    return _MODELS[key]


def node_users(cfg: Config, split: SplitData, partition_id: int, n_partitions: int) -> np.ndarray:
    """Users hosted by node ``partition_id``; checks the node count matches the config."""
    expected = num_partitions(split.n_users, cfg.fed.users_per_node, cfg.fed.num_nodes)
    if n_partitions != expected:
        raise ValueError(
            f"the federation has {n_partitions} nodes but the config implies {expected} "
            f"({split.n_users} users, users-per-node={cfg.fed.users_per_node}, "
            f"num-nodes={cfg.fed.num_nodes}); start {expected} SuperNodes or change the config"
        )
    return partition_users(split.n_users, n_partitions, split.fake_users)[partition_id]


@dataclass
class TrainReply:
    arrays: dict[str, np.ndarray]  # what the node sends (see train_round)
    weight: float  # num-examples for FedAvg
    metrics: dict[str, float]  # sums


def train_round(
    cfg: Config,
    round_: int,
    shared: dict[str, np.ndarray],
    users: np.ndarray,
    state: dict[str, Tensor],
) -> tuple[TrainReply, dict[str, Tensor]]:
    """Local training of the node's users sampled in ``round_``.

    Returns the reply and the updated private state of all node users. What the reply carries
    depends on the privacy mode (DESIGN section 5: every value that leaves a node in a DP run is
    inside the clip and the noise, or public):

    * ``none``: the cohort's example-weighted average of the new shared parameters (FedAvg over
      nodes then equals FedAvg over users), ``num-examples``, ``loss-sum``, ``users``; under
      ``defense = "row-clip"`` each user's weight is capped at ``row-clip-weight`` and each of
      its item-row updates clipped to ``row-clip-norm``;
    * ``user``: the **sum of the sampled users' clipped updates** (users Poisson-sampled from
      secret randomness on the node) and a constant ``num-examples = 1``; the server (or, under
      ``dp-trust = secagg``, the node itself before masking) adds the noise;
    * ``sample``: the equal-weight average of the sampled users' DP-SGD outputs and
      ``num-examples`` = their number (participation is the public seeded draw; the unit of
      privacy is an interaction, and each user's output is already DP).
    """
    split = load_split(cfg)
    model = make_model(cfg, split)
    check_shared(shared, model, "train message")
    p = cfg.privacy
    user_dp, sample_dp = p.privacy == "user", p.privacy == "sample"
    if user_dp:
        sampled = dp_participants(users, cfg.fed.fraction_train, round_, p.dp_seed)
    else:
        sampled = participants(users, cfg.fed.fraction_train, cfg.run.seed, round_)
    fakes = sampled[sampled >= split.n_users - split.fake_users] if cfg.robust.attack == \
        "boost" else sampled[:0]  # crafted updates instead of training
    sampled = sampled[: len(sampled) - len(fakes)]
    tc = cfg.train.at_round(round_)
    row_clip = cfg.robust.defense == "row-clip"
    base = {n: np.asarray(a, dtype=np.float64) for n, a in shared.items()}
    if len(sampled) + len(fakes) == 0:
        if user_dp:
            return TrainReply({n: np.zeros_like(a) for n, a in base.items()}, 1.0, {}), state
        base.update(item_extras(cfg, model, split))
        return TrainReply(base, 0.0, {} if sample_dp else {"loss-sum": 0.0, "users": 0.0}), state
    idx = torch.from_numpy(np.searchsorted(users, sampled))
    if sample_dp:  # imported here: opacus costs seconds in every fresh ClientApp process
        from fedrec.train.dpsgd import train_cohort_dpsgd

        upd = train_cohort_dpsgd(
            model, to_torch(shared), {n: t[idx] for n, t in state.items()}, sampled, split,
            tc, cfg.run.seed, round_, noise_multiplier=p.noise_multiplier,
            clip_norm=p.clip_norm, noise_key=dpsgd_noise_key(p.dp_seed, round_),
        )
    else:
        upd = train_cohort(
            model, to_torch(shared), {n: t[idx] for n, t in state.items()}, sampled, split,
            tc, cfg.run.seed, round_, proximal_mu=cfg.fed.proximal_mu,
            clip_norm=p.clip_norm if user_dp or cfg.robust.defense == "clip" else None,
            weighting="equal" if user_dp else "examples",
            row_clip=cfg.robust.row_clip_norm if row_clip else None,
            weight_cap=cfg.robust.row_clip_weight if row_clip else None,
            item_step=cfg.fed.item_step,
        )
    if len(fakes):
        add_fakes(upd, cfg, model, split, base, fakes, equal=user_dp)
    new_state = {n: t.clone() for n, t in state.items()}
    for n, t in upd.user_state.items():
        new_state[n][idx] = t
    if user_dp:
        return TrainReply({n: upd.sum_update[n].numpy() for n in base}, 1.0, {}), new_state
    avg = {n: np.asarray(base[n] + upd.sum_update[n].numpy() / upd.weight_sum) for n in base}
    if upd.item_curvature is not None:  # item-step newton: the per-row sums themselves
        for s in model.row_specs(ITEM_TABLE):
            avg[s.name] = base[s.name] + upd.sum_update[s.name].numpy()
        avg[ITEM_CURVATURE_KEY] = upd.item_curvature.numpy()
    elif cfg.fed.strategy == ITEM_WEIGHTED:  # item rows: average over the users holding them
        w = upd.item_weight.numpy()
        for s in model.row_specs(ITEM_TABLE):
            d = upd.sum_update[s.name].numpy()
            wr = w.reshape(-1, *[1] * (d.ndim - 1))
            avg[s.name] = np.asarray(base[s.name] + np.where(wr > 0, d / np.maximum(wr, 1e-300),
                                                                0.0))
        avg[ITEM_WEIGHT_KEY] = w
    if sample_dp:
        return TrainReply(avg, upd.weight_sum, {}), new_state
    metrics = {"loss-sum": upd.loss_sum, "users": float(upd.n_users)}
    return TrainReply(avg, upd.weight_sum, metrics), new_state


def item_extras(cfg: Config, model: Recommender, split: SplitData) -> dict[str, np.ndarray]:
    """The arrays a ``fedavg-items`` reply carries besides the parameters, empty (zero)."""
    if cfg.fed.strategy != ITEM_WEIGHTED:
        return {}
    if cfg.fed.item_step == "newton":
        m = sum(int(np.prod(s.shape, dtype=np.int64)) for s in model.row_specs(ITEM_TABLE))
        return {ITEM_CURVATURE_KEY: np.zeros((split.n_items, packed_size(m)))}
    return {ITEM_WEIGHT_KEY: np.zeros(split.n_items)}


def dpsgd_noise_key(dp_seed: int, round_: int) -> int:
    """Key of a node's DP-SGD noise and unit sampling in ``round_``: secret (OS entropy), or a
    function of the debug ``dp-seed`` (then the same on every node: cohort-independent)."""
    gen = secret_rng(dp_seed, DPSGD_KEY_STREAM, round_)
    return int(gen.integers(0, 2**63 - 1))


def popularity_counts(cfg: Config, users: np.ndarray) -> np.ndarray:
    """The node's answer to the popularity query: the sum over its users of their item
    indicators over ``sqrt(|I_u|)`` (one user moves it by exactly 1 in L2 norm)."""
    return user_normalised_counts(load_split(cfg), users)


FINETUNE_ROUND_KEY = 1_000_000  # random draws of fine-tuning never collide with a round's


def evaluate_round(
    cfg: Config,
    round_: int,
    shared: dict[str, np.ndarray],
    users: np.ndarray,
    state: dict[str, Tensor],
    parts: tuple[str, ...] = ("test",),
) -> dict[str, float]:
    """Metric sums over the node's users on ``parts`` (``valid`` keys prefixed ``val-``),
    scored with their private rows.

    With ``finetune-epochs > 0`` every user first fine-tunes its own copy of the shared
    parameters on its training data (local personalisation) and is scored with that copy.
    """
    split = load_split(cfg)
    model = make_model(cfg, split)
    check_shared(shared, model, "evaluate message")
    kw = {"full": cfg.eval.full_ranking and split.protocol == "ranking",
          "explicit": cfg.train.loss == "mse"}
    shared_t = to_torch(shared)
    params: dict[str, Tensor] | list = state
    if cfg.eval.finetune_epochs > 0:
        tc = dataclasses.replace(cfg.train.at_round(round_),
                                 local_epochs=cfg.eval.finetune_epochs)
        params = train_cohort(model, shared_t, state, users, split, tc, cfg.run.seed,
                              FINETUNE_ROUND_KEY + round_, keep_local=True).local
    if cfg.robust.attack != "none":  # exposure of the target item in normal users' top-10
        kw["target"] = target_item(cfg, split)
    return evaluate_parts(model, shared_t, params, users, split, parts, **kw)


def eval_parts(split: SplitData, final: bool) -> tuple[str, ...]:
    """What an evaluation reads: splits with a validation part read it every time and the
    test part only at the final evaluation (tuning never sees test); others read test."""
    if not split.has_validation:
        return ("test",)
    return ("valid", "test") if final else ("valid",)


# ----------------------------------------------------------------- private state on disk
def initial_state(cfg: Config, users: np.ndarray) -> dict[str, Tensor]:
    """Fresh private rows for the node's users (deterministic per user)."""
    split = load_split(cfg)
    return make_model(cfg, split).init_users(users, cfg.run.seed)


def state_dir(cfg: Config, partition_id: int, override: str | None = None) -> Path | None:
    """Where a node keeps its users' private state between rounds (None: memory only)."""
    root = override or (str(Path(cfg.run.out) / "nodes") if cfg.run.out else None)
    return Path(root) / f"node-{partition_id}" if root else None


def save_state(directory: Path | None, round_: int, state: dict[str, Tensor]) -> None:
    if directory is None:
        return
    checkpoint.save_arrays(directory / f"round-{round_}.npz", to_numpy(state, np.float32))
    checkpoint.prune(directory, keep=2)


def load_state(directory: Path | None, round_: int) -> dict[str, Tensor] | None:
    if directory is None:
        return None
    path = directory / f"round-{round_}.npz"
    if not path.exists():
        return None
    return to_torch(checkpoint.load_arrays(path))


def latest_state(directory: Path | None, up_to: int) -> tuple[int, dict[str, Tensor]] | None:
    """The newest private state on disk of a round <= ``up_to``, with its round (a node that
    was down for some rounds restores what it had: its users missed those rounds)."""
    if directory is None:
        return None
    files = {r: p for r, p in checkpoint.round_files(directory).items() if r <= up_to}
    if not files:
        return None
    r = max(files)
    return r, to_torch(checkpoint.load_arrays(files[r]))
