"""benchmarks/robustness.py --quick: the table, the targets and the inference AUCs are written,
finished cells are skipped on a second run, and the shipped configs are valid."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("robustness_bench",
                                               ROOT / "benchmarks" / "robustness.py")
robustness = importlib.util.module_from_spec(_spec)
sys.modules["robustness_bench"] = robustness
_spec.loader.exec_module(robustness)


def test_shipped_configs_are_valid_and_clean_by_default():
    from fedrec.config import Config, load_toml

    for name in ("robust_ml1m.toml", "robust_ml100k.toml", "robust_ml100k_maxprofile.toml"):
        cfg = Config.from_flat(load_toml(robustness.CONFIGS / name))
        assert cfg.robust.attack == "boost" and cfg.robust.attack_fraction == 0.0


def test_quick_run_writes_table_targets_and_inference(tmp_path, capsys):
    argv = ["--quick", "--seeds", "0", "--attacks", "boost", "--fractions", "0.05",
            "--defenses", "none,row-clip", "--out", str(tmp_path), "--jobs", "2",
            "--inference", "--inference-users", "16"]
    assert robustness.main(argv) == 0
    first = capsys.readouterr().out
    data = json.loads((tmp_path / "robustness.json").read_text())
    tab = data["table"]
    assert set(tab) == {"clean", "boost 0.05"}
    er_clean = tab["clean"]["none"]["er@10"][0]
    er_attack = tab["boost 0.05"]["none"]["er@10"][0]
    er_defended = tab["boost 0.05"]["row-clip"]["er@10"][0]
    assert er_attack > 0.5 > er_defended and er_clean < 0.05  # the attack works; row-clip holds
    assert 0 < tab["clean"]["row-clip"]["hr@10"][0] <= 1
    # er@100 (diagnostic) is at least er@10: a top-10 is inside the top-100
    assert tab["boost 0.05"]["none"]["er@100"][0] >= er_attack
    assert "## ER@100" in (tmp_path / "robustness.md").read_text()
    assert any(line.startswith("- boost, undefended, 5 %") and "PASS" in line
               for line in data["targets"])
    inf = {(r["users-per-node"], r["dp"]): r for r in data["inference"]}
    assert len(inf) == 6 and all(0 <= r["auc-matched"] <= 1 for r in inf.values())
    assert inf[(1, "none")]["auc"] > 0.7  # one user per node: its update gives it away
    assert "## Interaction inference" in (tmp_path / "robustness.md").read_text()
    assert "4 cells, 0 already finished, 4 to run (2 at a time)" in first
    assert first.count(" s total)") == 4  # one line per cell, in two processes
    assert robustness.main(argv[:-3]) == 0  # second run: every cell finished, none rerun
    again = capsys.readouterr().out
    assert "4 cells, 4 already finished, 0 to run" in again and " s total)" not in again
