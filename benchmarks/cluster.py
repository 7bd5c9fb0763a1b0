"""Cluster benchmark: seconds and bytes per round on the local cluster (Flower's deployment
engine, ``simulations/cluster.py``) beside the simulation (``simulations/launch.py``).

    python benchmarks/cluster.py [--data-dir DIR] [--out PATH] [--quick]
                                 [--datasets synthetic,ml-1m] [--nodes 2,4]
                                 [--modes insecure,tls-auth]

For each dataset and node count: one simulation run and one cluster run per mode (insecure;
TLS + SuperNode authentication), each a subprocess writing its own run directory. Reported per
run: seconds of the steady rounds (rounds 2..R: round 1 carries the nodes' first preparation of
the split and model), and the bytes of the train and evaluate messages and replies of round 2
(``metrics.csv`` ``train_bytes`` / ``evaluate_bytes``: every serialized Flower object of the
messages, before HTTP framing and TLS), and the CPU seconds per round of each kind of
cluster process over the whole run, start-up included (``cluster/cpu.json``): the SuperLink
with the ServerApp under it, the SuperNodes, the SuperExecs with their ClientApp processes.
The breakdown of a cluster round (on by default; ``--no-breakdown``): the start of a fresh
``flwr-clientapp``-like process (a new interpreter importing the ClientApp, as Flower starts
one per message) and of a warm one (forked from ``simulations/superexec.py``'s parent, as the
cluster starts them), and fedrec's own work on one node (train + evaluate, in this process);
Flower's polling and transport is the rest of the round.

Prints a table and writes ``cluster.json`` (``--out``, default
``benchmarks/results/cluster.json``). ``--quick``: tiny synthetic data, 2 nodes, 2 rounds,
insecure only (smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedrec import rundir  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "cluster.json"
# dataset -> (config file or None for the embedded default, rounds, extra settings)
DATASETS: dict[str, tuple[str | None, int, list[str]]] = {
    "synthetic": (None, 3, []),
    "ml-1m": ("simulations/configs/ml1m_ncf_mf.toml", 2, []),
}
QUICK = ["synthetic-users=120", "synthetic-items=100", "synthetic-interactions=12",
         "test-negatives=49", "dim=8"]
# cluster/cpu.json names: the SuperLink (and the ServerApp under it), the SuperNodes, the
# SuperExecs (and their ClientApp processes)
CPU_KINDS = ("superlink", "supernode", "superexec")
MODES = {"insecure": ["--insecure"], "tls-auth": []}  # cluster.py: TLS + auth by default


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _settings(dataset: str, rounds: int, nodes: int, data_dir: str | None,
              quick: bool) -> list[str]:
    config, _, extra = DATASETS[dataset]
    sets = [*extra, *(QUICK if quick else []), f"num-rounds={rounds}", f"num-nodes={nodes}",
            "device=cpu"]
    if data_dir:
        sets.append(f"data-dir={data_dir}")
    args = [config] if config else []
    for s in sets:
        args += ["--set", s]
    return args


def run_one(engine: str, mode: str | None, args: list[str], out: Path,
            timeout: float) -> dict[str, Any]:
    """One run in a subprocess; its per-round seconds and bytes from ``metrics.csv``."""
    script = "launch.py" if engine == "simulation" else "cluster.py"
    argv = [sys.executable, str(ROOT / "simulations" / script), *args, "--out", str(out)]
    if engine == "cluster":
        argv += MODES[mode or "insecure"]
    t0 = time.time()
    proc = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rows = rundir.read_metrics(out / "metrics.csv")
    steady = [float(r["round_s"]) for r in rows[1:]] or [float(rows[0]["round_s"])]
    ref = rows[1] if len(rows) > 1 else rows[0]
    cpu_file = out / "cluster" / "cpu.json"
    cpu = json.loads(cpu_file.read_text()) if cpu_file.exists() else {}
    cpu_by_kind = {k: sum(v for n, v in cpu.items() if n.startswith(k)) for k in CPU_KINDS}
    return {
        "cpu_s": cpu_by_kind if cpu else None,  # whole run, start-up included
        "engine": engine, "mode": mode, "wall_s": wall,
        "round_s": [float(r["round_s"]) for r in rows],
        "seconds_per_round": statistics.mean(steady),
        "train_bytes": int(ref["train_bytes"]), "evaluate_bytes": int(ref["evaluate_bytes"]),
        "missing": sum(int(r["missing"] or 0) for r in rows),
    }


WARM_START = """
import os, sys, time
from simulations.superexec import WARM_MODULES
import importlib
for m in WARM_MODULES:
    importlib.import_module(m)
r, w = os.pipe()
t = time.time()
if os.fork() == 0:
    import clients.app
    os.write(w, b"x")
    os._exit(0)
