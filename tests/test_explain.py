"""Explanations on the node: reasons per tower kind, removal by masking, fidelity, the CLI."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fedrec import checkpoint, node
from fedrec.config import Config
from fedrec.data.item_features import ItemFeatures, KnowledgeGraph
from fedrec.data.schema import SplitData
from fedrec.explain import (
    KINDS,
    Reason,
    explain_item,
    fidelity,
    recommend,
    score_without,
    supported_kinds,
    trained_items,
)
from fedrec.models.registry import build_model
from fedrec.towers.fusion import with_towers
from simulations.explain import main as explain_main
from simulations.inprocess import run_inprocess

SMALL = {
    "dataset": "synthetic", "synthetic-users": 40, "synthetic-items": 150,
    "synthetic-interactions": 12, "test-negatives": 49, "num-rounds": 2, "dim": 8,
    "batch-size": 16, "seed": 3, "device": "cpu", "users-per-node": 16,
}


@pytest.fixture(scope="module")
def tower_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    cfg = Config.from_flat({**SMALL, "towers": "kg,text,genre", "out": str(out)})
    run_inprocess(cfg)
    return out, cfg


def _node0(cfg):
    """Node 0's view at the last round: split, model, users, shared params, private rows."""
    split = node.load_split(cfg)
    model = node.make_model(cfg, split)
    users = node.node_users(cfg, split, 0, 3)
    r = SMALL["num-rounds"]
    shared = checkpoint.load_pickle(Path(cfg.run.out) / "checkpoints" / f"round-{r}.pkl")
    state = node.load_state(node.state_dir(cfg, 0, str(Path(cfg.run.out) / "nodes")), r)
    return split, model, users, shared["arrays"], state


