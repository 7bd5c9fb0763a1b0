"""Every fedrec setting and its default, as one dataclass tree.

Settings are addressed with flat kebab-case keys (``num-rounds``, ``local-epochs``), as in
Flower's run config. ``Config.from_flat`` validates a flat mapping and names the offending key
on error; ``Config.to_flat`` gives the mapping back (the pyproject ``[tool.flwr.app.config]``
table is checked against it by a test).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _splits() -> tuple[str, ...]:
    from fedrec.data.prepare import SPLITS

    return SPLITS


def _tower_names(text: str) -> list[str]:
    from fedrec.towers.registry import parse_towers

    return parse_towers(text)


def _known_towers() -> list[str]:
    from fedrec.towers.registry import known_towers

    return known_towers()


#: Strategy names (``server.strategies.STRATEGIES`` has exactly these keys; it checks so).
STRATEGY_NAMES = ("fedavg", "fedavg-items", "fedprox", "fedadam", "fedyogi", "fedadagrad",
                  "fedavgm", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")
#: Simulated attacks (``fedrec.attacks``) and node-side defenses (``fedrec.defenses``).
ATTACKS = ("none", "fake-random", "fake-popular", "boost")
DEFENSES = ("none", "clip", "row-clip")


def _names_problem(dataset: str, split: str, test_negatives: int, model: str) -> str:
    """Why dataset / split / model do not go together ("" when they do)."""
    from fedrec.data.prepare import check_split_settings
    from fedrec.models.registry import known_models

    if model not in known_models():
        return f"model: unknown model {model!r}; known models: {', '.join(known_models())}"
    try:
        check_split_settings(dataset, split, test_negatives)
    except ValueError as exc:
        return f"dataset/split: {exc}"
    return ""


class ConfigError(ValueError):
    """A setting has an unknown key, a wrong type or a value out of range."""


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    split: str = "loo"  # loo | ncf | ncf-tune (its hold-out) | ctr (MKR/KGCN) | cold-items
    data_dir: str = ""  # "" -> $FEDREC_DATA_DIR or ~/.cache/fedrec/data
    test_negatives: int = 99
    synthetic_users: int = 2000
    synthetic_items: int = 1000
    synthetic_interactions: int = 40  # mean interactions per user


@dataclass
class ModelConfig:
    model: str = "mf"
    dim: int = 32
    init_std: float = 0.1
    towers: str = ""  # item towers fused with the ID embedding, e.g. "kg,text,genre,year"
    kg_neighbours: int = 8  # KG tower: neighbours sampled per entity (seeded, fixed)
    kg_hops: int = 1  # KG tower: 1 or 2 hops of aggregation
    text_components: int = 64  # text tower: principal components of the frozen vectors (0: all)
    # zeros | popularity: item biases start at the log of a user-normalised item histogram
    # (server/warmstart.py; Gaussian-noised and accounted under privacy = "user")
    item_bias_init: str = "zeros"


@dataclass
class TrainConfig:
    local_epochs: int = 1
    num_negatives: int = 4
    batch_size: int = 64
    lr: float = 0.2  # lazy Adam moves a row only when touched: 4x the dense-Adam rate
    user_lr: float = 0.0  # learning rate of the private (user) rows; 0: same as lr
    dense_lr: float = 0.0  # learning rate of the dense shared parameters (towers, MLPs); 0: lr
    lr_decay: float = 1.0  # round r trains at lr * lr-decay**(r - 1) (user-lr too)
    optimizer: str = "sparse-adam"  # sgd | adam | sparse-adam (lazy Adam on embedding rows)
    loss: str = "bce"  # bce | bpr | mse (explicit ratings, reports RMSE) | ials (exact ALS)
    weight_decay: float = 0.0  # L2 on the rows used in a batch (sparse-safe)
    unobserved_weight: float = 0.0  # loss = ials: weight alpha0 of every (user, item) pair
    # central NeuMF pre-training (simulations/central.py; He et al. 2017): GMF and MLP train
    # pretrain-epochs each at pretrain-lr with pretrain-optimizer, are fused into NeuMF, which
    # then trains num-rounds epochs at lr with optimizer. 0: no pre-training
    pretrain_epochs: int = 0
    pretrain_lr: float = 0.001
    pretrain_optimizer: str = "adam"
    device: str = "auto"  # auto | cpu | cuda
    max_examples_per_chunk: int = 2_000_000  # bounds memory of vectorised cohorts

    @property
    def users_lr(self) -> float:
        """Learning rate of the private (user) rows: ``user-lr``, or ``lr`` when that is 0."""
        return self.user_lr or self.lr

    @property
    def dense_rate(self) -> float:
        """Learning rate of the dense shared parameters: ``dense-lr``, or ``lr`` when 0."""
        return self.dense_lr or self.lr

    def lr_factor(self, round_: int) -> float:
        """``lr-decay ** (round_ - 1)``: the rates' factor in round (central: epoch) ``round_``."""
        return self.lr_decay ** (round_ - 1)

    def at_round(self, round_: int) -> TrainConfig:
        """The settings round ``round_`` (1-based) trains with: both rates times
        :meth:`lr_factor`."""
        f = self.lr_factor(round_)
        return dataclasses.replace(self, lr=self.lr * f, user_lr=self.user_lr * f,
                                   dense_lr=self.dense_lr * f, lr_decay=1.0)