os.read(r, 1)
print(time.time() - t)
"""


def breakdown(args: list[str], nodes: int, repeats: int = 3) -> dict[str, float]:
    """Start of a fresh ClientApp process (Flower's way: a new interpreter importing the
    ClientApp), of a warm one (``simulations/superexec.py``: forked from a parent that has
    imported the third-party modules, importing fedrec's ClientApp), and fedrec's work on node
    0 (train + evaluate of one round, in this process, after a warm-up)."""
    code = ("import time; t = time.time(); "
            "import flwr.supernode.runtime.run_clientapp, clients.app; "
            "print(time.time() - t)")
    starts, warm = [], []
    for _ in range(repeats):
        t0 = time.time()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), check=True,
                       capture_output=True, timeout=120)
        starts.append(time.time() - t0)
        res = subprocess.run([sys.executable, "-c", WARM_START], cwd=ROOT, env=_env(),
                             check=True, capture_output=True, text=True, timeout=120)
        warm.append(float(res.stdout.split()[-1]))

    from fedrec import node
    from fedrec.params import to_numpy
    from simulations.launch import build_config

    config = args[0] if args and not args[0].startswith("--") else None
    sets = [a for a in args if not a.startswith("--") and a != config]
    cfg = build_config(config, sets, out=tempfile.mkdtemp(prefix="fedrec-bench-"))
    split = node.load_split(cfg)
    model = node.make_model(cfg, split)
    users = node.node_users(cfg, split, 0, nodes)
    shared = to_numpy(model.init_shared(cfg.run.seed))
    state = node.initial_state(cfg, users)
    node.train_round(cfg, 1, shared, users, state)  # warm-up
    t0 = time.time()
    reply, state = node.train_round(cfg, 1, shared, users, state)
    train_s = time.time() - t0
    t0 = time.time()
    node.evaluate_round(cfg, 1, reply.arrays, users, state)
    eval_s = time.time() - t0
    return {"process_start_s": min(starts), "warm_start_s": min(warm),
            "fedrec_train_s": train_s,
            "fedrec_evaluate_s": eval_s}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    datasets = ["synthetic"] if args.quick else args.datasets.split(",")
    node_counts = [2] if args.quick else [int(n) for n in args.nodes.split(",")]
    modes = ["insecure"] if args.quick else args.modes.split(",")
    for d in datasets:
        if d not in DATASETS:
            raise SystemExit(f"error: --datasets: unknown '{d}'; known: {', '.join(DATASETS)}")
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"error: --modes: unknown '{m}'; known: {', '.join(MODES)}")
    work = Path(tempfile.mkdtemp(prefix="fedrec-cluster-bench-"))
    results: list[dict[str, Any]] = []
    for d in datasets:
        rounds = 2 if args.quick else DATASETS[d][1]
        for n in node_counts:
            sargs = _settings(d, rounds, n, args.data_dir, args.quick)
            cell = {"dataset": d, "nodes": n, "rounds": rounds, "runs": []}
            cell["runs"].append(run_one("simulation", None, sargs + ["--cpus", "2"],
                                        work / f"{d}-{n}-sim", args.timeout))
            for m in modes:
                cell["runs"].append(run_one("cluster", m, sargs, work / f"{d}-{n}-{m}",
                                            args.timeout))
            if args.breakdown:
                cell["breakdown"] = breakdown(sargs, n)
            results.append(cell)
            print(_row_lines(cell), flush=True)
    return {
        "meta": {"quick": args.quick, "datasets": datasets, "nodes": node_counts,
                 "modes": modes, "python": platform.python_version(),
                 "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S")},
        "cells": results,
    }


def _row_lines(cell: dict[str, Any]) -> str:
    lines = []
    for r in cell["runs"]:
        name = r["engine"] + (f" ({r['mode']})" if r["mode"] else "")
        cpu = r.get("cpu_s")
        cpu_text = " / ".join(f"{cpu[k] / cell['rounds']:.1f}" for k in CPU_KINDS) if cpu else ""
        lines.append(f"| {cell['dataset']} | {cell['nodes']} | {name} | "
                     f"{r['seconds_per_round']:.2f} | {r['train_bytes'] / 1e6:.3f} | "
                     f"{r['evaluate_bytes'] / 1e6:.3f} | {cpu_text} |")
    if "breakdown" in cell:
        b = cell["breakdown"]
        lines.append(f"|  |  | breakdown: ClientApp process start {b['process_start_s']:.2f} s "
                     f"fresh, {b['warm_start_s']:.2f} s warm; fedrec train "
                     f"{b['fedrec_train_s']:.2f} s + evaluate {b['fedrec_evaluate_s']:.2f} s "
                     f"(node 0) |  |  |  |  |")
    return "\n".join(lines)


HEADER = ("| dataset | nodes | engine | s / round | train MB / round | evaluate MB / round | "
          "CPU s / round: SuperLink+ServerApp / SuperNodes / SuperExecs+ClientApps |\n"
          "|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDREC_DATA_DIR"),
                   help="holds ml-1m/ and ncf-hexiangnan/ (default $FEDREC_DATA_DIR)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--quick", action="store_true", help="tiny synthetic smoke run")
    p.add_argument("--datasets", default="synthetic,ml-1m")
    p.add_argument("--nodes", default="2,4")
    p.add_argument("--modes", default="insecure,tls-auth")
    p.add_argument("--no-breakdown", dest="breakdown", action="store_false")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    args = p.parse_args(argv)
    print(HEADER, flush=True)
    res = run_benchmark(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
