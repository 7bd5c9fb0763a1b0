"""The multi-process local cluster (simulations/cluster.py): same results as the simulation,
faults survived, nothing left running.

The ``slow`` tests start a real SuperLink and SuperNodes on 127.0.0.1 (free ports) through
``cluster.py`` in a subprocess with a deadline, and check by PID (``cluster/pids.json``) that no
process it started or found under them is alive afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from fedrec import rundir
from simulations import tls
from simulations.faults import parse_fault
from simulations.processes import ProcessGroup, alive
from tests.helpers import RAY

pytestmark = RAY  # one Ray at a time under pytest -n (tests.helpers)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "simulations" / "cluster.py"
# 2 nodes of 60 users, 3 rounds: small enough that a round is Flower's overhead
TINY = ["--set", "synthetic-users=120", "--set", "synthetic-items=100", "--set",
        "synthetic-interactions=12", "--set", "test-negatives=49", "--set", "dim=8",
        "--set", "num-rounds=3", "--set", "seed=5", "--set", "device=cpu"]
NODES = 2
KEYS = ("hr@10", "ndcg@10", "recall@20", "ndcg@20-full")


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_cluster(out: Path, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--nodes", str(NODES), "--out", str(out),
         "--deadline", str(timeout - 60), *extra],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)
    pids = json.loads((out / "cluster" / "pids.json").read_text())
    assert len(pids) >= 1 + NODES
    left = [p for p, t in pids.items() if alive(int(p), t)]
    assert not left, f"processes left running: {left}"
    return proc


def metrics(out: Path) -> list[dict[str, str]]:
    return rundir.read_metrics(out / "metrics.csv")


@pytest.fixture(scope="module")
def simulation(tmp_path_factory) -> dict:
    """The same config on Flower's simulation engine (simulations/launch.py)."""
    out = tmp_path_factory.mktemp("sim") / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "simulations" / "launch.py"), *TINY, "--set",
         f"num-nodes={NODES}", "--out", str(out), "--cpus", "2"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"summary": json.loads((out / "summary.json").read_text()), "rows": metrics(out)}


def assert_same(out: Path, simulation: dict) -> None:
    summary = json.loads((out / "summary.json").read_text())
    for k in KEYS:
        assert summary["final"][k] == pytest.approx(simulation["summary"]["final"][k], abs=1e-6)
    rows = metrics(out)
    assert len(rows) == len(simulation["rows"]) == 3
    for a, b in zip(rows, simulation["rows"], strict=True):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), abs=1e-6)
        assert float(a["hr@10"]) == pytest.approx(float(b["hr@10"]), abs=1e-6)


# ---------------------------------------------------------------- fast: the parts
def test_fault_specs_parse_and_bad_ones_are_named():
    f = parse_fault("kill-node=1@round=2,restart=3")
    assert (f.kind, f.node, f.round, f.restart) == ("node", 1, 2, 3.0)
    assert f.targets == ("supernode-1", "superexec-1")
    assert not f.due(0) and f.due(1)
    g = parse_fault("kill-superlink@round=3")
    assert (g.kind, g.node, g.restart, g.targets) == ("superlink", None, None, ("superlink",))
    for bad in ("kill-node@round=2", "kill-superlink=1@round=2", "kill-node=1@round=0",
                "crash-node=1@round=2"):
        with pytest.raises(ValueError, match="--inject"):
            parse_fault(bad)


def test_server_certificate_chains_to_the_ca_and_node_keys_load(tmp_path):
    # Execute
    certs = tls.make_server_certs(tmp_path, ("node7.example",))
    private, public = tls.make_node_key(tmp_path, "node-0")

    # Assert
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert {"localhost", "node7.example"} <= set(san.get_values_for_type(x509.DNSName))
    key = load_ssh_private_key(private.read_bytes(), password=None)  # what flower-supernode does
    assert key.curve.name == "secp384r1"
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert oct(private.stat().st_mode & 0o777) == "0o600"


def test_process_group_stops_descendants_in_their_own_session(tmp_path):
    # Prepare: a parent that starts a child in a new session (like the SuperLink's SuperExec)
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)'], start_new_session=True); time.sleep(60)")
    group = ProcessGroup(tmp_path, _env(), tmp_path)
    proc = group.start("parent", [sys.executable, "-c", code])
    end = time.monotonic() + 20
    while len(group.tree("parent")) < 2 and time.monotonic() < end:
        time.sleep(0.1)
    pids = group.tree("parent")
    assert len(pids) == 2 and proc.pid in pids

    # Execute
    left = group.close()

    # Assert
    assert left == [] and not any(alive(p) for p in pids)
    assert (tmp_path / "parent.log").exists()


def test_bad_arguments_are_clear_errors(tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=120, check=False)

    res = cli("--insecure", "--tls", "--out", str(tmp_path / "a"))
    assert res.returncode == 2 and "--insecure contradicts" in res.stderr
    res = cli("--inject", "kill-node@round=1", "--out", str(tmp_path / "b"))
    assert res.returncode == 2 and "--inject 'kill-node@round=1'" in res.stderr
    res = cli("node", "--superlink", "127.0.0.1:1", "--partition-id", "4",
              "--num-partitions", "4")
    assert res.returncode == 2 and "--partition-id 4 is not in 0..3" in res.stderr
    assert not (tmp_path / "a" / "cluster").exists()


