"""Accountants: the privacy spent by a run so far (the maths lives in
:mod:`fedrec.privacy.analysis`, the noise for a budget in :mod:`fedrec.privacy.calibration`)."""

from __future__ import annotations

import math
from typing import Any

from fedrec.privacy.analysis import (
    DEFAULT_EPS_ERROR,
    check_accountant,
    check_q,
    check_steps,
    check_z,
    compute_epsilons,
)

__all__ = ["UserLevelAccountant"]

_STATE_VERSION = 1


class UserLevelAccountant:
    """Accountant for user-level DP-FedAvg: one Poisson-subsampled Gaussian step per round.

    Parameters
    ----------
    noise_multiplier : float
        Noise multiplier ``z`` (noise std ``z * C`` on the sum of clipped updates).
    sample_rate : float
        Poisson sampling rate ``q`` of users per round.
    eps_error : float, optional
        Additive error allowed to the PRV accountant.

    Notes
    -----
    The history is a chronological list of ``[z, q, steps]`` segments; :meth:`step` can change
    ``z`` or ``q`` for later rounds.
    """

    def __init__(
        self,
        noise_multiplier: float,
        sample_rate: float,
        *,
        eps_error: float = DEFAULT_EPS_ERROR,
    ) -> None:
        self.noise_multiplier = check_z(noise_multiplier)
        self.sample_rate = check_q(sample_rate)
        if not eps_error > 0:
            raise ValueError(f"eps_error must be > 0, got {eps_error}")
        self.eps_error = float(eps_error)
        self._history: list[list[float | int]] = []

    # -- bookkeeping -----------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Total number of rounds accounted so far."""
        return int(sum(int(n) for _, _, n in self._history))

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """Chronological ``(noise_multiplier, sample_rate, steps)`` segments."""
        return [(float(z), float(q), int(n)) for z, q, n in self._history]

    def step(
        self,
        n: int = 1,
        *,
        noise_multiplier: float | None = None,
        sample_rate: float | None = None,
    ) -> None:
        """Account ``n`` more rounds.

        Parameters
        ----------
        n : int, optional
            Number of rounds.
        noise_multiplier, sample_rate : float, optional
            Change ``z`` / ``q`` for these and later rounds.
        """
        n = check_steps(n)
        if noise_multiplier is not None:
            self.noise_multiplier = check_z(noise_multiplier)
        if sample_rate is not None:
            self.sample_rate = check_q(sample_rate)
        if n == 0:
            return
        z, q = self.noise_multiplier, self.sample_rate
        if self._history and self._history[-1][0] == z and self._history[-1][1] == q:
            self._history[-1][2] = int(self._history[-1][2]) + n
        else:
            self._history.append([z, q, n])

    # -- epsilons ----------------------------------------------------------------------------
    def epsilon(self, delta: float) -> dict[str, float]:
        """Epsilon spent so far.

        Parameters
        ----------
        delta : float
            Target delta.

        Returns
        -------
        dict
            ``{"prv": headline, "rdp": conservative}``.
        """
        return compute_epsilons(self._history, delta, self.eps_error)

    def epsilon_after(self, rounds: int, delta: float) -> dict[str, float]:
        """Epsilon if ``rounds`` rounds *in total* were run (future ones at the current z, q).

        Parameters
        ----------
        rounds : int
            Total number of rounds, ``>= self.steps``.
        delta : float
            Target delta.

        Returns
        -------
        dict
            ``{"prv": ..., "rdp": ...}``.
        """
        rounds = check_steps(rounds)
        if rounds < self.steps:
            raise ValueError(f"rounds={rounds} is below the {self.steps} rounds already run")
        extra = [(self.noise_multiplier, self.sample_rate, rounds - self.steps)]
        return compute_epsilons([*self._history, *extra], delta, self.eps_error)

    def would_exceed(self, target_epsilon: float, delta: float, accountant: str = "prv") -> bool:
        """Whether running one more round would take epsilon above ``target_epsilon``.

        Parameters
        ----------
        target_epsilon : float
            Privacy budget (``inf`` for none).
        delta : float
            Target delta.
        accountant : {"prv", "rdp"}, optional
            Which epsilon is held to the budget.

        Returns
        -------
        bool
        """
        check_accountant(accountant)
        if math.isinf(target_epsilon):
            return False
        return self.epsilon_after(self.steps + 1, delta)[accountant] > target_epsilon

    # -- checkpointing -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "version": _STATE_VERSION,
            "kind": "user_level",
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "eps_error": self.eps_error,
            "history": [list(s) for s in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` (e.g. after a JSON round-trip)."""
        if state.get("kind", "user_level") != "user_level":
            raise ValueError(f"not a user-level accountant state: kind={state.get('kind')}")
        if int(state.get("version", _STATE_VERSION)) != _STATE_VERSION:
            raise ValueError(f"unsupported accountant state version {state.get('version')}")
        history = []
        for z, q, n in state["history"]:
            history.append([check_z(z), check_q(q), check_steps(n)])
        self.noise_multiplier = check_z(state["noise_multiplier"])
        self.sample_rate = check_q(state["sample_rate"])
        self.eps_error = float(state.get("eps_error", DEFAULT_EPS_ERROR))
        self._history = history

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> UserLevelAccountant:
        """Build an accountant from :meth:`state_dict` output."""
        acc = cls(state["noise_multiplier"], state["sample_rate"])
        acc.load_state_dict(state)
        return acc

    def __repr__(self) -> str:
        return (
            f"UserLevelAccountant(noise_multiplier={self.noise_multiplier}, "
            f"sample_rate={self.sample_rate}, steps={self.steps})"
        )
