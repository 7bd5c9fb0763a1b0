"""simulations/central.py: the one way to run a central config (quality rows included)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fedrec.config import Config, ConfigError
from fedrec.eval.sampled import evaluate_item_scores, evaluate_users, means
from fedrec.models.popularity import popularity_scores
from fedrec.models.pretrain import PretrainSettings, StageSettings, build_parts, pretrain_neumf
from fedrec.node import load_split
from simulations import central

TINY = {"dataset": "synthetic", "synthetic-users": 40, "synthetic-items": 50,
        "synthetic-interactions": 10, "test-negatives": 19, "dim": 4, "batch-size": 32,
        "device": "cpu", "full-ranking": False}


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_pretraining_settings_run_the_papers_recipe(tmp_path):
    # Prepare: GMF and MLP 2 epochs each (Adam .01), NeuMF 2 epochs of SGD at .05
    cfg = Config.from_flat({**TINY, "model": "neumf", "init-std": 0.01, "pretrain-epochs": 2,
                            "pretrain-lr": 0.01, "pretrain-optimizer": "adam",
                            "optimizer": "sgd", "lr": 0.05, "num-rounds": 2, "eval-every": 2,
                            "seed": 3, "out": str(tmp_path / "run")})
    split = load_split(cfg)
    recipe = PretrainSettings(dim=4, gmf=StageSettings(2, 0.01, "adam"),
                              mlp=StageSettings(2, 0.01, "adam"),
                              neumf=StageSettings(2, 0.05, "sgd"), batch_size=32,
                              num_negatives=4, init_std=0.01)

    # Execute
    summary = central.run(cfg)
    res = pretrain_neumf(split, recipe, 3, base=cfg.train)

    # Assert: the run's final metrics are the recipe's NeuMF, evaluated once
    model = build_parts(split, recipe)[2]
    p = res.neumf
    expect = means(evaluate_users(model, {n: p[n] for n in model.shared_names},
                                  {n: p[n] for n in model.private_names},
                                  np.arange(split.n_users), split))
    assert summary["final"]["hr@10"] == pytest.approx(expect["hr@10"], abs=1e-12)
    assert summary["final"]["ndcg@10"] == pytest.approx(expect["ndcg@10"], abs=1e-12)
    assert [r["round"] for r in rows(tmp_path / "run")] == ["1", "2"]


def test_the_test_items_are_read_at_eval_every_and_popularity_is_reported(tmp_path):
    cfg = Config.from_flat({**TINY, "optimizer": "adam", "lr": 0.01, "num-rounds": 3,
                            "eval-every": 3, "out": str(tmp_path / "run")})

    summary = central.run(cfg)

    assert [r["hr@10"] != "" for r in rows(tmp_path / "run")] == [False, False, True]
    split = load_split(cfg)
    pop = evaluate_item_scores(popularity_scores(split), split)
    assert summary["baselines"]["popularity"]["hr@10"] == pytest.approx(pop["hr@10"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["rounds"] == 3


def test_the_command_line_builds_the_config_like_the_launcher(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('model = "mf"\nlr = 0.3\nseed = 1\n')

    cfg = central.parse_config([str(path), "--set", "seed=4", "--data-dir", "/d"])
    moved = central.parse_config([str(path), "--out", str(tmp_path / "o")])

    assert (cfg.train.lr, cfg.run.seed, cfg.data.data_dir) == (0.3, 4, "/d")
    assert cfg.run.out == str(Path("runs") / "central-c") and moved.run.out == str(tmp_path / "o")
    with pytest.raises(ConfigError, match="pre-trains the parts of NeuMF"):
        central.parse_config([str(path), "--set", "pretrain-epochs=1"])


def _params(run: Path, epoch: int) -> dict:
    from fedrec import checkpoint

    return checkpoint.load_pickle(run / "checkpoints" / f"round-{epoch}.pkl")["params"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_crashed_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch, optimizer):
    # Prepare: 4 epochs with a per-epoch decay (optimiser state, generator and lr all carry over)
    import fedrec.train.central as train_central_module

    flat = {**TINY, "optimizer": optimizer, "lr": 0.05, "lr-decay": 0.9, "num-rounds": 4,
            "eval-every": 2}
    whole = central.run(Config.from_flat({**flat, "out": str(tmp_path / "whole")}))
    build = train_central_module.build_examples

    def crash_in_epoch_3(split, users, rounds, negatives, loss, seed, key):
        if key == -3:
            raise KeyboardInterrupt("interrupted")
        return build(split, users, rounds, negatives, loss, seed, key)

    # Execute: the run dies in epoch 3, then runs again on the same directory
    cfg = Config.from_flat({**flat, "out": str(tmp_path / "cut")})
    monkeypatch.setattr(train_central_module, "build_examples", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        central.run(cfg)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == [
        "round-1.pkl", "round-2.pkl"]
    monkeypatch.setattr(train_central_module, "build_examples", build)
    resumed = central.run(cfg)

    # Assert: same parameters, metrics and rows as the uninterrupted run
    a, b = _params(tmp_path / "whole", 4), _params(tmp_path / "cut", 4)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert resumed["final"] == whole["final"]
    assert [r["hr@10"] for r in rows(tmp_path / "cut")] == [
        r["hr@10"] for r in rows(tmp_path / "whole")]


def test_a_checkpoint_of_another_config_is_refused_and_resume_false_starts_over(tmp_path):
    flat = {**TINY, "optimizer": "sgd", "lr": 0.05, "num-rounds": 2, "eval-every": 2,
            "out": str(tmp_path / "run")}
    first = central.run(Config.from_flat(flat))

    with pytest.raises(ValueError, match="different config"):
        central.run(Config.from_flat({**flat, "lr": 0.1}))
    with pytest.raises(ValueError, match="epoch 2, after num-rounds = 1"):
        central.run(Config.from_flat({**flat, "num-rounds": 1}))
    again = central.run(Config.from_flat({**flat, "resume": False}))

    assert again["final"] == first["final"]
    assert [r["round"] for r in rows(tmp_path / "run")] == ["1", "2"]
