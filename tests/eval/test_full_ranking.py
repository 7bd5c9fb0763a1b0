import numpy as np
import torch

from fedrec.config import TrainConfig
from fedrec.eval.sampled import evaluate_local, evaluate_users, full_ranks
from fedrec.models.registry import build_model
from fedrec.train.cohort import train_cohort
from tests.helpers import tiny_split


def test_full_rank_excludes_training_items_and_counts_ties_against():
    split = tiny_split(n_users=2, n_items=40)
    u = 0
    train = split.user_items(u)
    test = split.test_items[u]
    scores = np.zeros((1, 40))
    scores[0, train] = 10.0  # training items score high but are excluded
    scores[0, test] = 1.0
    others = [i for i in range(40) if i not in set(train) | {test}]
    scores[0, others[:3]] = 2.0  # 3 above
    scores[0, others[3]] = 1.0  # 1 tie: counts against
    assert full_ranks(scores, np.array([u]), split).tolist() == [4]


def test_local_tables_equal_global_params_before_any_step():
    # lr ~ 0: fine-tuned copies equal the global parameters, so both evaluations agree
    split = tiny_split()
    model = build_model("mf", n_users=split.n_users, n_items=split.n_items, dim=8)
    shared = model.init_shared(0)
    users = np.arange(split.n_users)
    state = model.init_users(users, 0)
    tc = TrainConfig(lr=1e-12, optimizer="sgd", device="cpu")
    upd = train_cohort(model, shared, state, users, split, tc, 0, 1, keep_local=True)
    a = evaluate_users(model, shared, state, users, split, full=True)
    b = evaluate_local(model, shared, upd.local, split, full=True)
    assert a == b
    # a real step changes a user's own rows only: the local scores then differ
    tc = TrainConfig(lr=0.5, optimizer="sgd", device="cpu")
    upd = train_cohort(model, shared, state, users, split, tc, 0, 1, keep_local=True)
    c = evaluate_local(model, shared, upd.local, split, full=True)
    assert c != a
    assert all(torch.isfinite(t).all() for t in upd.local[0].item.values())
