"""Smoke test of ``benchmarks/quality.py --quick``: it writes the table, the plot and the JSON.

The fast test runs the popularity and central cells only (``--only``); the slow one runs every
cell of the quick matrix, federated ones included, and checks that a second run resumes
(finished cells are skipped).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "quality.py"


def run_quick(out: Path, *extra: str) -> str:
    """Run the quick benchmark in a subprocess; return its stdout."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--seeds", "0,1", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def load(out: Path) -> dict[str, Any]:
    return json.loads((out / "quality.json").read_text())


def is_metric(x: Any) -> bool:
    return isinstance(x, float) and math.isfinite(x) and 0.0 <= x <= 1.0


def check_outputs(out: Path, methods: set[str]) -> dict[str, Any]:
    """md, png and json exist; every expected row has both seeds and valid metrics."""
    md = (out / "quality.md").read_text()
    png = (out / "quality.png").read_bytes()
    res = load(out)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert "| method |" in md and "HR@10" in md and "± " in md
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == methods
    for r in rows.values():
        assert sorted(r["seeds"]) == [0, 1]
        for k in ("hr@10", "ndcg@10"):
            assert is_metric(r[k]["mean"]) and r[k]["std"] >= 0.0, (r["method"], k)
            assert len(r[k]["values"]) == 2
        assert r["label"] in md
    assert res["meta"]["seeds"] == [0, 1] and res["meta"]["quick"] is True
    assert not res["meta"]["errors"]
    return res


def test_quick_popularity_and_central(tmp_path: Path) -> None:
    # Execute
    stdout = run_quick(tmp_path, "--only", "popularity,central-mf")

    # Assert: a progress line per cell, the three outputs, a learning curve per epoch
    assert stdout.count("synthetic/") >= 4
    res = check_outputs(tmp_path, {"popularity", "central-mf"})
    central = next(r for r in res["rows"] if r["method"] == "central-mf")
    assert [p["step"] for p in central["curve"]] == [1, 2]
    assert all(is_metric(p["hr@10"]) for p in central["curve"])
    cell = next(c for c in res["cells"] if c["method"] == "central-mf")
    assert cell["summary"]["final"]["hr@10"] == pytest.approx(  # the last epoch (metrics.csv)
        cell["summary"]["curve"][-1]["hr@10"], abs=1e-6)
    # the cell is simulations/central.py's run of the row's file: its run contract on disk
    assert cell["summary"]["mode"] == "central"
    assert cell["summary"]["cell"]["file"] == "quality/quick/central_mf.toml"
    run_dir = tmp_path / "quality-runs" / "synthetic" / "central-mf" / "seed0"
    assert (run_dir / "config.json").exists() and (run_dir / "metrics.csv").exists()


@pytest.mark.slow
def test_quick_full_matrix_and_resume(tmp_path: Path) -> None:
    # Execute
    run_quick(tmp_path)
    again = run_quick(tmp_path)

    # Assert: every kind of cell ran; the second run skipped all finished cells
    res = check_outputs(tmp_path, {"popularity", "central-mf", "central-neumf-pre",
                                   "fed-mf-fedavg", "fed-neumf-fedavg"})
    fed = next(r for r in res["rows"] if r["method"] == "fed-mf-fedavg")
    assert [p["step"] for p in fed["curve"]] == [1, 2]  # one point per round
    pre = next(r for r in res["rows"] if r["method"] == "central-neumf-pre")
    assert [p["step"] for p in pre["curve"]] == [1]  # the NeuMF epochs after pre-training
    assert "10 already finished, 0 to run" in again
    for cell in res["cells"]:
        run_dir = tmp_path / "quality-runs" / cell["dataset"] / cell["method"] / \
            f"seed{cell['seed']}"
        assert (run_dir / "summary.json").exists()


def test_a_cell_written_by_an_older_config_is_set_aside_and_rerun(tmp_path: Path) -> None:
    # Prepare: a finished central cell whose recorded config no longer matches its row
    run_quick(tmp_path, "--only", "central-mf", "--seeds", "0")
    seed_dir = tmp_path / "quality-runs" / "synthetic" / "central-mf" / "seed0"
    summary = json.loads((seed_dir / "summary.json").read_text())
    summary["cell"]["config"]["lr"] = 0.123  # as if the row's settings had changed since
    summary["final"]["hr@10"] = 2.0  # a result that must never reach the report
    (seed_dir / "summary.json").write_text(json.dumps(summary))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quality

    opts = quality.Options(out=tmp_path)
    cell = next(c for c in quality.cells_of(quality.quick_matrix(), [0], "central-mf"))
    assert not quality.is_done(cell, opts) and quality.read_summary(cell, opts) is None

    # Execute: the report alone leaves the stale row out; a run moves it aside and reruns it
    run_quick(tmp_path, "--only", "central-mf", "--seeds", "0", "--report")
    assert load(tmp_path)["rows"][0]["hr@10"]["values"] == []
    stdout = run_quick(tmp_path, "--only", "central-mf", "--seeds", "0")

    # Assert
    assert "written by an older config" in stdout
    kept = list(seed_dir.parent.glob("seed0.stale-*"))
    assert len(kept) == 1 and json.loads((kept[0] / "summary.json").read_text())["final"][
        "hr@10"] == 2.0
    assert is_metric(load(tmp_path)["rows"][0]["hr@10"]["mean"])
