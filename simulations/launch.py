"""Run one federated experiment on Flower's simulation engine (Ray).

    python simulations/launch.py [CONFIG.toml] [--set key=value ...] [--out DIR]
                                 [--engine ray|inprocess]

Without CONFIG the embedded default runs (synthetic data, MF, FedAvg). Results land in the run
directory: ``config.json``, ``metrics.csv`` (a row per round), ``summary.json``,
``negatives.npz`` and ``checkpoints/``; running again with the same ``--out`` resumes.
``--engine inprocess`` runs the same ServerApp loop and ClientApp handlers on the in-process
Grid (``simulations.inprocess``: no Ray, one process; for long runs on a small busy machine).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedrec.cli import ArgumentParser, guarded  # noqa: E402
from fedrec.config import Config, load_toml, parse_override  # noqa: E402

log = logging.getLogger("fedrec.launch")


def build_config(config_path: str | None, overrides: list[str], out: str | None,
                 default_out: str | None = None) -> Config:
    """Defaults <- CONFIG.toml <- --set overrides <- --out. Without an ``out`` from any of
    them: ``default_out``, else ``runs/<time>-<dataset>-<model>-<strategy>``."""
    flat: dict = {}
    source = "defaults"
    if config_path:
        flat.update(load_toml(config_path))
        source = str(config_path)
    for text in overrides:
        k, v = parse_override(text)
        flat[k] = v
        source = f"{source} + --set" if "--set" not in source else source
    if out:
        flat["out"] = out
    cfg = Config.from_flat(flat, source=source)
    if not cfg.run.out and default_out:
        cfg = cfg.replace(out=default_out)
    if not cfg.run.out:
        name = f"{cfg.data.dataset}-{cfg.model.model}-{cfg.fed.strategy}"
        cfg = cfg.replace(out=str(ROOT / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"))
    return cfg


def quiet_environment() -> None:
    """Silence Flower/Ray chatter and telemetry (DESIGN section 7)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")


def run(cfg: Config, num_cpus: int | None = None, ray_address: str | None = None) -> dict:
    """Run ``cfg`` on Flower's simulation engine and return ``summary.json``'s content.

    ``ray_address``: run on an existing Ray cluster (``ray start --head`` plus workers; every
    machine needs this checkout importable) instead of a fresh local Ray instance; each node
    then asks Ray for ``num_cpus // nodes`` CPUs (1 without ``num_cpus``)."""
    quiet_environment()
    import warnings

    from flwr.simulation import run_simulation

    from clients.app import app as client_app
    from fedrec.data.partition import num_partitions
    from fedrec.node import load_split
    from server.app import make_server_app

    split = load_split(cfg)
    n_nodes = num_partitions(split.n_users, cfg.fed.users_per_node, cfg.fed.num_nodes)
    cpus = num_cpus or (n_nodes if ray_address else os.cpu_count()) or 1
    per_node = max(1, cpus // max(1, min(n_nodes, cpus)))
    init_args = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
    # an existing cluster has its own CPUs; a fresh local instance gets ours
    init_args.update({"address": ray_address} if ray_address else {"num_cpus": cpus})
    os.environ["FEDREC_THREADS"] = str(per_node)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    Path(cfg.run.out).mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(
            server_app=make_server_app(cfg),
            client_app=client_app,
            num_supernodes=n_nodes,
            backend_config={
                "client_resources": {"num_cpus": per_node, "num_gpus": 0.0},
                "init_args": init_args,
            },
        )
    summary_path = Path(cfg.run.out) / "summary.json"
    if not summary_path.exists():
        raise RuntimeError(f"the simulation ended without writing {summary_path}; see the log")
    return json.loads(summary_path.read_text())


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="experiment TOML (flat kebab-case keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one setting (repeatable)")
    parser.add_argument("--out", help="run directory (an existing one is resumed)")
    parser.add_argument("--data-dir", help="shortcut for --set data-dir=DIR")
    parser.add_argument("--cpus", type=int, help="CPUs for the simulation (default: all)")
    parser.add_argument("--ray-address", help="run on this existing Ray cluster (e.g. "
                        "HOST:6379 of `ray start --head`) instead of a fresh local one")
    parser.add_argument("--engine", choices=("ray", "inprocess"), default="ray",
                        help="ray: Flower's simulation engine (default); inprocess: the same "
                        "ServerApp loop and ClientApp handlers in this process, no Ray")
    return parser


def overrides_of(args) -> list[str]:
    """The ``--set`` overrides of parsed arguments, then ``--data-dir`` as ``data-dir=DIR``."""
    return [*args.overrides, *([f"data-dir={args.data_dir}"] if args.data_dir else [])]


def config_from_args(args) -> Config:
    """The run's ``Config`` from parsed arguments (``--data-dir`` after the ``--set``s);
    settings that only central training honours are refused."""
    cfg = build_config(args.config, overrides_of(args), args.out)
    cfg.check_federated(args.config or "--set")
    return cfg


def parse_config(argv: list[str]) -> Config:
    """The ``Config`` that ``python simulations/launch.py ARGV`` runs."""
    return config_from_args(make_parser().parse_args(argv))


@guarded
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    logging.getLogger("fedrec").setLevel(logging.INFO)
    cfg = config_from_args(args)  # bad input: @guarded's error line
    log.info("run directory: %s", cfg.run.out)
    try:
        if args.engine == "inprocess":
            from simulations.inprocess import run_inprocess

            summary = run_inprocess(cfg)
        else:
            summary = run(cfg, args.cpus, args.ray_address)
    except KeyboardInterrupt:
        # Ctrl-C reaches this thread, but the ServerApp runs in a non-daemon thread of the
        # simulation that the interpreter would wait for at exit: end the process now (Ray's
        # processes stop when their driver is gone). The run resumes from its last checkpoint.
        print(f"interrupted; run again with --out {cfg.run.out} to resume", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    keys = ("auc", "acc", "f1") if "auc" in summary["baselines"]["popularity"] else (
        "hr@10", "ndcg@10")

    def show(metrics: dict) -> str:
        return " ".join(f"{k.upper()} {metrics[k]:.4f}" for k in keys if k in metrics)

    log.info("done: %s (popularity %s) in %.1fs -> %s", show(summary["final"]),
             show(summary["baselines"]["popularity"]), summary["timing"]["total_s"],
             Path(cfg.run.out) / "summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
