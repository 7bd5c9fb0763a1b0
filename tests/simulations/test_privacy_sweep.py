"""The privacy sweep on tiny synthetic data, runs on the in-process grid (no Ray)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedrec.config import Config
from simulations.inprocess import run_inprocess
from simulations.privacy_sweep import run_sweep
from tests.helpers import RAY

pytestmark = RAY  # one Ray at a time under pytest -n (tests.helpers)

ROOT = Path(__file__).resolve().parents[2]
TINY = ["synthetic-users=24", "synthetic-items=80", "synthetic-interactions=8",
        "test-negatives=30", "num-rounds=2", "dim=8", "batch-size=64", "users-per-node=12",
        "optimizer=sgd", "lr=0.3", "clip-norm=0.5", "device=cpu"]


class InProcessRunner:
    """One run of the federation on the in-process grid; counts the runs."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    def __call__(self, cfg: Config) -> dict:
        self.runs.append(Path(cfg.run.out).name)
        return run_inprocess(cfg)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_user_level_sweep_writes_results_and_resumes(tmp_path):
    # Prepare
    out = tmp_path / "sweep"
    runner = InProcessRunner()
    # Execute
    rows = run_sweep(None, TINY, out, [1.0, float("inf")], [0, 1], "user", runner=runner)
    # Assert: 2 seeds x (reference + 2 targets), each in its own run directory
    assert sorted(runner.runs) == sorted(
        f"{p}-seed-{s}" for s in (0, 1) for p in ("nonprivate", "eps-1", "eps-inf"))
    table = read_csv(out / "sweep.csv")
    assert list(table[0]) == ["epsilon_target", "seed", "hr@10", "ndcg@10", "epsilon_prv",
                              "epsilon_rdp", "noise_multiplier", "rounds", "stopped"]
    assert len(table) == len(rows) == 6
    by = {(r["epsilon_target"], r["seed"]): r for r in table}
    assert 0.9 < float(by[("1", "0")]["epsilon_prv"]) <= 1.0
    assert float(by[("1", "0")]["noise_multiplier"]) > 0
    assert float(by[("inf", "1")]["noise_multiplier"]) == 0
    assert by[("nonprivate", "0")]["epsilon_prv"] == "nan"
    assert all(r["rounds"] == "2" for r in table)
    md = (out / "sweep.md").read_text()
    assert "| non-private | 2 |" in md and "| 1 | 2 |" in md and "| inf | 2 |" in md
    assert (out / "sweep.png").stat().st_size > 10_000
    # resume: finished points are skipped ...
    again = InProcessRunner()
    rows2 = run_sweep(None, TINY, out, [1.0, float("inf")], [0, 1], "user", runner=again)
    assert again.runs == [] and rows2 == rows
    # ... and a point without summary.json runs again, resuming from its checkpoint
    (out / "eps-1-seed-1" / "summary.json").unlink()
    third = InProcessRunner()
    run_sweep(None, TINY, out, [1.0, float("inf")], [0, 1], "user", runner=third)
    assert third.runs == ["eps-1-seed-1"]
    assert read_csv(out / "sweep.csv") == table


def test_sample_level_sweep_reports_the_worst_users_epsilon(tmp_path):
    out = tmp_path / "s"
    rows = run_sweep(None, TINY, out, [4.0], [0], "sample", runner=InProcessRunner())
    private = [r for r in rows if r["epsilon_target"] == "4"]
    assert len(private) == 1 and 3.5 < private[0]["epsilon_prv"] <= 4.0
    summary = json.loads((out / "eps-4-seed-0" / "summary.json").read_text())
    assert summary["privacy"]["mode"] == "sample"


def test_cli_dry_run_and_clean_errors(tmp_path):
    script = [sys.executable, str(ROOT / "simulations" / "privacy_sweep.py")]
    sets = [a for s in TINY for a in ("--set", s)]
    res = subprocess.run([*script, *sets, "--out", str(tmp_path / "d"), "--epsilons", "2,inf",
                          "--seeds", "0", "--dry-run"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "would run" in res.stdout and "eps-inf-seed-0" in res.stdout
    assert not (tmp_path / "d").exists()
    res = subprocess.run([*script, "--out", str(tmp_path / "e"), "--mode", "sample",
                          "--dry-run"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 2 and "'optimizer'" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([*script, "--out", str(tmp_path / "e"), "--epsilons", "0,1",
                          "--dry-run"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 2 and "--epsilons" in res.stderr


def run_cli(out: Path, *extra: str, timeout: int) -> tuple[subprocess.CompletedProcess, list]:
    """The sweep CLI on TINY with one target (epsilon 2) and seed 0; its process and CSV rows."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "simulations" / "privacy_sweep.py"),
         *[a for s in TINY for a in ("--set", s)], "--out", str(out),
         "--epsilons", "2", "--seeds", "0", *extra],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = read_csv(out / "sweep.csv")
    assert [r["epsilon_target"] for r in rows] == ["nonprivate", "2"]
    return res, rows


@pytest.mark.slow
def test_sweep_on_the_ray_simulation_engine(tmp_path):
    res, _ = run_cli(tmp_path / "ray", "--cpus", "2", timeout=600)
    assert "ETA" in res.stdout


def test_cli_runs_on_the_in_process_engine(tmp_path):
    _, rows = run_cli(tmp_path / "ip", "--engine", "inprocess", timeout=300)
    assert 1.5 < float(rows[1]["epsilon_prv"]) <= 2.0
