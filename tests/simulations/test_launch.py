"""The launcher on Flower's real simulation engine (Ray), end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import RAY

pytestmark = RAY  # one Ray at a time under pytest -n (tests.helpers)

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, str(ROOT / "simulations" / "launch.py")]
TINY = ["--set", "synthetic-users=60", "--set", "synthetic-items=200", "--set",
        "synthetic-interactions=10", "--set", "users-per-node=20", "--set", "dim=8",
        "--set", "device=cpu", "--cpus", "2"]


def launch(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def test_bad_setting_is_named_without_starting_ray(tmp_path):
    res = launch("--set", "num-round=3", "--out", str(tmp_path / "x"))
    assert res.returncode == 2
    assert "unknown setting 'num-round'" in res.stderr
    res = launch(str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and "config file not found" in res.stderr


@pytest.mark.slow
def test_ray_simulation_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    res = launch(*TINY, "--set", "num-rounds=2", "--out", str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "round   2/2" in res.stdout and "HR@10" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["nodes"] == 3
    assert 0 <= summary["final"]["hr@10"] <= 1
    assert summary["baselines"]["popularity"]["hr@10"] > 0
    # resume: same directory, more rounds -> only the missing rounds run
    res = launch(*TINY, "--set", "num-rounds=3", "--out", str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "resuming" in res.stdout and "round   1/3" not in res.stdout
    lines = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 3


def test_data_error_is_reported_cleanly(tmp_path):
    res = launch("--set", "dataset=ml-100k", "--data-dir", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "x"))
    assert res.returncode == 2
    assert "u.data" in res.stderr and "Traceback" not in res.stderr


def test_inprocess_engine_runs_the_same_loop_without_ray(tmp_path):
    # Prepare / Execute: two rounds on the in-process Grid
    out = tmp_path / "run"
    res = launch(*TINY[:-2], "--set", "num-rounds=2", "--engine", "inprocess", "--out", str(out))

    # Assert: the run contract's files, every round in metrics.csv, no Ray start-up
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and 0.0 <= summary["final"]["hr@10"] <= 1.0
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3
    assert "ray" not in (res.stdout + res.stderr).lower()
