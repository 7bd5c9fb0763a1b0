"""``launch.py --ray-address``: the simulation on an existing Ray cluster (a head and one
worker node started here, on 127.0.0.1, stopped by PID afterwards)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fedrec.config import Config
from simulations.cluster import free_port
from simulations.inprocess import run_inprocess
from simulations.processes import ProcessGroup, alive
from tests.helpers import RAY

pytestmark = RAY  # one Ray at a time under pytest -n (tests.helpers)

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"synthetic-users": 60, "synthetic-items": 200, "synthetic-interactions": 10,
            "users-per-node": 20, "dim": 8, "device": "cpu", "num-rounds": 2, "seed": 4}


@pytest.mark.slow
def test_launch_runs_on_an_existing_ray_cluster(tmp_path):
    # Prepare: `ray start --head` and one worker node, each in the foreground (--block) so
    # that Ray's processes are their descendants
    ray = str(Path(sys.executable).parent / "ray")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_ENABLE_USAGE_STATS="0",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--block",
              "--disable-usage-stats"]
    group = ProcessGroup(tmp_path / "logs", env, ROOT)
    try:
        group.start("head", [ray, "start", "--head", "--port", str(port), "--temp-dir", temp,
                             "--include-dashboard", "false", *common])
        time.sleep(8)
        group.start("worker", [ray, "start", "--address", f"127.0.0.1:{port}", *common])
        time.sleep(8)
        out = tmp_path / "run"

        # Execute
        res = subprocess.run(
            [sys.executable, str(ROOT / "simulations" / "launch.py"), "--ray-address",
             f"127.0.0.1:{port}", "--out", str(out),
             *[a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False)
        for name in ("head", "worker"):
            group.tree(name)
        # the ClientApp actors ran as workers of this cluster (their logs are in its session)
        workers = list(Path(temp).glob("session_*/logs/worker-*"))
    finally:
        left = group.close()
        shutil.rmtree(temp, ignore_errors=True)

    # Assert: the run finished on that cluster with the in-process result
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert left == [] and not any(alive(p, t) for p, t in group.seen.items())
    assert workers
    summary = json.loads((out / "summary.json").read_text())
    ref = run_inprocess(Config.from_flat({**SETTINGS, "out": str(tmp_path / "ref")}))
    for k in ("hr@10", "ndcg@10"):
        assert summary["final"][k] == pytest.approx(ref["final"][k], abs=1e-6)
