"""Central reference training: the same model code on all training data in one process.

Examples are the same positives and sampled negatives as in federated training, shuffled
globally, in mini-batches of ``batch-size`` over all users, optimised with ``torch.optim``
on the full parameter tables (the textbook NCF set-up). Reported beside every federated
result: the gap between the two is the price of federation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fedrec.config import TrainConfig
from fedrec.data.schema import SplitData
from fedrec.models.base import Recommender
from fedrec.models.popularity import popularity_bias, user_normalised_counts
from fedrec.train.cohort import resolve_device
from fedrec.train.examples import build_examples, uses_labels
from fedrec.train.layout import ItemIndex
from fedrec.train.losses import example_loss

log = logging.getLogger(__name__)


def init_params(model: Recommender, seed: int, split: SplitData | None = None,
                item_bias_init: str = "zeros") -> dict[str, Tensor]:
    """All parameters (private tables for every user + shared), as federated training starts
    (``item-bias-init = popularity``: the exact histogram of ``split``'s users)."""
    params = {**model.init_all_users(seed), **model.init_shared(seed)}
    if item_bias_init == "popularity":
        counts = user_normalised_counts(split, np.arange(split.n_users))
        params["item_bias"] = torch.as_tensor(popularity_bias(counts),
                                              dtype=params["item_bias"].dtype)
    return params


def train_central(
    model: Recommender,
    split: SplitData,
    tc: TrainConfig,
    epochs: int,
    seed: int,
    params: dict[str, Tensor] | None = None,
    on_epoch: Callable[[int, dict[str, Tensor]], None] | None = None,
    state: dict[str, Any] | None = None,
    on_state: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Tensor]:
    """Train every parameter on all users' data for ``epochs`` epochs.

    Parameters
    ----------
    tc : TrainConfig
        ``batch-size``, ``lr``, ``user-lr``, ``lr-decay`` (per epoch), ``optimizer``,
        ``loss``, ``num-negatives``, ``weight-decay`` and ``device`` are used.
    params : dict, optional
        Starting parameters (e.g. for NeuMF pre-training); default ``init_params``.
    on_epoch : callable, optional
        Called as ``on_epoch(epoch, params)`` after each epoch (1-based).
    state : dict, optional
        A state passed to ``on_state`` by an earlier call with the same arguments: training
        goes on after its epoch, and ends exactly as the uninterrupted call would (same
        parameters, optimiser moments and shuffling generator; negatives are keyed by epoch).
    on_state : callable, optional
        Called as ``on_state(state)`` after each epoch, after ``on_epoch``: everything a resumed
        call needs (``epoch``, ``params``, ``optimizers``, ``generator``), on the CPU.
    """
    if tc.loss == "ials":
        raise ValueError("setting 'loss' = 'ials' trains by exact alternating solves: run it "
                         "with simulations/launch.py (one node of all users is central iALS)")
    device = resolve_device(tc.device)
    if state is not None:
        params = state["params"]
    params = params if params is not None else init_params(model, seed)
    users = np.arange(split.n_users)
    user_names = [s.name for s in model.specs_of("user")]
    item_names = [s.name for s in model.specs_of("item")]
    dense_names = [s.name for s in model.specs_of("dense")]
    tables = set(user_names + item_names)
    # embedding tables as 2-D leaves (rows, row numel) so they can take sparse gradients
    shapes = {n: t.shape for n, t in params.items()}
    p = {
        n: (t.reshape(t.shape[0], -1) if n in tables else t)
        .detach().to(device=device, dtype=torch.float32).clone().requires_grad_()
        for n, t in params.items()
    }
    sparse = tc.optimizer == "sparse-adam"  # SparseAdam on tables, Adam on dense params
    groups = [{"params": [p[n] for n in user_names], "lr": tc.users_lr},
              {"params": [p[n] for n in item_names]},
              {"params": [p[n] for n in dense_names], "lr": tc.dense_rate}]
    if tc.optimizer == "adam":
        opts = [torch.optim.Adam(groups, lr=tc.lr)]
    elif sparse:
        opts = [torch.optim.SparseAdam([{"params": [p[n] for n in user_names],
                                         "lr": tc.users_lr},
                                        {"params": [p[n] for n in item_names]}], lr=tc.lr)]
        if dense_names:
            opts.append(torch.optim.Adam([p[n] for n in dense_names], lr=tc.dense_rate))
    else:
        opts = [torch.optim.SGD(groups, lr=tc.lr)]

    def rows(name: str, idx: Tensor) -> Tensor:
        out = F.embedding(idx, p[name], sparse=sparse)
        return out.view(*idx.shape, *shapes[name][1:])

    index = ItemIndex(model, device)
    gather = index.embedding_gather({k: p[k] for k in item_names}, sparse)
    gen = torch.Generator().manual_seed(seed)
    base_lrs = [[g["lr"] for g in opt.param_groups] for opt in opts]
    first = 1
    if state is not None:
        for opt, saved in zip(opts, state["optimizers"], strict=True):
            opt.load_state_dict(saved)
        gen.set_state(state["generator"])
        first = state["epoch"] + 1
    for epoch in range(first, epochs + 1):
        for opt, lrs in zip(opts, base_lrs, strict=True):  # lr-decay: per epoch
            for g, lr in zip(opt.param_groups, lrs, strict=True):
                g["lr"] = lr * tc.lr_factor(epoch)
        # round key -epoch keeps central negatives distinct from any federated round's
        ex = build_examples(split, users, 1, tc.num_negatives, tc.loss, seed, -epoch)
        ex_user = torch.from_numpy(np.repeat(ex.users, ex.n_ex))
        items = torch.from_numpy(ex.items[0])
        labels = torch.from_numpy(ex.labels[0]) if uses_labels(tc.loss) else None
        perm = torch.randperm(len(items), generator=gen)
        total, n = 0.0, 0
        for lo in range(0, len(perm), tc.batch_size):
            idx = perm[lo : lo + tc.batch_size]
            u = ex_user[idx].to(device)
            it = items[idx].to(device)
            user = {k: rows(k, u).unsqueeze(0) for k in user_names}  # (1, b, ...) per example
            dense = {k: p[k].unsqueeze(0) for k in dense_names}
            gathered = index.inputs(gather, index.rows(it), it)  # (b, k, ...)
            scores = [
                model.score(user, {k: g[:, c].unsqueeze(0) for k, g in gathered.items()},
                            dense)[0]
                for c in range(it.shape[1])
            ]
            lab = labels[idx].to(device) if labels is not None else None
            loss = example_loss(tc.loss, scores, lab).mean()
            if tc.weight_decay:
                loss = loss + tc.weight_decay * sum(
                    gathered[k].pow(2).reshape(len(idx), -1).sum(-1).mean() for k in item_names
                )
                loss = loss + tc.weight_decay * sum(
                    v.pow(2).reshape(len(idx), -1).sum(-1).mean() for v in user.values()
                )
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        log.info("central epoch %d: loss %.4f", epoch, total / max(n, 1))
        if on_epoch is not None:
            on_epoch(epoch, {k: v.detach().view(shapes[k]) for k, v in p.items()})
        if on_state is not None:
            on_state({"epoch": epoch,
                      "params": {k: v.detach().cpu().view(shapes[k]).clone()
                                 for k, v in p.items()},
                      "optimizers": [_cpu(opt.state_dict()) for opt in opts],
                      "generator": gen.get_state()})
    return {k: v.detach().cpu().view(shapes[k]) for k, v in p.items()}


def _cpu(obj: Any) -> Any:
    """A copy of an optimiser ``state_dict`` with every tensor on the CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu(v) for v in obj)
    return obj
