"""Towers benchmark: knowledge-graph and multimodal towers, central vs federated, with seeds.

    python benchmarks/towers.py --data-dir ../shared/data [--seeds 0,1,2] [--out DIR]
                                [--only PATTERN] [--jobs N] [--list] [--report] [--quick]

Every row is a config file shipped in ``simulations/configs`` run **as-is** (only ``seed``,
``out`` and ``data-dir`` are set per cell): federated rows through the real ServerApp loop and
ClientApp on the in-process Grid (``simulations.inprocess.run_inprocess``, the same code Flower's
simulation runs), central rows through ``simulations/central.py`` on the same model code.
Sections: the MKR / KGCN click-through protocol on ML-1M (MKR KG) and Last.FM (KGCN KG) with
AUC / ACC / F1 beside the published rows; ID-only vs towers on the ML-1M NCF split (HR@10 /
NDCG@10); cold-start items on ML-1M (HR@10 / NDCG@10 for ID-only, text, genre, text+genre, all).
Configs were tuned on each split's validation part; the test part is read once per cell.

A cell is a run directory ``OUT/towers-runs/<config>/seed<k>/``, finished when its
``summary.json`` exists (finished cells are skipped: an interrupted benchmark resumes; a
cell whose config changed since is rerun). Outputs ``towers.md`` and ``towers.json`` (mean ±
std over seeds) and, with ``--fidelity``, the explanation fidelity of one towers run.
"""

from __future__ import annotations

import concurrent.futures as cf
import fnmatch
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fedrec.cli import ArgumentParser, fail, guarded, preflight  # noqa: E402

log = logging.getLogger("fedrec.bench.towers")

CONFIGS = ROOT / "simulations" / "configs"
DEFAULT_OUT = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Row:
    """One table row: a config file run as-is, federated or central."""

    section: str
    label: str
    config: str  # path under simulations/configs
    central: bool = False
    reference: str = ""


CTR = ("auc", "acc", "f1")
RANK = ("hr@10", "ndcg@10")
SECTIONS = {
    "ml-1m click-through (MKR KG), AUC / ACC / F1": CTR,
    "Last.FM click-through (KGCN KG), AUC / ACC / F1": CTR,
    "ML-1M NCF split, ID-only vs towers, HR@10 / NDCG@10": RANK,
    "ML-1M cold-start items, HR@10 / NDCG@10": RANK,
}
_S = list(SECTIONS)
ROWS = [
    Row(_S[0], "Central MF (ID only)", "central/ml1m_ctr_mf.toml", True,
        "LibFM .892 / .812 (MKR paper)"),
    Row(_S[0], "Central MF + KG tower", "central/ml1m_ctr_kg.toml", True,
        "MKR .917 / .843; RippleNet .921 / .844"),
    Row(_S[0], "Federated MF (ID only)", "ml1m_ctr_mf.toml"),
    Row(_S[0], "Federated MF + KG tower", "ml1m_ctr_kg.toml"),
    Row(_S[1], "Central MF (ID only)", "central/lastfm_ctr_mf.toml", True,
        "LibFM .778 / .710 (KGCN paper)"),
    Row(_S[1], "Central MF + KG tower", "central/lastfm_ctr_kg.toml", True,
        "KGCN .796 / - / .721 (AUC / F1)"),
    Row(_S[1], "Federated MF (ID only)", "lastfm_ctr_mf.toml"),
    Row(_S[1], "Federated MF + KG tower", "lastfm_ctr_kg.toml"),
    Row(_S[2], "Federated MF (ID only)", "ml1m_ncf_id20.toml"),
    Row(_S[2], "Federated MF + text, genre towers", "ml1m_ncf_towers.toml"),
    Row(_S[3], "Federated MF, ID only", "ml1m_cold_id.toml", reference="random ~ .10"),
    Row(_S[3], "Federated MF + text tower", "ml1m_cold_textonly.toml"),
    Row(_S[3], "Federated MF + genre tower", "ml1m_cold_genre.toml"),
    Row(_S[3], "Federated MF + text, genre towers", "ml1m_cold_text.toml"),
    Row(_S[3], "Federated MF + all towers (kg, text, genre, year)", "ml1m_cold_all.toml"),
    Row(_S[3], "Central MF + text, genre towers", "central/ml1m_cold_text.toml", True),
]
#: The run whose explanations are measured (seed 0), and on how many of node 0's users.
FIDELITY_ROW = "ml1m_cold_all.toml"
FIDELITY_USERS = 200
QUICK = {"dataset": "synthetic", "synthetic-users": 200, "synthetic-items": 150,
         "num-rounds": 2, "test-negatives": 20, "users-per-node": 100, "dim": 8}


