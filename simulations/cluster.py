"""Run one experiment on a multi-process local Flower cluster: up, run, down in one command.

    python simulations/cluster.py [CONFIG.toml] [--nodes N] [--insecure | --tls --auth]
                                  [--set key=value ...] [--out DIR] [--inject FAULT ...]
    python simulations/cluster.py node --superlink HOST:PORT --partition-id I
                                  --num-partitions N [--root-certificates F --auth-key K]

The first form starts a SuperLink and N SuperNodes (Flower's deployment engine) as real
processes on 127.0.0.1 with free ports, waits until every node is online, submits the run with
``flwr run``, follows it and stops every process it started (also on Ctrl-C or an error),
checked by PID. TLS (a throw-away CA and server certificate) and SuperNode authentication (one
registered key per node) are on by default; ``--insecure`` turns both off. It exits 0 only when
the run ends ``finished:completed`` with a ``summary.json``. Logs, certificates, keys and
Flower's state live in ``DIR/cluster/``; results in ``DIR`` as with ``launch.py``.

A node is a SuperNode polling every 0.2 s and a SuperExec whose ClientApp processes are forked
warm (``simulations/node.py``); the SuperLink keeps its state in memory unless
``--superlink-database FILE``. Round 2+ on 4 nodes of the synthetic default: see
``benchmarks/cluster.py`` (README: speed).

``--local-nodes K`` starts only nodes 0..K-1 here and waits for the others to join from other
machines with the second form (``node``), which starts one SuperNode against a SuperLink
anywhere (README: two machines).

Faults for tests and demos (``--inject``, repeatable; see ``simulations/faults.py``):
``kill-node=K@round=R[,restart=S]``, ``kill-superlink@round=R[,restart=S]``,
``kill-serverapp@round=R[,restart=S]``: at the start of round R kill (SIGKILL) that process and
its children; with ``restart=S`` start it again S seconds later (a new SuperLink or ServerApp
resumes the run from its last checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedrec import rundir  # noqa: E402
from fedrec.cli import ArgumentParser, guarded, preflight  # noqa: E402
from fedrec.config import Config  # noqa: E402
from simulations.faults import Fault, parse_fault  # noqa: E402
from simulations.launch import build_config  # noqa: E402
from simulations.node import (  # noqa: E402
    NodeError,
    flower_bin,
    flower_env,
    free_port,
    node_main,
    raise_interrupt,
    start_node_processes,
    supernode_argv,
)
from simulations.processes import ProcessGroup  # noqa: E402

log = logging.getLogger("fedrec.cluster")

FEDERATION = "fedrec-cluster"
POLL_S = 0.5
FAULT_POLL_S = 0.02  # while a fault waits for its round
STATUS_S = 15.0  # seconds between run status checks while the run is going


class ClusterError(RuntimeError):
    """The cluster could not run the experiment (the message says why)."""


@dataclass
class Cluster:
    """One SuperLink, its SuperNodes and the run submitted to it."""

    cfg: Config
    n_nodes: int
    tls: bool
    auth: bool
    local_nodes: int
    host: str = "127.0.0.1"
    port: int = 0
    faults: list[Fault] = field(default_factory=list)
    deadline_s: float = 0.0  # whole run; 0: none beyond the run's own timeouts
    tls_hosts: tuple[str, ...] = ()  # names remote nodes use for the SuperLink (certificate)
    database: Path | None = None  # the SuperLink's SQLite state; None: in memory

    def __post_init__(self) -> None:
        self.out = Path(self.cfg.run.out).resolve()
        self.dir = self.out / "cluster"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = flower_env(self.dir / "flwr-home")
        self.procs = ProcessGroup(self.dir / "logs", self.env, ROOT)
        self.port = self.port or free_port(self.host if self.host != "0.0.0.0" else "127.0.0.1")
        self.address = f"127.0.0.1:{self.port}"
        self.node_ports = [free_port() for _ in range(self.n_nodes)]
        self.certs = None
        self.keys: list[tuple[Path, Path]] = []
        self.run_ids: list[int] = []
        self.node_ids: dict[int, str] = {}  # partition -> Flower node id (registered keys)

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> None:
        from simulations import tls

        if self.tls:
            hosts = self.tls_hosts + (() if self.host in ("127.0.0.1", "0.0.0.0") else
                                      (self.host,))
            self.certs = tls.make_server_certs(self.dir / "certs", hosts)
        if self.auth:
            self.keys = [tls.make_node_key(self.dir / "keys", f"node-{i}")
                         for i in range(self.n_nodes)]
        home = self.dir / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f'default = "{FEDERATION}"', "", f"[superlink.{FEDERATION}]",
                 f'address = "{self.address}"']
        lines += ([f'root-certificates = "{self.certs.ca}"'] if self.certs else
                  ["insecure = true"])
        (home / "config.toml").write_text("\n".join(lines) + "\n")
        run_config = self.cfg.replace(out=str(self.out)).to_flat()
        if run_config.get("data-dir"):
            run_config["data-dir"] = str(Path(run_config["data-dir"]).resolve())
        (self.dir / "run-config.toml").write_text(
            "".join(f"{k} = {_toml(v)}\n" for k, v in run_config.items()))

    def start_superlink(self) -> None:
        argv = [flower_bin("flower-superlink"), "--host", self.host, "--port", str(self.port)]
        if self.database:  # else its state is in memory (a third of the CPU of SQLite's)
            argv += ["--database", str(self.database)]
        if self.certs is not None:
            argv += ["--ssl-ca-certfile", str(self.certs.ca), "--ssl-certfile",
                     str(self.certs.cert), "--ssl-keyfile", str(self.certs.key)]
        else:
            argv += ["--insecure"]
        if self.auth:
            argv += ["--enable-supernode-auth"]
        self.procs.start("superlink", argv)
        self._wait(lambda: self._flwr(["ls"], check=False).returncode == 0, 60,
                   "the SuperLink to answer", poll=0.5)

    def register_nodes(self) -> None:
        """Register each node's public key with the SuperLink (again after a restart when its
        state is in memory)."""
        for i, (_, pub) in enumerate(self.keys):
            res = self._flwr(["supernode", "register", str(pub), FEDERATION, "--name",
                              f"node-{i}", "--format", "json"], check=False)
            if res.returncode != 0 and "already" not in (res.stdout + res.stderr).lower():
                raise ClusterError(f"registering node {i}'s key failed: {res.stderr.strip()}")
            start = res.stdout.find("{")
            try:
                self.node_ids[i] = str(json.JSONDecoder().raw_decode(res.stdout[start:])[0]
                                       ["node-id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("no node id in `flwr supernode register` output: %s", res.stdout)

    def node_status(self) -> dict[str, str]:
        """Flower node id -> status (online, offline, registered, ...)."""
        res = self._flwr(["supernode", "list", FEDERATION, "--format", "json"], check=False)
        try:
            return {str(n["node-id"]): str(n.get("status", "")).lower()
                    for n in json.loads(res.stdout).get("nodes", [])}
        except (json.JSONDecodeError, KeyError, AttributeError):
            return {}

    def start_node(self, i: int) -> None:
        node_dir = self.dir / f"node-{i}"
        argv = supernode_argv(self.address, self.node_ports[i], i, self.n_nodes, node_dir,
                              self.certs.ca if self.certs else None,
                              self.keys[i][0] if self.keys else None)
        start_node_processes(self.procs, f"-{i}", argv, self.node_ports[i])

    def wait_nodes_online(self, timeout: float = 120.0, revive: bool = False) -> None:
        """Wait until all nodes are online; ``revive``: start again a local SuperNode that
        gave up (a SuperNode exits when it cannot re-activate on a restarted SuperLink)."""
        gone = {t for f in self.faults if f.fired and f.kind == "node" and f.restart is None
                for t in f.targets}  # killed for good by --inject

        def online() -> bool:
            status = self.node_status()
            for i in range(self.local_nodes) if revive else ():
                proc = self.procs.procs[f"supernode-{i}"]
                if f"supernode-{i}" in gone:
                    continue
                if proc.poll() is not None and status.get(self.node_ids.get(i, "")) != "online":
                    log.warning("SuperNode %d exited (exit code %s); starting it again", i,
                                proc.returncode)
                    self.start_node(i)
            return sum(s == "online" for s in status.values()) >= self.n_nodes - len(gone)
        self._wait(online, timeout, f"{self.n_nodes} SuperNodes to come online")

    # ------------------------------------------------------------------ the run
    def submit(self) -> int:
        res = self._flwr(["run", str(ROOT), FEDERATION, "--run-config",
                          str(self.dir / "run-config.toml"), "--format", "json"])
        try:
            run_id = int(json.loads(res.stdout)["run-id"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ClusterError(f"flwr run gave no run id: {res.stdout} {res.stderr}") from exc
        self.run_ids.append(run_id)
        log.info("submitted run %d", run_id)
        return run_id

    def status(self, run_id: int) -> str:
        res = self._flwr(["ls", FEDERATION, "--run-id", str(run_id), "--format", "json"],
                         check=False)
        try:
            runs = json.loads(res.stdout)["runs"]
        except (json.JSONDecodeError, KeyError):
            return "unknown"
        return str(runs[0]["status"]) if runs else "unknown"

    def follow(self, run_id: int) -> str:
        """Wait for the run to finish (printing a line per round, applying faults); return its
        final status."""
        metrics, summary = self.out / "metrics.csv", self.out / "summary.json"
        shown, last_status_check, status = 0, time.monotonic(), "unknown"
        t_end = time.monotonic() + self.deadline_s if self.deadline_s else None
        t_submit = time.time()

        def show() -> list[dict]:
            nonlocal shown
            rows = rundir.read_metrics(metrics)
            for row in rows[shown:]:
                log.info("round %s: loss %s users %s hr@10 %s missing %s (%ss)", row["round"],
                         row["train_loss"], row["users"], row.get("hr@10") or "-",
                         row.get("missing") or "0", row["round_s"])
            shown = max(shown, len(rows))
            return rows

        last_tree = 0.0
        while True:
            rows = show()
            if time.monotonic() - last_tree > 1.0:
                last_tree = time.monotonic()
                for name in list(self.procs.procs):
                    self.procs.tree(name)  # remember every descendant's PID for the teardown
            for fault in self.faults:
                if fault.due(len(rows)):
                    run_id = self._apply(fault, run_id)
            # `flwr ls` costs a second of CPU: ask often only once the summary is written
            written = summary.exists() and summary.stat().st_mtime >= t_submit
            if time.monotonic() - last_status_check > (2.0 if written else STATUS_S):
                last_status_check = time.monotonic()
                status = self.status(run_id)
                if status.startswith("finished"):
                    show()
                    return status
            if t_end is not None and time.monotonic() > t_end:
                raise ClusterError(f"the run did not finish within {self.deadline_s:g} s "
                                   f"(status {status})")
            # a pending fault must hit its round before the nodes reply (a round takes ~1 s)
            time.sleep(FAULT_POLL_S if any(not f.fired for f in self.faults) else POLL_S)

    def _apply(self, fault: Fault, run_id: int) -> int:
        fault.fired = True
        if fault.kind == "serverapp":
            pids = [p for p in self.procs.tree("superlink")
                    if "flwr-serverapp" in _cmdline(p)]
            if not pids:
                log.warning("inject %s: no flwr-serverapp process found", fault.text)
            for p in pids:
                os.kill(p, signal.SIGKILL)
            log.warning("inject %s: killed ServerApp (pids %s)", fault.text, pids)
            self._flwr(["stop", str(run_id), FEDERATION], check=False)  # mark the run ended
        else:
            pids = [p for name in fault.targets for p in self.procs.kill(name)]
            log.warning("inject %s: killed %s (pids %s)", fault.text, " and ".join(
                fault.targets), pids)
        if fault.restart is None:
            return run_id
        time.sleep(fault.restart)
        if fault.kind == "node":
            if fault.node in self.node_ids:  # a registered key cannot come online twice: wait
                node_id = self.node_ids[fault.node]  # until the SuperLink declares it offline
                self._wait(lambda: self.node_status().get(node_id) != "online", 180,
                           f"the SuperLink to see node {fault.node} offline")
            self.start_node(fault.node)
            log.warning("inject %s: restarted node %d", fault.text, fault.node)
            self.wait_nodes_online(180, revive=True)
            return run_id
        if fault.kind == "superlink":
            self.start_superlink()
            if self.database is None:  # a new SuperLink knows no node: register them again
                self.register_nodes()
            log.warning("inject %s: restarted the SuperLink", fault.text)
            self.wait_nodes_online(revive=True)
        else:
            self._wait(lambda: self.status(run_id).startswith("finished"), 120,
                       f"run {run_id} to end after its ServerApp was killed")
        return self.submit()  # the new ServerApp resumes from the last checkpoint

    # ------------------------------------------------------------------ helpers
    def _flwr(self, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run([flower_bin("flwr"), *args], cwd=ROOT, env=self.env,
                             capture_output=True, text=True, timeout=120, check=False)
        if check and res.returncode != 0:
            raise ClusterError(f"flwr {' '.join(args)} failed: {res.stderr.strip()[-2000:]}"
                               f" {res.stdout.strip()[-2000:]}")
        return res

    def _wait(self, ok, timeout: float, what: str, poll: float = 2.0) -> None:
        """Call ``ok`` (typically a ``flwr`` command: a second of CPU) every ``poll`` seconds
        until it is true; a process of ours that died or the timeout is an error."""
        end = time.monotonic() + timeout
        while not ok():
            dead = [n for n, p in self.procs.procs.items() if p.poll() is not None
                    and not any(f.fired and n in f.targets for f in self.faults)]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}; see "
                                   f"{self.procs.log_dir}")
            if time.monotonic() > end:
                raise ClusterError(f"timed out after {timeout:g} s waiting for {what}; see "
                                   f"{self.procs.log_dir}")
            time.sleep(poll)

    def save_server_logs(self) -> None:
        """The ServerApp's log of every run submitted (kept by the SuperLink) into
        ``logs/serverapp.log``."""
        if "superlink" not in self.procs.procs or self.procs.procs["superlink"].poll() is not None:
            return
        with open(self.procs.log_dir / "serverapp.log", "w") as fh:
            for run_id in self.run_ids:
                res = self._flwr(["log", str(run_id), FEDERATION, "--show"], check=False)
                fh.write(f"==> run {run_id}\n{res.stdout}{res.stderr}\n")

    def close(self) -> None:
        try:  # CPU seconds per process (and what ran under it), for benchmarks/cluster.py
            rundir.write_json(self.dir / "cpu.json", self.procs.cpu())
        except OSError as exc:
            log.warning("could not write %s: %s", self.dir / "cpu.json", exc)
        try:
            self.save_server_logs()
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not save the ServerApp log: %s", exc)
        survivors = self.procs.close()
        # every PID started or found under them, for whoever checks nothing was left behind
        rundir.write_json(self.dir / "pids.json", {str(p): t for p, t in self.procs.seen.items()})
        if survivors:
            raise ClusterError(f"processes still alive after teardown: {survivors}")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def run_cluster(cluster: Cluster) -> dict:
    """Up, run, down. Returns ``summary.json``'s content; raises :class:`ClusterError`."""
    try:
        cluster.prepare()
        cluster.start_superlink()
        cluster.register_nodes()
        for i in range(cluster.local_nodes):
            cluster.start_node(i)
        if cluster.local_nodes < cluster.n_nodes:
            log.info("waiting for nodes %d..%d to join %s:%d (see README: two machines)",
                     cluster.local_nodes, cluster.n_nodes - 1, cluster.host, cluster.port)
        cluster.wait_nodes_online(120 if cluster.local_nodes == cluster.n_nodes else 3600)
        status = cluster.follow(cluster.submit())
    finally:
        cluster.close()
    summary_path = cluster.out / "summary.json"
    if status != "finished:completed":
        raise ClusterError(f"the run ended {status}; see {cluster.procs.log_dir}")
    if not summary_path.exists():
        raise ClusterError(f"the run ended {status} without writing {summary_path}")
    return json.loads(summary_path.read_text())


