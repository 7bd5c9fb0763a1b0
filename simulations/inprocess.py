"""An in-process stand-in for Flower's Grid: each node is a Context and messages are handed to
the ClientApp directly, in node order, in this process.

For unit tests, and for benchmarks and sweeps that run many experiments on a small shared
machine: the ServerApp loop and ClientApp handlers are the real ones, only Flower's transport is
skipped (Ray's actors compete badly for two busy cores: an ML-100K round measured 0.6 s alone and
20 s beside two other jobs). ``simulations/launch.py`` always uses Flower's simulation engine.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from fedrec.config import Config


class InProcessGrid:
    def __init__(self, client_app: ClientApp, n_nodes: int, node_config: dict | None = None,
                 record: bool = True):
        """``record``: keep every message sent and received in ``sent`` / ``replies`` (tests
        read them; a long run would hold every round's arrays)."""
        self.app = client_app
        self.record = record
        # what run_simulation sets up before a ServerApp may create messages
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
        self.contexts = {
            1000 + i: Context(
                run_id=1,
                node_id=1000 + i,
                node_config={"partition-id": i, "num-partitions": n_nodes, **(node_config or {})},
                state=RecordDict(),
                run_config={},
            )
            for i in range(n_nodes)
        }
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self._pending: dict[str, Message] = {}

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        """Hand each message to its node's ClientApp now and return the replies (tests
        override this to lose or spoil replies)."""
        out = []
        for msg in messages:
            if self.record:
                self.sent.append(msg)
            msg.metadata.__dict__["_message_id"] = msg.object_id  # as Flower's grids do
            try:
                reply = self.app(msg, self.contexts[msg.metadata.dst_node_id])
            except Exception as exc:  # Flower turns a ClientApp exception into an error reply
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"),
                                reply_to=msg)
            out.append(reply)
        if self.record:
            self.replies.extend(out)
        return out

    # Grid's push/pull (what server.exchange uses): delivery happens at the push, so a reply
    # missing after it never comes (DELIVERS_ON_PUSH: no need to wait for it)
    DELIVERS_ON_PUSH = True

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        msgs = list(messages)
        for msg in msgs:
            msg.metadata.__dict__["_message_id"] = msg.object_id
        for reply in self.send_and_receive(msgs):
            self._pending[reply.metadata.reply_to_message_id] = reply
        return [m.metadata.message_id for m in msgs]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._pending.pop(m) for m in list(message_ids) if m in self._pending]


def run_inprocess(cfg: Config) -> dict:
    """Run ``cfg`` through ``server.loop.run_federation`` on an :class:`InProcessGrid`."""
    import logging

    from clients.app import app as client_app
    from fedrec.data.partition import num_partitions
    from fedrec.node import load_split
    from server.loop import run_federation

    flwr_log = logging.getLogger("flwr")  # Flower logs every configure/aggregate at INFO
    flwr_log.setLevel(logging.ERROR)
    flwr_log.propagate = False
    split = load_split(cfg)
    n = num_partitions(split.n_users, cfg.fed.users_per_node, cfg.fed.num_nodes)
    return run_federation(InProcessGrid(client_app, n, record=False), cfg)
