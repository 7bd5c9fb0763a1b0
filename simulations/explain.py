"""Explain a user's recommendations from a finished (or running) run directory.

    python simulations/explain.py RUN_DIR --user U [--k 10] [--round R] [--fidelity]

Loads the run's ``config.json`` and the latest (or the given round's) checkpoint of the shared
parameters, finds the node hosting user ``U`` and reads that node's own private state file for
that round (``RUN_DIR/nodes/node-K/round-R.npz``, or ``--state-dir``): explanations are computed
where the user's private rows are. Prints the user's top-K items among those it has not
trained on, each with its reasons (kind, weight, text; see :mod:`fedrec.explain`).

A model without towers has no side information to cite: its top-K is still printed, with a
note, and the exit status is 0 (the recommendations are valid, only the reasons are empty).

``--fidelity`` also measures, over the hosting node's users (the first ``--fidelity-users``),
how often removing the top-weighted reason of each kind lowers the score more than removing a
random other one (:func:`fedrec.explain.fidelity`).

Bad input (missing run directory, checkpoint or node state, a user out of range) prints one
``error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedrec import checkpoint, node  # noqa: E402
from fedrec.cli import ArgumentParser, UsageError, error_line, guarded  # noqa: E402
from fedrec.config import Config, ConfigError  # noqa: E402
from fedrec.data.errors import DataError  # noqa: E402
from fedrec.data.partition import num_partitions, partition_users  # noqa: E402
from fedrec.explain import (  # noqa: E402
    KINDS,
    explain_item,
    fidelity,
    recommend,
    supported_kinds,
)
from fedrec.params import check_shared  # noqa: E402

CKPT_DIR = "checkpoints"  # as server.loop writes it (simulations may not need server here)


def load_run(run_dir: Path, round_: int | None, data_dir: str | None):
    """``(cfg, round, shared arrays)`` of a run directory's checkpoint."""
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} not found")
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise UsageError(f"{cfg_path} not found (not a fedrec run directory?)")
    flat = json.loads(cfg_path.read_text())
    if data_dir is not None:
        flat["data-dir"] = data_dir
    cfg = Config.from_flat(flat, source=str(cfg_path))
    files = checkpoint.round_files(run_dir / CKPT_DIR)
    if not files:
        raise UsageError(f"no checkpoint in {run_dir / CKPT_DIR}")
    if round_ is None:
        round_ = max(files)
    elif round_ not in files:
        raise UsageError(f"no checkpoint for round {round_} in {run_dir / CKPT_DIR}; "
                         f"available rounds: {', '.join(map(str, sorted(files)))}")
    ck = checkpoint.load_pickle(files[round_])
    return cfg, round_, ck["arrays"]


def host_node(cfg: Config, split, user: int) -> tuple[int, np.ndarray]:
    """The node hosting ``user`` and that node's users."""
    if not 0 <= user < split.n_users:
        raise UsageError(f"user {user} out of range: the run has {split.n_users} users "
                         f"(0..{split.n_users - 1})")
    n_parts = num_partitions(split.n_users, cfg.fed.users_per_node, cfg.fed.num_nodes)
    pid = next(p for p, us in enumerate(partition_users(split.n_users, n_parts)) if user in us)
    return pid, node.node_users(cfg, split, pid, n_parts)


def node_state(cfg: Config, model, run_dir: Path, state_root: str | None, pid: int,
               round_: int, users: np.ndarray) -> dict:
    """The private rows of node ``pid``'s users at the end of ``round_`` (its own file only)."""
    directory = node.state_dir(cfg, pid, state_root or str(run_dir / "nodes"))
    state = node.load_state(directory, round_)
    if state is None:
        raise UsageError(f"no private state of node {pid} for round {round_}: "
                         f"{directory / f'round-{round_}.npz'} not found")
    want = set(model.private_names)
    if set(state) != want or any(len(t) != len(users) for t in state.values()):
        raise UsageError(f"{directory / f'round-{round_}.npz'} does not hold the private rows "
                         f"{sorted(want)} of node {pid}'s {len(users)} users")
    return state