def cell_dir(out: Path, row: Row, seed: int) -> Path:
    return out / "towers-runs" / row.config.replace("/", "-").removesuffix(".toml") / f"seed{seed}"


def cell_flat(row: Row, seed: int, data_dir: str, quick: bool) -> dict:
    """The config file's settings, with only seed (and data-dir, or the quick stand-in) set."""
    from fedrec.config import load_toml

    flat = load_toml(CONFIGS / row.config)
    flat["seed"] = seed
    if data_dir:
        flat["data-dir"] = data_dir
    if quick:
        flat.update(QUICK)
    return flat


def finished(path: Path, flat: dict) -> bool:
    """A cell counts when its summary exists and was written by the same settings."""
    summary = path / "summary.json"
    if not summary.exists():
        return False
    from fedrec.config import Config

    wanted = Config.from_flat({**flat, "out": str(path)}).to_flat()
    got = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    keys = [k for k in wanted if k not in ("out", "resume", "device", "data-dir")]
    return all(got.get(k) == wanted[k] for k in keys)


def run_cell(row: Row, seed: int, out: Path, data_dir: str, quick: bool) -> Path:
    """Run one cell in a fresh interpreter (memory is returned after each cell)."""
    path = cell_dir(out, row, seed)
    flat = cell_flat(row, seed, data_dir, quick)
    if finished(path, flat):
        return path
    flat.update({"out": str(path), "resume": False})
    code = ("import json,sys; from fedrec.config import Config; "
            "cfg = Config.from_flat(json.loads(sys.argv[1])); "
            + ("from simulations.central import run; run(cfg)" if row.central else
               "from simulations.inprocess import run_inprocess; run_inprocess(cfg)"))
    path.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(path / "log.txt", "w") as fh:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(flat)], cwd=ROOT,
                              stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        raise RuntimeError(f"{row.config} seed {seed} failed (exit {proc.returncode}); "
                           f"see {path / 'log.txt'}")
    log.info("%s seed %d: %.0f s", row.config, seed, time.time() - t0)
    return path


def collect(out: Path, seeds: list[int], data_dir: str, quick: bool) -> list[dict]:
    """Mean ± std over the finished seeds of every row."""
    table = []
    for row in ROWS:
        finals, vals, secs, pops = [], [], [], []
        for s in seeds:
            path = cell_dir(out, row, s)
            if not finished(path, cell_flat(row, s, data_dir, quick)):
                continue
            summ = json.loads((path / "summary.json").read_text())
            finals.append(summ["final"])
            vals.append(summ.get("validation", {}))
            secs.append(summ.get("timing", {}).get("total_s", float("nan")))
            pops.append(summ.get("baselines", {}).get("popularity", {}))
        metrics = SECTIONS[row.section]
        stat = {m: _mean_std([f.get(m) for f in finals]) for m in metrics}
        table.append({"section": row.section, "label": row.label, "config": row.config,
                      "central": row.central, "seeds": len(finals), "test": stat,
                      "validation": {m: _mean_std([v.get(m) for v in vals]) for m in metrics},
                      "popularity": {m: _mean_std([p.get(m) for p in pops]) for m in metrics},
                      "seconds": _mean_std(secs), "reference": row.reference})
    return table


def _mean_std(xs: list) -> list[float] | None:
    xs = [float(x) for x in xs if x is not None]
    return [float(np.mean(xs)), float(np.std(xs))] if xs else None


