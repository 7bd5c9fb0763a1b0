"""benchmarks/towers.py --quick: every row's config runs as-is on a synthetic stand-in."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("towers_bench", ROOT / "benchmarks" / "towers.py")
towers = importlib.util.module_from_spec(_spec)
sys.modules["towers_bench"] = towers  # dataclasses look their module up
_spec.loader.exec_module(towers)


def test_every_row_is_a_shipped_config_file():
    for row in towers.ROWS:
        assert (towers.CONFIGS / row.config).exists(), row.config
        flat = towers.cell_flat(row, 5, "", False)
        assert flat["seed"] == 5 and "num-rounds" in flat  # the file as-is, seed per cell


@pytest.mark.slow
def test_quick_runs_federated_and_central_cells_and_resumes(tmp_path):
    cmd = [sys.executable, "benchmarks/towers.py", "--quick", "--seeds", "0", "--out",
           str(tmp_path), "--only",
           "lastfm_ctr_kg.toml,central/ml1m_ctr_mf.toml,ml1m_cold_text.toml"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    table = {r["config"]: r for r in json.loads((tmp_path / "towers.json").read_text())}
    assert table["lastfm_ctr_kg.toml"]["seeds"] == 1
    assert 0 <= table["lastfm_ctr_kg.toml"]["test"]["auc"][0] <= 1
    assert table["central/ml1m_ctr_mf.toml"]["seeds"] == 1
    assert table["ml1m_cold_text.toml"]["test"]["hr@10"] is not None
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "seed 0:" not in again.stderr  # finished cells skipped


def test_central_script_writes_the_run_contract(tmp_path):
    from simulations.central import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "synthetic"\nsplit = "ctr"\nsynthetic-users = 80\n'
                   'synthetic-items = 60\nnum-rounds = 2\ntowers = "kg"\ndevice = "cpu"\n'
                   'optimizer = "adam"\nlr = 0.01\n')
    assert main([str(cfg), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["mode"] == "central" and set(summary["final"]) == {"auc", "acc", "f1"}
    assert set(summary["validation"]) == {"auc", "acc", "f1"}
    assert main([str(tmp_path / "missing.toml")]) == 2
