"""``flower-supernode`` with a shorter idle poll: the SuperNode of ``simulations/cluster.py``.

    python simulations/supernode.py [--poll S] FLOWER-SUPERNODE-ARGUMENTS...

Flower 1.42's SuperNode asks the SuperLink for a message, and when there is none sleeps a
fixed 3 s (``start_client_internal``; no setting). A round has two messages per node (train,
then evaluate), and the evaluate message is never there when a node has just sent its train
reply (the server is still aggregating), so every round waits about 3 s for nothing, plus up to
3 s for the train message. It also checks every 0.5 s whether its ClientApp has replied. This
entry point runs Flower's own ``flower-supernode`` with those two waits set to ``--poll``
seconds (default 0.2; each idle node then sends the SuperLink one small request per ``--poll``
seconds: raise it for hundreds of nodes). Everything else is Flower's.
"""

from __future__ import annotations

import argparse
import sys
import time
import types

#: Flower 1.42's fixed waits in ``flwr.supernode.start_client_internal``: no message (3 s),
#: the ClientApp's reply not there yet (0.5 s)
FLOWER_WAITS = (3, 0.5)


def patch_waits(module: types.ModuleType, poll: float) -> None:
    """Make ``module``'s fixed waits (:data:`FLOWER_WAITS`) last ``poll`` seconds instead."""
    if not hasattr(module, "time") or module.time is not time:
        raise RuntimeError(f"{module.__name__} no longer sleeps with the time module: "
                           "this flwr version is not the one fedrec pins")
    sleep = time.sleep

    def short_sleep(seconds: float) -> None:
        sleep(min(seconds, poll) if seconds in FLOWER_WAITS else seconds)

    shim = types.ModuleType("time")
    shim.__dict__.update(vars(time))
    shim.sleep = short_sleep
    module.time = shim


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--poll", type=float, default=0.2)
    args, rest = p.parse_known_args(argv)
    if not 0.01 <= args.poll <= 3:
        sys.exit(f"error: --poll {args.poll:g}: expected 0.01..3 seconds")
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli.flower_supernode import flower_supernode

    patch_waits(start_client_internal, args.poll)
    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
