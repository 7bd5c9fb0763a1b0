"""Central training of a config's model on all users' data: the reference beside federated rows.

    python simulations/central.py CONFIG.toml [--set key=value ...] [--out DIR] [--data-dir DIR]

Trains the config's model (towers included) with :func:`fedrec.train.central.train_central` for
``num-rounds`` epochs (one central epoch sees every training example once, as one
full-participation round does) with the config's optimiser and rates; with ``pretrain-epochs >
0`` NeuMF's GMF and MLP parts are trained first and fused (:mod:`fedrec.models.pretrain`), then
NeuMF trains ``num-rounds`` epochs. Evaluation every ``eval-every`` epochs and after the last
one; splits with a validation part are evaluated on it then, and on the test part once, after
the last epoch. Writes ``config.json``, ``metrics.csv`` (a row per epoch) and ``summary.json``
(same keys as a federated run, popularity baseline included; ``"mode": "central"``) to the run
directory. After every epoch the training state goes to ``checkpoints/round-N.pkl`` (the last
two kept): run again with the same ``--out`` and the run resumes after the last one and ends
exactly as an uninterrupted run would (``resume = false`` starts over; a checkpoint of another
config is refused). NeuMF pre-training is not checkpointed: such a run starts over.
``benchmarks/quality.py`` runs its central rows through :func:`run`.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fedrec import checkpoint, rundir  # noqa: E402
from fedrec.cli import ArgumentParser, error_line, guarded  # noqa: E402
from fedrec.config import Config, as_dict  # noqa: E402

log = logging.getLogger("fedrec.central")


def popularity_baseline(split) -> dict[str, float]:
    """The popularity baseline of ``split`` (as a federated run's ``baselines.popularity``)."""
    from fedrec.eval.sampled import evaluate_item_scores
    from fedrec.models.popularity import popularity_scores

    return {k: float(v) for k, v in evaluate_item_scores(popularity_scores(split), split).items()}


def run(cfg: Config) -> dict:
    """Train ``cfg`` centrally; write and return the summary."""
    from fedrec.eval.sampled import evaluate_parts, summarize
    from fedrec.models.pretrain import pretrain_neumf, settings_of
    from fedrec.node import eval_parts, load_split, make_model
    from fedrec.train.central import init_params, train_central
    from server.loop import CKPT_DIR, config_identity

    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    split = load_split(cfg)
    model = make_model(cfg, split)
    users = np.arange(split.n_users)
    epochs = cfg.fed.num_rounds
    rows: list[dict] = []
    state = None if cfg.train.pretrain_epochs else _resume_state(cfg, out / CKPT_DIR)
    if state is not None:
        rows = state.pop("rows")
        log.info("resuming %s after epoch %d", out, state["epoch"])
    rundir.write_json(out / "config.json", cfg.to_flat())
    kw = {"full": cfg.eval.full_ranking and split.protocol == "ranking",
          "explicit": cfg.train.loss == "mse"}

    def on_epoch(epoch: int, params: dict) -> None:
        row = {"round": epoch, "users": split.n_users, "train_loss": "",
               "elapsed_s": time.time() - t0}
        if epoch % cfg.fed.eval_every == 0 or epoch == epochs:
            p = {n: t.cpu() for n, t in params.items()}
            sums = evaluate_parts(model, {n: p[n] for n in model.shared_names},
                                  {n: p[n] for n in model.private_names}, users, split,
                                  eval_parts(split, final=epoch == epochs), **kw)
            row.update(summarize(sums))
        rows.append(row)
        rundir.write_metrics(out / "metrics.csv", rows, rundir.METRIC_FIELDS)
        log.info("epoch %d/%d %s", epoch, epochs, " ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k not in ("round", "users", "train_loss",
                                                                "elapsed_s")))

    if cfg.train.pretrain_epochs:  # GMF, MLP, then NeuMF for num-rounds epochs
        pretrain_neumf(split, settings_of(cfg), cfg.run.seed, base=cfg.train,
                       on_epoch=lambda stage, _, epoch, params: (
                           on_epoch(epoch, params) if stage == "neumf" else None))
    else:
        params = init_params(model, cfg.run.seed, split, cfg.model.item_bias_init)

        def on_state(st: dict) -> None:
            checkpoint.save_pickle(out / CKPT_DIR / f"round-{st['epoch']}.pkl",
                                   {**st, "rows": rows, "config": config_identity(cfg)})
            checkpoint.prune(out / CKPT_DIR, keep=2)

        train_central(model, split, cfg.train, epochs, cfg.run.seed, params=params,
                      on_epoch=on_epoch, state=state, on_state=on_state)
    last = rows[-1] if rows else {}
    summary = {
        "mode": "central",
        "config": as_dict(cfg),
        "dataset": {"name": split.name, "users": split.n_users, "items": split.n_items,
                    "train_interactions": split.n_train, "split": cfg.data.split,
                    "protocol": split.protocol},
        "rounds": epochs,
        "final": {k: v for k, v in last.items() if k in ("hr@10", "ndcg@10", "recall@20",
                                                        "ndcg@20-full", "auc", "acc", "f1")},
        "validation": {k[4:]: v for k, v in last.items() if k.startswith("val-")},
        "baselines": {"popularity": popularity_baseline(split)},
        "timing": {"total_s": time.time() - t0},
    }
    rundir.write_json(out / "summary.json", summary)
    return summary


def _resume_state(cfg: Config, directory: Path) -> dict | None:
    """The last checkpoint's training state (with its ``rows``), or None to start from epoch 1;
    ``resume = false`` deletes the checkpoints."""
    from server.loop import config_identity, same_identity

    files = checkpoint.round_files(directory)
    if not cfg.run.resume:
        for f in files.values():
            f.unlink()
        return None
    if not files:
        return None
    last = max(files)
    ck = checkpoint.load_pickle(files[last])
    if not same_identity(ck.pop("config"), config_identity(cfg)):
        raise ValueError(f"{directory.parent}: checkpoint was written by a different config; "
                         "use another --out or set resume=false")
    if last > cfg.fed.num_rounds:
        raise ValueError(f"{directory.parent}: checkpoint is at epoch {last}, after "
                         f"num-rounds = {cfg.fed.num_rounds}; use another --out or set "
                         "resume=false")
    return ck


def build_config(config_path: str, overrides: list[str], out: str | None) -> Config:
    """CONFIG.toml <- --set overrides <- --out (default ``runs/central-<config stem>``); the
    launcher's :func:`simulations.launch.build_config` with another default run directory."""
    from simulations.launch import build_config as build

    return build(config_path, overrides, out,
                 default_out=str(Path("runs") / f"central-{Path(config_path).stem}"))


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="experiment TOML (flat kebab-case keys)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a setting (repeatable)")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--data-dir", help="shortcut for --set data-dir=DIR")
    return parser


def config_from_args(args) -> Config:
    """The run's ``Config`` from parsed arguments (``--data-dir`` after the ``--set``s)."""
    from simulations.launch import overrides_of

    return build_config(args.config, overrides_of(args), args.out)


def parse_config(argv: list[str]) -> Config:
    """The ``Config`` that ``python simulations/central.py ARGV`` runs."""
    return config_from_args(make_parser().parse_args(argv))


@guarded
def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    cfg = config_from_args(args)  # bad input (settings, data): @guarded's error line
    try:
        summary = run(cfg)
    except ValueError as exc:  # e.g. a tower the dataset has no side information for
        print(error_line(exc), file=sys.stderr)
        return 2
    print(f"done: {summary['final']} -> {Path(cfg.run.out) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