@dataclass
class FederationConfig:
    strategy: str = "fedavg"
    num_rounds: int = 20
    fraction_train: float = 1.0  # probability that a user takes part in a round
    users_per_node: int = 512
    num_nodes: int = 0  # > 0 overrides users-per-node with an even split
    eval_every: int = 1
    server_lr: float = 1.0  # server optimizers (fedadam, fedyogi, fedavgm); fedavg-items: step on
    # item rows as a multiple of their per-row mean update
    server_momentum: float = 0.0  # fedavgm, fedavg-items: server momentum on the pseudo-gradient
    # fedavg-items: how an item row moves. mean: server-lr x its users' weighted mean update;
    # newton (MF): server-lr x one Newton step on the row's loss at the users' new rows, from
    # the per-row gradient and Gauss-Newton matrix summed over nodes (ALS-like alternation)
    item_step: str = "mean"
    proximal_mu: float = 0.0  # fedprox (sparse-adam: on the item rows used in each batch)
    # seconds the server waits for nodes to connect and for each message's replies; a node
    # that misses it is named in a warning and counted in metrics.csv `missing`
    timeout: float = 300.0
    max_update_norm: float = 1000.0  # server rejects a reply with ||reply - global|| above it


@dataclass
class EvalConfig:
    full_ranking: bool = True  # also Recall@20 / NDCG@20 over every item not trained on
    finetune_epochs: int = 0  # > 0: each user fine-tunes the shared params locally first


@dataclass
class PrivacyConfig:
    privacy: str = "none"  # none | user (DP-FedAvg) | sample (DP-SGD)
    clip_norm: float = 1.0  # C: per-user update bound (user) / per-example gradient bound (sample)
    noise_multiplier: float = 0.0  # z; derived from target-epsilon when that is > 0
    target_epsilon: float = 0.0  # 0: not set (use noise-multiplier); inf: no noise
    delta: float = 0.0  # 0: N^-1.1
    dp_trust: str = "server"  # server (central DP, trusted aggregator) | secagg (distributed DP)
    dp_seed: int = -1  # < 0: DP noise and sampling from OS entropy; >= 0: debug, NOT private
    # item-bias-init = popularity under privacy = "user": the histogram's noise multiplier as a
    # multiple of the rounds' z (calibrated together to target-epsilon)
    popularity_noise: float = 2.0


