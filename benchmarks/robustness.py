"""Robustness benchmark: attack x defense x malicious fraction -> ER@10 and HR@10, and the
interaction-inference AUC of an honest-but-curious server.

    python benchmarks/robustness.py [--config robust_ml1m.toml] [--data-dir DIR] [--out DIR]
        [--seeds 0,1,2] [--attacks fake-random,fake-popular,boost] [--fractions 0.01,0.05]
        [--defenses none,fedmedian,fedtrimmedavg,krum,clip,dp,row-clip] [--rounds N]
        [--jobs N] [--inference] [--inference-users N] [--quick] [--list] [--report]

Cells: ``clean`` (``attack-fraction`` 0: no fake user, same target item) x every defense, and
every attack x fraction x defense, x seeds. Each cell is the config file as-is plus its
attack, fraction, defense and seed, run through the real ServerApp loop and ClientApp handlers
on the in-process Grid (``simulations.inprocess``; as ``benchmarks/quality.py --engine
inprocess``). A cell is finished when its ``summary.json`` exists with the same settings;
finished cells are skipped (an interrupted run resumes). ``--jobs N`` runs N cells at once,
each in its own process. Defenses:

- ``none``; ``fedmedian``, ``fedtrimmedavg``, ``krum``, ``multikrum``: Flower's robust rules over
  the nodes' replies (server side);
- ``clip``: each user's update clipped to ``clip-norm`` on its node; ``dp``: user-level
  DP-FedAvg (``privacy = "user"``: clip-norm, noise-multiplier);
- ``row-clip``: each user's update of each item row clipped to ``row-clip-norm`` on its node,
  and each user's FedAvg weight capped at ``row-clip-weight`` (default inf: example weights;
  1: equal weights, so a
  fake user's share of a row does not grow with its profile size.

Metrics: ER@10 of the target (the issue's metric; ratios to clean use a floor of one test user
when clean is 0), HR@10, and ER@100 (a diagnostic: how close a target outside the top-10
came). The fake profiles' size is the config's ``attack-profile-size``
(``robust_ml100k_maxprofile.toml``: the largest real profile).

Outputs in OUT: ``robustness.md`` (tables, mean +- std over seeds, target checks),
``robustness.json``; runs under ``OUT/robustness-runs/``. ``--inference`` adds the AUC table
(:mod:`fedrec.eval.inference`) at 1, 16 and 512 users per node, without and with DP.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fedrec.cli import ArgumentParser, fail, guarded, preflight  # noqa: E402
from fedrec.config import ATTACKS, Config  # noqa: E402
from simulations.pool import run_pool  # noqa: E402

log = logging.getLogger("fedrec.bench.robustness")
CONFIGS = ROOT / "simulations" / "configs"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "robustness"
DEFENSES: dict[str, dict[str, Any]] = {
    "none": {},
    "fedmedian": {"strategy": "fedmedian"},
    "fedtrimmedavg": {"strategy": "fedtrimmedavg"},
    "krum": {"strategy": "krum"},
    "multikrum": {"strategy": "multikrum"},
    "clip": {"defense": "clip"},
    "dp": {"privacy": "user"},
    "row-clip": {"defense": "row-clip"},
}
DEFAULT_DEFENSES = "none,fedmedian,fedtrimmedavg,krum,clip,dp,row-clip"
CLEAN = "clean"
QUICK = {"dataset": "synthetic", "split": "loo", "synthetic-users": 200, "synthetic-items": 150,
         "synthetic-interactions": 15, "test-negatives": 49, "dim": 8, "users-per-node": 50,
         "num-rounds": 4, "eval-every": 4, "device": "cpu"}
USERS_PER_NODE = (1, 16, 512)


def cells(attacks: list[str], fractions: list[float], defenses: list[str],
          seeds: list[int]) -> list[tuple[str, float, str, int]]:
    """``(attack or "clean", fraction, defense, seed)``, clean rows first."""
    rows = [(CLEAN, 0.0)] + [(a, f) for a in attacks for f in fractions]
    return [(a, f, d, s) for s in seeds for a, f in rows for d in defenses]


def cell_dir(out: Path, cell: tuple[str, float, str, int]) -> Path:
    a, f, d, s = cell
    return out / "robustness-runs" / (a if a == CLEAN else f"{a}-{f:g}") / d / f"seed{s}"


def cell_config(cell: tuple, opts: Any) -> Config:
    """Config file <- quick stand-in <- attack, fraction, defense, seed, rounds, data-dir."""
    from simulations.launch import build_config

    a, f, d, s = cell
    flat: dict[str, Any] = dict(QUICK) if opts.quick else {}
    if a != CLEAN:
        flat["attack"] = a
    flat.update({"attack-fraction": f, **DEFENSES[d], "seed": s})
    if opts.rounds:
        flat.update({"num-rounds": opts.rounds, "eval-every": opts.rounds})
    if opts.data_dir:
        flat["data-dir"] = opts.data_dir
    overrides = [f"{k}={v}" for k, v in flat.items()]
    return build_config(str(opts.config), overrides, str(cell_dir(opts.out, cell)))


def finished(cfg: Config) -> dict[str, Any] | None:
    """The cell's summary when it exists and was written by the same settings."""
    out = Path(cfg.run.out)
    if not (out / "summary.json").exists() or not (out / "config.json").exists():
        return None
    got = json.loads((out / "config.json").read_text())
    want = cfg.to_flat()
    if any(got.get(k) != v for k, v in want.items() if k not in ("out", "resume", "data-dir")):
        return None
    return json.loads((out / "summary.json").read_text())


