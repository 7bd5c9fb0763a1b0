"""Privacy audits (DESIGN section 5): seconds each, fixed seeds, and each one FAILS when the
noise is halved or removed -- every audit computes its statistic through a helper that takes a
``noise_scale`` and is run at the real noise and at a reduced one.

Audits that live elsewhere (not duplicated here):

* noise std of ``fedrec.privacy.mechanism.gaussian_noise`` and the secret generator:
  ``tests/privacy/test_mechanism.py``;
* a canary distinguisher on ``gaussian_noise`` without sampling (q = 1, each coordinate a trial):
  ``tests/privacy/test_mechanism.py::test_canary_distinguisher_audit``;
* the per-user clipping bound of user-level DP: ``tests/train/test_cohort_equivalence.py::
  test_clipping_bounds_each_users_update``; the per-unit bound of DP-SGD:
  ``tests/train/test_dpsgd.py::test_each_units_gradient_is_clipped_jointly_to_C``.

Here: the same two user-level audits through the server's own path (``server.privacy.UserLevelDP``
decoding node replies, Poisson participation of the canary with q < 1, the accountant's epsilon
for that q), and the DP-SGD noise on item rows a user never touched.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from scipy import stats

from clients.app import app as client_app
from fedrec.config import Config, TrainConfig
from fedrec.models.registry import build_model
from fedrec.privacy.analysis import compute_epsilons
from fedrec.privacy.mechanism import dp_participants
from fedrec.train.dpsgd import build_units, train_cohort_dpsgd
from server.privacy import UserLevelDP
from simulations.inprocess import InProcessGrid
from tests.helpers import tiny_split

# ------------------------------------------------------------------ user-level, server path
Z, CLIP, Q, N_USERS, DELTA = 1.0, 0.5, 0.5, 1000, 1e-5
N_COORDS, N_TRIALS = 1000, 3000
CANARY = 7  # the canary's user id (its participation is the node's secret Poisson draw)


def _reply(arrays: dict[str, np.ndarray]) -> Message:
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord({"num-examples": 1.0})})
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)


def server_trials(noise_scale: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``N_TRIALS`` rounds of the server's DP aggregation with a canary user.

    The canary's clipped update is ``+C`` in coordinate 0 (norm exactly C); it takes part in a
    round iff the node's secret Poisson draw samples it (rate q), and the node then replies its
    clipped sum. The server's noise multiplier is ``noise_scale * Z``; the statistic is the
    aggregate's coordinate rescaled to units of C: ``(out - base) * qN / C``.

    Returns
    -------
    (null, alt, sampled_fraction)
        ``null``: coordinates the canary never touches (distributed as coordinate 0 without
        the canary); ``alt``: coordinate 0 with the canary in the population.
    """
    InProcessGrid(client_app, 1)  # the task identity Flower needs to build messages
    cfg = Config.from_flat({"privacy": "user", "noise-multiplier": Z * noise_scale,
                            "clip-norm": CLIP, "fraction-train": Q, "seed": 11,
                            "dp-seed": 11})  # debug: reproducible noise, a deterministic audit
    dp = UserLevelDP(FedAvg(), cfg, N_USERS, 1)
    base = {"w": np.linspace(-1, 1, N_COORDS)}
    canary = np.zeros(N_COORDS)
    canary[0] = CLIP
    null, alt, sampled = [], [], 0
    for r in range(1, N_TRIALS + 1):
        dp.base = dict(base)
        if len(dp_participants(np.array([CANARY]), Q, r, cfg.privacy.dp_seed)):
            replies = [_reply({"w": canary})]  # the node's sum of clipped updates: the canary
            sampled += 1
        else:
            replies = [_reply({"w": np.zeros(N_COORDS)})]
        agg, _ = dp.aggregate_train(r, replies)
        out = agg["w"].numpy()
        stat = (out - base["w"]) * dp.expected_count / CLIP
        alt.append(stat[0])
        null.append(stat[1:])
    return np.concatenate(null), np.array(alt), sampled / N_TRIALS


def epsilon_lower_bound(null: np.ndarray, alt: np.ndarray, delta: float,
                        thresholds: np.ndarray, confidence: float = 0.95) -> float:
    """Empirical epsilon lower bound of the threshold tests ``stat > t``.

    For each threshold, Clopper-Pearson bounds (Bonferroni over thresholds) give an upper bound
    on the false-positive rate and a lower bound on the true-positive rate; any
    (epsilon, delta)-DP mechanism satisfies ``TPR <= e^epsilon FPR + delta``, hence
    ``epsilon >= log((TPR_lb - delta) / FPR_ub)``.
    """
    alpha = (1 - confidence) / len(thresholds)
    best = 0.0
    for t in thresholds:
        fp, tp = int((null > t).sum()), int((alt > t).sum())
        fpr_ub = stats.beta.ppf(1 - alpha / 2, fp + 1, len(null) - fp) if fp < len(null) else 1.0
        tpr_lb = stats.beta.ppf(alpha / 2, tp, len(alt) - tp + 1) if tp > 0 else 0.0
        if tpr_lb - delta > 0:
            best = max(best, math.log((tpr_lb - delta) / fpr_ub))
    return best


