import tomllib
from pathlib import Path

import pytest

from fedrec.config import Config, ConfigError, load_toml

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_defaults_match_config_dataclasses():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert py["tool"]["flwr"]["app"]["config"] == Config().to_flat()


def test_from_flat_coerces_strings_from_set_overrides():
    cfg = Config.from_flat({"num-rounds": "7", "lr": "0.01", "resume": "false", "model": "mf"})
    assert cfg.fed.num_rounds == 7
    assert cfg.train.lr == 0.01
    assert cfg.run.resume is False


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown setting 'num-round'"):
        Config.from_flat({"num-round": 3})


def test_bad_type_and_range_name_the_setting():
    with pytest.raises(ConfigError, match="'local-epochs' expects int"):
        Config.from_flat({"local-epochs": "two"})
    with pytest.raises(ConfigError, match="'fraction-train' = 0.0"):
        Config.from_flat({"fraction-train": 0.0})


def test_every_shipped_config_file_is_valid():
    files = sorted((ROOT / "simulations" / "configs").rglob("*.toml"))  # tune/, central/ too
    assert files
    for f in files:
        Config.from_flat(load_toml(f), source=str(f))


def test_user_lr_defaults_to_lr_and_is_checked():
    assert Config.from_flat({"lr": 0.3}).train.users_lr == 0.3
    assert Config.from_flat({"lr": 0.3, "user-lr": 0.05}).train.users_lr == 0.05
    with pytest.raises(ConfigError, match="'user-lr' = -0.1"):
        Config.from_flat({"user-lr": -0.1})
    with pytest.raises(ConfigError, match="'user-lr' = 0.05 is not supported with privacy"):
        Config.from_flat({"user-lr": 0.05, "privacy": "sample", "optimizer": "sgd"})


def test_pretraining_settings_are_checked():
    ok = Config.from_flat({"model": "neumf", "pretrain-epochs": 3})
    assert (ok.train.pretrain_epochs, ok.train.pretrain_lr, ok.train.pretrain_optimizer) == (
        3, 0.001, "adam")
    with pytest.raises(ConfigError, match="'pretrain-epochs' = 3 pre-trains the parts of NeuMF"):
        Config.from_flat({"model": "mf", "pretrain-epochs": 3})
    with pytest.raises(ConfigError, match="'pretrain-epochs' = 3 builds ID-only"):
        Config.from_flat({"model": "neumf", "pretrain-epochs": 3, "towers": "genre"})
    with pytest.raises(ConfigError, match="'pretrain-optimizer' = 'lbfgs'"):
        Config.from_flat({"pretrain-optimizer": "lbfgs"})
    with pytest.raises(ConfigError, match="applies to central training only"):
        ok.check_federated()
    Config().check_federated()
