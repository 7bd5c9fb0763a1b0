"""Privacy-utility sweep: target epsilon x seeds, one run per point, plus a non-private reference.

    python simulations/privacy_sweep.py CONFIG.toml [--set key=value ...] --out DIR
        [--epsilons 0.5,1,2,4,8,inf] [--seeds 0,1,2] [--mode user|sample] [--data-dir DIR]
        [--engine ray|inprocess] [--cpus N] [--dry-run]

Every point is one experiment of ``simulations/launch.py`` (Flower's simulation engine) in its own
run directory ``DIR/eps-{e}-seed-{s}`` with ``privacy = MODE`` and ``target-epsilon = e``: the
noise is calibrated so that the run ends exactly at the budget (user-level: the server's noise
multiplier; sample-level: the per-user DP-SGD noise, so that the worst user meets the target).
``inf`` keeps clipping and sampling but adds no noise. Each seed also gets a non-private
reference ``DIR/nonprivate-seed-{s}`` (``privacy = none``, otherwise the same config).

The sweep is resumable: a point whose run directory has ``summary.json`` is skipped, and an
interrupted point resumes from its last checkpoint (the launcher resumes). Results:

* ``DIR/sweep.csv``: ``epsilon_target, seed, hr@10, ndcg@10, epsilon_prv, epsilon_rdp,
  noise_multiplier, rounds, stopped`` (reference rows have ``epsilon_target = nonprivate``);
* ``DIR/sweep.md``: mean +- std per target over seeds, with the relative HR@10 loss against the
  non-private reference of the same seed;
* ``DIR/sweep.png``: HR@10 and NDCG@10 against epsilon (log axis, ``inf`` at the right edge with
  its own tick), error bars over seeds, the accountant's final epsilon annotated at each point.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedrec.cli import ArgumentParser, error_line, guarded, preflight  # noqa: E402
from fedrec.config import Config, ConfigError  # noqa: E402
from fedrec.data.errors import DataError  # noqa: E402
from fedrec.privacy.sample_level import check_supported  # noqa: E402
from simulations.launch import build_config  # noqa: E402

log = logging.getLogger("fedrec.sweep")

REFERENCE = "nonprivate"
CSV_FIELDS = ["epsilon_target", "seed", "hr@10", "ndcg@10", "epsilon_prv", "epsilon_rdp",
              "noise_multiplier", "rounds", "stopped"]
Runner = Callable[[Config], dict[str, Any]]


@dataclass(frozen=True)
class Point:
    """One run of the sweep: ``epsilon`` is a target (``inf`` allowed) or None (reference)."""

    epsilon: float | None
    seed: int

    @property
    def label(self) -> str:
        return REFERENCE if self.epsilon is None else format_epsilon(self.epsilon)

    @property
    def dirname(self) -> str:
        if self.epsilon is None:
            return f"{REFERENCE}-seed-{self.seed}"
        return f"eps-{format_epsilon(self.epsilon)}-seed-{self.seed}"


def format_epsilon(eps: float) -> str:
    """``inf`` or the shortest decimal form (``0.5``, ``1``, ``8``)."""
    return "inf" if math.isinf(eps) else f"{eps:g}"


def parse_list(text: str, kind: type, what: str) -> list:
    """Comma-separated values; raise ``ConfigError`` naming the option on a bad entry."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            raise ConfigError(f"--{what}: cannot read {part!r} as {kind.__name__}") from None
        if kind is float and not (value > 0):
            raise ConfigError(f"--{what}: every epsilon must be > 0 (or inf), got {part!r}")
        out.append(value)
    if not out:
        raise ConfigError(f"--{what}: empty list")
    return out


def plan(epsilons: Sequence[float], seeds: Sequence[int]) -> list[Point]:
    """Points in running order: per seed, the reference first, then the targets ascending."""
    out = []
    for seed in seeds:
        out.append(Point(None, seed))
        out += [Point(float(e), seed) for e in sorted(set(epsilons))]
    return out


def point_config(
    config_path: str | None, overrides: Sequence[str], out: Path, point: Point, mode: str
) -> Config:
    """The run config of one point (the sweep's settings override CONFIG and --set)."""
    extra = [f"seed={point.seed}"]
    if point.epsilon is None:
        extra.append("privacy=none")
    else:
        extra += [f"privacy={mode}", f"target-epsilon={format_epsilon(point.epsilon)}",
                  "noise-multiplier=0"]
    cfg = build_config(config_path, [*overrides, *extra], str(out / point.dirname))
    check_supported(cfg)
    return cfg


