"""Speed benchmark: central epoch vs one federated round (vectorised, per-user, Flower).

    python benchmarks/speed.py [--data-dir DIR] [--out PATH] [--quick] [--sections a,b,c,d,e]
                               [--per-user-subset N] [--flower-subset N]

Sections (all timed in this one run, so the ratios are measured under the same load):

a. one central epoch of MF (dim 32) on the ML-1M NCF training ratings, 4 negatives per positive,
   batch size 256, Adam (``train_central``);
b. one full-participation federated round on ML-1M (1 local epoch, 4 negatives per positive,
   per-user batch size 64, Adam: the ``TrainConfig`` defaults) with vectorised cohorts in one
   process (``node.train_round`` over all users) and in a Flower Ray simulation at the default
   cohort size, with the textbook per-user loop (``train_user``, measured on a random subset and
   scaled by its share of training examples) and with one Flower client per user
   (``users-per-node=1``, measured on a synthetic stand-in with ML-1M's items and mean user size
   and scaled linearly by user count);
c. scaling of the vectorised round on synthetic data (1k … 100k users), each size in a fresh
   subprocess with its peak RSS;
d. (a) and (b, vectorised) on CUDA when available;
e. the cost of sample-level DP-SGD: one local epoch of a random subset of ML-1M users with
   per-user DP-SGD (``train_cohort_dpsgd``: per-unit clipping, Poisson batches, lazy noise)
   against the same users' non-private SGD epoch (``train_cohort``), per user step;
f. the cost of towers: the full-participation round of (b) with ``towers = kg,text,genre``
   (KGCN tower, 8 neighbours, 1 hop, on the MKR KG; MiniLM title vectors; genres) against the
   ID-only round, both timed in this run.

Prints a table and writes ``speed.json`` (``--out``). ``--quick`` swaps ML-1M for tiny synthetic
data (smoke test). Flower simulations run in subprocesses (fresh Ray instance each).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedrec import node  # noqa: E402
from fedrec.cli import ArgumentParser, guarded  # noqa: E402
from fedrec.config import Config  # noqa: E402
from fedrec.data.schema import SplitData  # noqa: E402
from fedrec.params import to_numpy, to_torch  # noqa: E402
from fedrec.train.central import train_central  # noqa: E402
from fedrec.train.reference import train_user  # noqa: E402

log = logging.getLogger("fedrec.bench.speed")

SEED = 0
SECTIONS = ("a", "b", "c", "d", "e", "f")
TOWERS = "kg,text,genre"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "speed.json"
CENTRAL_BATCH = 256
DIM = 32
NUM_NEGATIVES = 4
EVAL_EVERY_NEVER = 1_000_000
GB = 1e9

# Targets of the issue: (key, description, threshold text).
TARGET_VEC_VS_CENTRAL = 2.0
TARGET_FLOWER_SPEEDUP = 50.0
TARGET_RSS_GB = 4.0
TARGET_GPU_ROUND_S = 1.0
TARGET_DPSGD_STEP_RATIO = 5.0
TARGET_TOWERS_ROUND_RATIO = 3.0


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one benchmark mode.

    Attributes
    ----------
    data : dict
        Flat config keys of the (a)/(b) dataset (ML-1M NCF, or tiny synthetic in quick mode).
    scaling_users : tuple of int
        Synthetic user counts of section (c).
    scaling_items, scaling_interactions : int
        Synthetic items and mean interactions per user of section (c).
    per_user_subset : int
        Users timed with the per-user loop (scaled by their share of training examples).
    flower_subset : int
        Users (= Flower clients) of the one-client-per-user simulation; 0 skips Flower.
    dp_subset : int
        Users of section (e) (DP-SGD against non-private SGD).
    cohort_sim_rounds, per_user_sim_rounds : int
        Rounds of the Flower simulations at the default cohort size and with one client per
        user. Round 2 is reported: round 1 carries Ray/actor start-up, and with 3 rounds it does
        not carry Flower's final federated evaluation (which always runs on the last round).
    repeats : int
        Best-of repeats where one run is short (see ``budget_s``).
    budget_s : float
        Stop repeating once the time spent on a measurement exceeds this.
    optimizer : str
        Local optimiser of the federated rounds (``""``: the ``TrainConfig`` default). The
        central epoch uses ``torch.optim.Adam`` unless this is ``sgd``.
    """

    data: dict[str, Any]
    scaling_users: tuple[int, ...]
    scaling_items: int
    scaling_interactions: int
    per_user_subset: int
    flower_subset: int
    dp_subset: int = 1000
    cohort_sim_rounds: int = 3
    per_user_sim_rounds: int = 3
    repeats: int = 3
    budget_s: float = 20.0
    optimizer: str = ""


