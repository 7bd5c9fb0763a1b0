"""Tests for the accountant, its analysis and calibration (fedrec.privacy.analysis,
accountants, calibration)."""

from __future__ import annotations

import json
import logging
import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from fedrec.privacy import analysis as accounting
from fedrec.privacy.accountants import UserLevelAccountant
from fedrec.privacy.analysis import compute_epsilons, default_delta
from fedrec.privacy.calibration import noise_for_target

N_USERS = 6040
Q = 100 / N_USERS
DELTA = N_USERS**-1.1


def test_default_delta() -> None:
    assert default_delta(N_USERS) == pytest.approx(6.932e-5, rel=1e-3)
    assert default_delta(N_USERS) < 1 / N_USERS
    with pytest.raises(ValueError):
        default_delta(1)


def test_pinned_epsilons_ml1m() -> None:
    acc = UserLevelAccountant(1.0, Q)
    for _ in range(100):
        acc.step()
    eps = acc.epsilon(DELTA)
    assert set(eps) == {"prv", "rdp"}
    assert eps["rdp"] == pytest.approx(1.320, abs=0.01)
    assert eps["prv"] == pytest.approx(0.953, abs=0.01)
    assert eps["prv"] < eps["rdp"]


def test_pinned_epsilons_match_plain_opacus() -> None:
    """Our wrapper (extended RDP order grid, caching) reproduces opacus' own defaults here."""
    rdp, prv = RDPAccountant(), PRVAccountant()
    for _ in range(100):
        rdp.step(noise_multiplier=1.0, sample_rate=Q)
        prv.step(noise_multiplier=1.0, sample_rate=Q)
    eps_rdp, best_alpha = rdp.get_privacy_spent(delta=DELTA)
    assert best_alpha == 7.5  # interior optimum of opacus' default grid
    ours = compute_epsilons([(1.0, Q, 100)], DELTA)
    assert ours["rdp"] == pytest.approx(eps_rdp, rel=1e-9)
    assert ours["prv"] == pytest.approx(prv.get_epsilon(DELTA, eps_error=0.01), rel=1e-6)


def test_step_n_equals_repeated_steps() -> None:
    a, b = UserLevelAccountant(1.0, Q), UserLevelAccountant(1.0, Q)
    a.step(40)
    for _ in range(40):
        b.step()
    assert a.history == b.history == [(1.0, Q, 40)]
    assert a.epsilon(DELTA) == b.epsilon(DELTA)


@pytest.mark.parametrize("which", ["prv", "rdp"])
def test_noise_for_target_round_trip(which: str) -> None:
    z = noise_for_target(1.0, DELTA, Q, 100, accountant=which)
    assert 0.5 < z < 2.0
    assert compute_epsilons([(z, Q, 100)], DELTA)[which] <= 1.0
    assert compute_epsilons([(0.98 * z, Q, 100)], DELTA)[which] > 1.0


def test_noise_for_target_edge_cases() -> None:
    assert noise_for_target(math.inf, DELTA, Q, 100) == 0.0
    assert noise_for_target(1.0, DELTA, 0.0, 100) == 0.0
    assert noise_for_target(1.0, DELTA, Q, 0) == 0.0
    with pytest.raises(ValueError):
        noise_for_target(0.0, DELTA, Q, 100)
    with pytest.raises(ValueError):
        noise_for_target(1.0, DELTA, Q, 100, accountant="gdp")
    # full participation (q = 1) uses the exact Gaussian composition
    z = noise_for_target(8.0, 1e-5, 1.0, 10)
    assert compute_epsilons([(z, 1.0, 10)], 1e-5)["prv"] <= 8.0
    assert compute_epsilons([(0.98 * z, 1.0, 10)], 1e-5)["prv"] > 8.0


def test_state_dict_round_trip_json() -> None:
    acc = UserLevelAccountant(1.0, Q)
    acc.step(30)
    acc.step(20, noise_multiplier=1.3)
    acc.step(5, sample_rate=2 * Q)
    state = json.loads(json.dumps(acc.state_dict()))
    restored = UserLevelAccountant(5.0, 0.5)
    restored.load_state_dict(state)
    assert restored.history == acc.history
    assert restored.steps == acc.steps == 55
    assert restored.epsilon(DELTA) == acc.epsilon(DELTA)
    # keeps accounting with the restored z, q
    acc.step(3)
    restored.step(3)
    assert restored.history == acc.history
    assert restored.epsilon(DELTA) == acc.epsilon(DELTA)
    again = UserLevelAccountant.from_state_dict(state)
    assert again.steps == 55
    assert again.epsilon(DELTA) == compute_epsilons(state["history"], DELTA)
    with pytest.raises(ValueError):
        restored.load_state_dict({**state, "kind": "sample_level"})