def render(table: list[dict]) -> str:
    lines = ["# Towers benchmark", "",
             "Each row is the named config file run as-is (`python simulations/launch.py "
             "CONFIG` for federated rows, `python simulations/central.py CONFIG` for central "
             "ones), mean ± std over seeds; test part read once per run, settings tuned on the "
             "validation part (validation figures beside them).", ""]
    for section, metrics in SECTIONS.items():
        rows = [r for r in table if r["section"] == section]
        lines += [f"## {section}", "",
                  "| row | config | seeds | " + " | ".join(f"test {m}" for m in metrics)
                  + " | " + " | ".join(f"val {m}" for m in metrics) + " | s / run | published |",
                  "|" + "---|" * (5 + 2 * len(metrics))]
        pop = next((r["popularity"] for r in rows if any(r["popularity"].values())), None)
        if pop:
            lines.append("| Popularity | - | - | " + " | ".join(_fmt(pop[m]) for m in metrics)
                         + " |" + " - |" * len(metrics) + " - | |")
        for r in rows:
            lines.append(
                f"| {r['label']} | `{r['config']}` | {r['seeds']} | "
                + " | ".join(_fmt(r["test"][m]) for m in metrics) + " | "
                + " | ".join(_fmt(r["validation"][m]) for m in metrics)
                + f" | {_fmt(r['seconds'], '.0f')} | {r['reference']} |")
        lines.append("")
    return "\n".join(lines)


def _fmt(ms: list[float] | None, spec: str = ".4f") -> str:
    if not ms:
        return "-"
    return f"{ms[0]:{spec}} ± {ms[1]:{spec}}"


def fidelity(out: Path, data_dir: str, quick: bool) -> list[str]:
    """Explanation fidelity of the finished seed-0 run of :data:`FIDELITY_ROW` (the explain
    CLI's ``--fidelity`` over the first users of node 0): lines for the report."""
    row = next(r for r in ROWS if r.config == FIDELITY_ROW)
    path = cell_dir(out, row, 0)
    if not finished(path, cell_flat(row, 0, data_dir, quick)):
        return [f"(fidelity: run {row.config} seed 0 first)"]
    cmd = [sys.executable, str(ROOT / "simulations" / "explain.py"), str(path), "--user", "0",
           "--k", "10", "--fidelity", "--fidelity-users", str(FIDELITY_USERS)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("fidelity")]
    (out / "towers-fidelity.txt").write_text(res.stdout + res.stderr)
    return lines or [f"(fidelity failed: {res.stderr.strip()[-300:]})"]


@guarded
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("FEDREC_DATA_DIR", ""))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--only", default="*", help="glob over config paths, comma-separated")
    p.add_argument("--jobs", type=int, default=1, help="cells run at once")
    p.add_argument("--list", action="store_true", help="show the cells and their state")
    p.add_argument("--report", action="store_true", help="write the tables, run nothing")
    p.add_argument("--quick", action="store_true", help="tiny synthetic stand-in (smoke test)")
    p.add_argument("--fidelity", action="store_true",
                   help=f"measure explanation fidelity on {FIDELITY_ROW} seed 0")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds {args.seeds!r}: expected comma-separated integers")
    out = Path(args.out)
    patterns = [x.strip() for x in args.only.split(",") if x.strip()]
    rows = [r for r in ROWS if any(fnmatch.fnmatch(r.config, pat) for pat in patterns)]
    if not rows:
        print(f"error: --only {args.only!r} matches no config", file=sys.stderr)
        return 2
    if args.list:
        for r in rows:
            for s in seeds:
                state = "done" if finished(cell_dir(out, r, s), cell_flat(
                    r, s, args.data_dir, args.quick)) else "todo"
                print(f"{state:4}  {r.config}  seed {s}")
        return 0
    if not args.report:
        cells = [(r, s) for s in seeds for r in rows]
        if args.jobs < 1:
            fail(f"--jobs {args.jobs}: must be >= 1")
        from fedrec.config import Config

        preflight(Config.from_flat(cell_flat(r, s, args.data_dir, args.quick), source=r.config)
                  for r, s in cells)
        with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_cell, r, s, out, args.data_dir, args.quick)
                       for r, s in cells]
            for f in cf.as_completed(futures):
                f.result()
    table = collect(out, seeds, args.data_dir, args.quick)
    out.mkdir(parents=True, exist_ok=True)
    text = render(table)
    if args.fidelity:
        text += ("\n## Explanation fidelity\n\n`python simulations/explain.py RUN --user 0 "
                 f"--fidelity --fidelity-users {FIDELITY_USERS}` on `{FIDELITY_ROW}` seed 0 "
                 "(share: removing the top-weighted reason lowers the item's score more than "
                 "removing a random other reason of the kind; 0.5 = chance):\n\n"
                 + "\n".join(f"- {ln}" for ln in fidelity(out, args.data_dir, args.quick))
                 + "\n")
    (out / "towers.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "towers.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
