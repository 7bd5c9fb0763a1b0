"""Flower ServerApp. ``flwr run .`` reads the run config from pyproject/overrides;
``simulations/launch.py`` builds the app around a complete ``Config`` with ``make_server_app``.
"""

from __future__ import annotations

import logging
import sys
import time

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrec.config import Config
from server.loop import run_federation


def config_from_context(context: Context) -> Config:
    """Config from Flower's run config (unknown keys are an error naming the key)."""
    cfg = Config.from_flat(dict(context.run_config), source="run config")
    if not cfg.run.out:
        cfg = cfg.replace(out=f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    return cfg


def make_server_app(cfg: Config) -> ServerApp:
    """A ServerApp that runs ``cfg`` (ignores the Flower run config)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, cfg)

    return app


app = ServerApp()


def _log_progress() -> None:
    """fedrec's INFO lines (progress, resuming, dropped nodes) into the ServerApp's output,
    which Flower keeps with the run (``flwr log RUN_ID``)."""
    fedrec_log = logging.getLogger("fedrec")
    if not fedrec_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               "%H:%M:%S"))
        fedrec_log.addHandler(handler)
        fedrec_log.setLevel(logging.INFO)


@app.main()
def main(grid: Grid, context: Context) -> None:
    _log_progress()
    run_federation(grid, config_from_context(context))
