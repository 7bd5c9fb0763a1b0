"""The cluster's node processes: the SuperNode with a short idle poll
(simulations/supernode.py) and the SuperExec forking warm ClientApp processes
(simulations/superexec.py). The slow tests in test_cluster.py run them for real."""

from __future__ import annotations

import inspect
import os
import time
import types
from dataclasses import dataclass

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.exit import exit_handler
from flwr.supernode import start_client_internal

from simulations import superexec, supernode


def test_flower_still_has_the_waits_the_supernode_shortens():
    # Guard: the pinned Flower sleeps exactly these fixed times in its SuperNode loop
    source = inspect.getsource(start_client_internal)
    assert "time.sleep(3)" in source and "time.sleep(0.5)" in source


def test_supernode_waits_last_the_poll_and_other_sleeps_are_untouched():
    # Arrange: a module that sleeps with the time module, as Flower's does
    mod = types.ModuleType("fake_flower")
    mod.time = time

    # Act
    supernode.patch_waits(mod, 0.01)

    # Assert: Flower's fixed waits are cut to the poll, any other sleep keeps its length
    t0 = time.perf_counter()
    mod.time.sleep(3)
    mod.time.sleep(0.5)
    assert time.perf_counter() - t0 < 0.5
    t0 = time.perf_counter()
    mod.time.sleep(0.05)
    assert time.perf_counter() - t0 >= 0.045
    assert mod.time.monotonic is time.monotonic and time.sleep is not mod.time.sleep


def test_supernode_patch_refuses_a_module_that_no_longer_uses_time():
    with pytest.raises(RuntimeError, match="not the one fedrec pins"):
        supernode.patch_waits(types.ModuleType("other"), 0.2)


def test_fab_bytes_are_verified_and_installed_once_per_node(tmp_path):
    # Arrange: Flower's installer, counted
    calls = []

    def install(fab, install_dir=None, skip_prompt=False):
        calls.append(fab)
        path = install_dir / "apps" / f"app-{len(calls)}"
        path.mkdir(parents=True)
        return path

    once = superexec.install_once(install)

    # Act / Assert: the same bytes install once; other bytes install; a removed app again
    first = once(b"fab-1", tmp_path, True)
    assert once(b"fab-1", tmp_path, True) == first and calls == [b"fab-1"]
    once(b"fab-2", tmp_path, True)
    assert calls == [b"fab-1", b"fab-2"]
    first.rmdir()
    once(b"fab-1", tmp_path, True)
    assert calls == [b"fab-1", b"fab-2", b"fab-1"]


@dataclass
class Spec:
    task_type: str
    runtime_api_address: str = "127.0.0.1:1"
    token: str = "t"
    insecure: bool = True
    root_certificates_path: str | None = None
    runtime_dependency_install: bool = False
    parent_pid: int | None = None


def test_clientapp_task_runs_in_a_forked_child_without_the_parents_exit_handlers(
        tmp_path, monkeypatch):
    # Arrange: Flower's run_clientapp replaced by one that reports where it ran and exits as
    # flwr_exit does; the parent has an exit handler of its own
    report = tmp_path / "child.txt"

    def fake_run_clientapp(**kwargs):
        report.write_text(f"{os.getpid()} {len(exit_handler.registered_exit_handlers)} "
                          f"{kwargs['token']}")
        raise SystemExit(0)

    import flwr.supernode.runtime.run_clientapp as rc
    monkeypatch.setattr(rc, "run_clientapp", fake_run_clientapp)
    exit_handler.add_exit_handler(lambda: None)
    n_parent = len(exit_handler.registered_exit_handlers)
    try:
        executor = superexec.ForkExecutor()

        # Act
        result = executor.launch(Spec(TaskType.CLIENT_APP, token="tok"))
        deadline = time.monotonic() + 30
        while (not report.exists() or len(report.read_text().split()) < 3) \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        child = int(report.read_text().split()[0])
        reaped = False
        while not reaped and time.monotonic() < deadline:  # the child exits after its report
            executor.reconcile()
            try:  # WNOWAIT: look without reaping, so only reconcile can have reaped it; this pid
                # only (the worker may have other children, e.g. multiprocessing's tracker)
                os.waitid(os.P_PID, child, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                time.sleep(0.01)
            except ChildProcessError:
                reaped = True

        # Assert: accepted; ran in another process, with none of the parent's handlers
        assert result.status == "accepted"
        pid, n_child, token = report.read_text().split()
        assert int(pid) != os.getpid() and n_child == "0" and token == "tok"
        assert len(exit_handler.registered_exit_handlers) == n_parent
        assert reaped, "reconcile never reaped the finished child"
    finally:
        exit_handler.registered_exit_handlers.pop()
