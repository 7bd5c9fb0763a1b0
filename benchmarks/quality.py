"""Quality benchmark: HR@10 / NDCG@10 of popularity, central and federated recommenders.

    python benchmarks/quality.py [--data-dir DIR] [--out DIR] [--seeds 0,1,2] [--quick]
                                 [--only PATTERN] [--jobs N] [--engine inprocess|ray]
                                 [--validation] [--list] [--report]

A matrix of cells ``dataset x row x seed``:

- datasets: ML-1M with the NCF paper's test items and negatives (``ml-1m``, split ``ncf``)
  and ML-100K leave-one-out with 99 seeded negatives (``ml-100k``);
- rows: every row is a shipped config file (``simulations/configs/quality/*.toml`` and a few
  others) run **as-is** by the project's own command: central rows by
  ``simulations/central.py CONFIG`` (:func:`simulations.central.run`; the last epoch is
  reported, NeuMF pre-training included via ``pretrain-epochs``), federated rows by
  ``simulations/launch.py CONFIG`` (the ServerApp loop and ClientApp handlers, on the
  in-process Grid with ``--engine inprocess``, the default here, or on Flower's simulation
  engine with ``--engine ray``). The popularity row is the ``baselines.popularity`` of its
  file's run. The benchmark adds only the data directory and the seed, as a user would
  (``--data-dir DIR --set seed=K``); ``--list`` prints every cell's command line.

Every cell writes a run directory ``OUT/quality-runs/<dataset>/<row>/seed<k>/`` and is
finished when its ``summary.json`` is there (with at least the config's rounds / epochs):
finished cells are skipped, so an interrupted benchmark resumes (a federated cell continues
from its last checkpoint). A cell whose recorded settings differ from its row's current config
(a config file changed) is never reported; a run moves it aside to ``seed<k>.stale-<time>``
and runs it again. Outputs: ``quality.md`` (table naming each row's config, mean ± std over
seeds), ``quality.png`` (HR@10 per round / epoch where evaluated, mean over seeds) and
``quality.json`` (everything). The configs read the test items once, after the last round /
epoch. ``--validation`` carves a validation item per user from the training data, evaluates
on it instead of the test items and every round / epoch (``--set eval-every=1``: learning
curves for tuning; outputs ``quality-validation.*``).
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fedrec.cli import ArgumentParser, fail, guarded, preflight  # noqa: E402
from simulations.pool import run_pool  # noqa: E402

log = logging.getLogger("fedrec.bench.quality")

CONFIGS = ROOT / "simulations" / "configs"
DEFAULT_OUT = ROOT / "benchmarks" / "results"
METRICS = ("hr@10", "ndcg@10")
#: The script that runs a row's config file, by the row's kind (popularity: the file's run
#: reports it as ``baselines.popularity``).
SCRIPTS = {"popularity": "simulations/central.py", "central": "simulations/central.py",
           "federated": "simulations/launch.py"}


# ----------------------------------------------------------------------------- the matrix
@dataclass(frozen=True)
class Dataset:
    """One table (evaluation protocol); its rows' files fix the data settings.

    Attributes
    ----------
    key : str
        Short name used in cell ids and run directories.
    label : str
        Human-readable description for the table.
    """

    key: str
    label: str


@dataclass(frozen=True)
class Method:
    """One row of the table: a shipped config file, run as-is.

    Attributes
    ----------
    name : str
        Short name used in cell ids (``fed-mf-fedavg``).
    label : str
        Description for the table.
    kind : {"popularity", "central", "federated"}
        Which script runs the file (:data:`SCRIPTS`); ``popularity`` reports the
        ``baselines.popularity`` of the file's run.
    config : str
        The config file, relative to ``simulations/configs``.
    reference : str
        Published HR@10 / NDCG@10 on ML-1M (99 negatives) for comparison, if any.
    """

    name: str
    label: str
    kind: str
    config: str
    reference: str = ""


@dataclass(frozen=True)
class Cell:
    """One run: dataset x method x seed."""

    dataset: Dataset
    method: Method
    seed: int

    @property
    def id(self) -> str:
        return f"{self.dataset.key}/{self.method.name}/seed{self.seed}"


NCF_NEUMF = ".701 / .425"  # He et al. 2017, NeuMF without pre-training (8 factors)


def ml1m_methods() -> list[Method]:
    """Rows on ML-1M (NCF split), each a config file (``quality/`` unless said otherwise)."""
    q = "quality/ml1m_"
    return [
        Method("popularity", "Popularity (training counts)", "popularity",
               f"{q}central_mf_d32.toml"),
        Method("central-mf", "Central MF (dim 32)", "central", f"{q}central_mf_d32.toml"),
        Method("central-mf-rendle", "Central MF (dim 128), Rendle et al. 2020 recipe",
               "central", "central/ml1m_ncf_mf_rendle.toml", reference=".7294 / .4523"),
        Method("central-mf-rendle-paper", "Central MF (dim 128), Rendle et al. 2020 recipe at "
               "its own rate (.002) and length (256 epochs)", "central",
               "central/ml1m_ncf_mf_rendle_paper.toml", reference=".7294 / .4523"),
        Method("central-neumf", "Central NeuMF (dim 8, no pre-training)", "central",
               f"{q}central_neumf_d8.toml", reference=NCF_NEUMF),
        Method("central-neumf16", "Central NeuMF (dim 16, no pre-training)", "central",
               f"{q}central_neumf_d16.toml", reference=NCF_NEUMF),
        Method("central-neumf32", "Central NeuMF (dim 32, no pre-training)", "central",
               f"{q}central_neumf_d32.toml", reference=NCF_NEUMF),
        Method("central-neumf-pre", "Central NeuMF (dim 8, GMF+MLP pre-trained)", "central",
               f"{q}central_neumf_d8_pre.toml", reference=".726 / .445"),
        Method("fed-mf-fedavg", "FedMF: MF, FedAvg", "federated", f"{q}fedmf_fedavg.toml",
               reference=".652-.675 / .381-.394"),
        Method("fed-mf-fedavg-items", "MF, item-count-weighted FedAvg", "federated",
               f"{q}fedmf_fedavg_items.toml"),
        Method("fed-mf-items-server", "MF, per-row mean with a server step (fedavg-items, "
               "server-lr 200, momentum .5)", "federated", "ml1m_ncf_fedmf_items.toml"),
        Method("fed-mf-newton", "MF, one Newton step per item row (fedavg-items, item-step "
               "newton)", "federated", "ml1m_ncf_fedmf_newton.toml"),
        Method("fed-mf-ials", "MF by iALS: exact user and item solves (loss ials, item-step "
               "newton); equals central iALS", "federated", "ml1m_ncf_best.toml"),
        Method("fed-mf-finetune", "MF, item-count-weighted FedAvg, local fine-tune 1 epoch",
               "federated", f"{q}fedmf_finetune.toml"),
        Method("fed-neumf-fedavg", "FedNCF: NeuMF, FedAvg", "federated", f"{q}fedncf.toml",
               reference=".606-.658 / .333-.387"),
        Method("fed-neumf-items", "FedNCF: NeuMF, per-row mean with a server step "
               "(fedavg-items, server-lr 100)", "federated", "ml1m_ncf_fedncf.toml"),
        Method("fed-pfedrec", "PFedRec: private head, FedAvg, fine-tune", "federated",
               f"{q}pfedrec.toml", reference=".733 / .444"),
    ]


#: ML-100K strategies on MF (``quality/ml100k_fedmf_<strategy>.toml``).
ML100K_STRATEGIES = ("fedavg", "fedavg-items", "fedprox", "fedadam", "fedyogi", "fedavgm",
                     "fedmedian", "fedtrimmedavg", "krum")


def ml100k_methods() -> list[Method]:
    """Rows on ML-100K leave-one-out: every strategy on MF, plus the NCF models."""
    q = "quality/ml100k_"
    rows = [
        Method("popularity", "Popularity (training counts)", "popularity",
               f"{q}central_mf_d32.toml"),
        Method("central-mf", "Central MF (dim 32)", "central", f"{q}central_mf_d32.toml"),
        Method("central-neumf", "Central NeuMF (dim 8)", "central", f"{q}central_neumf_d8.toml"),
        Method("central-neumf-pre", "Central NeuMF (dim 8, pre-trained)", "central",
               f"{q}central_neumf_d8_pre.toml"),
    ]
    rows += [Method(f"fed-mf-{s}", f"MF, {s}", "federated",
                    f"{q}fedmf_{s.replace('-', '_')}.toml") for s in ML100K_STRATEGIES]
    rows += [
        Method("fed-neumf-fedavg", "FedNCF: NeuMF, FedAvg", "federated", f"{q}fedncf.toml"),
        Method("fed-pfedrec", "PFedRec", "federated", f"{q}pfedrec.toml"),
    ]
    return rows


def full_matrix() -> list[tuple[Dataset, list[Method]]]:
    """The real benchmark."""
    return [
        (Dataset("ml-1m", "ML-1M, NCF split (He et al. 2017 test items + 99 negatives)"),
         ml1m_methods()),
        (Dataset("ml-100k", "ML-100K, leave-one-out, 99 seeded negatives"), ml100k_methods()),
    ]


def quick_matrix() -> list[tuple[Dataset, list[Method]]]:
    """Tiny synthetic stand-in with one cell of every kind (a smoke test of the machinery:
    ``quality/quick/*.toml``, not reported figures)."""
    q = "quality/quick/"
    return [(Dataset("synthetic", "tiny synthetic (smoke test)"), [
        Method("popularity", "Popularity", "popularity", f"{q}central_mf.toml"),
        Method("central-mf", "Central MF", "central", f"{q}central_mf.toml"),
        Method("central-neumf-pre", "Central NeuMF, pre-trained", "central",
               f"{q}central_neumf_pre.toml"),
        Method("fed-mf-fedavg", "FedMF", "federated", f"{q}fedmf.toml"),
        Method("fed-neumf-fedavg", "FedNCF", "federated", f"{q}fedncf.toml"),
    ])]


def cells_of(matrix: list[tuple[Dataset, list[Method]]], seeds: list[int],
             only: str) -> list[Cell]:
    """All cells, filtered by ``only``."""
    return [Cell(ds, m, s) for ds, methods in matrix for m in methods for s in seeds
            if matches(f"{ds.key}/{m.name}/seed{s}", only)]


def matches(cell_id: str, pattern: str) -> bool:
    """``--only``: comma-separated globs (a pattern without wildcards matches substrings)."""
    if not pattern:
        return True
    for p in pattern.split(","):
        p = p.strip()
        if any(c in p for c in "*?[") and fnmatch.fnmatch(cell_id, p):
            return True
        if not any(c in p for c in "*?[") and p in cell_id:
            return True
    return False


# ----------------------------------------------------------------------------- running cells
@dataclass
class Options:
    """Settings shared by all cells of one benchmark run."""

    out: Path
    data_dir: str = ""
    engine: str = "inprocess"
    threads: int = 1
    validation: bool = False
    quick: bool = False

    @property
    def runs(self) -> Path:
        return self.out / ("quality-validation-runs" if self.validation else "quality-runs")


def cell_dir(cell: Cell, opts: Options) -> Path:
    return opts.runs / cell.dataset.key / cell.method.name / f"seed{cell.seed}"


def command(cell: Cell, opts: Options) -> list[str]:
    """The cell's command line after ``python``, as a user would type it (without ``--out``):
    the script, the row's config file, ``--data-dir`` and ``--set seed=K``; with
    ``--validation`` also ``--set eval-every=1``."""
    argv = [SCRIPTS[cell.method.kind],
            str((CONFIGS / cell.method.config).relative_to(ROOT))]
    if cell.method.kind == "federated":
        argv += ["--engine", opts.engine]
    if opts.data_dir:
        argv += ["--data-dir", opts.data_dir]
    argv += ["--set", f"seed={cell.seed}"]
    if opts.validation:
        argv += ["--set", "eval-every=1"]
    return argv


def cell_config(cell: Cell, opts: Options) -> Any:
    """The full ``Config`` of a cell: :func:`command` parsed by its own script, with the
    cell's run directory as ``--out``."""
    from simulations import central, launch

    script, path, *args = command(cell, opts)
    parse = central.parse_config if script == SCRIPTS["central"] else launch.parse_config
    return parse([str(ROOT / path), *args, "--out", str(cell_dir(cell, opts))])


def steps_of(cell: Cell, opts: Options) -> int:
    """Rounds (federated) or epochs (central) of the cell's config; 0 for popularity."""
    return 0 if cell.method.kind == "popularity" else cell_config(cell, opts).fed.num_rounds


def is_done(cell: Cell, opts: Options) -> bool:
    """A cell is finished when its summary covers the config's rounds / epochs and was
    written by the cell's current config."""
    summary = read_summary(cell, opts)
    if summary is None:
        return False
    if cell.method.kind == "popularity" or summary.get("stopped"):
        return True
    return int(summary.get("rounds", summary.get("epochs", 0))) >= steps_of(cell, opts)


def read_summary(cell: Cell, opts: Options) -> dict[str, Any] | None:
    """The cell's ``summary.json``; ``None`` when missing, unreadable or stale."""
    summary = _summary_on_disk(cell, opts)
    return None if summary is None or is_stale(cell, opts, summary) else summary


def _summary_on_disk(cell: Cell, opts: Options) -> dict[str, Any] | None:
    """The cell's ``summary.json`` as written (``None`` when missing or unreadable)."""
    path = cell_dir(cell, opts) / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_stale(cell: Cell, opts: Options, summary: dict[str, Any]) -> bool:
    """Whether ``summary`` was written by other settings than the cell's current config
    (a config file or a method row changed since). Ignored: rounds, eval period, device, and
    where the data directory is (the same dataset may be reached by another path)."""
    from fedrec.config import Config
    from server.loop import config_identity

    written = summary.get("cell", {}).get("config")
    if written is None:
        return False  # summaries from before configs were recorded
    old = config_identity(Config.from_flat(written))
    new = config_identity(cell_config(cell, opts))
    for ident in (old, new):
        ident.pop("data-dir", None)
    return old != new


def set_aside_stale(cell: Cell, opts: Options) -> Path | None:
    """Rename a stale cell directory to ``seed<k>.stale-<time>`` (kept, never deleted)."""
    summary = _summary_on_disk(cell, opts)
    if summary is None or not is_stale(cell, opts, summary):
        return None
    d = cell_dir(cell, opts)
    target = d.with_name(f"{d.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    d.rename(target)
    return target


def run_cell(cell: Cell, opts: Options) -> dict[str, Any]:
    """Run one cell (in this process) as its script would, and return its summary (written to
    the run directory with the cell's identity and learning curve added)."""
    import torch

    from simulations import central

    torch.set_num_threads(opts.threads)
    os.environ["FEDREC_THREADS"] = str(opts.threads)
    cfg = cell_config(cell, opts)
    split = load_split_for(cfg, opts)
    out = cell_dir(cell, opts)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    kind = cell.method.kind
    if kind == "popularity":  # what the file's run reports as baselines.popularity
        summary = {"final": central.popularity_baseline(split)}
    elif kind == "central":
        summary = central.run(cfg)
    elif kind == "federated":
        summary = run_federated(cfg, opts)
    else:
        raise ValueError(f"unknown method kind '{kind}'")
    summary["kind"] = kind
    summary["curve"] = curve_of(out) if kind != "popularity" else []
    summary["final"] = {k: float(summary["final"][k]) for k in METRICS if k in summary["final"]}
    summary.setdefault("timing", {})["cell_s"] = time.time() - t0
    summary["cell"] = {"id": cell.id, "dataset": cell.dataset.key, "method": cell.method.name,
                       "seed": cell.seed, "kind": kind, "config": cfg.to_flat(),
                       "file": cell.method.config, "command": command(cell, opts)}
    from fedrec import rundir

    rundir.write_json(out / "summary.json", summary)
    return summary


def load_split_for(cfg: Any, opts: Options) -> Any:
    """The cell's split; with ``--validation`` the training-carved validation split instead.

    The validation split replaces the test split in the node cache, so the federated code
    (in-process engine) evaluates on it too.
    """
    from fedrec import node

    split = node.load_split(cfg)
    if not opts.validation:
        return split
    if split.name.endswith("+validation"):
        return split
    val = validation_split(split, cfg.run.seed)
    for key, value in list(node._SPLITS.items()):
        if value is split:
            node._SPLITS[key] = val
    return val


def validation_split(split: Any, seed: int, num_negatives: int = 99) -> Any:
    """One training item per user (>= 2 training items) held out as the validation item.

    Negatives are drawn (seeded) from items the user has in neither training, validation nor
    test; the test items themselves are never used for training, evaluation or selection.
    """
    from fedrec.data.schema import SplitData

    rs = np.random.default_rng([seed, 7_771])
    counts = np.diff(split.train_indptr)
    keep = np.ones(split.n_train, dtype=bool)
    val = np.full(split.n_users, -1, dtype=np.int64)
    negs = np.full((split.n_users, num_negatives), -1, dtype=np.int64)
    for u in range(split.n_users):
        if counts[u] < 2:
            continue
        lo = int(split.train_indptr[u])
        j = lo + int(rs.integers(counts[u]))
        val[u] = split.train_items[j]
        keep[j] = False
        seen = np.zeros(split.n_items, dtype=bool)
        seen[split.user_items(u)] = True
        if split.test_items[u] >= 0:
            seen[split.test_items[u]] = True
        free = np.flatnonzero(~seen)
        negs[u] = rs.choice(free, size=num_negatives, replace=len(free) < num_negatives)
    new_counts = counts - (val >= 0)
    indptr = np.concatenate([[0], np.cumsum(new_counts)]).astype(np.int64)
    return SplitData(
        name=f"{split.name}+validation", n_users=split.n_users, n_items=split.n_items,
        train_indptr=indptr, train_items=split.train_items[keep],
        train_ratings=split.train_ratings[keep], test_items=val, test_negatives=negs,
        item_side=split.item_side,
    )


def run_federated(cfg: Any, opts: Options) -> dict[str, Any]:
    """``simulations/launch.py``'s run: the ServerApp loop and ClientApp handlers, on the
    in-process Grid or on Flower's simulation engine (Ray)."""
    if opts.engine == "ray":
        if opts.validation:
            raise ValueError("--validation needs --engine inprocess (the split is injected)")
        from simulations.launch import run

        return run(cfg)
    from simulations.inprocess import run_inprocess

    return run_inprocess(cfg)


def curve_of(out: Path) -> list[dict[str, float]]:
    """HR@10 / NDCG@10 of every evaluated round / epoch, from the run's ``metrics.csv``."""
    return [
        {"step": int(r["round"]), **{k: float(r[k]) for k in METRICS if r.get(k, "") != ""},
         "elapsed_s": float(r.get("elapsed_s") or 0.0)}
        for r in read_csv(out / "metrics.csv")
    ]


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run_all(cells: list[Cell], opts: Options, jobs: int) -> dict[str, str]:
    """Run the unfinished cells (``jobs`` at a time); print a line per cell. Returns errors."""
    for c in cells:
        moved = set_aside_stale(c, opts)
        if moved is not None:
            print(f"{c.id}: written by an older config; moved to {moved}", flush=True)
    todo = [c for c in cells if not is_done(c, opts)]
    done = len(cells) - len(todo)
    print(f"quality: {len(cells)} cells, {done} already finished, {len(todo)} to run "
          f"({jobs} at a time, engine {opts.engine})", flush=True)
    errors: dict[str, str] = {}
    t0 = time.time()
    counter = done

    def report(cell_id: str, summary: dict[str, Any] | None, err: str) -> None:
        nonlocal counter
        counter += 1
        if summary is None:
            errors[cell_id] = err
            print(f"[{counter}/{len(cells)}] {cell_id}: FAILED {err.splitlines()[0]}",
                  flush=True)
            return
        f = summary["final"]
        print(f"[{counter}/{len(cells)}] {cell_id}: HR@10 {f.get('hr@10', float('nan')):.4f} "
              f"NDCG@10 {f.get('ndcg@10', float('nan')):.4f} "
              f"({summary['timing']['cell_s']:.0f} s; {time.time() - t0:.0f} s total)",
              flush=True)

    run_pool(functools.partial(run_cell, opts=opts), todo, jobs,
             lambda cell, summary, err: report(cell.id, summary, err))
    return errors


# ----------------------------------------------------------------------------- reporting
def collect(cells: list[Cell], opts: Options) -> list[dict[str, Any]]:
    """Summaries of finished cells (one entry per cell, ``None`` fields when missing)."""
    out = []
    for c in cells:
        summary = read_summary(c, opts)
        out.append({"id": c.id, "dataset": c.dataset.key, "method": c.method.name,
                    "seed": c.seed, "kind": c.method.kind, "config": c.method.config,
                    "steps": steps_of(c, opts), "summary": summary})
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def aggregate(matrix: list[tuple[Dataset, list[Method]]], results: list[dict[str, Any]],
              ) -> list[dict[str, Any]]:
    """One row per (dataset, method): mean ± std over the finished seeds, mean curve."""
    rows = []
    for ds, methods in matrix:
        for m in methods:
            mine = [r for r in results if r["dataset"] == ds.key and r["method"] == m.name
                    and r["summary"] is not None]
            if not any(r["dataset"] == ds.key and r["method"] == m.name for r in results):
                continue
            row: dict[str, Any] = {"dataset": ds.key, "method": m.name, "label": m.label,
                                   "kind": m.kind, "config": m.config, "steps": None,
                                   "reference": m.reference, "seeds": [r["seed"] for r in mine]}
            for k in METRICS:
                vals = [r["summary"]["final"][k] for r in mine if k in r["summary"]["final"]]
                row[k] = dict(zip(("mean", "std"), mean_std(vals), strict=True))
                row[k]["values"] = vals
            row["cell_s"] = mean_std([r["summary"].get("timing", {}).get("cell_s", math.nan)
                                      for r in mine])[0]
            row["curve"] = mean_curve([r["summary"].get("curve", []) for r in mine])
            if mine:
                cfg = mine[0]["summary"]["cell"]["config"]
                row["setting"] = setting_text(m, cfg)
                row["steps"] = 0 if m.kind == "popularity" else cfg["num-rounds"]
            rows.append(row)
    return rows


def mean_curve(curves: list[list[dict[str, Any]]]) -> list[dict[str, float]]:
    """HR@10 / NDCG@10 per step averaged over the seeds that reached that step."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for curve in curves:
        for p in curve:
            if "hr@10" in p:
                by_step.setdefault(int(p["step"]), []).append(p)
    return [{"step": s, **{k: float(np.mean([p[k] for p in ps])) for k in METRICS},
             "n": len(ps)} for s, ps in sorted(by_step.items())]


def setting_text(m: Method, cfg: dict[str, Any]) -> str:
    """Short description of the knobs that matter for the row (from its recorded config)."""
    if m.kind == "popularity":
        return "-"
    rates = f"lr {cfg['lr']:g}"
    if cfg.get("user-lr"):
        rates += f" (user rows {cfg['user-lr']:g})"
    if cfg.get("lr-decay", 1.0) != 1.0:
        rates += f", decay {cfg['lr-decay']:g}/round"
    if cfg.get("weight-decay"):
        rates += f", L2 {cfg['weight-decay']:g}"
    base = (f"{cfg['model']} d{cfg['dim']}, {cfg['optimizer']} {rates}, "
            f"{cfg['num-negatives']} neg, batch {cfg['batch-size']}")
    n = cfg["num-rounds"]
    if m.kind == "central":
        pre = cfg.get("pretrain-epochs", 0)
        if pre:
            base = (f"GMF+MLP {pre} epochs each ({cfg['pretrain-optimizer']} lr "
                    f"{cfg['pretrain-lr']:g}), then NeuMF: {base}")
        return f"{base}, {n} epochs (last)"
    extra = ""
    if cfg["strategy"] == "fedprox":
        extra = f" mu {cfg['proximal-mu']:g}"
    if cfg.get("server-lr", 1.0) != 1.0:
        extra += f" server lr {cfg['server-lr']:g}"
    if cfg.get("server-momentum"):
        extra += f" momentum {cfg['server-momentum']:g}"
    ft = cfg.get("finetune-epochs", 0)
    return (f"{cfg['strategy']}{extra}, {base}, {cfg['local-epochs']} local epoch(s), "
            f"{n} rounds" + (f", fine-tune {ft}" if ft else ""))


def fmt(stat: dict[str, float]) -> str:
    if stat is None or math.isnan(stat["mean"]):
        return "-"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


PERSONALISED = ["fed-pfedrec", "fed-mf-finetune"]  # rows that evaluate per-user models


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets on ML-1M: central NeuMF >= .70/.42, federated MF/NeuMF >= .68/.40,
    personalised federated >= .74/.45."""
    def best(names: list[str]) -> dict[str, Any] | None:
        cand = [r for r in rows if r["dataset"] == "ml-1m" and r["method"] in names
                and not math.isnan(r["hr@10"]["mean"])]
        return max(cand, key=lambda r: r["hr@10"]["mean"]) if cand else None

    out = []
    for text, names, hr, nd in (
        ("central NeuMF on ML-1M >= .70 / .42",
         ["central-neumf", "central-neumf16", "central-neumf32", "central-neumf-pre"], .70,
         .42),
        ("federated FedAvg MF or NeuMF on ML-1M >= .68 / .40",
         ["fed-mf-fedavg", "fed-neumf-fedavg"], .68, .40),
        ("personalised federated on ML-1M >= .74 / .45", PERSONALISED, .74, .45),
    ):
        r = best(names)
        if r is None:
            out.append({"target": text, "status": "N/A", "row": None})
            continue
        ok = r["hr@10"]["mean"] >= hr and r["ndcg@10"]["mean"] >= nd
        out.append({"target": text, "status": "PASS" if ok else "MISS", "row": r["method"],
                    "hr@10": r["hr@10"]["mean"], "ndcg@10": r["ndcg@10"]["mean"]})
    return out


def markdown(matrix: list[tuple[Dataset, list[Method]]], rows: list[dict[str, Any]],
             meta: dict[str, Any]) -> str:
    """The results table (one section per dataset) and the targets."""
    lines = ["# Quality benchmark", ""]
    what = "validation items carved from training" if meta["validation"] else "test items"
    lines += [
        f"Mean ± sample std over seeds {meta['seeds']} of HR@10 / NDCG@10 ({what}, 1 positive "
        "+ the split's negatives, ties count against the positive). Every row is the config "
        "file it names (under `simulations/configs/`), run as-is: central rows by "
        "`python simulations/central.py FILE --data-dir DIR --set seed=K` (the **last** epoch; "
        "no epoch selection on test items), federated rows by `python simulations/launch.py "
        f"FILE --engine {meta['engine']} --data-dir DIR --set seed=K` (all users every round, "
        "the real ServerApp loop + ClientApp handlers); popularity is the named run's "
        "`baselines.popularity`. "
        + ("The smoke-test configs evaluate every round / epoch. " if meta["quick"] else
           "The configs read the test items once, after the last round / epoch. ")
        + "`benchmarks/quality.py`; curves in `quality.png` (every round / epoch with "
        "`--validation`), everything in `quality.json`.",
        "",
    ]
    for ds, _ in matrix:
        mine = [r for r in rows if r["dataset"] == ds.key]
        if not mine:
            continue
        lines += [f"## {ds.label}", "",
                  "| method | config | setting | HR@10 | NDCG@10 | seeds | s / cell | published |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in mine:
            secs = "-" if math.isnan(r["cell_s"]) else f"{r['cell_s']:.0f}"
            config = f"`{r['config']}`" + (" (`baselines.popularity`)"
                                           if r["kind"] == "popularity" else "")
            lines.append(
                f"| {r['label']} | {config} | {r.get('setting', '-')} | {fmt(r['hr@10'])} | "
                f"{fmt(r['ndcg@10'])} | {len(r['seeds'])} | {secs} | {r['reference'] or '-'} |"
            )
        lines.append("")
    if not meta["validation"]:
        lines += ["## Targets", "", "| target | best row | HR@10 | NDCG@10 | status |",
                  "|---|---|---|---|---|"]
        for t in targets(rows):
            if t["row"] is None:
                lines.append(f"| {t['target']} | - | - | - | N/A |")
            else:
                lines.append(f"| {t['target']} | {t['row']} | {t['hr@10']:.4f} | "
                             f"{t['ndcg@10']:.4f} | {t['status']} |")
        lines.append("")
    return "\n".join(lines)


def plot(matrix: list[tuple[Dataset, list[Method]]], rows: list[dict[str, Any]],
         path: Path) -> None:
    """HR@10 per round (federated) / epoch (central), mean over seeds; popularity dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [ds for ds, _ in matrix if any(r["dataset"] == ds.key for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(7 * max(1, len(shown)), 5),
                             squeeze=False)
    for ax, ds in zip(axes[0], shown, strict=False):
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # > 10 rows: no repeated colour
        for r in (r for r in rows if r["dataset"] == ds.key):
            if r["kind"] == "popularity":
                if not math.isnan(r["hr@10"]["mean"]):
                    ax.axhline(r["hr@10"]["mean"], color="grey", ls="--", label=r["method"])
                continue
            if not r["curve"]:
                continue
            xs = [p["step"] for p in r["curve"]]
            ys = [p["hr@10"] for p in r["curve"]]
            ls = "-" if r["kind"] == "federated" else ":"
            ax.plot(xs, ys, ls, marker="." if len(xs) < 40 else None, label=r["method"])
        ax.set_title(ds.label, fontsize=9)
        ax.set_xlabel("round (federated, solid) / epoch (central, dotted)")
        ax.set_ylabel("HR@10 (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(matrix: list[tuple[Dataset, list[Method]]], cells: list[Cell],
                  opts: Options, meta: dict[str, Any]) -> dict[str, Path]:
    """quality.md / quality.png / quality.json from the finished cells on disk."""
    results = collect(cells, opts)
    rows = aggregate(matrix, results)
    stem = "quality-validation" if opts.validation else "quality"
    paths = {"md": opts.out / f"{stem}.md", "png": opts.out / f"{stem}.png",
             "json": opts.out / f"{stem}.json"}
    opts.out.mkdir(parents=True, exist_ok=True)
    paths["md"].write_text(markdown(matrix, rows, meta))
    plot(matrix, rows, paths["png"])
    from fedrec import rundir

    rundir.write_json(paths["json"], {"meta": meta, "rows": rows,
                                      "targets": [] if opts.validation else targets(rows),
                                      "cells": results})
    return paths


# ----------------------------------------------------------------------------- CLI
def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds {text!r}: expected comma-separated integers")
    if not seeds:
        fail(f"--seeds {text!r}: no seed given")
    return seeds


@guarded
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("FEDREC_DATA_DIR", ""),
                        help="holds ml-1m/, ml-100k/, ncf-hexiangnan/ (default $FEDREC_DATA_DIR)")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="folder of quality.md/.png/.json and quality-runs/")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--quick", action="store_true", help="tiny synthetic smoke run")
    parser.add_argument("--only", default="", help="cells whose id matches (glob/substring, "
                        "comma-separated), e.g. 'ml-1m/fed-*' or 'central'")
    parser.add_argument("--jobs", type=int, default=1, help="cells run in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    parser.add_argument("--engine", choices=("inprocess", "ray"), default="inprocess")
    parser.add_argument("--validation", action="store_true",
                        help="evaluate on a validation item carved from training, every round "
                        "/ epoch (tuning)")
    parser.add_argument("--list", action="store_true", help="list the cells and exit")
    parser.add_argument("--report", action="store_true",
                        help="only write the reports from the cells finished so far")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

    seeds = parse_seeds(args.seeds)
    matrix = quick_matrix() if args.quick else full_matrix()
    cells = cells_of(matrix, seeds, args.only)
    opts = Options(out=Path(args.out), data_dir="" if args.quick else args.data_dir,
                   engine=args.engine, threads=args.threads, validation=args.validation,
                   quick=args.quick)
    if args.list:
        for c in cells:
            state = "done" if is_done(c, opts) else "todo"
            print(f"{c.id}  [{c.method.kind}, {steps_of(c, opts)} steps]  {state}\n"
                  f"    python {' '.join(command(c, opts))}")
        return 0
    if not cells:
        fail(f"no cell matches --only {args.only!r}")
    for name in ("jobs", "threads"):
        if getattr(args, name) < 1:
            fail(f"--{name} {getattr(args, name)}: must be >= 1")
    if not args.report:  # every cell's settings and data, before the first cell trains
        preflight(cell_config(c, opts) for c in cells)
    t0 = time.time()
    errors = {} if args.report else run_all(cells, opts, args.jobs)
    meta = {"seeds": seeds, "quick": args.quick, "engine": args.engine,
            "validation": args.validation, "only": args.only, "threads": args.threads,
            "jobs": args.jobs, "wall_s": time.time() - t0, "errors": errors,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    paths = write_reports(matrix, cells, opts, meta)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