def run_cells(todo: list[tuple], cfgs: list[Config], jobs: int) -> dict[tuple, dict[str, Any]]:
    """Every cell's summary: finished cells are read, the others run ``jobs`` at a time (a
    cell that fails is reported at the end, after the others)."""
    from simulations.inprocess import run_inprocess

    configs = dict(zip(todo, cfgs, strict=True))
    results = {cell: s for cell, cfg in configs.items() if (s := finished(cfg)) is not None}
    run = [cell for cell in todo if cell not in results]
    print(f"robustness: {len(todo)} cells, {len(results)} already finished, {len(run)} to run "
          f"({jobs} at a time)", flush=True)
    errors: dict[tuple, str] = {}
    t0 = time.time()
    by_out = {configs[c].run.out: c for c in run}

    def report(cfg: Config, summary: dict[str, Any] | None, err: str) -> None:
        cell = by_out[cfg.run.out]
        n = len(results) + len(errors) + 1
        if summary is None:
            errors[cell] = err
            print(f"[{n}/{len(todo)}] {cell}: FAILED {err.splitlines()[0]}", flush=True)
            return
        results[cell] = summary
        f = summary["final"]
        print(f"[{n}/{len(todo)}] {cell}: ER@10 {f.get('er@10', 0):.4f} "
              f"HR@10 {f.get('hr@10', 0):.4f} ({summary['timing']['total_s']:.0f} s, "
              f"{time.time() - t0:.0f} s total)", flush=True)

    run_pool(run_inprocess, [configs[c].replace(resume=False) for c in run], jobs, report)
    if errors:
        for cell, err in errors.items():
            print(f"{cell} failed:\n{err}", file=sys.stderr)
        sys.exit(f"{len(errors)} of {len(todo)} cells failed (tracebacks above); the finished "
                 "cells are kept: the same command runs the others again")
    return {cell: results[cell] for cell in todo}


