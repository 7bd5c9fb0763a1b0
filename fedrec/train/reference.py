"""Reference local training: one user at a time with plain ``torch.optim``.

Each user gets a full copy of every shared parameter and trains with ``torch.optim.SGD`` /
``torch.optim.Adam`` over its own batches. This is the textbook per-user loop; the vectorised
cohort trainer must reproduce it (tests) and is measured against it (benchmarks).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fedrec.config import TrainConfig
from fedrec.data.schema import SplitData
from fedrec.models.base import Recommender
from fedrec.train.examples import build_examples, uses_labels
from fedrec.train.layout import ItemIndex
from fedrec.train.losses import example_loss


def train_user(
    model: Recommender,
    shared: dict[str, Tensor],
    user_state: dict[str, Tensor],
    user: int,
    split: SplitData,
    tc: TrainConfig,
    seed: int,
    round_: int,
    proximal_mu: float = 0.0,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Train one user alone.

    Returns
    -------
    (delta, new_state)
        ``delta``: float64 update of every shared parameter (full shape);
        ``new_state``: the user's private rows, shape ``(1, *row_shape)``.
    """
    item_names = [s.name for s in model.specs_of("item")]
    dense_names = [s.name for s in model.specs_of("dense")]
    user_names = [s.name for s in model.specs_of("user")]
    own = {n: user_state[n].float().clone().requires_grad_() for n in user_names}
    glob = {n: shared[n].float() for n in item_names + dense_names}
    # item tables as 2-D leaves (n_items, row numel) so they can take sparse gradients
    copy = {
        n: (t.reshape(t.shape[0], -1) if n in item_names else t).clone().requires_grad_()
        for n, t in glob.items()
    }
    groups = [{"params": list(own.values()), "lr": tc.users_lr},
              {"params": [copy[n] for n in item_names]},
              {"params": [copy[n] for n in dense_names], "lr": tc.dense_rate}]
    sparse = tc.optimizer == "sparse-adam"  # torch.optim.SparseAdam on the item tables
    if tc.optimizer == "adam":
        opts = [torch.optim.Adam(groups, lr=tc.lr)]
    elif sparse:
        opts = [torch.optim.SparseAdam([copy[n] for n in item_names], lr=tc.lr),
                torch.optim.Adam([{"params": list(own.values()), "lr": tc.users_lr},
                                  {"params": [copy[n] for n in dense_names],
                                   "lr": tc.dense_rate}], lr=tc.lr)]
    else:
        opts = [torch.optim.SGD(groups, lr=tc.lr)]
    index = ItemIndex(model)
    gather = index.embedding_gather({n: copy[n] for n in item_names}, sparse)
    ex = build_examples(
        split, np.array([user]), tc.local_epochs, tc.num_negatives, tc.loss, seed, round_
    )
    for e in range(tc.local_epochs):
        items_all = torch.from_numpy(ex.items[e])
        labels_all = torch.from_numpy(ex.labels[e]) if uses_labels(tc.loss) else None
        for lo in range(0, len(items_all), tc.batch_size):
            items = items_all[lo : lo + tc.batch_size]  # (b, k)
            b = len(items)
            # (b, k, ...); sparse gradients for SparseAdam
            gathered = index.inputs(gather, index.rows(items), items)
            scores = [
                model.score(
                    {n: own[n].unsqueeze(1) for n in user_names},
                    {n: g[:, c].unsqueeze(0) for n, g in gathered.items()},
                    {n: copy[n].unsqueeze(0) for n in dense_names},
                )[0]
                for c in range(items.shape[1])
            ]
            lab = labels_all[lo : lo + b] if labels_all is not None else None
            per_ex = example_loss(tc.loss, scores, lab)
            loss = per_ex.mean()
            if tc.weight_decay:
                loss = loss + tc.weight_decay * sum(
                    gathered[n].pow(2).reshape(b, -1).sum(-1).mean() for n in item_names
                )
                loss = loss + tc.weight_decay * sum(o.pow(2).sum() for o in own.values())
            if proximal_mu:
                loss = loss + proximal_mu / 2 * sum(
                    _drift(copy[n], glob[n], index.rows(items)[index.table_of[n]]
                           if sparse and n in item_names else None)
                    .pow(2).sum() for n in copy
                )
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
    delta = {n: (copy[n].detach().view(glob[n].shape) - glob[n]).double() for n in copy}
    return delta, {n: t.detach() for n, t in own.items()}


def _drift(copy: Tensor, glob: Tensor, items: Tensor | None) -> Tensor:
    """``copy - glob`` over every row, or (sparse: ``items`` given) over the rows used in the
    batch, each once, through a sparse-gradient lookup (lazy FedProx with SparseAdam)."""
    if items is None:
        return copy.view(glob.shape) - glob
    rows = torch.unique(items)
    return F.embedding(rows, copy, sparse=True) - glob.reshape(glob.shape[0], -1)[rows]
