"""fedrec's secure sum (``dp-trust = secagg``) checked against Flower's own legacy SecAgg+
(issue 11, requirement 3).

The same fixed per-node vectors go through

* Flower's legacy SecAgg+: ``run_simulation`` of a ServerApp running
  ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`` over a ``LegacyContext`` and a
  ClientApp with ``mods=[secaggplus_mod]`` whose NumPyClient replies the node's vector (key
  agreement, Shamir shares of the self-mask seeds, pairwise and self masks, unmasking: all of it);
* fedrec's secagg path with the noise switched off (``noise-multiplier = 0``): the server's key
  exchange (``UserLevelDP._key_exchange``) against the nodes' real ``query`` handler, each node's
  ``clients.secagg.masked_share`` (quantise, mask), the server's ``noisy_total`` (sum modulo
  ``2^62``, decode),

and both totals must equal the plain float sum, and each other, within the quantisation error
of each. Two cases, one simulation round each: float vectors of model-update magnitude under
Flower's default ``clipping_range``, and clipped cohort sums under the bound ``R`` fedrec's
server computes with the noise off (``R = max-users C``; one coordinate exactly at ``R``: every
user of the largest node at ``C``), which is then also Flower's ``clipping_range``.

**Sum, not mean.** SecAgg+ replies ``[w, w * x]`` (``w = num-examples / max_weight``, quantised
to ``round(w T) / T``) and the workflow hands the strategy the weighted *mean*
``sum(w_i x_i) / sum(w_i)``. Every node here replies ``num-examples = max_weight``: ``w = 1``
exactly, so ``x`` is not rescaled before quantisation and the mean is the sum over
``sum(w_i) = n``; the legacy sum compared below is ``n`` times the recorded mean.

Found on the way (Flower 1.42, left alone): the unmask stage of ``SecAggPlusWorkflow`` decodes
a 0-d array wrongly (it misses the offset ``-(n-1)c`` and the division by the total weight), so
the 0-d ``bias`` goes to Flower as shape ``(1,)``; fedrec keeps its 0-d shape.
"""

from __future__ import annotations

import logging
import math
import os
import warnings

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import ServerApp
from flwr.serverapp.strategy import FedAvg as MessageFedAvg
from flwr.simulation import run_simulation

from clients import app as node_app
from clients import secagg as node_secagg
from fedrec.config import Config
from fedrec.privacy import secagg
from server.privacy import UserLevelDP
from simulations.inprocess import InProcessGrid
from tests.helpers import RAY

pytestmark = RAY  # one Ray at a time under pytest -n (tests.helpers)

N_NODES = 5
SHAPES = {"bias": (), "item_emb": (64, 5)}  # 321 coordinates; legacy order = sorted names
N_PARAMS = sum(math.prod(s) for s in SHAPES.values())
MAX_USERS, CLIP = 100, 1.0  # fedrec case: largest node's users, clip-norm C

# Legacy SecAgg+ settings. num_shares = n (every node shares with every other, as fedrec
# masks every pair); threshold 3 of 5. quantization_range T and modulus_range M are Flower's
# defaults (2^22, 2^32): the integer total of n = 5 nodes, at most n T = 5 * 2^22, and the
# total weight n T stay far below M, so nothing wraps. clipping_range c per case is chosen
# above every |x| of the case (asserted below), so np.clip in Flower's quantize never acts.
T_LEGACY, M_LEGACY, MAX_WEIGHT = 1 << 22, 1 << 32, 1000.0
CLIP_FLOAT = 8.0  # Flower's default clipping_range; case "float" has |x| < 5
R_FEDREC = secagg.quantisation_bound(MAX_USERS, CLIP, 0.0, N_NODES)  # what the server sends
CASES = {1: ("float", CLIP_FLOAT), 2: ("fedrec-bound", R_FEDREC)}


def _flat(x: dict[str, np.ndarray], dtype=np.float64) -> np.ndarray:
    return np.concatenate([np.asarray(x[k], dtype=dtype).ravel() for k in sorted(SHAPES)])


def node_vectors(case: str) -> list[dict[str, np.ndarray]]:
    """Each node's fixed vector (float64), deterministic."""
    rs = np.random.default_rng({"float": 11, "fedrec-bound": 12}[case])
    out = []
    for i in range(N_NODES):
        if case == "float":  # a model update of the usual size: N(0, 1)
            out.append({k: rs.normal(0.0, 1.0, s) for k, s in SHAPES.items()})
            continue
        # a node's sum of clipped user updates: 40..MAX_USERS users, each of L2 norm <= C
        users = MAX_USERS if i == 0 else int(rs.integers(40, MAX_USERS))
        u = rs.normal(size=(users, N_PARAMS))
        u *= (CLIP * rs.uniform(0.2, 1.0, (users, 1))) / np.linalg.norm(u, axis=1, keepdims=True)
        flat = u.sum(axis=0)
        if i == 0:  # every user of the largest node at C in one coordinate: exactly at R
            flat[7] = MAX_USERS * CLIP
        parts, at = {}, 0
        for k in sorted(SHAPES):
            size = math.prod(SHAPES[k])
            parts[k] = flat[at:at + size].reshape(SHAPES[k])
            at += size
        out.append(parts)
    return out


