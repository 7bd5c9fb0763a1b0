"""One node of the local cluster: its processes (a SuperNode and the SuperExec that forks its
ClientApp processes) and ``cluster.py node``, which starts one against a SuperLink anywhere.

    python simulations/cluster.py node --superlink HOST:PORT --partition-id I
                                  --num-partitions N [--root-certificates F --auth-key K]
                                  [--dir DIR] [--poll S]

A node is two processes: ``simulations/supernode.py`` (Flower's ``flower-supernode`` with a
``--poll`` s idle poll instead of a fixed 3 s) in ``--isolation process`` mode, and
``simulations/superexec.py`` (Flower's SuperExec, ClientApp processes forked warm) on its
Runtime API; the SuperExec exits with its SuperNode.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedrec.cli import ArgumentParser  # noqa: E402
from simulations.processes import ProcessGroup  # noqa: E402

ACTIVATION_FAILED = b"Failed to activate SuperNode"  # flower-supernode's log (it exits 1)
RETRY_S = 5.0
NODE_POLL_S = 0.2  # a SuperNode's idle poll (Flower's is a fixed 3 s; simulations/supernode.py)


class NodeError(RuntimeError):
    """A node could not be started (the message says why)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """Environment of every Flower process: the venv's ``bin`` first on PATH (the SuperLink
    starts ``flower-superexec`` by bare name), this checkout importable, offline."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update({
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        "FEDREC_THREADS": env.get("FEDREC_THREADS", "1"),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    })
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def flower_bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise NodeError(f"{path} not found: run with the Python of the venv that has flwr")
    return str(path)


def supernode_argv(superlink: str, port: int, partition: int, n_partitions: int,
                   node_dir: Path, ca: Path | None, key: Path | None,
                   poll: float = NODE_POLL_S) -> list[str]:
    """``flower-supernode`` (``simulations/supernode.py``: Flower's, polling every ``poll``
    seconds) for partition ``partition``; its private state and its cache of the prepared split
    and model live in ``node_dir`` (the node's disk). Its ClientApp processes come from
    :func:`superexec_argv`."""
    node_config = (f"partition-id={partition} num-partitions={n_partitions} "
                   f"cache-dir=\"{node_dir / 'cache'}\"")
    flower_bin("flower-supernode")  # this Python has flwr
    argv = [sys.executable, str(ROOT / "simulations" / "supernode.py"), "--poll", str(poll),
            "--superlink", superlink, "--isolation", "process",
            "--host", "127.0.0.1", "--port", str(port), "--node-config", node_config]
    argv += ["--root-certificates", str(ca)] if ca is not None else ["--insecure"]
    if key is not None:
        argv += ["--auth-supernode-private-key", str(key)]
    return argv


def superexec_argv(port: int, supernode_pid: int) -> list[str]:
    """The node's SuperExec (``simulations/superexec.py``: ClientApp processes forked warm) on
    its SuperNode's Runtime API at 127.0.0.1:``port``; it exits with the SuperNode."""
    return [sys.executable, str(ROOT / "simulations" / "superexec.py"), "--poll", "0.1",
            "--runtime-api-address", f"127.0.0.1:{port}", "--insecure", "--parent-pid",
            str(supernode_pid)]


def start_node_processes(procs: ProcessGroup, name: str, argv: list[str],
                         port: int) -> subprocess.Popen:
    """Start a SuperNode (``argv`` from :func:`supernode_argv`, Runtime API on ``port``) as
    ``supernode{name}`` and its SuperExec as ``superexec{name}``."""
    node = procs.start(f"supernode{name}", argv)
    procs.start(f"superexec{name}", superexec_argv(port, node.pid))
    return node


def node_main(argv: list[str]) -> int:
    """``cluster.py node``: one SuperNode joining a SuperLink anywhere, until Ctrl-C."""
    p = ArgumentParser(prog="cluster.py node", description=node_main.__doc__)
    p.add_argument("--superlink", required=True, help="the SuperLink's HOST:PORT")
    p.add_argument("--partition-id", type=int, required=True)
    p.add_argument("--num-partitions", type=int, required=True)
    p.add_argument("--root-certificates", help="the CA certificate (TLS); without: --insecure")
    p.add_argument("--auth-key", help="this node's private key (registered on the SuperLink)")
    p.add_argument("--poll", type=float, default=NODE_POLL_S, help="seconds between the "
                   "SuperNode's requests for work when idle (default %(default)s; Flower's: 3)")
    p.add_argument("--dir", default="fedrec-node", help="the node's disk: private state, "
                   "cache, logs (default ./fedrec-node)")
    args = p.parse_args(argv)
    if not 0 <= args.partition_id < args.num_partitions:
        p.error(f"--partition-id {args.partition_id} is not in 0..{args.num_partitions - 1}")
    for opt in ("root_certificates", "auth_key"):
        path = getattr(args, opt)
        if path and not Path(path).is_file():
            p.error(f"--{opt.replace('_', '-')} {path}: no such file")
    node_dir = Path(args.dir).resolve() / f"node-{args.partition_id}"
    if not 0.01 <= args.poll <= 3:
        p.error(f"--poll {args.poll:g}: expected 0.01..3 seconds")
    port = free_port()
    argv_ = supernode_argv(args.superlink, port, args.partition_id, args.num_partitions,
                           node_dir, Path(args.root_certificates).resolve()
                           if args.root_certificates else None,
                           Path(args.auth_key).resolve() if args.auth_key else None,
                           args.poll)
    argv_[argv_.index("--node-config") + 1] += f" state-dir=\"{node_dir / 'state'}\""
    procs = ProcessGroup(node_dir / "logs", flower_env(), ROOT)
    signal.signal(signal.SIGTERM, raise_interrupt)  # `kill PID` stops it like Ctrl-C
    try:
        log_file = procs.log_dir / "supernode.log"
        while True:
            seen = log_file.stat().st_size if log_file.exists() else 0
            proc = start_node_processes(procs, "", argv_, port)
            print(f"SuperNode {args.partition_id}/{args.num_partitions} (pid {proc.pid}) -> "
                  f"{args.superlink}; log {procs.log_dir / 'supernode.log'}; Ctrl-C stops it",
                  flush=True)
            code = proc.wait()
            with open(log_file, "rb") as fh:
                fh.seek(seen)
                if code == 0 or ACTIVATION_FAILED not in fh.read():
                    return code
            # its key is not registered yet, or the SuperLink still counts it online from a
            # previous life (until its heartbeats expire): try again
            print(f"the SuperLink refused to activate this node; retrying in {RETRY_S:g} s",
                  flush=True)
            time.sleep(RETRY_S)
    except KeyboardInterrupt:
        return 130
    finally:
        procs.close()


def raise_interrupt(signum, frame) -> None:  # SIGTERM stops like Ctrl-C
    raise KeyboardInterrupt