FULL = Sizes(
    data={"dataset": "ml-1m", "split": "ncf"},
    scaling_users=(1_000, 6_000, 60_000, 100_000),
    scaling_items=2_000,
    scaling_interactions=40,
    per_user_subset=200,
    flower_subset=64,
)
QUICK = Sizes(
    data={
        "dataset": "synthetic",
        "split": "loo",
        "synthetic-users": 120,
        "synthetic-items": 150,
        "synthetic-interactions": 15,
        "test-negatives": 49,
    },
    scaling_users=(100, 300),
    scaling_items=150,
    scaling_interactions=15,
    per_user_subset=20,
    flower_subset=0,
    dp_subset=60,
    repeats=2,
    budget_s=2.0,
)


# --------------------------------------------------------------------------- helpers
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], repeats: int, budget_s: float, device: str = "cpu") -> dict:
    """Run ``fn`` up to ``repeats`` times (fewer when it is slow) and keep the best time.

    Returns
    -------
    dict
        ``{"seconds": best, "runs": [...], "stat": "best of n"}``.
    """
    runs: list[float] = []
    while True:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        runs.append(time.perf_counter() - t0)
        if len(runs) >= repeats or sum(runs) + runs[-1] > budget_s:
            break
    return {"seconds": min(runs), "runs": runs, "stat": f"best of {len(runs)}"}


def common_flat(sizes: Sizes) -> dict[str, Any]:
    """Settings shared by every measurement: MF dim 32, 4 negatives, 1 local epoch, all users."""
    flat: dict[str, Any] = {
        "model": "mf",
        "dim": DIM,
        "num-negatives": NUM_NEGATIVES,
        "local-epochs": 1,
        "fraction-train": 1.0,
        "seed": SEED,
        "device": "cpu",
    }
    if sizes.optimizer:
        flat["optimizer"] = sizes.optimizer
    return flat


def bench_config(sizes: Sizes, data_dir: str, **flat: Any) -> Config:
    """The benchmark's config: ``sizes``' dataset and ``common_flat``, then ``flat``."""
    base: dict[str, Any] = {**sizes.data, **common_flat(sizes)}
    if sizes.data.get("dataset") != "synthetic":
        base["data-dir"] = data_dir
    base.update(flat)
    return Config.from_flat(base, source="benchmarks/speed.py")


