"""Masking arithmetic of distributed DP (fedrec.privacy.secagg)."""

import os

import numpy as np
import pytest

from fedrec.privacy import secagg


def masked_round(values, keys, bound, round_=3):
    ids = sorted(values)
    out = []
    for i in ids:
        q = secagg.quantize(values[i], bound, len(ids))
        peer_keys = {j: keys[frozenset((i, j))] for j in ids if j != i}
        out.append(secagg.add_masks(q, i, peer_keys, round_))
    return out


def setup(n=5, seed=0):
    rs = np.random.default_rng(seed)
    ids = [11, 12, 15, 20, 31][:n]
    values = {i: {"w": rs.normal(0, 3, (50, 4)), "b": np.array(rs.normal())} for i in ids}
    keys = {frozenset((i, j)): os.urandom(32) for i in ids for j in ids if i < j}
    return values, keys


def test_masks_cancel_and_the_sum_decodes_within_the_slack():
    values, keys = setup()
    bound = 20.0
    total = secagg.dequantize_sum(secagg.sum_masked(masked_round(values, keys, bound)), bound, 5)
    exact = {k: sum(v[k] for v in values.values()) for k in ("w", "b")}
    slack = secagg.quantisation_slack(201, bound, 5)
    err = np.sqrt(sum(float(((total[k] - exact[k]) ** 2).sum()) for k in exact))
    assert err <= slack < 1e-10 and total["b"].shape == ()


def test_one_masked_vector_is_uniform_and_a_missing_node_leaves_garbage():
    values, keys = setup()
    masked = masked_round(values, keys, 20.0)
    u = masked[0]["w"].astype(np.float64).ravel() / secagg.MODULUS
    assert abs(u.mean() - 0.5) < 0.1 and abs(np.corrcoef(u, values[11]["w"].ravel())[0, 1]) < 0.4
    partial = secagg.dequantize_sum(secagg.sum_masked(masked[1:]), 20.0, 5)
    truth = sum(values[i]["w"] for i in (12, 15, 20, 31))
    assert np.abs(partial["w"] - truth).mean() > 10  # masks left over: noise over +-n R
    assert abs(np.corrcoef(partial["w"].ravel(), truth.ravel())[0, 1]) < 0.4
    with pytest.raises(RuntimeError, match=r"no reply from node\(s\) \[11\]"):
        secagg.check_complete([11, 12, 15], [12, 15], round_=3)


def test_a_value_outside_the_range_is_an_error_not_a_clip():
    with pytest.raises(ValueError, match="outside the quantisation range"):
        secagg.quantize({"w": np.array([0.0, 5.0])}, 4.0, 3)


def test_quantisation_slack_is_negligible_against_C_for_ml1m():
    # ML-1M MF dim 32: 3,706 x 33 + 1 shared coordinates; 12 nodes of 504 users, C = 15, z ~ 1
    bound = secagg.quantisation_bound(504, 15.0, 1.0, 12)
    assert secagg.quantisation_slack(3706 * 33 + 1, bound, 12) < 1e-6 * 15.0
