"""Processes a script starts, and only those: start with a log file, find their descendants,
stop them all by PID (Linux ``/proc``; never by name).

Flower's SuperLink and SuperNodes start ``flower-superexec`` (since Flower PR #7534 the
SuperLink's in a session of its own), which starts ``flwr-serverapp`` / ``flwr-clientapp``: a
process group or session kill misses them, a walk of the parent links does not.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("fedrec.processes")


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        out[int(entry)] = int(fields[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (children first)."""
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found.extend(kids)
        frontier.extend(kids)
    return found


def _stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()  # fields after "pid (comm)"


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a recycled PID from the process seen)."""
    fields = _stat(pid)
    return fields[19] if fields else None


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and of its children it has waited for."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def alive(pid: int, started: str | None = None) -> bool:
    """True when ``pid`` exists, is not a zombie and (if given) started at ``started``."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    return started is None or fields[19] == started


def stop(pids: Sequence[int], grace: float = 5.0, crash: bool = False) -> None:
    """SIGTERM ``pids``, wait up to ``grace`` seconds, SIGKILL what is left (``crash``: SIGKILL
    at once)."""
    steps = [(signal.SIGKILL, 2.0)] if crash else [(signal.SIGTERM, grace), (signal.SIGKILL, 2.0)]
    for sig, wait in steps:
        live = [p for p in pids if alive(p)]
        for p in live:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while time.monotonic() < end and any(alive(p) for p in live):
            time.sleep(0.05)


class ProcessGroup:
    """Processes started by one script; :meth:`close` stops them and all their descendants."""

    def __init__(self, log_dir: Path, env: dict[str, str], cwd: Path):
        self.log_dir, self.env, self.cwd = log_dir, env, cwd
        self.procs: dict[str, subprocess.Popen] = {}
        self.seen: dict[int, str | None] = {}  # every PID found under ours -> its start time
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen:
        """Start ``argv`` with stdout+stderr in ``log_dir/name.log`` (appended)."""
        fh = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (lives with the process)
        proc = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, cwd=self.cwd,
                                env=self.env, start_new_session=True)
        fh.close()
        self.procs[name] = proc
        self.seen[proc.pid] = start_time(proc.pid)
        log.debug("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
        return proc

    def tree(self, name: str) -> list[int]:
        """``name``'s process and its living descendants."""
        proc = self.procs[name]
        pids = [proc.pid, *descendants(proc.pid)]
        for p in pids:
            self.seen.setdefault(p, start_time(p))
        return [p for p in pids if alive(p, self.seen[p])]

    def kill(self, name: str) -> list[int]:
        """Crash ``name`` and its descendants (SIGKILL)."""
        pids = self.tree(name)
        stop(pids, crash=True)
        self.procs[name].wait()
        return pids

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process started here, with its living descendants and
        the children they waited for (or not yet: zombies count)."""
        return {name: sum(cpu_seconds(p) for p in [proc.pid, *descendants(proc.pid)])
                for name, proc in self.procs.items()}

    def close(self) -> list[int]:
        """Stop every process started here and every descendant found; return PIDs still
        alive afterwards (empty on success)."""
        for name in self.procs:
            self.tree(name)
        stop([p for p, t in self.seen.items() if alive(p, t)])
        for proc in self.procs.values():
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        return [p for p, t in self.seen.items() if alive(p, t)]
