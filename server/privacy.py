"""Differential privacy as strategy wrappers (DESIGN section 5), in the shape of Flower's own
``DifferentialPrivacyServerSideFixedClipping``: a wrapper around *any* Flower strategy, so the
round loop has no DP branches.

:class:`UserLevelDP` (``privacy = "user"``, DP-FedAvg). Nodes sample their users themselves,
each independently with probability ``q = fraction-train`` from OS entropy (nobody can predict a
cohort, as the accountant's amplification by sampling assumes), clip each sampled user's update
of the shared parameters to ``C`` and reply the **sum** of the clipped updates and nothing else
(a constant ``num-examples = 1``). Then, by ``dp-trust``:

* ``server`` (central DP, trusted aggregator): the wrapper adds ``N(0, z^2 C^2)`` from OS entropy
  to the total. The guarantee covers everything the server releases (models, checkpoints,
  ``metrics.csv``, ``summary.json``) but nothing against the server: it sees each node's exact
  clipped sum;
* ``secagg`` (distributed DP): before the round the wrapper runs a key exchange (a ``query``
  message; each node answers a fresh public key) and each node adds its share
  ``N(0, z^2 C^2 / n)`` of the noise to its sum, quantises and masks it
  (:mod:`fedrec.privacy.secagg`); the server only learns the total of the noisy sums. The
  guarantee then also holds against an honest-but-curious server (not against one that
  tampers with the key exchange, and a coalition of the server with ``k`` nodes removes their
  shares: ``(n - k) / n`` of the noise variance remains). A missing reply fails the round.

The total divided by the fixed expected cohort ``qN`` moves the global parameters; the result is
handed to the wrapped strategy as its only reply (post-processing: FedAdam etc. stay DP). The
accountant composes one Poisson-subsampled Gaussian step per round; the noise multiplier is
checkpointed with it, and a resumed run keeps it (a changed ``num-rounds`` would otherwise
recalibrate ``z`` under the old accountant): the budget then stops the run.

:class:`SampleLevelDP` (``privacy = "sample"``): nodes run per-user DP-SGD with the calibrated
``sigma`` this wrapper puts into the train config; it computes the worst user's epsilon.

Evaluation replies (HR/NDCG sums over each node's users) are outside both guarantees: they serve
the measurement in simulation and ``summary.json`` says so (``privacy.outside_guarantee``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedrec.config import Config
from fedrec.data.partition import partition_users
from fedrec.data.schema import SplitData
from fedrec.privacy import secagg
from fedrec.privacy.accountants import UserLevelAccountant
from fedrec.privacy.analysis import default_delta
from fedrec.privacy.calibration import noise_for_target
from fedrec.privacy.mechanism import DP_NOISE, gaussian_noise, secret_rng
from fedrec.privacy.sample_level import SampleLevelPrivacy

log = logging.getLogger("fedrec.server")

OUTSIDE_GUARANTEE = ("evaluation: final, validation and the metrics.csv evaluation columns are "
                     "exact sums over each node's users, sent for measurement in simulation")


def strategy_vars(strategy: Strategy) -> dict[str, Any]:
    """A strategy's state for a checkpoint: its non-callable attributes, with ArrayRecords
    copied into fresh arrays (one received from a message may hold an unpicklable memoryview:
    FedAvgM without server optimisation keeps the first round's)."""
    out: dict[str, Any] = {}
    for k, v in vars(strategy).items():
        if callable(v):
            continue
        if isinstance(v, ArrayRecord):
            v = ArrayRecord({n: Array(np.array(a.numpy(), order="C")) for n, a in v.items()})
        out[k] = v
    return out


class PrivateStrategy(Strategy):
    """A strategy wrapper that adds DP and accounts it; everything else goes to ``inner``."""

    mode = "none"

    def __init__(self, inner: Strategy, cfg: Config) -> None:
        self.inner = inner
        self.cfg = cfg
        self.target = cfg.privacy.target_epsilon

    # -- what the round loop asks ---------------------------------------------------------
    def stop_reason(self, round_: int) -> str | None:
        """Why ``round_`` must not run (the budget), or None."""
        if self.target > 0 and math.isfinite(self.target) and self.exhausted(round_):
            return f"privacy budget: round {round_} would exceed epsilon {self.target:g}"
        return None

    def exhausted(self, round_: int) -> bool:
        raise NotImplementedError

    def epsilon(self) -> dict[str, float]:
        raise NotImplementedError

    def privacy_summary(self) -> dict[str, Any]:
        """The ``privacy`` entry of summary.json."""
        seed = self.cfg.privacy.dp_seed
        return {
            "private": seed < 0,
            "randomness": "os-entropy" if seed < 0 else
            f"debug dp-seed={seed}: DP noise and sampling are reproducible from it; NOT PRIVATE",
            "outside_guarantee": [OUTSIDE_GUARANTEE],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"inner": strategy_vars(self.inner)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self.inner).update(state["inner"])

    # -- delegation ----------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()


class UserLevelDP(PrivateStrategy):
    """User-level DP-FedAvg around ``inner`` (see the module doc)."""

    mode = "user"

    def __init__(self, inner: Strategy, cfg: Config, n_users: int, n_nodes: int) -> None:
        super().__init__(inner, cfg)
        p = cfg.privacy
        self.q = cfg.fed.fraction_train
        self.expected_count = self.q * n_users
        self.delta = p.delta or default_delta(n_users)
        self.trust = p.dp_trust
        self.z = self.calibrate(cfg, self.q, self.delta)
        self.accountant = UserLevelAccountant(self.z, self.q)
        self.histogram = 0  # releases of the popularity histogram (server/warmstart.py): 0 or 1
        self.max_node_users = max(len(u) for u in partition_users(n_users, n_nodes))
        self.base: dict[str, np.ndarray] = {}
        self.peers: list[int] = []
        log.info(
            "user-level DP (%s): q=%.4g, C=%.3g, z=%.4g, delta=%.3g, expected cohort %.1f%s%s",
            self.trust, self.q, p.clip_norm, self.z, self.delta, self.expected_count,
            f", target epsilon {self.target:g}" if self.target > 0 else "",
            "" if p.dp_seed < 0 else f"; DEBUG dp-seed={p.dp_seed}: NOT PRIVATE",
        )

    @staticmethod
    def calibrate(cfg: Config, q: float, delta: float) -> float:
        """``noise-multiplier`` when given (or no target), else the smallest ``z`` that fits
        ``num-rounds`` rounds into ``target-epsilon``."""
        p = cfg.privacy
        if p.noise_multiplier > 0 or p.target_epsilon == 0:
            return p.noise_multiplier
        if math.isinf(p.target_epsilon):
            return 0.0
        ratio = p.popularity_noise if cfg.model.item_bias_init == "popularity" else 0.0
        return noise_for_target(p.target_epsilon, delta, q, cfg.fed.num_rounds,
                                histogram_ratio=ratio)

    def release_histogram(self, total: np.ndarray) -> np.ndarray:
        """``total`` (the sum of the users' unit-norm item histograms) plus
        ``N(0, (popularity-noise * z)^2)`` from OS entropy, accounted as one step without
        sampling before the rounds (``item-bias-init = popularity``)."""
        if self.histogram:
            raise RuntimeError("the popularity histogram is released once per run")
        z_hist = self.cfg.privacy.popularity_noise * self.z
        gen = secret_rng(self.cfg.privacy.dp_seed, DP_NOISE, 0)
        noisy = np.asarray(total, dtype=np.float64) + gaussian_noise(
            {"h": np.shape(total)}, z_hist, gen)["h"]
        if z_hist > 0:
            self.accountant.step(1, noise_multiplier=z_hist, sample_rate=1.0)
            self.accountant.step(0, noise_multiplier=self.z, sample_rate=self.q)
        self.histogram = 1
        log.info("popularity histogram released with noise multiplier %.4g (sensitivity 1)",
                 z_hist)
        return noisy

    def exhausted(self, round_: int) -> bool:
        return self.accountant.would_exceed(self.target, self.delta)

    def epsilon(self) -> dict[str, float]:
        if self.accountant.steps == 0:
            return {"prv": 0.0, "rdp": 0.0}
        return self.accountant.epsilon(self.delta)

    # -- one round -----------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.base = {k: np.asarray(a.numpy(), dtype=np.float64) for k, a in arrays.items()}
        config = ConfigRecord({**config, "noise-multiplier": float(self.z)})
        msgs = list(self.inner.configure_train(server_round, arrays, config, grid))
        if self.trust == "secagg":
            self._key_exchange(server_round, msgs, grid)
        return msgs

    def _key_exchange(self, r: int, msgs: list[Message], grid: Grid) -> None:
        """Collect a fresh public key from every node of the round and send all of them (with
        the peers' ids and the quantisation range) in the train messages."""
        ids = [int(m.metadata.dst_node_id) for m in msgs]
        queries = [Message(RecordDict({"config": ConfigRecord({secagg.STAGE_KEY: "keys",
                                                               "server-round": r})}),
                           dst_node_id=i, message_type=MessageType.QUERY) for i in ids]
        replies = list(grid.send_and_receive(queries, timeout=self.cfg.fed.timeout))
        keys = {int(m.metadata.src_node_id): bytes(m.content["config"][secagg.PUBLIC_KEY])
                for m in replies if not m.has_error()}
        secagg.check_complete(ids, list(keys), r)
        self.peers = sorted(ids)
        bound = secagg.quantisation_bound(self.max_node_users, self.cfg.privacy.clip_norm,
                                          self.z, len(self.peers))
        n_params = sum(int(np.prod(a.shape)) for a in self.base.values())
        slack = secagg.quantisation_slack(n_params, bound, len(self.peers))
        if slack > 1e-6 * self.cfg.privacy.clip_norm:
            raise RuntimeError(f"secure aggregation: quantisation error up to {slack:.3g} "
                               f"exceeds 1e-6 clip-norm ({len(self.peers)} nodes)")
        for m in msgs:
            conf = m.content["config"]
            conf[secagg.PEERS_KEY] = list(self.peers)
            conf[secagg.PUBLIC_KEYS_KEY] = [keys[i] for i in self.peers]
            conf[secagg.BOUND_KEY] = float(bound)

    def noisy_total(self, server_round: int, replies: list[Message]) -> dict[str, np.ndarray]:
        """Sum of the nodes' clipped sums plus ``N(0, z^2 C^2)`` (added here, or by the nodes
        in shares under secure aggregation)."""
        arrays = [{k: a.numpy() for k, a in m.content["arrays"].items()} for m in replies]
        if self.trust == "secagg":
            secagg.check_complete(self.peers, [int(m.metadata.src_node_id) for m in replies],
                                  server_round)
            bound = secagg.quantisation_bound(self.max_node_users, self.cfg.privacy.clip_norm,
                                              self.z, len(self.peers))
            return secagg.dequantize_sum(secagg.sum_masked(arrays), bound, len(self.peers))
        total = {k: np.zeros(a.shape, dtype=np.float64) for k, a in self.base.items()}
        for rep in arrays:
            for k in total:
                total[k] += np.asarray(rep[k], dtype=np.float64)
        gen = secret_rng(self.cfg.privacy.dp_seed, DP_NOISE, server_round)
        noise = gaussian_noise({k: v.shape for k, v in total.items()},
                               self.z * self.cfg.privacy.clip_norm, gen)
        return {k: total[k] + noise[k] for k in total}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        total = self.noisy_total(server_round, replies)
        new = {k: self.base[k] + total[k] / self.expected_count for k in self.base}
        self.accountant.step()
        agg, _ = self.inner.aggregate_train(server_round, [_single_reply(new)])
        return agg, MetricRecord({})

    # -- summary and checkpoint ----------------------------------------------------------
    def privacy_summary(self) -> dict[str, Any]:
        eps = self.epsilon()
        return {
            "mode": "user",
            "trust": self.trust,
            "protects": "everything the server releases (models, checkpoints, metrics); the "
                        "server is trusted" if self.trust == "server" else
                        "the same, and each node's update against an honest-but-curious server "
                        "(it learns only the noisy total)",
            "epsilon": eps["prv"],
            "epsilon_rdp": eps["rdp"],
            "delta": self.delta,
            "noise_multiplier": self.z,
            "sample_rate": self.q,
            "clip_norm": self.cfg.privacy.clip_norm,
            "rounds_accounted": self.accountant.steps - (self.histogram if self.z > 0 else 0),
            "popularity_histogram": (
                {"noise_multiplier": self.cfg.privacy.popularity_noise * self.z,
                 "sample_rate": 1.0, "sensitivity": 1.0} if self.histogram else None),
            "accountant": "prv (headline), rdp (conservative)",
            **super().privacy_summary(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "z": self.z, "accountant": self.accountant.state_dict(),
                "histogram": self.histogram}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the inner strategy, the accountant and the noise multiplier it accounts."""
        super().load_state_dict(state)
        z = float(state["z"])
        if not math.isclose(z, self.z, rel_tol=1e-12, abs_tol=0.0):
            log.warning(
                "resumed run keeps the checkpoint's noise multiplier z=%.6g (this config would "
                "calibrate %.6g: num-rounds changed); the budget stops the run when spent", z,
                self.z)
        self.z = z
        self.accountant.load_state_dict(state["accountant"])
        self.histogram = int(state.get("histogram", 0))


class SampleLevelDP(PrivateStrategy):
    """Per-user DP-SGD around ``inner``: sends the calibrated ``sigma``, accounts the worst
    user (:class:`fedrec.privacy.sample_level.SampleLevelPrivacy`)."""

    mode = "sample"

    def __init__(self, inner: Strategy, cfg: Config, split: SplitData) -> None:
        super().__init__(inner, cfg)
        self.book = SampleLevelPrivacy(cfg, split)

    def exhausted(self, round_: int) -> bool:
        return self.book.exhausted(round_)

    def epsilon(self) -> dict[str, float]:
        return dict(self.book.eps)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        config = ConfigRecord({**config, "noise-multiplier": float(self.book.sigma)})
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        out = self.inner.aggregate_train(server_round, replies)
        self.book.observe(server_round)
        return out

    def privacy_summary(self) -> dict[str, Any]:
        return {**self.book.summary(), **super().privacy_summary()}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "sdp": self.book.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.book.load_state_dict(state["sdp"])


def with_privacy(strategy: Strategy, cfg: Config, split: SplitData,
                 n_nodes: int) -> Strategy:
    """``strategy`` wrapped for the configured privacy mode (unchanged for ``none``)."""
    if cfg.privacy.privacy == "user":
        return UserLevelDP(strategy, cfg, split.n_users, n_nodes)
    if cfg.privacy.privacy == "sample":
        return SampleLevelDP(strategy, cfg, split)
    return strategy


def _single_reply(arrays: dict[str, np.ndarray]) -> Message:
    """A reply carrying an already-aggregated model, for the wrapped strategy to post-process."""
    content = RecordDict({"arrays": ArrayRecord({k: Array(np.array(v, order="C"))
                                                 for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": 1.0})})
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)