def _default_runner(cpus: int | None, engine: str = "ray") -> Runner:
    """Flower's simulation engine (``ray``) or the in-process Grid (``inprocess``)."""
    if engine == "inprocess":
        from simulations.inprocess import run_inprocess

        return run_inprocess

    def runner(cfg: Config) -> dict[str, Any]:
        from simulations.launch import run

        return run(cfg, cpus)

    return runner


def row_of(point: Point, summary: dict[str, Any]) -> dict[str, Any]:
    """The ``sweep.csv`` row of a finished run."""
    priv = summary.get("privacy") or {}
    final = summary.get("final") or {}
    return {
        "epsilon_target": point.label,
        "seed": point.seed,
        "hr@10": final.get("hr@10", math.nan),
        "ndcg@10": final.get("ndcg@10", math.nan),
        "epsilon_prv": _num(priv.get("epsilon")),
        "epsilon_rdp": _num(priv.get("epsilon_rdp")),
        "noise_multiplier": _num(priv.get("noise_multiplier")),
        "rounds": summary.get("rounds", 0),
        "stopped": summary.get("stopped") or "",
    }


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def run_sweep(
    config_path: str | None,
    overrides: Sequence[str],
    out: str | Path,
    epsilons: Sequence[float],
    seeds: Sequence[int],
    mode: str = "user",
    *,
    runner: Runner | None = None,
    cpus: int | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    """Run (or resume) the sweep and write ``sweep.csv``, ``sweep.md`` and ``sweep.png``.

    Parameters
    ----------
    config_path : str, optional
        Experiment TOML (None: the embedded default).
    overrides : sequence of str
        ``key=value`` settings applied to every point.
    out : path
        Sweep directory.
    epsilons : sequence of float
        Target epsilons (``inf``: clipping and sampling without noise).
    seeds : sequence of int
    mode : {"user", "sample"}
        User-level DP-FedAvg or per-user DP-SGD.
    runner : callable, optional
        ``runner(cfg) -> summary`` for one run (default: ``simulations.launch.run`` on Flower's
        simulation engine; tests pass an in-process grid).
    cpus : int, optional
        CPUs for the simulation engine.
    dry_run : bool
        Only validate the configs and print the plan.

    Returns
    -------
    list of dict
        The rows of ``sweep.csv`` (finished points only).
    """
    if mode not in ("user", "sample"):
        raise ConfigError(f"--mode must be 'user' or 'sample', got {mode!r}")
    out = Path(out)
    points = plan(epsilons, seeds)
    configs = {p: point_config(config_path, overrides, out, p, mode) for p in points}
    if not dry_run:  # every point's data, before the first point trains
        preflight(configs.values())
    runner = runner or _default_runner(cpus)
    rows: list[dict[str, Any]] = []
    durations: list[float] = []
    n = len(points)
    for i, p in enumerate(points, 1):
        cfg = configs[p]
        run_dir = Path(cfg.run.out)
        summary_path = run_dir / "summary.json"
        head = f"[{i:>{len(str(n))}}/{n}] {p.label:>10} seed {p.seed}"
        if summary_path.exists():
            _check_same_config(run_dir, cfg)
            row = row_of(p, json.loads(summary_path.read_text()))
            rows.append(row)
            print(f"{head}: done earlier -> {_describe(row)}", flush=True)
            continue
        if dry_run:
            state = "resume" if (run_dir / "checkpoints").exists() else "run"
            print(f"{head}: would {state} in {run_dir}", flush=True)
            continue
        t0 = time.time()
        summary = runner(cfg)
        durations.append(time.time() - t0)
        row = row_of(p, summary)
        rows.append(row)
        left = sum(1 for q in points[i:] if not (Path(configs[q].run.out) / "summary.json")
                   .exists())
        eta = statistics.fmean(durations) * left
        print(f"{head}: {durations[-1]:.1f}s -> {_describe(row)} | {left} left, ETA "
              f"{_hms(eta)}", flush=True)
    if dry_run:
        return rows
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "sweep.csv", rows)
    (out / "sweep.md").write_text(markdown_table(rows, mode, configs[points[0]]))
    plot(out / "sweep.png", rows, mode)
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'sweep.png'}", flush=True)
    return rows


