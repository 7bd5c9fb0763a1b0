"""Smoke test of ``benchmarks/speed.py --quick``: it runs, and its JSON has the promised shape.

The fast test skips Flower (``--flower-subset 0``); the slow one also runs both Ray simulations
with 8 one-user clients.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RAY

pytestmark = RAY  # one Ray at a time under pytest -n (tests.helpers)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "speed.py"


def run_quick(tmp_path: Path, *extra: str) -> tuple[dict[str, Any], str]:
    """Run the quick benchmark in a subprocess; return its JSON and printed table."""
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def is_positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def check_common(res: dict[str, Any], table: str) -> None:
    assert res["meta"]["quick"] is True
    assert res["meta"]["sections"] == ["a", "b", "c", "d", "e", "f"]
    central = res["central"]
    assert is_positive(central["seconds"]) and central["batch_size"] == 256
    fed = res["federated"]
    for key in ("vectorised", "per_user"):
        assert is_positive(fed[key]["seconds"]), key
        assert is_positive(fed[key]["ratio_to_central"]), key
    assert 0 < fed["per_user"]["example_share"] <= 1
    assert is_positive(fed["speedups"]["per-user loop / vectorised"])
    sizes = [s["users"] for s in res["scaling"]]
    assert sizes == res["meta"]["sizes"]["scaling_users"]
    for s in res["scaling"]:
        assert is_positive(s["seconds"]) and is_positive(s["peak_rss_gb"])
    assert "skipped" in res["cuda"] or is_positive(res["cuda"]["vectorised"]["seconds"])
    dps = res["dpsgd"]
    assert dps["users"] == res["meta"]["sizes"]["dp_subset"]
    assert dps["dpsgd"]["user_steps"] > 0 and dps["plain"]["user_steps"] > 0
    assert is_positive(dps["ratio_per_step"]) and is_positive(dps["ratio_per_epoch"])
    assert "DP-SGD epoch" in table
    names = [t["target"] for t in res["targets"]]
    assert len(names) == 6 and res["targets"][4]["status"] in ("PASS", "MISS")
    assert res["towers"]["ratio"] > 0 and res["targets"][5]["status"] in ("PASS", "MISS")
    for t in res["targets"]:
        assert t["status"] in ("PASS", "MISS", "N/A")
        assert t["status"] == "N/A" or is_positive(t["value"])
    assert res["targets"][0]["status"] in ("PASS", "MISS")  # CPU ratio is always measured
    assert "target" in table and "central epoch" in table


def test_quick_without_flower(tmp_path: Path) -> None:
    # Execute
    res, table = run_quick(tmp_path, "--flower-subset", "0")

    # Assert
    check_common(res, table)
    assert "flower_per_user" not in res["federated"]
    assert res["targets"][1]["status"] == "N/A"


@pytest.mark.slow
def test_quick_with_flower(tmp_path: Path) -> None:
    # Execute
    res, table = run_quick(tmp_path, "--flower-subset", "8")

    # Assert
    check_common(res, table)
    fed = res["federated"]
    for key in ("flower_per_user", "flower_cohort"):
        assert is_positive(fed[key]["seconds"]) and is_positive(fed[key]["ratio_to_central"])
        assert fed[key]["reported_round"] == 2 and len(fed[key]["round_s"]) == 3
    assert fed["flower_per_user"]["users"] == 8 and fed["flower_per_user"]["nodes"] == 8
    assert is_positive(fed["speedups"]["Flower per-user / Flower cohort"])
    assert res["targets"][1]["status"] in ("PASS", "MISS")