# ---------------------------------------------------------------- the CLI on a real run
def test_cli_prints_top_k_items_with_reasons_of_every_kind(tower_run, capsys):
    out, _ = tower_run
    assert explain_main([str(out), "--user", "20", "--k", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("user 20 (node 1, round 2)")
    items = [ln for ln in lines if ln[:4].strip().rstrip(".").isdigit()]
    assert len(items) == 4
    kinds = {ln.split()[0] for ln in lines[1:] if ln.startswith("       ")}
    assert kinds == set(KINDS)


@pytest.mark.parametrize("args, message", [
    (["--user", "40"], "user 40 out of range: the run has 40 users"),
    (["--user", "-1"], "user -1 out of range"),
    (["--user", "3", "--round", "7"], "no checkpoint for round 7"),
    (["--user", "3", "--k", "0"], "--k 0: must be >= 1"),
])
def test_cli_bad_input_is_one_error_line(tower_run, capsys, args, message):
    out, _ = tower_run
    assert explain_main([str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_cli_missing_run_checkpoint_or_node_state(tower_run, tmp_path, capsys):
    out, _ = tower_run
    assert explain_main([str(tmp_path / "nowhere"), "--user", "1"]) == 2
    assert "run directory" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "nodes" / "node-1" / "round-2.npz").unlink()
    assert explain_main([str(copy), "--user", "0"]) == 0  # node 0's own file is enough
    capsys.readouterr()
    assert explain_main([str(copy), "--user", "20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no private state of node 1 for round 2" in err[0]
    shutil.rmtree(copy / "checkpoints")
    assert explain_main([str(copy), "--user", "0"]) == 2
    assert "no checkpoint in" in capsys.readouterr().err


def test_cli_model_without_towers_still_recommends(tmp_path, capsys):
    out = tmp_path / "plain"
    run_inprocess(Config.from_flat({**SMALL, "num-rounds": 1, "out": str(out)}))
    assert explain_main([str(out), "--user", "5", "--k", "3", "--fidelity"]) == 0
    text = capsys.readouterr().out
    assert "no side information" in text
    assert sum(ln.startswith(("  1.", "  2.", "  3.")) for ln in text.splitlines()) == 3
    assert "fidelity: no reasons to measure" in text


# ---------------------------------------------------------------- the library on the run
def test_recommendations_skip_trained_items_and_reasons_cite_them(tower_run):
    _, cfg = tower_run
    split, model, users, shared, state = _node0(cfg)
    assert supported_kinds(model) == ["kg", "genre", "text"]
    seen = set()
    for a in range(4):
        u = int(users[a])
        rows = {n: t[a] for n, t in state.items()}
        items, scores = recommend(model, shared, rows, u, split, 5)
        assert len(items) == 5 and np.all(np.diff(scores) <= 0)
        assert not set(items) & set(split.user_items(u).tolist())
        liked = set(trained_items(split, u).tolist())
        for i in items:
            for r in explain_item(model, shared, rows, u, int(i), split):
                seen.add(r.kind)
                assert r.weight > 0 and r.items and set(r.items) <= liked
                if r.kind == "genre":
                    assert split.item_side.genres[i, r.key] > 0
                    assert r.weight == pytest.approx(len(r.items) / len(liked))
    assert seen == set(KINDS)


def test_fidelity_is_a_share_with_counted_cases(tower_run):
    _, cfg = tower_run
    split, model, users, shared, state = _node0(cfg)
    for kind in KINDS:
        f = fidelity(model, shared, state, users, split, 5, kind, seed=0)
        assert 0.0 <= f.share <= 1.0 and f.cases > 0
        assert f.cases + f.skipped == 5 * len(users)
        # the draw is keyed by (seed, user, item): another order gives the same result
        back = fidelity(model, shared, {n: t.flip(0) for n, t in state.items()}, users[::-1],
                        split, 5, kind, seed=0)
        assert (back.share, back.cases) == (f.share, f.cases)
    with pytest.raises(ValueError, match="unknown explanation kind 'year'"):
        fidelity(model, shared, state, users, split, 5, "year", seed=0)


# ---------------------------------------------------------------- a hand-made case
def hand_made():
    """4 items; the user trained on items 0 and 2; item 1 is linked to both through the KG,
    shares a genre with each and has text near item 0's. Item vectors are the towers' output
    alone (gate closed on the zero ID rows); every tower maps to the user's direction
    [1, 0, 0] only through what item 0 brings, and KG entity B points away from it."""
    A, B = 4, 5
    kg = KnowledgeGraph(
        triples=np.array([[0, 0, A], [1, 0, A], [1, 1, B], [2, 1, B], [3, 1, B]]),
        n_entities=6, relations=("r_a", "r_b"), item_entity=np.arange(4), source="hand")
    features = ItemFeatures(
        titles=["Alien", "Aliens", "Heat", ""],
        genres=np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32),
        genre_names=("sci-fi", "thriller", "family"),
        text=np.array([[1, 0, 0], [1, 0.5, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32), kg=kg)
    split = SplitData(
        name="hand", n_users=1, n_items=4, train_indptr=np.array([0, 2]),
        train_items=np.array([0, 2]), train_ratings=np.ones(2, dtype=np.float32),
        test_items=np.array([3]), test_negatives=np.zeros((1, 0), dtype=np.int64),
        item_side=features)
    base = build_model("mf", n_users=1, n_items=4, dim=3, init_std=0.1)
    model = with_towers(base, ["kg", "genre", "text"], features, seed=0, neighbours=2)
    p = {n: torch.zeros_like(t) for n, t in model.init_shared(0).items()}
    p["fuse_item_emb_gb"][:] = -30.0  # gate ~0: item vector = sum of the towers
    p["kg_w0"] = torch.eye(3)
    p["kg_entity"][A] = torch.tensor([2.0, 0, 0])
    p["kg_entity"][B] = torch.tensor([-1.0, 0, 0])
    p["kg_relation"][0] = torch.tensor([3.0, 0, 0])  # the user attends to r_a
    p["genre_w"][0, 0] = 1.0  # genre 'sci-fi' -> the user's direction
    p["text_w"][0, 0] = 1.0  # text dimension 0 -> the user's direction
    user = {"user_emb": torch.tensor([1.0, 0, 0]), "user_bias": torch.tensor(0.0)}
    return model, p, user, split


def test_hand_made_reasons_and_removal_directions():
    model, shared, user, split = hand_made()
    items, _ = recommend(model, shared, user, 0, split, 2)
    assert items.tolist() == [1, 3]
    reasons = explain_item(model, shared, user, 0, 1, split)
    by = {(r.kind, r.key): r for r in reasons}
    pi_a = np.exp(1.0) / (1 + np.exp(1.0))  # softmax(mean(u * r_a), mean(u * r_b) = 0)
    assert set(by) == {("kg", 4), ("kg", 5), ("genre", 0), ("genre", 1), ("text", 0),
                       ("text", 2)}
    assert by["kg", 4].weight == pytest.approx(pi_a) and by["kg", 4].items == (0,)
    assert by["kg", 5].weight == pytest.approx(1 - pi_a) and by["kg", 5].items == (2,)
    assert "r_a" in by["kg", 4].text and "'Alien'" in by["kg", 4].text
    assert by["genre", 0].weight == pytest.approx(0.5) and "sci-fi" in by["genre", 0].text
    assert by["text", 0].weight == pytest.approx(1 / np.sqrt(1.25), rel=1e-6)
    assert [r.kind for r in reasons] == ["kg", "kg", "genre", "genre", "text", "text"]

    base, without = score_without(model, shared, user, 1, [by[k] for k in sorted(by)])
    drop = dict(zip(sorted(by), base - without, strict=True))
    # removing what points the user's way lowers the score; B, genre 'thriller' point away
    assert drop["kg", 4] > 0.1 and drop["kg", 5] < -0.01
    assert drop["genre", 0] > 0.1 and drop["genre", 1] < -0.01
    assert drop["text", 0] > 0.1 and drop["text", 2] == pytest.approx(0.0, abs=1e-6)
    assert base == pytest.approx(float(np.tanh(2 * pi_a - (1 - pi_a)) + np.tanh(0.5)
                                       + np.tanh(1.0)), rel=1e-5)


def test_hand_made_fidelity_counts_cases_and_skips():
    model, shared, user, split = hand_made()
    rows = {n: t[None] for n, t in user.items()}
    f = fidelity(model, shared, rows, np.array([0]), split, 2, "kg", seed=0)
    # item 1: top reason A beats B; item 3 reaches B alone (one reason): skipped
    assert (f.share, f.cases, f.skipped) == (1.0, 1, 1)
    assert f.top_lowers == 1.0 and f.mean_drop_top > f.mean_drop_random
    single = Reason("text", "", 1.0, 0)
    assert score_without(model, shared, user, 1, single)[1] < score_without(
        model, shared, user, 1, [single])[0]