def test_monotonicity() -> None:
    by_rounds = [compute_epsilons([(1.0, Q, t)], DELTA) for t in (10, 50, 100, 200)]
    by_noise = [compute_epsilons([(z, Q, 100)], DELTA) for z in (0.7, 1.0, 1.5, 3.0)]
    for key in ("prv", "rdp"):
        r = [e[key] for e in by_rounds]
        n = [e[key] for e in by_noise]
        assert all(a < b for a, b in zip(r, r[1:], strict=False)), r
        assert all(a > b for a, b in zip(n, n[1:], strict=False)), n


def test_zero_noise_and_trivial_histories() -> None:
    acc = UserLevelAccountant(0.0, Q)
    assert acc.epsilon(DELTA) == {"prv": 0.0, "rdp": 0.0}  # nothing run yet
    acc.step()
    assert acc.epsilon(DELTA) == {"prv": math.inf, "rdp": math.inf}
    assert acc.would_exceed(100.0, DELTA)
    assert not acc.would_exceed(math.inf, DELTA)
    # q = 0 costs nothing
    assert compute_epsilons([(0.0, 0.0, 10), (1.0, 0.0, 10)], DELTA) == {"prv": 0.0, "rdp": 0.0}
    with pytest.raises(ValueError):
        UserLevelAccountant(-1.0, Q)
    with pytest.raises(ValueError):
        UserLevelAccountant(1.0, 1.5)
    with pytest.raises(ValueError):
        acc.epsilon(0.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # opacus' PRV takes log(1 - q) at q=1
def test_full_participation_exact_gaussian() -> None:
    """q = 1: exact mu-GDP composition agrees with opacus PRV and is below RDP."""
    ours = compute_epsilons([(2.0, 1.0, 20)], 1e-5)
    prv = PRVAccountant()
    prv.history = [(2.0, 1.0, 20)]
    opacus_upper = prv.get_epsilon(1e-5, eps_error=0.01)
    assert ours["prv"] <= opacus_upper + 1e-9
    assert ours["prv"] == pytest.approx(opacus_upper, abs=0.02)
    assert ours["prv"] < ours["rdp"]
    # delta(eps) of the composed Gaussian (mu = sqrt(20) / 2) at the returned eps is delta
    mu = math.sqrt(20) / 2.0
    assert accounting._gaussian_delta(ours["prv"], mu) == pytest.approx(1e-5, rel=1e-6)


def test_epsilon_after_and_would_exceed() -> None:
    acc = UserLevelAccountant(1.0, Q)
    acc.step(10)
    predicted = acc.epsilon_after(60, DELTA)
    acc.step(50)
    assert acc.epsilon(DELTA) == predicted
    with pytest.raises(ValueError):
        acc.epsilon_after(59, DELTA)
    # budget loop: stop cleanly before exceeding
    target = 0.5
    acc = UserLevelAccountant(1.0, Q)
    while not acc.would_exceed(target, DELTA):
        acc.step()
    assert 0 < acc.steps < 100
    assert acc.epsilon(DELTA)["prv"] <= target
    assert acc.epsilon_after(acc.steps + 1, DELTA)["prv"] > target
    assert acc.would_exceed(acc.epsilon(DELTA)["rdp"], DELTA, accountant="rdp")


def test_prv_failure_falls_back_to_rdp(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(self, delta, **kwargs):
        raise RuntimeError("Discrete mean differs significantly from continuous mean.")

    accounting._prv_epsilon.cache_clear()
    monkeypatch.setattr(accounting.PRVAccountant, "get_epsilon", boom)
    with caplog.at_level(logging.WARNING, logger="fedrec.privacy.analysis"):
        eps = compute_epsilons([(1.0, Q, 77)], DELTA)
    accounting._prv_epsilon.cache_clear()
    assert eps["prv"] == eps["rdp"]
    assert math.isfinite(eps["prv"])
    assert "falling back to the RDP" in caplog.text


def test_large_prv_domain_is_coarsened(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    accounting._prv_epsilon.cache_clear()
    monkeypatch.setattr(accounting, "PRV_MAX_DOMAIN_SIZE", 10_000)
    with caplog.at_level(logging.WARNING, logger="fedrec.privacy.analysis"):
        eps = compute_epsilons([(1.0, Q, 100)], DELTA)
    accounting._prv_epsilon.cache_clear()
    assert "coarsened" in caplog.text
    # coarser error: still an upper bound above the fine PRV estimate (~0.943), below RDP
    assert 0.943 < eps["prv"] < eps["rdp"]
