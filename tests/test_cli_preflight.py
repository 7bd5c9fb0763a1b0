"""fedrec.cli.preflight: reads every config's data once and returns the node counts."""

import pytest

from fedrec.cli import preflight
from fedrec.config import Config, ConfigError
from fedrec.node import load_split

SMALL = {"dataset": "synthetic", "synthetic-users": 40, "synthetic-items": 30,
         "synthetic-interactions": 8, "test-negatives": 9, "device": "cpu"}


def test_preflight_returns_the_node_count_of_each_config():
    cfgs = [Config.from_flat({**SMALL, "users-per-node": k}) for k in (10, 7, 1000)]
    n = load_split(cfgs[0]).n_users
    assert n > 30
    assert preflight(cfgs) == [-(-n // 10), -(-n // 7), 1]
    assert preflight([Config.from_flat({**SMALL, "num-nodes": 3})]) == [3]


def test_preflight_names_an_impossible_node_count():
    with pytest.raises(ConfigError):
        preflight([Config.from_flat({**SMALL, "num-nodes": 10_000})])