# ----------------------------------------------------------------- Flower's legacy SecAgg+
class _Recording(FedAvg):
    """FedAvg whose ``aggregate_fit`` records what SecAgg+ hands it (every result carries the
    same unmasked aggregate)."""

    def __init__(self, sink: dict, **kw):
        super().__init__(**kw)
        self.sink = sink

    def aggregate_fit(self, server_round, results, failures):
        assert not failures, failures
        agg = results[0][1].parameters
        self.sink[server_round] = parameters_to_ndarrays(agg)
        return agg, {}


class _Wiretap:
    """The ServerApp's grid, recording the replies of stage 'collect masked vectors' (what the
    server sees of each node) by partition id."""

    def __init__(self, grid, sink: dict):
        self._grid, self._sink = grid, sink

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if messages and messages[0].content.config_records[RECORD_KEY_CONFIGS].get(
                Key.STAGE) == Stage.COLLECT_MASKED_VECTORS:
            for m in replies:
                rec = m.content.config_records[RECORD_KEY_CONFIGS]
                pid = int(compat.recorddict_to_fitres(m.content, False).metrics["partition-id"])
                self._sink[pid] = [bytes_to_ndarray(b) for b in rec[Key.MASKED_PARAMETERS]]
        return replies


def legacy_secaggplus_totals() -> tuple[dict[int, list[np.ndarray]], dict[int, dict]]:
    """Round r of one simulation runs case ``CASES[r]``; returns the aggregate the workflow
    handed the strategy per round, and the masked vectors the server received per round and
    partition."""
    vectors = {r: node_vectors(name) for r, (name, _) in CASES.items()}
    workflows = {r: SecAggPlusWorkflow(num_shares=N_NODES, reconstruction_threshold=3,
                                       max_weight=MAX_WEIGHT, clipping_range=c,
                                       quantization_range=T_LEGACY, modulus_range=M_LEGACY)
                 for r, (_, c) in CASES.items()}

    class Node(NumPyClient):
        def __init__(self, pid: int):
            self.pid = pid

        def fit(self, parameters, config):
            r = int(config["round"])
            # Flower's quantize rounds stochastically with numpy's global generator: seed it so
            # the run is reproducible (the assertions hold for any draw)
            np.random.seed(1000 * r + self.pid)
            x = vectors[r][self.pid]
            # 0-d arrays go as shape (1,): Flower 1.42's unmask stage applies the offset
            # -(n-1)c and the division by the total weight in place (`vec += offset`), which
            # does nothing to a 0-d array (numpy returns a scalar from its dequantize)
            return [np.atleast_1d(np.asarray(x[k], dtype=np.float64)) for k in sorted(SHAPES)], \
                int(MAX_WEIGHT), {"partition-id": self.pid}

    client_app = ClientApp(
        client_fn=lambda context: Node(int(context.node_config["partition-id"])).to_client(),
        mods=[secaggplus_mod])

    aggregates: dict[int, list[np.ndarray]] = {}
    masked: dict[int, dict] = {r: {} for r in CASES}
    server_app = ServerApp()

    @server_app.main()
    def main(grid, context: Context) -> None:
        zero = [np.zeros(s or (1,)) for _, s in sorted(SHAPES.items())]
        strategy = _Recording(
            aggregates, fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=N_NODES,
            min_available_clients=N_NODES, initial_parameters=ndarrays_to_parameters(zero),
            on_fit_config_fn=lambda r: {"round": r})
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=len(CASES)),
                               strategy=strategy)

        def fit_workflow(g, ctx):
            r = int(ctx.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
            workflows[r](_Wiretap(g, masked[r]), ctx)

        DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)

    for k, v in {"FLWR_TELEMETRY_ENABLED": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
                 "RAY_DEDUP_LOGS": "0"}.items():
        os.environ.setdefault(k, v)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=N_NODES,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"logging_level": "ERROR",
                                                     "log_to_driver": False,
                                                     "include_dashboard": False,
                                                     "num_cpus": 2}})
    return aggregates, masked


