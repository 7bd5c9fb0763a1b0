"""User-level DP-FedAvg on the server (DESIGN section 5).

Nodes clip each sampled user's update of the shared parameters to ``clip-norm`` and reply with
the cohort's equal-weight average and user count. Here the per-user sum is rebuilt, Gaussian
noise ``N(0, z^2 C^2)`` is added once, and the sum is divided by the fixed expected count
``qN`` (never the realised count). The accountant composes the Poisson-subsampled Gaussian
mechanism over rounds. Flower's DP wrappers assume one reply per user, equal weights and
fixed-size sampling, so they do not fit cohorts; the noisy aggregate is then handed to the
configured Flower strategy as its only reply (post-processing: FedAdam etc. stay DP).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from flwr.app import Message

from fedrec.config import Config
from fedrec.privacy.accounting import UserLevelAccountant, default_delta, noise_for_target
from fedrec.privacy.mechanism import noisy_mean

log = logging.getLogger("fedrec.server")


class UserLevelDP:
    """Noise, accounting and budget for ``privacy = "user"``."""

    def __init__(self, cfg: Config, n_users: int) -> None:
        p = cfg.privacy
        self.cfg = cfg
        self.q = cfg.fed.fraction_train
        self.expected_count = self.q * n_users
        self.delta = p.delta or default_delta(n_users)
        self.target = p.target_epsilon
        if p.noise_multiplier > 0 or self.target == 0:
            self.z = p.noise_multiplier  # given: the budget (if any) only stops the run
        elif math.isinf(self.target):
            self.z = 0.0
        else:  # the smallest noise that fits num-rounds rounds into the budget
            self.z = noise_for_target(self.target, self.delta, self.q, cfg.fed.num_rounds)
        self.accountant = UserLevelAccountant(self.z, self.q)
        log.info(
            "user-level DP: q=%.4g, C=%.3g, z=%.4g, delta=%.3g, expected cohort %.1f%s",
            self.q, p.clip_norm, self.z, self.delta, self.expected_count,
            f", target epsilon {self.target:g}" if self.target > 0 else "",
        )

    def exhausted(self) -> bool:
        """True when one more round would exceed a finite target epsilon."""
        if not (self.target > 0 and math.isfinite(self.target)):
            return False
        return self.accountant.would_exceed(self.target, self.delta)

    def aggregate(
        self, round_: int, base: dict[str, np.ndarray], replies: list[Message]
    ) -> dict[str, np.ndarray]:
        """Noisy mean update applied to ``base`` from the nodes' replies."""
        total = {n: torch.zeros(a.shape, dtype=torch.float64) for n, a in base.items()}
        for m in replies:
            count = float(m.content["metrics"]["num-examples"])
            if count <= 0:
                continue
            for n, a in m.content["arrays"].items():
                total[n] += torch.from_numpy(np.asarray(count * (a.numpy() - base[n]), np.float64))
        mean = noisy_mean(total, self.z, self.cfg.privacy.clip_norm, self.expected_count,
                          self.cfg.run.seed, round_)
        self.accountant.step()
        return {n: np.asarray(base[n] + mean[n].numpy()) for n in base}

    def epsilon(self) -> dict[str, float]:
        if self.accountant.steps == 0:
            return {"prv": 0.0, "rdp": 0.0}
        return self.accountant.epsilon(self.delta)

    def summary(self) -> dict[str, Any]:
        eps = self.epsilon()
        return {
            "mode": "user",
            "epsilon": eps["prv"],
            "epsilon_rdp": eps["rdp"],
            "delta": self.delta,
            "noise_multiplier": self.z,
            "sample_rate": self.q,
            "clip_norm": self.cfg.privacy.clip_norm,
            "rounds_accounted": self.accountant.steps,
            "accountant": "prv (headline), rdp (conservative)",
        }