def _check_same_config(run_dir: Path, cfg: Config) -> None:
    """A finished run directory must come from the same settings (else the sweep would mix)."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    done = json.loads(path.read_text())
    now = json.loads(json.dumps(cfg.to_flat()))  # the same JSON round-trip (inf, floats)
    diff = sorted(k for k in set(done) | set(now) if done.get(k) != now.get(k)
                  and k not in ("resume", "timeout", "device", "out"))  # out: the dir itself
    if diff:
        raise ConfigError(
            f"{run_dir} was run with other settings ({', '.join(diff)}); use another --out or "
            "delete that run directory"
        )


def _describe(row: dict[str, Any]) -> str:
    parts = [f"HR@10 {row['hr@10']:.4f}", f"NDCG@10 {row['ndcg@10']:.4f}"]
    if not math.isnan(row["epsilon_prv"]):
        parts.append(f"eps {row['epsilon_prv']:.3g} (rdp {row['epsilon_rdp']:.3g}), "
                     f"sigma {row['noise_multiplier']:.3g}")
    if row["stopped"]:
        parts.append(f"stopped: {row['stopped']}")
    return ", ".join(parts)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else (
        f"{s // 60}m{s % 60:02d}s")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _groups(rows: list[dict[str, Any]]) -> tuple[dict[int, dict], list[tuple[float, list]]]:
    """Reference row per seed, and the private rows grouped by target (ascending)."""
    ref = {r["seed"]: r for r in rows if r["epsilon_target"] == REFERENCE}
    by_eps: dict[float, list] = {}
    for r in rows:
        if r["epsilon_target"] != REFERENCE:
            by_eps.setdefault(float(r["epsilon_target"]), []).append(r)
    return ref, sorted(by_eps.items())


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    if len(vals) == 1 or all(v == vals[0] for v in vals):  # also inf (no-noise points)
        return vals[0], 0.0
    if any(math.isinf(v) for v in vals):
        return statistics.fmean(vals), math.nan
    return statistics.fmean(vals), statistics.stdev(vals)


def markdown_table(rows: list[dict[str, Any]], mode: str, cfg: Config) -> str:
    """Mean +- std per target over seeds, with the relative HR@10 loss against the reference
    of the same seed (``1 - HR / HR_nonprivate``)."""
    ref, groups = _groups(rows)
    lines = [
        f"# Privacy sweep: {mode}-level DP, {cfg.data.dataset}, {cfg.model.model}, "
        f"{cfg.fed.num_rounds} rounds",
        "",
        "| target epsilon | seeds | HR@10 | NDCG@10 | HR@10 loss vs non-private | "
        "epsilon (PRV) | epsilon (RDP) | noise multiplier |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def fmt(ms: tuple[float, float], digits: int = 4) -> str:
        return "n/a" if math.isnan(ms[0]) else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"

    if ref:
        r = list(ref.values())
        lines.append(f"| non-private | {len(r)} | {fmt(_mean_std([x['hr@10'] for x in r]))} | "
                     f"{fmt(_mean_std([x['ndcg@10'] for x in r]))} | 0 | – | – | – |")
    for eps, rs in groups:
        losses = [1 - x["hr@10"] / ref[x["seed"]]["hr@10"] for x in rs
                  if x["seed"] in ref and ref[x["seed"]]["hr@10"] > 0]
        loss = _mean_std(losses)
        loss_txt = "n/a" if math.isnan(loss[0]) else (
            f"{100 * loss[0]:.1f} % ± {100 * loss[1]:.1f} %")
        lines.append(
            f"| {format_epsilon(eps)} | {len(rs)} | {fmt(_mean_std([x['hr@10'] for x in rs]))} | "
            f"{fmt(_mean_std([x['ndcg@10'] for x in rs]))} | {loss_txt} | "
            f"{fmt(_mean_std([x['epsilon_prv'] for x in rs]), 3)} | "
            f"{fmt(_mean_std([x['epsilon_rdp'] for x in rs]), 3)} | "
            f"{fmt(_mean_std([x['noise_multiplier'] for x in rs]), 3)} |"
        )
    stopped = [f"{r['epsilon_target']} seed {r['seed']}: {r['stopped']}" for r in rows
               if r["stopped"]]
    if stopped:
        lines += ["", "Stopped early: " + "; ".join(stopped)]
    lines += ["", f"delta: N^-1.1 unless set; accountant: PRV headline, RDP conservative "
                  f"({'worst user' if mode == 'sample' else 'per user'})."]
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict[str, Any]], mode: str) -> None:
    """HR@10 and NDCG@10 against epsilon; ``inf`` at the right edge with its own tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, groups = _groups(rows)
    finite = [e for e, _ in groups if math.isfinite(e)]
    lo, hi = (min(finite), max(finite)) if finite else (1.0, 1.0)
    x_inf = hi * 4.0  # a free slot right of the largest finite target
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, metric in zip(axes, ("hr@10", "ndcg@10"), strict=True):
        xs, ys, es, ann = [], [], [], []
        for eps, rs in groups:
            m, s = _mean_std([r[metric] for r in rs])
            xs.append(x_inf if math.isinf(eps) else eps)
            ys.append(m)
            es.append(s)
            ann.append(_mean_std([r["epsilon_prv"] for r in rs])[0])
        fin = [i for i, e in enumerate(groups) if math.isfinite(e[0])]
        ax.errorbar([xs[i] for i in fin], [ys[i] for i in fin], yerr=[es[i] for i in fin],
                    marker="o", capsize=3, label=f"{mode}-level DP")
        for i, (eps, _) in enumerate(groups):
            if math.isinf(eps):
                ax.errorbar([xs[i]], [ys[i]], yerr=[es[i]], marker="s", capsize=3, color="C1",
                            label="clipping + sampling, no noise")
        for x, y, a in zip(xs, ys, ann, strict=True):
            if not math.isnan(y):
                txt = "ε=∞" if math.isinf(a) else ("" if math.isnan(a) else f"ε={a:.3g}")
                ax.annotate(txt, (x, y), textcoords="offset points", xytext=(0, 8),
                            ha="center", fontsize=8)
        if ref:
            m, s = _mean_std([r[metric] for r in ref.values()])
            ax.axhline(m, color="k", ls="--", lw=1, label="non-private")
            if s > 0:
                ax.axhspan(m - s, m + s, color="k", alpha=0.08)
        ax.set_xscale("log")
        ticks = sorted(set(finite)) + ([x_inf] if any(math.isinf(e) for e, _ in groups) else [])
        ax.set_xticks(ticks)
        ax.set_xticklabels(["∞" if t == x_inf and t not in finite else format_epsilon(t)
                            for t in ticks])
        ax.minorticks_off()
        ax.set_xlim(lo / 1.6, x_inf * 1.6)
        ax.set_xlabel("target epsilon")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
        ax.set_title(f"{metric.upper()} vs privacy budget")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=120)
    plt.close(fig)