# ----------------------------------------------------------------- fedrec's secagg path
def fedrec_total(case: str) -> tuple[dict[str, np.ndarray], dict[int, Message], float]:
    """fedrec's server and nodes on an in-process grid, noise off: the decoded total, the
    nodes' replies (masked) by partition id and the bound the server sent."""
    vectors = node_vectors(case)
    cfg = Config.from_flat({"privacy": "user", "dp-trust": "secagg", "clip-norm": CLIP,
                            "noise-multiplier": 0.0, "users-per-node": MAX_USERS})
    app = ClientApp()
    app.query()(node_app.query)  # the node's real key exchange handler

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        # the secagg branch of clients.app.train, with the node's clipped sum fixed
        x = vectors[int(context.node_config["partition-id"])]
        arrays = node_secagg.masked_share(cfg, msg, context, int(
            msg.content["config"]["server-round"]), x)
        return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in
                                                          arrays.items()})}), reply_to=msg)

    grid = InProcessGrid(app, N_NODES)
    strategy = UserLevelDP(MessageFedAvg(), cfg, n_users=N_NODES * MAX_USERS, n_nodes=N_NODES)
    assert strategy.trust == "secagg" and strategy.z == 0.0
    strategy.base = {k: np.zeros(s) for k, s in SHAPES.items()}  # as configure_train sets it
    r = 4
    msgs = [Message(RecordDict({"config": ConfigRecord({"server-round": r})}), dst_node_id=i,
                    message_type=MessageType.TRAIN) for i in grid.get_node_ids()]
    strategy._key_exchange(r, msgs, grid)
    replies = grid.send_and_receive(msgs)
    assert not any(m.has_error() for m in replies), [m.error for m in replies if m.has_error()]
    bound = float(msgs[0].content["config"][secagg.BOUND_KEY])
    by_pid = {int(grid.contexts[m.metadata.src_node_id].node_config["partition-id"]): m
              for m in replies}
    return strategy.noisy_total(r, replies), by_pid, bound


# ----------------------------------------------------------------- the check
@pytest.mark.slow
def test_fedrec_secure_sum_agrees_with_flowers_legacy_secaggplus():
    aggregates, masked = legacy_secaggplus_totals()
    assert sorted(aggregates) == sorted(CASES), "the legacy SecAgg+ simulation did not finish"
    eps = np.finfo(np.float64).eps
    for r, (case, c) in CASES.items():
        vectors = node_vectors(case)
        plain = sum(_flat(v) for v in vectors)
        assert max(np.abs(_flat(v)).max() for v in vectors) <= c  # no clipping in Flower

        # legacy: the recorded weighted mean times the total weight n (w = 1 per node).
        # Stochastic rounding moves each node's value by less than one step 2c/T; float64
        # rounding of the decoding (values up to 2 n c) adds a few ulp.
        legacy = N_NODES * np.concatenate([a.ravel() for a in aggregates[r]])
        tol_legacy = N_NODES * 2 * c / T_LEGACY + 64 * eps * 2 * N_NODES * c
        err_legacy = np.abs(legacy - plain).max()
        assert err_legacy <= tol_legacy, (case, err_legacy, tol_legacy)

        # fedrec: the documented bound (quantisation_slack: L2 of the error; 1.5 n steps per
        # coordinate)
        total, replies, bound = fedrec_total(case)
        if case == "fedrec-bound":
            assert bound == R_FEDREC == c
        fedrec = _flat(total)
        slack = secagg.quantisation_slack(N_PARAMS, bound, N_NODES)
        err_fedrec = np.abs(fedrec - plain).max()
        assert np.linalg.norm(fedrec - plain) <= slack, (case, err_fedrec, slack)
        assert err_fedrec <= slack / math.sqrt(N_PARAMS)

        # the two secure sums agree with each other within both errors
        err_both = np.abs(legacy - fedrec).max()
        assert err_both <= tol_legacy + slack / math.sqrt(N_PARAMS), (case, err_both)

        # masking happened: node 0's reply is far from its quantised plain input in both.
        # Legacy: [w T, q(x)] (q within one of (x + c) T / 2c) plus masks on [0, M);
        # fedrec: q(x) plus masks uniform on [0, 2^62)
        assert sorted(masked[r]) == list(range(N_NODES))
        got = np.concatenate([a.ravel() for a in masked[r][0]]).astype(np.float64)
        assert got.size == N_PARAMS + 1 and got.max() < M_LEGACY
        near = np.abs(got[1:] - (_flat(vectors[0]) + c) * T_LEGACY / (2 * c)) <= 1
        assert got[0] != T_LEGACY and near.mean() < 0.01
        q = _flat(secagg.quantize(vectors[0], bound, N_NODES), np.uint64)
        m = _flat({k: a.numpy().view(np.uint64) for k, a in replies[0].content["arrays"].items()},
                  np.uint64)
        assert (m != q).mean() > 0.99 and m.max() < secagg.MODULUS
        assert abs(m.astype(np.float64).mean() / secagg.MODULUS - 0.5) < 0.1
        print(f"{case}: max |legacy - sum| {err_legacy:.3g} (tol {tol_legacy:.3g}), "
              f"|fedrec - sum| {err_fedrec:.3g} (tol {slack / math.sqrt(N_PARAMS):.3g}), "
              f"|legacy - fedrec| {err_both:.3g}")