def _state_rows(state: dict[str, torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
    return {n: t[lo:hi] for n, t in state.items()}


def _peak_rss_gb() -> float:
    """Peak resident set size of this process (Linux: ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark (``VmHWM``) so a later phase can be measured alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _vm_hwm_gb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GB
    except OSError:
        return None
    return None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


# --------------------------------------------------------------------------- workers
_HOP = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _run_worker(kind: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run ``_worker_<kind>(args)`` in a fresh Python process and return its JSON result."""
    with tempfile.TemporaryDirectory(prefix="fedrec-speed-") as tmp:
        out = Path(tmp) / "result.json"
        # Start the worker through a tiny intermediate interpreter: Linux folds the RSS of the
        # process calling exec into the new program's ru_maxrss, so a worker exec'd directly
        # from this (large) process would report our peak RSS as its own.
        cmd = [
            sys.executable, "-c", _HOP, sys.executable, str(Path(__file__).resolve()),
            "--worker", kind,
            "--worker-args", json.dumps(args), "--worker-out", str(out),
            "--threads", str(torch.get_num_threads()),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.setdefault("RAY_ADDRESS", "local")  # never attach to someone else's Ray cluster
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, timeout=timeout_s, check=False, cwd=str(ROOT))
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"worker '{kind}' failed with exit code {proc.returncode}")
        result = json.loads(out.read_text())
        result["subprocess_s"] = time.perf_counter() - t0
        return result


def _worker_scale(args: dict[str, Any]) -> dict[str, Any]:
    """One full-participation vectorised round on synthetic data; peak RSS of this process."""
    sizes = replace(QUICK if args["quick"] else FULL, optimizer=args.get("optimizer", ""))
    cfg = bench_config(
        sizes, "", dataset="synthetic", split="loo", **{
            "synthetic-users": args["users"],
            "synthetic-items": args["items"],
            "synthetic-interactions": args["interactions"],
            "device": args.get("device", "cpu"),
        },
    )
    t0 = time.perf_counter()
    split = node.load_split(cfg)
    model = node.make_model(cfg, split)
    shared = to_numpy(model.init_shared(SEED))
    users = np.arange(split.n_users, dtype=np.int64)
    state = node.initial_state(cfg, users)
    load_s = time.perf_counter() - t0
    rss_loaded = _peak_rss_gb()
    warm = min(8, split.n_users)
    node.train_round(cfg, 1, shared, users[:warm], _state_rows(state, 0, warm))
    reset = _reset_peak_rss()
    t = timed(lambda: node.train_round(cfg, 1, shared, users, state), 1, 0.0)
    return {
        "users": split.n_users,
        "items": split.n_items,
        "train_positives": split.n_train,
        "examples": split.n_train * (1 + cfg.train.num_negatives),
        "seconds": t["seconds"],
        "data_s": load_s,
        "rss_after_data_gb": rss_loaded,
        "peak_rss_gb": _peak_rss_gb(),
        "round_peak_rss_gb": _vm_hwm_gb() if reset else None,
        "max_examples_per_chunk": cfg.train.max_examples_per_chunk,
    }


def _worker_flower(args: dict[str, Any]) -> dict[str, Any]:
    """A Flower Ray simulation via ``simulations.launch.run``; per-round seconds from metrics."""
    from simulations.launch import build_config, run

    out = tempfile.mkdtemp(prefix="fedrec-speed-sim-")
    try:
        overrides = [f"{k}={v}" for k, v in args["flat"].items()]
        cfg = build_config(None, overrides, out)
        t0 = time.perf_counter()
        summary = run(cfg, args.get("cpus"))
        wall = time.perf_counter() - t0
        with open(Path(out) / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        round_s = [float(r["round_s"]) for r in rows]
        report = int(args["report_round"])
        return {
            "round_s": round_s,
            "seconds": round_s[report - 1],
            "reported_round": report,
            "rounds": len(rows),
            "nodes": summary.get("nodes"),
            "users": summary["dataset"]["users"],
            "train_positives": summary["dataset"]["train_interactions"],
            "wall_s": wall,
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "scale": _worker_scale,
    "flower": _worker_flower,
}


# --------------------------------------------------------------------------- sections
def _warm_central(cfg: Config) -> None:
    """A tiny central epoch (first-call overhead: allocator, kernels, autograd)."""
    tiny = Config.from_flat({
        **cfg.to_flat(), "dataset": "synthetic", "split": "loo", "synthetic-users": 30,
        "synthetic-items": 60, "synthetic-interactions": 10, "data-dir": "",
        "test-negatives": 9,
    })
    split = node.load_split(tiny)
    train_central(node.make_model(tiny, split), split, tiny.train, 1, SEED)


def section_central(sizes: Sizes, data_dir: str, device: str) -> dict[str, Any]:
    """(a) One central epoch, batch size 256, Adam, 4 negatives per positive."""
    fed_opt = bench_config(sizes, data_dir).train.optimizer
    cfg = bench_config(sizes, data_dir, **{
        "batch-size": CENTRAL_BATCH, "device": device,
        # train_central knows torch.optim.Adam and SGD only
        "optimizer": "sgd" if fed_opt == "sgd" else "adam",
    })
    split = node.load_split(cfg)
    model = node.make_model(cfg, split)
    _warm_central(cfg)
    t = timed(lambda: train_central(model, split, cfg.train, 1, SEED), sizes.repeats,
              sizes.budget_s, device)
    log.info("(a) central epoch on %s: %.2fs", device, t["seconds"])
    return {
        **t,
        "device": device,
        "dataset": split.name,
        "users": split.n_users,
        "items": split.n_items,
        "train_positives": split.n_train,
        "examples": split.n_train * (1 + NUM_NEGATIVES),
        "batch_size": CENTRAL_BATCH,
        "optimizer": cfg.train.optimizer,
        "lr": cfg.train.lr,
        "note": (f"torch.optim.{'SGD' if cfg.train.optimizer == 'sgd' else 'Adam'}; includes "
                 "the epoch's negative sampling (as a round does)"),
    }


def _fed_setup(
    sizes: Sizes, data_dir: str, device: str
) -> tuple[Config, SplitData, dict[str, np.ndarray], np.ndarray, dict[str, torch.Tensor]]:
    cfg = bench_config(sizes, data_dir, device=device)
    split = node.load_split(cfg)
    model = node.make_model(cfg, split)
    shared = to_numpy(model.init_shared(SEED))
    users = np.arange(split.n_users, dtype=np.int64)
    return cfg, split, shared, users, node.initial_state(cfg, users)


def section_vectorised(sizes: Sizes, data_dir: str, device: str) -> dict[str, Any]:
    """(b) One full-participation round of all users through ``node.train_round``."""
    cfg, split, shared, users, state = _fed_setup(sizes, data_dir, device)
    warm = min(16, split.n_users)
    node.train_round(cfg, 1, shared, users[:warm], _state_rows(state, 0, warm))
    t = timed(lambda: node.train_round(cfg, 1, shared, users, state), sizes.repeats,
              sizes.budget_s, device)
    log.info("(b) vectorised round on %s: %.2fs", device, t["seconds"])
    return {
        **t,
        "device": device,
        "users": split.n_users,
        "train_positives": split.n_train,
        "batch_size": cfg.train.batch_size,
        "optimizer": cfg.train.optimizer,
        "max_examples_per_chunk": cfg.train.max_examples_per_chunk,
        "note": f"all users in one node.train_round call, one process, {cfg.train.optimizer}",
    }


def section_towers(sizes: Sizes, data_dir: str) -> dict[str, Any]:
    """(f) The (b) round with ``towers = kg,text,genre`` against the ID-only round."""
    out: dict[str, Any] = {"towers": TOWERS}
    for key, flat in (("id_only", {}), ("towers", {"towers": TOWERS})):
        cfg = bench_config(sizes, data_dir, **flat)
        split = node.load_split(cfg)
        model = node.make_model(cfg, split)
        shared = to_numpy(model.init_shared(SEED))
        users = np.arange(split.n_users, dtype=np.int64)
        state = node.initial_state(cfg, users)
        warm = min(16, split.n_users)
        node.train_round(cfg, 1, shared, users[:warm], _state_rows(state, 0, warm))
        out[key] = timed(lambda cfg=cfg, shared=shared, users=users, state=state:
                         node.train_round(cfg, 1, shared, users, state),
                         sizes.repeats, sizes.budget_s)
        log.info("(f) round %s: %.2fs", key, out[key]["seconds"])
    out["ratio"] = _ratio(out["towers"]["seconds"], out["id_only"]["seconds"])
    return out


def section_per_user(sizes: Sizes, data_dir: str, subset: int) -> dict[str, Any]:
    """(b) The textbook per-user loop on a random subset, scaled by its share of examples."""
    cfg, split, shared, users, state = _fed_setup(sizes, data_dir, "cpu")
    model = node.make_model(cfg, split)
    shared_t = to_torch(shared)
    n_pos = np.diff(split.train_indptr)
    rng = np.random.default_rng(SEED)
    pick = np.sort(rng.choice(split.n_users, size=min(subset, split.n_users), replace=False))

    def one(u: int) -> None:
        train_user(model, shared_t, _state_rows(state, u, u + 1), u, split, cfg.train, SEED, 1)

    one(int(pick[0]))  # warm-up
    t0 = time.perf_counter()
    for u in pick:
        one(int(u))
    measured = time.perf_counter() - t0
    share = float(n_pos[pick].sum() / n_pos.sum())
    log.info("(b) per-user loop: %d users in %.2fs (%.2f%% of examples)", len(pick), measured,
             100 * share)
    return {
        "seconds": measured / share,
        "measured_s": measured,
        "subset_users": int(len(pick)),
        "subset_train_positives": int(n_pos[pick].sum()),
        "example_share": share,
        "seconds_if_scaled_by_users": measured * split.n_users / len(pick),
        "stat": "one pass over the subset",
        "note": (f"train_user on {len(pick)} random users (seed {SEED}), scaled by their share "
                 f"of training examples ({100 * share:.2f}%)"),
    }


def section_flower_cohort(sizes: Sizes, data_dir: str, timeout_s: float) -> dict[str, Any]:
    """(b) A Flower Ray simulation at the default cohort size; seconds of round 2."""
    cfg = bench_config(sizes, data_dir)
    flat = {
        **sizes.data,
        **({"data-dir": data_dir} if sizes.data.get("dataset") != "synthetic" else {}),
        **common_flat(sizes),
        "num-rounds": sizes.cohort_sim_rounds, "eval-every": EVAL_EVERY_NEVER, "resume": False,
    }
    res = _run_worker("flower", {"flat": flat, "report_round": 2}, timeout_s)
    final_eval = res["reported_round"] == res["rounds"]
    log.info("(b) Flower simulation, %s nodes: round 2 %.2fs", res["nodes"], res["seconds"])
    return {
        **res,
        "users_per_node": cfg.fed.users_per_node,
        "stat": "round 2 of one run",
        "note": (f"Ray simulation, users-per-node={cfg.fed.users_per_node} "
                 f"({res['nodes']} nodes), round 2 of {res['rounds']}"
                 + ("; includes Flower's final federated evaluation" if final_eval else "")),
    }


def section_flower_per_user(
    sizes: Sizes, split: SplitData, subset: int, timeout_s: float
) -> dict[str, Any]:
    """(b) One Flower client per user on a synthetic stand-in, scaled linearly by user count."""
    mean_pos = split.n_train / split.n_users
    flat = {
        "dataset": "synthetic", "split": "loo", "synthetic-users": subset,
        "synthetic-items": split.n_items,
        "synthetic-interactions": max(2, round(mean_pos + 1)),  # + the held-out test item
        **common_flat(sizes),
        "test-negatives": sizes.data.get("test-negatives", 99),
        "users-per-node": 1,
        "num-rounds": sizes.per_user_sim_rounds, "eval-every": EVAL_EVERY_NEVER,
        "resume": False,
    }
    res = _run_worker("flower", {"flat": flat, "report_round": 2}, timeout_s)
    scale = split.n_users / res["users"]
    sub_mean = res["train_positives"] / res["users"]
    log.info("(b) Flower, one client per user: %d clients, round 2 %.2fs", res["users"],
             res["seconds"])
    return {
        **res,
        "measured_s": res["seconds"],
        "seconds": res["seconds"] * scale,
        "scale": scale,
        "subset_mean_train_positives": sub_mean,
        "target_mean_train_positives": mean_pos,
        "seconds_if_scaled_by_examples": res["seconds"] * split.n_train / res["train_positives"],
        "stat": "round 2 of one run, scaled",
        "note": (f"users-per-node=1 Ray simulation of {res['users']} synthetic users "
                 f"({split.n_items} items, {sub_mean:.0f} train positives/user vs "
                 f"{mean_pos:.0f}), round 2 x {scale:.1f} (linear in user count; "
                 f"{res['seconds'] * split.n_train / res['train_positives']:.1f}s if scaled "
                 "by examples)"),
    }


def section_scaling(sizes: Sizes, timeout_s: float) -> list[dict[str, Any]]:
    """(c) Vectorised full-participation rounds on synthetic data, one subprocess per size."""
    out = []
    for n in sizes.scaling_users:
        res = _run_worker("scale", {
            "quick": sizes.data == QUICK.data, "optimizer": sizes.optimizer,
            "users": n, "items": sizes.scaling_items,
            "interactions": sizes.scaling_interactions,
        }, timeout_s)
        log.info("(c) %d users: %.2fs, peak RSS %.2f GB", n, res["seconds"], res["peak_rss_gb"])
        out.append(res)
    return out


def section_dpsgd(sizes: Sizes, data_dir: str) -> dict[str, Any]:
    """(e) One local epoch with per-user DP-SGD against plain SGD, same users, same data.

    DP-SGD takes ``round(n_u / B)`` Poisson-sampled steps per epoch where the plain trainer
    takes ``ceil(n_u / B)`` fixed batches, so the ratio is reported per user step (a user's
    batch) and per epoch.
    """
    from fedrec.privacy.sample_level import per_user_rates
    from fedrec.train.cohort import train_cohort
    from fedrec.train.dpsgd import train_cohort_dpsgd
    from fedrec.train.examples import examples_per_positive

    cfg = bench_config(sizes, data_dir, optimizer="sgd", lr=0.05)
    split = node.load_split(cfg)
    model = node.make_model(cfg, split)
    shared = model.init_shared(SEED)
    rng = np.random.default_rng(SEED)
    users = np.sort(rng.choice(split.n_users, size=min(sizes.dp_subset, split.n_users),
                               replace=False))
    state = model.init_users(users, SEED)
    tc = cfg.train
    n_pos = np.diff(split.train_indptr)[users]
    n_ex = n_pos * examples_per_positive(tc.loss, tc.num_negatives)
    plain_steps = int(np.ceil(n_ex / tc.batch_size).sum())
    dp_steps = int(per_user_rates(n_pos, tc)[1].sum())
    warm = users[:8]
    train_cohort(model, shared, _state_rows(state, 0, 8), warm, split, tc, SEED, 1)
    train_cohort_dpsgd(model, shared, _state_rows(state, 0, 8), warm, split, tc, SEED, 1,
                       noise_multiplier=1.0, clip_norm=1.0, noise_key=SEED)
    plain = timed(lambda: train_cohort(model, shared, state, users, split, tc, SEED, 1),
                  sizes.repeats, sizes.budget_s)
    dp = timed(lambda: train_cohort_dpsgd(model, shared, state, users, split, tc, SEED, 1,
                                          noise_multiplier=1.0, clip_norm=1.0,
                                          noise_key=SEED),
               sizes.repeats, sizes.budget_s)
    per_step = (dp["seconds"] / dp_steps) / (plain["seconds"] / plain_steps)
    log.info("(e) DP-SGD epoch %.2fs (%d user steps) vs SGD %.2fs (%d): %.2fx per step",
             dp["seconds"], dp_steps, plain["seconds"], plain_steps, per_step)
    return {
        "users": int(len(users)),
        "train_positives": int(n_pos.sum()),
        "plain": {**plain, "user_steps": plain_steps},
        "dpsgd": {**dp, "user_steps": dp_steps, "noise_multiplier": 1.0, "clip_norm": 1.0},
        "ratio_per_step": per_step,
        "ratio_per_epoch": dp["seconds"] / plain["seconds"],
        "note": (f"{len(users)} random users (seed {SEED}), 1 local epoch, SGD, batch "
                 f"{tc.batch_size}; train_cohort_dpsgd vs train_cohort"),
    }


# --------------------------------------------------------------------------- report
def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS / MISS / N/A for each target of the issue."""
    fed = res.get("federated", {})
    central = res.get("central", {}).get("seconds")

    def row(name: str, value: float | None, threshold: str, ok: bool | None, how: str) -> dict:
        status = "N/A" if value is None or ok is None else ("PASS" if ok else "MISS")
        return {"target": name, "value": value, "threshold": threshold, "status": status,
                "how": how}

    vec = fed.get("vectorised", {}).get("seconds")
    r1 = _ratio(vec, central)
    targets = [row("CPU vectorised round / central epoch", r1, f"<= {TARGET_VEC_VS_CENTRAL:g}",
                   None if r1 is None else r1 <= TARGET_VEC_VS_CENTRAL,
                   "(b) vectorised in-process / (a)")]
    fpu = fed.get("flower_per_user", {}).get("seconds")
    cohort = fed.get("flower_cohort", {}).get("seconds")
    base, how = (cohort, "Flower per-user / Flower cohort sim (round 2 each)")
    if base is None:
        base, how = vec, "Flower per-user / vectorised in-process"
    r2 = _ratio(fpu, base)
    targets.append(row("speed-up over one Flower client per user", r2,
                       f">= {TARGET_FLOWER_SPEEDUP:g}",
                       None if r2 is None else r2 >= TARGET_FLOWER_SPEEDUP, how))
    big = [s for s in res.get("scaling", []) if s["users"] >= 100_000]
    rss = big[0]["peak_rss_gb"] if big else None
    targets.append(row("100k synthetic users peak RSS (GB)", rss, f"<= {TARGET_RSS_GB:g}",
                       None if rss is None else rss <= TARGET_RSS_GB,
                       "(c) ru_maxrss of the 100k-user subprocess"))
    gpu = res.get("cuda", {}).get("vectorised", {}).get("seconds")
    targets.append(row("GPU full round (s)", gpu, f"<= {TARGET_GPU_ROUND_S:g}",
                       None if gpu is None else gpu <= TARGET_GPU_ROUND_S,
                       "(d) vectorised round on CUDA"))
    dps = res.get("dpsgd", {}).get("ratio_per_step")
    targets.append(row("DP-SGD step / non-private step", dps, f"<= {TARGET_DPSGD_STEP_RATIO:g}",
                       None if dps is None else dps <= TARGET_DPSGD_STEP_RATIO,
                       "(e) seconds per user step, DP-SGD / SGD"))
    tow = res.get("towers", {}).get("ratio")
    targets.append(row(f"round with towers {TOWERS} / ID-only round", tow,
                       f"<= {TARGET_TOWERS_ROUND_RATIO:g}",
                       None if tow is None else tow <= TARGET_TOWERS_ROUND_RATIO,
                       "(f) vectorised rounds in this run"))
    return targets


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def render(res: dict[str, Any]) -> str:
    """The printed table."""
    central = res.get("central", {}).get("seconds")
    lines = [f"fedrec speed benchmark ({'quick' if res['meta']['quick'] else 'full'}; "
             f"torch {res['meta']['torch']}, {res['meta']['threads']} threads, "
             f"{res['meta']['cpus']} CPUs; local optimiser "
             f"{res['meta']['federated_optimizer']})", ""]
    head = f"{'':3} {'measurement':44} {'seconds':>10} {'x central':>10}  note"
    lines += [head, "-" * len(head)]

    def add(sec: str, name: str, d: dict | None, ref: float | None = central) -> None:
        if not d:
            return
        r = _ratio(d.get("seconds"), ref)
        lines.append(f"{sec:3} {name:44} {_fmt(d.get('seconds')):>10} {_fmt(r):>10}  "
                     f"{d.get('note', d.get('stat', ''))}")

    c = res.get("central")
    if c:
        add("a", f"central epoch ({c['dataset']}, batch {c['batch_size']})", c)
    fed = res.get("federated", {})
    add("b", "round: vectorised, in-process", fed.get("vectorised"))
    add("b", "round: vectorised, Flower sim (round 2)", fed.get("flower_cohort"))
    add("b", "round: per-user loop (train_user)", fed.get("per_user"))
    add("b", "round: one Flower client per user", fed.get("flower_per_user"))
    for k, v in fed.get("skipped", {}).items():
        lines.append(f"{'b':3} {k:44} {'skipped':>10} {'':>10}  {v}")
    sp = fed.get("speedups", {})
    if sp:
        lines.append("")
        lines.append("speed-ups of the vectorised round: " + ", ".join(
            f"{k} {_fmt(v, '.1f')}x" for k, v in sp.items() if v is not None))
    scaling = res.get("scaling")
    if scaling:
        lines += ["", f"{'c':3} {'synthetic users':>15} {'items':>6} {'positives':>10} "
                  f"{'round s':>9} {'peak RSS GB':>12} {'round-only GB':>14} {'data GB':>8}"]
        for s in scaling:
            lines.append(f"{'':3} {s['users']:>15,} {s['items']:>6,} {s['train_positives']:>10,} "
                         f"{_fmt(s['seconds']):>9} {_fmt(s['peak_rss_gb']):>12} "
                         f"{_fmt(s.get('round_peak_rss_gb')):>14} "
                         f"{_fmt(s['rss_after_data_gb']):>8}")
    elif res.get("scaling_skipped"):
        lines.append(f"c   skipped: {res['scaling_skipped']}")
    cu = res.get("cuda", {})
    if cu.get("skipped"):
        lines += ["", f"d   CUDA: skipped ({cu['skipped']})"]
    elif cu:
        lines += [""]
        cc = cu.get("central", {}).get("seconds")
        add("d", "central epoch (CUDA)", cu.get("central"), cc)
        add("d", "round: vectorised, in-process (CUDA)", cu.get("vectorised"), cc)
    dps = res.get("dpsgd")
    if dps:
        lines += ["", f"{'e':3} {'DP-SGD epoch (' + str(dps['users']) + ' users)':44} "
                  f"{_fmt(dps['dpsgd']['seconds']):>10} {'':>10}  "
                  f"{dps['dpsgd']['user_steps']:,} user steps; {dps['note']}",
                  f"{'e':3} {'non-private SGD epoch (same users)':44} "
                  f"{_fmt(dps['plain']['seconds']):>10} {'':>10}  "
                  f"{dps['plain']['user_steps']:,} user steps; per step DP/plain "
                  f"{_fmt(dps['ratio_per_step'])}x, per epoch {_fmt(dps['ratio_per_epoch'])}x"]
    lines += ["", f"{'target':44} {'value':>10} {'threshold':>10}  status  (how)"]
    for t in res["targets"]:
        lines.append(f"{t['target']:44} {_fmt(t['value']):>10} {t['threshold']:>10}  "
                     f"{t['status']:6}  ({t['how']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected sections and return the result dict (also the JSON content)."""
    sizes = replace(QUICK if args.quick else FULL, optimizer=args.optimizer or "")
    per_user_subset = args.per_user_subset or sizes.per_user_subset
    flower_subset = sizes.flower_subset if args.flower_subset is None else args.flower_subset
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; known: {','.join(SECTIONS)}")
    torch.manual_seed(SEED)
    res: dict[str, Any] = {
        "meta": {
            "quick": bool(args.quick),
            "sections": sorted(sections),
            "seed": SEED,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "host": platform.node(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "sizes": asdict(sizes),
            "model": f"mf dim {DIM}",
            "num_negatives": NUM_NEGATIVES,
            "local_epochs": 1,
            "federated_optimizer": bench_config(sizes, args.data_dir).train.optimizer,
        }
    }
    t_all = time.perf_counter()
    timeout = args.worker_timeout
    if "a" in sections:
        res["central"] = section_central(sizes, args.data_dir, "cpu")
    if "b" in sections:
        fed: dict[str, Any] = {"skipped": {}}
        fed["vectorised"] = section_vectorised(sizes, args.data_dir, "cpu")
        cfg = bench_config(sizes, args.data_dir)
        split = node.load_split(cfg)
        fed["per_user"] = section_per_user(sizes, args.data_dir, per_user_subset)
        if flower_subset > 0:
            fed["flower_per_user"] = section_flower_per_user(sizes, split, flower_subset, timeout)
            fed["flower_cohort"] = section_flower_cohort(sizes, args.data_dir, timeout)
        else:
            fed["skipped"]["round: Flower (both)"] = "--flower-subset 0"
        vec = fed["vectorised"]["seconds"]
        central = res.get("central", {}).get("seconds")
        for k in ("vectorised", "flower_cohort", "per_user", "flower_per_user"):
            if k in fed:
                fed[k]["ratio_to_central"] = _ratio(fed[k]["seconds"], central)
        fed["speedups"] = {
            "per-user loop / vectorised": _ratio(fed["per_user"]["seconds"], vec),
            "Flower per-user / vectorised": _ratio(
                fed.get("flower_per_user", {}).get("seconds"), vec),
            "Flower per-user / Flower cohort": _ratio(
                fed.get("flower_per_user", {}).get("seconds"),
                fed.get("flower_cohort", {}).get("seconds")),
        }
        res["federated"] = fed
    if "c" in sections:
        res["scaling"] = section_scaling(sizes, timeout)
    if "d" in sections:
        if torch.cuda.is_available():
            cu: dict[str, Any] = {"device_name": torch.cuda.get_device_name(0)}
            cu["central"] = section_central(sizes, args.data_dir, "cuda")
            cu["vectorised"] = section_vectorised(sizes, args.data_dir, "cuda")
            cu["vectorised"]["ratio_to_central"] = _ratio(
                cu["vectorised"]["seconds"], cu["central"]["seconds"])
            res["cuda"] = cu
        else:
            res["cuda"] = {"skipped": "torch.cuda.is_available() is False"}
    if "e" in sections:
        res["dpsgd"] = section_dpsgd(sizes, args.data_dir)
    if "f" in sections:
        res["towers"] = section_towers(sizes, args.data_dir)
    res["targets"] = evaluate_targets(res)
    res["meta"]["total_s"] = time.perf_counter() - t_all
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--worker*`` are internal: subprocess entry points)."""
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDREC_DATA_DIR", ""),
                   help="data directory holding ml-1m/ and ncf-hexiangnan/")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where to write speed.json")
    p.add_argument("--quick", action="store_true", help="tiny synthetic sizes (smoke test)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="subset of a,b,c,d,e")
    p.add_argument("--per-user-subset", type=int, default=0,
                   help="users timed with the per-user loop (default 200; quick 20)")
    p.add_argument("--flower-subset", type=int, default=None,
                   help="clients of the one-client-per-user simulation (default 64; quick 0 "
                        "= skip Flower); 0 skips both Flower simulations")
    p.add_argument("--optimizer", default="",
                   help="local optimiser of the federated rounds (default: TrainConfig's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of every in-process measurement and worker (default 1: "
                        "on a shared machine, idle-spinning OpenMP threads distort timings)")
    p.add_argument("--worker-timeout", type=float, default=1800.0, help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--worker-args", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


@guarded
def main(argv: list[str] | None = None) -> int:
    """Entry point: run the benchmark, print the table, write the JSON."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("fedrec").setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    torch.set_num_threads(max(1, args.threads))
    if args.worker:
        result = WORKERS[args.worker](json.loads(args.worker_args))
        Path(args.worker_out).write_text(json.dumps(result))
        return 0
    res = run_benchmark(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(render(res))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