@guarded
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="experiment TOML (flat kebab-case keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one setting for every point")
    parser.add_argument("--out", required=True, help="sweep directory (resumed if it exists)")
    parser.add_argument("--epsilons", default="0.5,1,2,4,8,inf",
                        help="target epsilons, comma-separated; inf = no noise")
    parser.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated")
    parser.add_argument("--mode", default="user", choices=("user", "sample"),
                        help="user-level DP-FedAvg or per-user DP-SGD")
    parser.add_argument("--data-dir", help="shortcut for --set data-dir=DIR")
    parser.add_argument("--engine", choices=("ray", "inprocess"), default="ray",
                        help="Flower's simulation engine (default) or the in-process Grid "
                             "(same ServerApp/ClientApp code, no Ray: for busy small machines)")
    parser.add_argument("--cpus", type=int, help="CPUs for the simulation (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    try:
        epsilons = parse_list(args.epsilons, float, "epsilons")
        seeds = parse_list(args.seeds, int, "seeds")
        overrides = list(args.overrides)
        if args.data_dir:
            overrides.append(f"data-dir={args.data_dir}")
        run_sweep(args.config, overrides, args.out, epsilons, seeds, args.mode,
                  runner=_default_runner(args.cpus, args.engine), dry_run=args.dry_run)
    except (ConfigError, DataError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