def _stat(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def table(results: dict[tuple, dict], attacks: list[str], fractions: list[float],
          defenses: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{row: {defense: {"er@10" | "er@100" | "hr@10": (mean, std), "seeds": n}}}``."""
    rows = [CLEAN] + [f"{a} {f:g}" for a in attacks for f in fractions]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        a, f = (CLEAN, 0.0) if row == CLEAN else (row.split()[0], float(row.split()[1]))
        out[row] = {}
        for d in defenses:
            finals = [s["final"] for (ca, cf, cd, _), s in results.items()
                      if (ca, cf, cd) == (a, f, d)]
            if finals:
                out[row][d] = {"er@10": _stat([x.get("er@10", 0.0) for x in finals]),
                               "er@100": _stat([x.get("er@100", 0.0) for x in finals]),
                               "hr@10": _stat([x["hr@10"] for x in finals]),
                               "seeds": len(finals)}
    return out


def targets(tab: dict, attacks: list[str], defenses: list[str], floor: float) -> list[str]:
    """The issue's targets at 5 % malicious users, PASS / MISS with the numbers."""
    lines = []
    clean = tab.get(CLEAN, {})
    if "none" not in clean:
        return ["(no clean undefended row: targets not checked)"]
    er0 = max(clean["none"]["er@10"][0], floor)
    hr0 = clean["none"]["hr@10"][0]
    for a in attacks:
        row = tab.get(f"{a} 0.05", {})
        if "none" in row:
            er = row["none"]["er@10"][0]
            lines.append(f"- {a}, undefended, 5 %: ER@10 {er:.4f} = {er / er0:.1f}x clean "
                         f"(target >= 10x): {'PASS' if er >= 10 * er0 else 'MISS'}")
        for d in defenses:
            if d == "none" or d not in row or d not in clean:
                continue
            er, hr_loss = row[d]["er@10"][0], 1 - clean[d]["hr@10"][0] / hr0
            ok = er <= 2 * er0 and hr_loss <= 0.03
            lines.append(f"  - defense {d}: ER@10 {er:.4f} = {er / er0:.1f}x clean (<= 2x), "
                         f"clean HR@10 loss {100 * hr_loss:.1f} % (<= 3 %): "
                         f"{'PASS' if ok else 'MISS'}")
    return lines


def markdown(tab: dict, defenses: list[str], lines: list[str], meta: dict,
             inference: list[dict] | None) -> str:
    def cell(v: dict | None, key: str) -> str:
        if v is None:
            return "-"
        m, s = v[key]
        return f"{m:.4f} ± {s:.4f}" if v["seeds"] > 1 else f"{m:.4f}"

    text = [f"# Robustness ({meta['config']}, seeds {meta['seeds']}, rounds {meta['rounds']})",
            "", f"Command: `{meta['command']}`", "",
            f"ER@10 floor (one test user): {meta['floor']:.5f}; ratios use max(clean ER, floor).",
            ""]
    for key, label in (("er@10", "ER@10 of the target item"), ("hr@10", "HR@10"),
                       ("er@100", "ER@100 of the target item (diagnostic: how close it came)")):
        text += [f"## {label}", "", "| row | " + " | ".join(defenses) + " |",
                 "|---|" + "---|" * len(defenses)]
        for row, by_def in tab.items():
            text.append(f"| {row} | " + " | ".join(cell(by_def.get(d), key) for d in defenses)
                        + " |")
        text.append("")
    text += ["## Targets (5 % malicious users)", "", *lines, ""]
    if inference:
        text += ["## Interaction inference (honest-but-curious server, round 1)", "",
                 "| users per node | DP | users scored | AUC | AUC popularity-matched | "
                 "AUC of popularity alone |", "|---|---|---|---|---|---|"]
        for r in inference:
            text.append(f"| {r['users-per-node']} | {r['dp']} | {int(r['users'])} | "
                        f"{r['auc']:.3f} | {r['auc-matched']:.3f} | {r['auc-popularity']:.3f} |")
        text.append("")
    return "\n".join(text)


def run_inference(opts: Any) -> list[dict]:
    """AUCs at 1, 16, 512 users per node, without and with DP (config's clip / noise)."""
    import torch

    from fedrec.eval.inference import inference_auc
    from fedrec.node import load_split, make_model

    torch.set_num_threads(1)
    cfg = cell_config((CLEAN, 0.0, "none", opts.seeds[0]), opts)
    split = load_split(cfg)
    model = make_model(cfg, split)
    out = []
    for dp in (None, (cfg.privacy.clip_norm, cfg.privacy.noise_multiplier)):
        for n in USERS_PER_NODE:
            t = time.time()
            r = inference_auc(model, split, n, cfg.train, cfg.run.seed, opts.inference_users,
                              dp)
            label = "none" if dp is None else f"C={dp[0]:g}, z={dp[1]:g}"
            out.append({"users-per-node": n, "dp": label, **r})
            print(f"inference: {n} users/node, DP {label}: AUC {r['auc']:.3f} matched "
                  f"{r['auc-matched']:.3f} ({time.time() - t:.0f} s)", flush=True)
    return out


def parse_list(text: str, kind: type, what: str, known: Any = None) -> list:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            fail(f"--{what}: cannot read {part!r} as {kind.__name__}")
        if known is not None and value not in known:
            fail(f"--{what}: unknown {what[:-1]} {value!r}; known: {', '.join(known)}")
        if kind is float and not 0 < value <= 1:
            fail(f"--{what}: {value!r} must be in (0, 1]")
        out.append(value)
    if not out:
        fail(f"--{what}: empty list")
    return out


@guarded
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="robust_ml1m.toml",
                   help="config file (name under simulations/configs, or a path)")
    p.add_argument("--data-dir", default=os.environ.get("FEDREC_DATA_DIR", ""))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--attacks", default="fake-random,fake-popular,boost")
    p.add_argument("--fractions", default="0.01,0.05")
    p.add_argument("--defenses", default=DEFAULT_DEFENSES)
    p.add_argument("--rounds", type=int, help="override num-rounds (evaluation at the end)")
    p.add_argument("--jobs", type=int, default=1,
                   help="cells run at once, each in its own process (one torch thread each)")
    p.add_argument("--inference", action="store_true", help="also the inference AUC table")
    p.add_argument("--inference-users", type=int, default=512,
                   help="users scored per users-per-node setting (default 512)")
    p.add_argument("--quick", action="store_true", help="tiny synthetic stand-in (smoke test)")
    p.add_argument("--list", action="store_true", help="show the cells and their state")
    p.add_argument("--report", action="store_true", help="write the tables, run nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    args.seeds = parse_list(args.seeds, int, "seeds")
    attacks = parse_list(args.attacks, str, "attacks", [a for a in ATTACKS if a != "none"])
    fractions = parse_list(args.fractions, float, "fractions")
    defenses = parse_list(args.defenses, str, "defenses", list(DEFENSES))
    if args.rounds is not None and args.rounds < 1:
        fail(f"--rounds {args.rounds}: must be >= 1")
    if args.jobs < 1:
        fail(f"--jobs {args.jobs}: must be >= 1")
    if args.inference_users < 1:
        fail(f"--inference-users {args.inference_users}: must be >= 1")
    path = Path(args.config)
    args.config = path if path.exists() else CONFIGS / args.config
    if not args.config.exists():
        fail(f"--config {path}: no such file (here or in {CONFIGS})")
    args.out = Path(args.out)
    todo = cells(attacks, fractions, defenses, args.seeds)
    configs = [cell_config(c, args) for c in todo]  # every cell's settings, validated
    if args.list:
        for c, cfg in zip(todo, configs, strict=True):
            print(f"{'done' if finished(cfg) else 'todo'}  {c}")
        return 0
    if not args.report:
        preflight(configs)  # data files read before the first cell trains
        results = run_cells(todo, configs, args.jobs)
    else:
        results = {c: s for c, cfg in zip(todo, configs, strict=True)
                   if (s := finished(cfg)) is not None}
    inference = run_inference(args) if args.inference and not args.report else None
    tab = table(results, attacks, fractions, defenses)
    any_summary = next(iter(results.values()), None)
    floor = 1.0 / any_summary["dataset"]["test_users"] if any_summary else 0.0
    meta = {"config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT)
                          else args.config), "seeds": args.seeds,
            "rounds": args.rounds or "config", "floor": floor,
            "command": "python benchmarks/robustness.py " + " ".join(argv or sys.argv[1:])}
    lines = targets(tab, attacks, defenses, floor)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(tab, defenses, lines, meta, inference)
    (args.out / "robustness.md").write_text(text + "\n")
    (args.out / "robustness.json").write_text(json.dumps(
        {"meta": meta, "table": tab, "targets": lines, "inference": inference}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
