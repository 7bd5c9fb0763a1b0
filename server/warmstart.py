"""Warm start of the item biases from the items' popularity (``item-bias-init = popularity``).

Before round 1 the server asks every node (a ``query`` message, stage ``popularity``) for the
sum over its users of their unit-norm item histograms (each user's training positives, divided
by ``sqrt(|I_u|)``: :func:`fedrec.models.popularity.user_normalised_counts`), adds the nodes'
vectors and sets the item biases to the log of the total (:func:`popularity_bias`). The model
then starts as the popularity ranking instead of a constant, which every later round refines.

Under ``privacy = "user"`` one user changes the total by exactly 1 in L2 norm, so the total is
released with Gaussian noise ``popularity-noise * z`` from OS entropy
(:meth:`server.privacy.UserLevelDP.release_histogram`): one step without sampling, accounted
with the rounds and calibrated with them to ``target-epsilon`` (on ML-1M at epsilon 1 it moves
``z`` from 4.76 to 5.02; the noisy histogram still ranks as well as the exact one). Items below
the floor (the noise std, or the weight of a handful of users) share one bias.

The warm start is written as checkpoint round 0 (arrays and accountant), so a run that stops
before round 1 resumes without a second release.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from fedrec.config import Config
from fedrec.models.popularity import POPULARITY_FLOOR, popularity_bias
from fedrec.node import COUNTS_KEY, POPULARITY_STAGE
from fedrec.privacy import secagg
from server.exchange import send_and_collect

log = logging.getLogger("fedrec.server")

def popularity_start(grid, cfg: Config, arrays: dict[str, np.ndarray], private,
                     nodes: set[int]) -> dict[str, np.ndarray]:
    """``arrays`` with ``item_bias`` set from the nodes' (noised, when private) histogram."""
    conf = {**cfg.to_flat(), secagg.STAGE_KEY: POPULARITY_STAGE, "server-round": 0}
    queries = [Message(RecordDict({"config": ConfigRecord(conf)}), dst_node_id=n,
                       message_type=MessageType.QUERY) for n in sorted(nodes)]
    replies, missing, _ = send_and_collect(grid, queries, cfg.fed.timeout, "popularity")
    replies = [m for m in replies if not m.has_error()]
    if not replies:
        raise RuntimeError("popularity: no node replied with its histogram")
    n_items = arrays["item_bias"].shape[0]
    total = np.zeros(n_items)
    for m in replies:
        h = m.content["arrays"][COUNTS_KEY].numpy()
        if h.shape != (n_items,) or not np.isfinite(h).all() or (h < 0).any():
            raise ValueError(f"popularity: a node replied an invalid histogram "
                             f"(shape {h.shape}, expected ({n_items},), finite, >= 0)")
        total += h
    floor = POPULARITY_FLOOR
    if private is not None:
        total = private.release_histogram(total)
        floor = max(floor, cfg.privacy.popularity_noise * private.z)
    out = dict(arrays)
    out["item_bias"] = popularity_bias(total, floor).astype(arrays["item_bias"].dtype)
    log.info("item biases from the popularity of %d nodes' users%s", len(replies),
             f" ({len(missing)} missing)" if missing else "")
    return out