@dataclass
class RobustConfig:
    """Simulated attacks and node-side defenses (benchmarks/robustness.py; README)."""

    attack: str = "none"  # none | fake-random | fake-popular | boost (see fedrec/attacks)
    attack_fraction: float = 0.05  # malicious (extra, fake) users per real user
    attack_target: int = -1  # promoted item index; -1: a seeded pick among unpopular items
    # items per fake profile: 0 = drawn from the real users' profile sizes; -1 = the largest
    # real profile; n > 0 = n items (the target and n - 1 fillers)
    attack_profile_size: int = 0
    defense: str = "none"  # none | clip (per-user norm clip) | row-clip (per item row, per user)
    row_clip_norm: float = 2.0  # row-clip: bound on one user's update of one item row
    # row-clip: cap on one user's FedAvg weight (its training positives; 1 = every user weighs
    # the same; inf = example weights): one user adds at most row-clip-weight * row-clip-norm
    # to an item row's sum. inf by default: a cap costs 8-12 % clean HR@10 on ML-1M
    # (benchmarks/README.md, "row-clip and the user's weight")
    row_clip_weight: float = float("inf")


@dataclass
class RunConfig:
    seed: int = 0
    out: str = ""  # run directory; "" -> runs/<timestamp>
    resume: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    fed: FederationConfig = field(default_factory=FederationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    run: RunConfig = field(default_factory=RunConfig)

    # ------------------------------------------------------------------ flat views
    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], source: str = "config") -> Config:
        """Build a validated config from flat kebab-case keys.

        Parameters
        ----------
        flat : Mapping[str, Any]
            ``{"num-rounds": 20, ...}``; keys not given keep their defaults.
        source : str
            Where the mapping came from, named in error messages.
        """
        cfg = cls()
        index = _key_index(cfg)
        for key, value in flat.items():
            if key not in index:
                raise ConfigError(
                    f"{source}: unknown setting '{key}'. Known settings: {', '.join(sorted(index))}"
                )
            section, attr = index[key]
            current = getattr(section, attr)
            setattr(section, attr, _coerce(value, type(current), key, source))
        cfg.validate(source)
        return cfg

    def to_flat(self) -> dict[str, Any]:
        """All settings as ``{kebab-key: value}``."""
        return {
            key: getattr(section, attr) for key, (section, attr) in _key_index(self).items()
        }

    def replace(self, **flat: Any) -> Config:
        """A copy with some flat settings changed (keys in snake_case or kebab-case)."""
        merged = self.to_flat()
        merged.update({k.replace("_", "-"): v for k, v in flat.items()})
        return Config.from_flat(merged)

    def check_federated(self, source: str = "config") -> None:
        """Raise ``ConfigError`` for settings that only central training honours."""
        if self.train.pretrain_epochs:
            raise ConfigError(f"{source}: setting 'pretrain-epochs' = {self.train.pretrain_epochs}"
                              " applies to central training only (simulations/central.py)")

    def validate(self, source: str = "config") -> None:
        """Check ranges and choices; raise ``ConfigError`` naming the setting."""
        checks: list[tuple[str, bool, str]] = [
            ("split", self.data.split in _splits(), f"must be one of {', '.join(_splits())}"),
            ("strategy", self.fed.strategy in STRATEGY_NAMES,
             f"is unknown; known strategies: {', '.join(STRATEGY_NAMES)}"),
            ("attack", self.robust.attack in ATTACKS, f"must be one of {', '.join(ATTACKS)}"),
            ("defense", self.robust.defense in DEFENSES,
             f"must be one of {', '.join(DEFENSES)}"),
            ("defense", not (self.robust.defense != "none" and self.privacy.privacy != "none"),
             "cannot be combined with privacy (DP clips every user already)"),
            ("attack-fraction", 0 <= self.robust.attack_fraction <= 1, "must be in [0, 1]"),
            ("attack-target", self.robust.attack_target >= -1, "must be >= -1 (-1: seeded)"),
            ("attack-profile-size", self.robust.attack_profile_size >= -1,
             "must be >= -1 (0: drawn from the real profile sizes; -1: the largest real one)"),
            ("row-clip-norm", self.robust.row_clip_norm > 0, "must be > 0"),
            ("row-clip-weight", self.robust.row_clip_weight >= 1,
             "must be >= 1 (1: every user weighs the same; inf: no cap)"),
            ("max-update-norm", self.fed.max_update_norm > 0, "must be > 0 (inf: no bound)"),
            ("timeout", self.fed.timeout > 0, "must be > 0"),
            ("towers", not (unknown := [t for t in _tower_names(self.model.towers)
                                        if t not in _known_towers()]),
             f"names unknown tower(s) {unknown}; known towers: {', '.join(_known_towers())}"),
            ("kg-neighbours", self.model.kg_neighbours >= 1, "must be >= 1"),
            ("kg-hops", self.model.kg_hops in (1, 2), "must be 1 or 2"),
            ("text-components", self.model.text_components >= 0, "must be >= 0 (0: all)"),
            ("test-negatives", self.data.test_negatives >= 1, "must be >= 1"),
            ("dim", self.model.dim >= 1, "must be >= 1"),
            ("local-epochs", self.train.local_epochs >= 1, "must be >= 1"),
            ("num-negatives", self.train.num_negatives >= 1, "must be >= 1"),
            ("batch-size", self.train.batch_size >= 1, "must be >= 1"),
            ("lr", self.train.lr > 0, "must be > 0"),
            ("user-lr", self.train.user_lr >= 0, "must be >= 0 (0: same as lr)"),
            ("lr-decay", 0 < self.train.lr_decay <= 1, "must be in (0, 1]"),
            ("dense-lr", self.train.dense_lr >= 0, "must be >= 0 (0: same as lr)"),
            ("dense-lr", not (self.train.dense_lr and self.privacy.privacy == "sample"),
             "is not supported with privacy='sample' (DP-SGD steps every row at lr)"),
            ("user-lr", not (self.train.user_lr and self.privacy.privacy == "sample"),
             "is not supported with privacy='sample' (DP-SGD steps every row at lr)"),
            ("optimizer", self.train.optimizer in ("sgd", "adam", "sparse-adam"),
             "must be sgd|adam|sparse-adam"),
            ("loss", self.train.loss in ("bce", "bpr", "mse", "ials"),
             "must be bce|bpr|mse|ials"),
            ("unobserved-weight", self.train.unobserved_weight >= 0, "must be >= 0"),
            ("loss", self.train.loss != "ials" or (
                self.fed.item_step == "newton" and self.train.unobserved_weight > 0),
             "needs item-step 'newton' (the items' exact step) and unobserved-weight > 0"),
            ("device", self.train.device in ("auto", "cpu", "cuda"), "must be auto|cpu|cuda"),
            ("num-rounds", self.fed.num_rounds >= 1, "must be >= 1"),
            ("fraction-train", 0 < self.fed.fraction_train <= 1, "must be in (0, 1]"),
            ("users-per-node", self.fed.users_per_node >= 1, "must be >= 1"),
            ("num-nodes", self.fed.num_nodes >= 0, "must be >= 0"),
            ("eval-every", self.fed.eval_every >= 1, "must be >= 1"),
            ("weight-decay", self.train.weight_decay >= 0, "must be >= 0"),
            ("pretrain-epochs", self.train.pretrain_epochs >= 0, "must be >= 0 (0: none)"),
            ("pretrain-epochs", not self.train.pretrain_epochs or self.model.model == "neumf",
             "pre-trains the parts of NeuMF: model 'neumf'"),
            ("pretrain-epochs", not (self.train.pretrain_epochs and self.model.towers),
             "builds ID-only GMF and MLP parts: towers must be empty"),
            ("pretrain-lr", self.train.pretrain_lr > 0, "must be > 0"),
            ("pretrain-optimizer", self.train.pretrain_optimizer in ("sgd", "adam", "sparse-adam"),
             "must be sgd|adam|sparse-adam"),
            ("finetune-epochs", self.eval.finetune_epochs >= 0, "must be >= 0"),
            ("privacy", self.privacy.privacy in ("none", "user", "sample"),
             "must be none|user|sample"),
            ("clip-norm", self.privacy.clip_norm > 0, "must be > 0"),
            ("noise-multiplier", self.privacy.noise_multiplier >= 0, "must be >= 0"),
            ("target-epsilon", self.privacy.target_epsilon >= 0, "must be >= 0 (0: unset)"),
            ("delta", 0 <= self.privacy.delta < 1, "must be in [0, 1) (0: N^-1.1)"),
            ("dp-trust", self.privacy.dp_trust in ("server", "secagg"), "must be server|secagg"),
            ("item-bias-init", self.model.item_bias_init in ("zeros", "popularity"),
             "must be zeros|popularity"),
            ("item-bias-init", self.model.item_bias_init == "zeros" or self.model.model == "mf",
             "popularity needs item biases: model 'mf'"),
            ("item-bias-init", not (self.model.item_bias_init == "popularity" and
                                    self.privacy.privacy == "sample"),
             "popularity is not supported with privacy='sample' (its histogram is accounted "
             "per user)"),
            ("item-bias-init", not (self.model.item_bias_init == "popularity" and
                                    self.privacy.privacy == "user" and
                                    self.privacy.dp_trust == "secagg"),
             "popularity is not supported with dp-trust='secagg' yet (the histogram's noise "
             "is added by the server)"),
            ("popularity-noise", self.privacy.popularity_noise > 0, "must be > 0"),
            ("dp-trust", not (self.privacy.dp_trust == "secagg" and self.privacy.privacy != "user"),
             "applies to privacy='user' only (sample-level DP-SGD adds its noise on the node)"),
            ("item-step", self.fed.item_step in ("mean", "newton"), "must be mean|newton"),
            ("item-step", self.fed.item_step == "mean" or (
                self.fed.strategy == "fedavg-items" and self.model.model == "mf"
                and self.train.loss in ("bce", "ials") and not _tower_names(self.model.towers)
                and self.privacy.privacy == "none" and self.robust.attack == "none"
                and self.robust.defense == "none"),
             "newton needs strategy 'fedavg-items', model 'mf', loss 'bce' or 'ials', no "
             "towers, and "
             "no privacy, attack or defense (they bound per-user updates, not per-row sums)"),
            ("strategy", not (self.privacy.privacy == "user" and self.fed.strategy ==
                              "fedavg-items"),
             "cannot be combined with privacy='user' (DP-FedAvg weighs users equally)"),
        ]
        for key, ok, why in checks:
            if not ok:
                flat = self.to_flat()
                raise ConfigError(f"{source}: setting '{key}' = {flat[key]!r} {why}")
        problem = _names_problem(self.data.dataset, self.data.split, self.data.test_negatives,
                                 self.model.model)
        if problem:
            raise ConfigError(f"{source}: setting {problem}")

    def digest(self, keys: tuple[str, ...]) -> str:
        """A short stable hash of the named settings (cache keys)."""
        import hashlib
        import json

        flat = self.to_flat()
        blob = json.dumps({k: flat[k] for k in keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _key_index(cfg: Config) -> dict[str, tuple[Any, str]]:
    index: dict[str, tuple[Any, str]] = {}
    for sec in fields(cfg):
        section = getattr(cfg, sec.name)
        for f in fields(section):
            index[f.name.replace("_", "-")] = (section, f.name)
    return index


def _coerce(value: Any, kind: type, key: str, source: str) -> Any:
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, int | float) and value in (0, 1):
                return bool(value)
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(value)
                return int(value)
            return int(str(value).strip())
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            out = float(value)
            if math.isnan(out):
                raise ValueError(value)
            return out
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: setting '{key}' expects {kind.__name__}, got {value!r}"
        ) from None


def parse_override(text: str) -> tuple[str, str]:
    """Split ``key=value`` from ``--set``; raise ``ConfigError`` when malformed."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected key=value")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a config TOML: flat kebab keys at top level or in any table (tables are merged)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    flat: dict[str, Any] = {}

    def walk(d: Mapping[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v)
            else:
                flat[k] = v

    walk(data)
    return flat


def flwr_config_table() -> str:
    """The ``[tool.flwr.app.config]`` body for pyproject.toml (run ``python -m fedrec.config``)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        return repr(v)

    return "\n".join(f"{k} = {fmt(v)}" for k, v in Config().to_flat().items())


def as_dict(cfg: Config) -> dict[str, Any]:
    """Nested dict view (for summary.json)."""
    return dataclasses.asdict(cfg)


if __name__ == "__main__":
    print(flwr_config_table())
