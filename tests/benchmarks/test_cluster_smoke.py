"""Smoke test of ``benchmarks/cluster.py --quick``: it runs a simulation and a local cluster
and its JSON has the promised shape (slow: Ray and real Flower processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import RAY

pytestmark = RAY  # one Ray at a time under pytest -n (tests.helpers)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "cluster.py"


def test_unknown_dataset_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--datasets", "ml-2m", "--out",
                           str(tmp_path / "c.json")], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode != 0
    assert "--datasets: unknown 'ml-2m'; known: synthetic, ml-1m" in proc.stderr
    assert not (tmp_path / "c.json").exists()


@pytest.mark.slow
def test_quick_run(tmp_path):
    # Execute
    out = tmp_path / "cluster.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)

    # Assert
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["meta"]["quick"] is True and res["meta"]["nodes"] == [2]
    (cell,) = res["cells"]
    assert (cell["dataset"], cell["nodes"], cell["rounds"]) == ("synthetic", 2, 2)
    sim, clu = cell["runs"]
    assert (sim["engine"], clu["engine"], clu["mode"]) == ("simulation", "cluster", "insecure")
    for run in (sim, clu):
        assert run["seconds_per_round"] > 0 and len(run["round_s"]) == 2
        assert run["missing"] == 0
    # the same messages travel on both engines (metadata: node and run ids differ in size)
    assert clu["train_bytes"] == pytest.approx(sim["train_bytes"], rel=0.01)
    assert clu["evaluate_bytes"] == pytest.approx(sim["evaluate_bytes"], rel=0.01)
    assert sim["train_bytes"] > 0 and sim["evaluate_bytes"] > 0
    b = cell["breakdown"]
    assert b["process_start_s"] > 0 and b["fedrec_train_s"] > 0 and b["fedrec_evaluate_s"] > 0
    assert "| synthetic | 2 | cluster (insecure) |" in proc.stdout