@guarded
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    logging.getLogger("fedrec").setLevel(logging.INFO)
    if argv[:1] == ["node"]:
        return node_main(argv[1:])
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", nargs="?", help="experiment TOML (flat kebab-case keys)")
    p.add_argument("--nodes", type=int, help="number of SuperNodes (sets num-nodes; default: "
                   "the config's num-nodes, else one per users-per-node users)")
    p.add_argument("--local-nodes", type=int, help="start only nodes 0..K-1 here; the others "
                   "join with `cluster.py node` (default: all)")
    p.add_argument("--insecure", action="store_true", help="no TLS, no node authentication")
    p.add_argument("--tls", action="store_true", help="TLS (default unless --insecure)")
    p.add_argument("--auth", action="store_true", help="SuperNode authentication (default "
                   "unless --insecure; needs TLS)")
    p.add_argument("--host", default="127.0.0.1", help="address the SuperLink binds "
                   "(default 127.0.0.1; 0.0.0.0 or this machine's name for remote nodes)")
    p.add_argument("--tls-host", action="append", default=[], metavar="NAME",
                   help="a name or IP remote nodes use to reach the SuperLink (put in its "
                   "certificate; repeatable)")
    p.add_argument("--port", type=int, default=0, help="SuperLink port (default: a free one)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", help="run directory (an existing one is resumed)")
    p.add_argument("--data-dir", help="shortcut for --set data-dir=DIR")
    p.add_argument("--inject", action="append", default=[], metavar="FAULT",
                   help="kill-node=K@round=R[,restart=S] | kill-superlink@round=R[,restart=S] "
                   "| kill-serverapp@round=R[,restart=S]")
    p.add_argument("--superlink-database", metavar="PATH", help="keep the SuperLink's state "
                   "(registered nodes, runs) in this SQLite file; default: in memory, about a "
                   "third of the SuperLink's CPU (a restarted SuperLink then gets the nodes "
                   "registered again; either way the run resumes from its checkpoint)")
    p.add_argument("--deadline", type=float, default=0.0, help="give up after this many "
                   "seconds of run (default: none beyond the run's timeout setting)")
    args = p.parse_args(argv)
    if args.insecure and (args.tls or args.auth):
        p.error("--insecure contradicts --tls/--auth")
    tls = not args.insecure
    auth = not args.insecure and (args.auth or not args.tls)
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data-dir={args.data_dir}")
    if args.nodes is not None:
        if args.nodes < 1:
            p.error("--nodes must be at least 1")
        overrides.append(f"num-nodes={args.nodes}")
    cfg = build_config(args.config, overrides, args.out)  # bad input: @guarded's error line
    faults = [parse_fault(t) for t in args.inject]
    n_nodes, = preflight([cfg])  # the data is read (and checked) before any process starts
    local = n_nodes if args.local_nodes is None else args.local_nodes
    if not 0 <= local <= n_nodes:
        p.error(f"--local-nodes {local} is not in 0..{n_nodes}")
    for f in faults:
        if f.kind == "node" and not 0 <= f.node < local:
            p.error(f"--inject {f.text}: node {f.node} is not a local node (0..{local - 1})")
    cluster = Cluster(cfg, n_nodes, tls, auth, local, args.host, args.port, faults,
                      args.deadline, tuple(args.tls_host),
                      Path(args.superlink_database).resolve() if args.superlink_database
                      else None)
    log.info("run directory: %s; %d nodes; %s", cluster.out, n_nodes,
             "TLS + node authentication" if auth else "TLS" if tls else "insecure")
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        summary = run_cluster(cluster)
    except (ClusterError, NodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    final = " ".join(f"{k} {v:.4f}" for k, v in summary["final"].items())
    log.info("done: %s in %.1fs -> %s", final, summary["timing"]["total_s"],
             cluster.out / "summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