def test_server_aggregate_noise_std_is_z_C_over_qN():
    # Execute: the real server path, and with half the noise
    null, _, _ = server_trials(1.0)
    half, _, _ = server_trials(0.5)
    # Assert: std of (aggregate - true mean) in units of C / qN is z; half noise fails
    ratio, ratio_half = null.std() / Z, half.std() / Z
    assert abs(ratio - 1) < 0.02, ratio
    assert abs(ratio_half - 0.5) < 0.02 and not abs(ratio_half - 1) < 0.02
    assert abs(null.mean()) < 5 * null.std() / math.sqrt(len(null))  # unbiased


@pytest.mark.parametrize("noise_scale", [1.0, 0.5])
def test_canary_distinguisher_on_the_server_aggregate(noise_scale):
    """Poisson-sampled canary (q = 0.5), one round per trial: the empirical epsilon lower bound
    stays below the accountant's epsilon for (z, q, 1 round) (measured: 1.67 < 3.54); with half
    the noise the distinguisher proves more privacy loss than the accountant allows (5.15)."""
    # Prepare
    accountant_eps = compute_epsilons([(Z, Q, 1)], DELTA)["prv"]
    # Execute
    null, alt, sampled = server_trials(noise_scale)
    lb = epsilon_lower_bound(null, alt, DELTA, thresholds=np.arange(1, 41) / 8)
    # Assert
    assert abs(sampled - Q) < 0.03  # the canary is Poisson-sampled at rate q
    if noise_scale == 1.0:
        assert 1.0 < lb < accountant_eps, (lb, accountant_eps)  # the audit has power, no breach
    else:
        assert lb > accountant_eps, (lb, accountant_eps)


# ---------------------------------------------------------------- DP-SGD: untouched rows
SIGMA, C_SGD, LR = 1.2, 0.3, 0.1


def untouched_row_moves(noise_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """One DP-SGD round of every user; moves of item rows the user never touched.

    The trainer runs with noise multiplier ``noise_scale * SIGMA``; the moves are standardised
    by the std the accountant's noise implies, ``sqrt(T_u) * lr * SIGMA * C / (q_u n_u)`` (sum of
    the per-step noise over the user's T_u SGD steps).

    Returns
    -------
    (standardised moves of untouched rows, raw moves of touched rows)
    """
    split = tiny_split(n_users=30, n_items=80)
    model = build_model("mf", n_users=split.n_users, n_items=split.n_items, dim=8)
    users = np.arange(split.n_users)
    tc = TrainConfig(local_epochs=2, num_negatives=2, batch_size=8, lr=LR, optimizer="sgd",
                     device="cpu")
    res = train_cohort_dpsgd(model, model.init_shared(0), model.init_users(users, 0), users,
                             split, tc, 5, 1, noise_multiplier=SIGMA * noise_scale,
                             clip_norm=C_SGD, noise_key=123, keep_per_user=True)
    n_ex = np.diff(split.train_indptr) * (1 + tc.num_negatives)
    std = np.sqrt(res.steps) * LR * SIGMA * C_SGD / np.minimum(tc.batch_size, n_ex)
    untouched, touched = [], []
    for u in users:
        # touched: the user's positives and every negative it drew in any epoch
        un = build_units(split, np.array([u]), tc.local_epochs, tc.num_negatives, tc.loss, 5, 1)
        used = np.zeros(split.n_items, bool)
        used[np.concatenate([it.ravel() for it in un.items])] = True
        for n in ("item_emb", "item_bias"):
            d = res.per_user[int(u)][n].numpy()
            untouched.append((d[~used] / std[u]).ravel())
            touched.append(d[used].ravel())
    return np.concatenate(untouched), np.concatenate(touched)


@pytest.mark.parametrize("noise_scale", [1.0, 0.5, 0.0])
def test_dpsgd_moves_rows_the_user_never_touched_by_the_calibrated_noise(noise_scale):
    # Execute
    untouched, touched = untouched_row_moves(noise_scale)
    # Assert: with the real noise, untouched rows move with exactly the predicted std (which
    # rows moved reveals nothing); half noise is caught; without noise they do not move at all
    ratio = untouched.std()
    if noise_scale == 1.0:
        assert abs(ratio - 1) < 0.03 and abs(untouched.mean()) < 0.03, ratio
        assert stats.kstest(untouched, "norm").pvalue > 1e-3
    elif noise_scale == 0.5:
        assert abs(ratio - 0.5) < 0.03 and not abs(ratio - 1) < 0.03
    else:
        assert np.all(untouched == 0) and np.abs(touched).max() > 0