@guarded
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (launch.py --out)")
    parser.add_argument("--user", type=int, required=True, help="global user id")
    parser.add_argument("--k", type=int, default=10, help="items to recommend (default 10)")
    parser.add_argument("--round", type=int, dest="round_", help="checkpoint round "
                        "(default: the latest)")
    parser.add_argument("--state-dir", help="root of the nodes' private state "
                        "(default: RUN_DIR/nodes)")
    parser.add_argument("--data-dir", help="data directory, if not the run's")
    parser.add_argument("--text", type=int, default=3, help="nearest trained items by text "
                        "to cite (default 3)")
    parser.add_argument("--fidelity", action="store_true",
                        help="also measure explanation fidelity over the node's users")
    parser.add_argument("--fidelity-users", type=int, default=0,
                        help="first N users of the node for --fidelity (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --fidelity's draws")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: scoring one user is many tiny ops)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    try:
        if args.k < 1:
            raise UsageError(f"--k {args.k}: must be >= 1")
        torch.set_num_threads(max(1, args.threads))
        return explain_cli(args)
    except (UsageError, ConfigError, DataError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 2


def explain_cli(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    cfg, round_, shared = load_run(run_dir, args.round_, args.data_dir)
    split = node.load_split(cfg)
    model = node.make_model(cfg, split)
    try:
        check_shared(shared, model, f"checkpoint of round {round_}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    pid, users = host_node(cfg, split, args.user)
    state = node_state(cfg, model, run_dir, args.state_dir, pid, round_, users)
    at = int(np.searchsorted(users, args.user))
    rows = {n: t[at] for n, t in state.items()}
    kinds = supported_kinds(model)
    n_trained = len(split.user_items(args.user))
    print(f"user {args.user} (node {pid}, round {round_}): {n_trained} training items; "
          f"model {model.name}")
    if not kinds:
        print(f"no side information: model '{model.name}' has no towers, its scores come from "
              "the ID embeddings alone; train with e.g. --set towers=kg,text,genre for reasons")
    items, scores = recommend(model, shared, rows, args.user, split, args.k)
    test = split.test_items[args.user] if split.protocol == "ranking" else -1
    for rank, (i, s) in enumerate(zip(items, scores, strict=True), start=1):
        mark = "  [held-out test item]" if i == test else ""
        print(f"{rank:3d}. item {i}  score {s:.4f}{mark}")
        if not kinds:
            continue
        reasons = explain_item(model, shared, rows, args.user, int(i), split, n_text=args.text)
        for r in reasons:
            print(f"       {r.kind:<5} {r.weight:7.3f}  {r.text}")
        if not reasons:
            print("       (no reason: nothing in common with the user's training items)")
    if args.fidelity:
        fidelity_report(args, model, shared, state, users, split, kinds)
    return 0


def fidelity_report(args, model, shared, state, users, split, kinds) -> None:
    n = len(users) if args.fidelity_users <= 0 else min(args.fidelity_users, len(users))
    if not kinds:
        print("fidelity: no reasons to measure (model without towers)")
        return
    for kind in (k for k in KINDS if k in kinds):
        t0 = time.time()
        f = fidelity(model, shared, {k: t[:n] for k, t in state.items()}, users[:n], split,
                     args.k, kind, args.seed, n_text=args.text)
        print(f"fidelity {kind:<5}: share {f.share:.3f} over {f.cases} cases ({f.skipped} "
              f"skipped: < 2 reasons); removing the top reason lowers the score in "
              f"{f.top_lowers:.3f}; mean drop top {f.mean_drop_top:.4f} vs random "
              f"{f.mean_drop_random:.4f}; {n} users, top-{args.k} ({time.time() - t0:.1f}s)")


if __name__ == "__main__":
    sys.exit(main())
