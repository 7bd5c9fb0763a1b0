"""Sending a round's messages and collecting the replies, always within a deadline.

Flower's ``Grid.send_and_receive`` polls the SuperLink every 3 s and drops a reply that misses
the timeout without a word; its strategies wait for ``min_available_nodes`` with no deadline
at all, so a node that died made the next round wait forever. Here replies are polled every
``POLL_S``, a node that does not answer in time is named in a warning and counted, and the wait
for nodes before a round ends at a deadline, after which the round goes ahead with the nodes
that are there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

log = logging.getLogger("fedrec.server")

POLL_S = 0.1


def node_names(grid: Any) -> dict[int, str]:
    """Flower node id -> the name it was registered with (``flwr supernode register --name``;
    empty without node authentication)."""
    try:
        return {int(n.node_id): str(n.name) for n in grid.get_nodes() if n.name}
    except (AttributeError, NotImplementedError):
        return {}


def label(node_id: int, names: dict[int, str]) -> str:
    name = names.get(node_id)
    return f"node {node_id} ({name})" if name else f"node {node_id}"


def payload_bytes(messages: Iterable[Message]) -> int:
    """Bytes of the messages as Flower sends them (every serialized object of each message:
    its records and arrays), before HTTP framing and TLS."""
    return sum(len(o.deflate()) for m in messages
               for o in get_all_nested_objects(m).values())


def send_and_collect(
    grid: Any, messages: Iterable[Message], timeout: float, what: str
) -> tuple[list[Message], list[int], int]:
    """Push ``messages``, pull replies until all are in or ``timeout`` seconds pass.

    Returns the replies, the (sorted) node ids that did not reply (each is logged with a
    warning naming the node) and the bytes of the messages and replies (``payload_bytes``).
    """
    messages = list(messages)
    for m in messages:  # a message nobody waits for any more is not delivered late
        m.metadata.ttl = float(timeout)
    ids = list(grid.push_messages(messages))
    dst = {mid: int(m.metadata.dst_node_id) for mid, m in zip(ids, messages, strict=True)}
    refused = sorted(dst[m] for m in ids if not m)
    pending = {m for m in ids if m}
    replies: list[Message] = []
    # an in-process grid (simulations/inprocess.py) has delivered everything at the push
    deadline = time.monotonic() + (0.0 if getattr(grid, "DELIVERS_ON_PUSH", False) else timeout)
    while pending:
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
    order = {mid: i for i, mid in enumerate(ids)}  # sums in push order, not arrival order:
    replies.sort(key=lambda m: order.get(m.metadata.reply_to_message_id, len(order)))
    nbytes = payload_bytes(messages) + payload_bytes(replies)
    # the SuperLink answers for a node it lost (heartbeat missed, message expired): that is
    # a missing reply of the destination node, not a failure of node SUPERLINK_NODE_ID
    lost = {dst[m.metadata.reply_to_message_id]: m.error.reason for m in replies
            if m.has_error() and m.metadata.src_node_id == SUPERLINK_NODE_ID
            and m.metadata.reply_to_message_id in dst}
    replies = [m for m in replies if not (m.has_error() and m.metadata.src_node_id ==
                                          SUPERLINK_NODE_ID)]
    missing = sorted(refused + [dst[m] for m in pending] + list(lost))
    if missing:
        names = node_names(grid)
        for n in missing:
            why = f" (SuperLink: {lost[n]})" if n in lost else f" within {timeout:g} s"
            log.warning("%s: no reply from %s%s; the round goes on without it",
                        what, label(n, names), why)
    return replies, missing, nbytes


def await_nodes(grid: Any, strategy: Any, n_nodes: int, timeout: float,
                expected: set[int] | None = None) -> set[int]:
    """Wait until ``n_nodes`` nodes are connected or ``timeout`` seconds pass, then let the
    strategy sample from those connected (its minimum node counts are lowered to them).

    ``expected``: node ids seen before; those now absent are named in a warning. Returns the
    connected node ids. No node at all after ``timeout`` is an error.
    """
    deadline = time.monotonic() + timeout
    while len(nodes := set(grid.get_node_ids())) < n_nodes and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if not nodes:
        raise RuntimeError(f"no node connected within {timeout:g} s (setting 'timeout')")
    if len(nodes) < n_nodes:
        gone = sorted((expected or set()) - nodes)
        names = node_names(grid)
        log.warning(
            "%d of %d nodes connected; the round goes on without the others%s",
            len(nodes), n_nodes,
            f" ({', '.join(label(n, names) for n in gone)} gone)" if gone else "",
        )
    count = min(len(nodes), n_nodes)
    while strategy is not None:  # through wrappers (server.privacy.PrivateStrategy) to Flower's
        for attr in ("min_available_nodes", "min_train_nodes", "min_evaluate_nodes"):
            if hasattr(strategy, attr):
                setattr(strategy, attr, count)
        strategy = getattr(strategy, "inner", None)
    return nodes
