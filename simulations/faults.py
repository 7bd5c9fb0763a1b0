"""Faults injected into a local cluster run (``simulations/cluster.py --inject``).

    kill-node=K@round=R[,restart=S]      SIGKILL SuperNode K (and its children) when round R
                                         starts; restart it S seconds later
    kill-superlink@round=R[,restart=S]   the same for the SuperLink (and the ServerApp under it)
    kill-serverapp@round=R[,restart=S]   only the ServerApp process

"Round R starts" = ``metrics.csv`` holds R-1 rows. A restarted SuperLink or ServerApp gets the
run submitted again; the new ServerApp resumes from the run directory's last checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fedrec.cli import UsageError

_PATTERN = re.compile(
    r"^kill-(?P<kind>node|superlink|serverapp)(?:=(?P<node>\d+))?@round=(?P<round>\d+)"
    r"(?:,restart=(?P<restart>\d+(?:\.\d*)?))?$"
)


@dataclass
class Fault:
    text: str
    kind: str  # node | superlink | serverapp
    node: int | None
    round: int
    restart: float | None
    fired: bool = False

    @property
    def targets(self) -> tuple[str, ...]:
        """Names of the processes the fault kills (as in ``ProcessGroup``): a node is its
        SuperNode and its SuperExec."""
        if self.kind == "node":
            return (f"supernode-{self.node}", f"superexec-{self.node}")
        return ("superlink",)

    def due(self, completed_rounds: int) -> bool:
        return not self.fired and completed_rounds >= self.round - 1


def parse_fault(text: str) -> Fault:
    """Parse one ``--inject`` value; a malformed one is a ValueError quoting it."""
    m = _PATTERN.match(text.strip())
    if m is None:
        raise UsageError(f"--inject {text!r}: expected kill-node=K@round=R[,restart=S], "
                         "kill-superlink@round=R[,restart=S] or kill-serverapp@round=R"
                         "[,restart=S]")
    kind = m["kind"]
    if (kind == "node") != (m["node"] is not None):
        raise UsageError(f"--inject {text!r}: a node number goes with kill-node only")
    rnd = int(m["round"])
    if rnd < 1:
        raise UsageError(f"--inject {text!r}: round must be at least 1")
    return Fault(text, kind, int(m["node"]) if m["node"] else None, rnd,
                 float(m["restart"]) if m["restart"] is not None else None)
