"""A node's SuperExec with warm ClientApp processes: ``flower-superexec`` whose ClientApp
processes are forked from a parent that has already imported their heavy dependencies.

    python simulations/superexec.py [--poll S] --runtime-api-address HOST:PORT --insecure
                                    [--parent-pid PID]   (flower-superexec's arguments)

Flower 1.42 runs every message a node receives in a fresh ``flwr-clientapp`` process: about
2.4 s of imports (torch, flwr's runtime, pandas) before a fraction of a second of work, eight
times a round on four nodes. Started next to a SuperNode in ``--isolation process`` mode, this
SuperExec is Flower's own (same task polling, same plugin, same ``run_clientapp``), with one
change: a ClientApp task runs in a child ``fork()``-ed from this process, where those imports
are done once. Each message still gets its own process (Flower's isolation: nothing a message
leaves in memory reaches the next one); the ClientApp's own code (``clients``, ``fedrec``) is
not pre-imported, so it is loaded from the installed FAB in the child, as Flower would.
Other task types (a ServerApp) start as Flower starts them.

Two more per-message costs go: Flower unpacks and re-verifies the FAB in a temporary directory
for every message even when that FAB is installed (0.6 s); here a FAB whose bytes (SHA-256 of
the whole archive) were verified and installed once on this node is not unpacked again. And
the FAB's modules keep their compiled bytecode (``__pycache__`` in the installed app) even
where ``PYTHONDONTWRITEBYTECODE`` is set, instead of compiling ``fedrec`` for every message.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

#: third-party modules the ClientApp imports (its own code is loaded from the FAB per message)
WARM_MODULES = ("numpy", "torch", "pandas", "flwr.supernode.runtime.run_clientapp",
                "flwr.app", "flwr.clientapp")


class ForkExecutor:
    """Flower executor: ClientApp tasks run in a child forked from this warm process."""

    def __init__(self) -> None:
        from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

        self.cold = SubprocessExecutor()  # every other task type

    def get_eligible_capacity(self, supported_task_types, **kwargs):
        return self.cold.get_eligible_capacity(supported_task_types, **kwargs)

    def wait_for_capacity(self, task_type=None, **kwargs) -> None:
        self.cold.wait_for_capacity(task_type, **kwargs)

    def reconcile(self) -> None:
        """Reap finished ClientApp processes (called every poll; their CPU time then counts
        in this process's children's times)."""
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:  # no child left
            pass

    def close(self) -> None:
        pass

    def launch(self, spec):
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult

        if spec.task_type != TaskType.CLIENT_APP:
            return self.cold.launch(spec)
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            os._exit(_run_child(spec))
        return LaunchResult.accepted()


def _run_child(spec) -> int:
    """The forked ClientApp process: Flower's ``flwr-clientapp`` for one task."""
    code = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        from flwr.supercore.exit import exit_handler

        # the parent's exit handlers (closing its Runtime API client) are not this process's
        exit_handler.registered_exit_handlers.clear()
        exit_handler._lock_handlers = threading.Lock()
        from flwr.supercore.tls import validate_and_resolve_root_certificates
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(
                spec.root_certificates_path, spec.insecure),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
        code = 0
    except SystemExit as exc:  # flwr_exit ends every ClientApp process this way
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 (a child must never return into the parent's loop)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def install_once(install_from_fab):
    """Flower's ``install_from_fab`` for FAB bytes, skipped for bytes already verified and
    installed here (a marker named by their SHA-256 next to the installed apps)."""

    def install(fab_file, install_dir=None, skip_prompt: bool = False):
        if not isinstance(fab_file, bytes):
            return install_from_fab(fab_file, install_dir, skip_prompt)
        from flwr.supercore.utils import get_flwr_home

        base = install_dir.expanduser() if install_dir else get_flwr_home()
        marker = base / "apps" / f".verified-{hashlib.sha256(fab_file).hexdigest()}"
        installed = Path(marker.read_text()) if marker.is_file() else None
        if installed is not None and installed.is_dir():
            return installed
        path = install_from_fab(fab_file, install_dir, skip_prompt)
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}")
        tmp.write_text(str(path))
        tmp.replace(marker)  # atomic: children of one node install concurrently
        return path

    return install


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--poll", help="seconds between two requests for a task (Flower's "
                   "default: 1)")
    args, rest = p.parse_known_args(argv)
    if args.poll:  # read (and checked) by Flower's run_superexec
        os.environ["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = args.poll
    for name in WARM_MODULES:
        importlib.import_module(name)
    sys.dont_write_bytecode = False  # the installed FAB's bytecode is kept between messages
    clientapp = sys.modules["flwr.supernode.runtime.run_clientapp"]
    clientapp.install_from_fab = install_once(clientapp.install_from_fab)
    run_superexec = importlib.import_module("flwr.supercore.superexec.run_superexec")
    run_superexec.get_executor = lambda *args, **kwargs: ForkExecutor()
    from flwr.supercore.cli.flower_superexec import flower_superexec

    sys.argv = ["flower-superexec", *rest]
    flower_superexec()


if __name__ == "__main__":
    main()