# ---------------------------------------------------------------- slow: real clusters
@pytest.mark.slow
def test_cluster_with_tls_and_auth_equals_the_simulation(tmp_path, simulation):
    # Execute
    out = tmp_path / "run"
    proc = run_cluster(out)  # TLS + node authentication are the defaults

    # Assert
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "TLS + node authentication" in proc.stdout
    assert (out / "cluster" / "certs" / "ca.crt").exists()
    assert sorted(p.name for p in (out / "cluster" / "keys").iterdir()) == [
        "node-0", "node-0.pub", "node-1", "node-1.pub"]
    assert_same(out, simulation)
    assert all(r["missing"] == "0" for r in metrics(out))


@pytest.mark.slow
def test_killed_node_is_dropped_counted_and_restores_its_latest_state(tmp_path):
    # Execute: node 1 dies as round 2 starts; it is restarted once the SuperLink has seen it
    # go (heartbeats missed: ~50 s), after round 2's deadlines; rounds take ~3 s: 14 rounds
    # leave the ~30 s it needs to rejoin
    out = tmp_path / "run"
    proc = run_cluster(out, "--set", "timeout=20", "--set", "num-rounds=14", "--inject",
                       "kill-node=1@round=2,restart=1")

    # Assert: the run completed; round 2 went on with node 0's 60 users
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = metrics(out)
    assert [r["round"] for r in rows] == [str(r) for r in range(1, 15)]
    assert rows[0]["users"] == "120" and rows[0]["missing"] == "0"
    assert rows[1]["users"] == "60" and int(rows[1]["missing"]) >= 1
    server_log = (out / "cluster" / "logs" / "serverapp.log").read_text()
    lost = [ln for ln in server_log.splitlines() if "round 2 train: no reply from node" in ln]
    assert lost and "(node-1)" in lost[0]  # named with the key it registered with
    assert "node 1 failed" not in server_log  # the SuperLink's id is not the lost node
    # the restarted node found round 1's state (round 2's never existed) and said so
    node_log = (out / "cluster" / "logs" / "superexec-1.log").read_text()  # its ClientApps
    assert "partition 1" in node_log and "restored round 1's" in node_log
    assert rows[-1]["users"] == "120"  # back in the federation by round 14


@pytest.mark.slow
@pytest.mark.parametrize("what", ["superlink", "serverapp"])
def test_killed_and_restarted_server_side_resumes_from_the_checkpoint(tmp_path, simulation,
                                                                       what):
    # Execute
    out = tmp_path / "run"
    proc = run_cluster(out, "--insecure", "--inject", f"kill-{what}@round=2,restart=1")

    # Assert: the resumed run is the uninterrupted one
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"inject kill-{what}@round=2,restart=1" in proc.stdout
    assert "resuming" in (out / "cluster" / "logs" / "serverapp.log").read_text()
    assert_same(out, simulation)


@pytest.mark.slow
def test_node_joins_from_elsewhere_with_the_ca_and_its_key(tmp_path, simulation):
    # Prepare: the cluster starts node 0 only and waits for node 1 (`--local-nodes 1`)
    from simulations.cluster import free_port

    out, port = tmp_path / "run", free_port()
    main = subprocess.Popen(
        [sys.executable, str(SCRIPT), *TINY, "--nodes", "2", "--local-nodes", "1", "--port",
         str(port), "--out", str(out), "--deadline", "300"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    keys = out / "cluster" / "keys"
    end = time.monotonic() + 60
    while not (keys / "node-1.pub").exists() and time.monotonic() < end:
        time.sleep(0.2)
    # what the second machine gets: the CA certificate and node 1's private key, copied
    there = tmp_path / "machine-b"
    there.mkdir()
    (there / "ca.crt").write_bytes((out / "cluster" / "certs" / "ca.crt").read_bytes())
    (there / "node-1").write_bytes((keys / "node-1").read_bytes())

    # Execute
    node = subprocess.Popen(
        [sys.executable, str(SCRIPT), "node", "--superlink", f"127.0.0.1:{port}",
         "--partition-id", "1", "--num-partitions", "2", "--root-certificates",
         str(there / "ca.crt"), "--auth-key", str(there / "node-1"), "--dir",
         str(there / "disk")],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stdout, _ = main.communicate(timeout=400)
    finally:
        main.terminate()  # (done already unless the test failed: it tears down on SIGTERM)
        node.terminate()  # Ctrl-C on machine B: the node stops its SuperNode tree
        node_out, _ = node.communicate(timeout=60)
        main.communicate(timeout=60)

    # Assert
    assert main.returncode == 0, stdout[-3000:]
    assert "SuperNode 1/2" in node_out
    assert_same(out, simulation)
    assert (there / "disk" / "node-1" / "state").is_dir()  # node 1's private rows stayed there
    assert not (out / "nodes" / "node-1").exists()
    for part in node_out.split("(pid ")[1:]:  # every SuperNode it started (retries too)
        assert not alive(int(part.split(")")[0]))
