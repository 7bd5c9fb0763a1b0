"""Leave-one-out and NCF splits: leak-freedom, tie rules, determinism, file validation."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.data.errors import DataError
from fedrec.data.loaders import load_interactions
from fedrec.data.split import leave_one_out, ncf_split
from fedrec.data.synthetic import generate

from .checks import assert_split_invariants, expected_latest_items, interactions_from_rows


@pytest.fixture(scope="module")
def synthetic():
    return generate(n_users=600, n_items=300, seed=2)


def test_latest_interaction_is_test_and_ties_go_to_last_in_file():
    # Prepare: raw user ids 10, 20, 30, 40 -> dense 0..3; raw items by first appearance
    rows = [
        (10, 101, 4.0, 5),
        (20, 105, 3.0, 2),
        (10, 102, 2.0, 9),
        (30, 107, 5.0, 1),
        (10, 103, 5.0, 9),  # tie with 102 at t=9, later in file -> test item of user 10
        (20, 106, 1.0, 2),  # tie with 105, later in file -> test item of user 20
        (10, 104, 1.0, 3),
    ] + [(40, 200 + k, 3.0, k) for k in range(6)]
    inter = interactions_from_rows(rows)
    dense = {raw: k for k, raw in enumerate(inter.raw_item_ids.tolist())}

    # Execute
    split = leave_one_out(inter, num_negatives=2, seed=0)

    # Assert
    assert split.test_items[0] == dense[103]
    assert split.test_items[1] == dense[106]
    assert split.test_items[2] == -1 and np.all(split.test_negatives[2] == -1)
    assert split.test_items[3] == dense[205]
    assert split.test_ratings[0] == 5.0 and np.isnan(split.test_ratings[2])
    assert split.user_items(0).tolist() == sorted(dense[i] for i in (101, 102, 104))
    assert split.user_items(2).tolist() == [dense[107]]  # single interaction stays in train
    assert_split_invariants(split, inter)


def test_loo_invariants_on_synthetic(synthetic):
    # Execute
    split = leave_one_out(synthetic, num_negatives=99, seed=0)

    # Assert
    assert_split_invariants(split, synthetic)
    assert np.array_equal(split.test_items, expected_latest_items(synthetic))
    assert split.test_negatives.shape == (600, 99)
    assert split.item_side.available() == synthetic.item_side.available()
    assert split.item_side is not synthetic.item_side
    assert split.item_side.kg is synthetic.item_side.kg  # arrays are shared, read-only


def test_training_ratings_stay_aligned_with_items(synthetic):
    # Prepare
    split = leave_one_out(synthetic, num_negatives=5)
    df = synthetic.df
    lookup = dict(zip(zip(df["user_id"], df["item_id"], strict=True), df["rating"], strict=True))

    # Execute
    rows = np.repeat(np.arange(split.n_users), np.diff(split.train_indptr))
    got = [lookup[(u, i)] for u, i in zip(rows.tolist(), split.train_items.tolist(), strict=True)]

    # Assert
    assert np.array_equal(np.asarray(got, dtype=np.float32), split.train_ratings)


def test_negatives_are_deterministic_per_seed(synthetic):
    # Execute
    first = leave_one_out(synthetic, seed=7)
    again = leave_one_out(synthetic, seed=7)
    other = leave_one_out(synthetic, seed=8)

    # Assert
    assert np.array_equal(first.test_negatives, again.test_negatives)
    assert np.array_equal(first.train_items, again.train_items)
    assert not np.array_equal(first.test_negatives, other.test_negatives)
    assert np.array_equal(first.test_items, other.test_items)


def test_negatives_look_uniform(synthetic):
    # Prepare: a user's negatives must not follow item popularity
    split = leave_one_out(synthetic, num_negatives=99, seed=0)

    # Execute
    drawn = np.bincount(split.test_negatives[split.test_items >= 0].ravel(), minlength=300)
    popularity = split.item_counts()

    # Assert
    top = np.argsort(popularity)[::-1][:30]
    bottom = np.argsort(popularity)[:30]
    assert drawn[bottom].mean() > drawn[top].mean()  # popular items are more often positives


def test_dense_user_gets_exact_fallback_and_too_dense_user_is_named():
    # Prepare: user 7 rated 8 of 10 items
    rows = [(7, k, 3.0, k) for k in range(8)] + [(9, 8, 3.0, 0), (9, 9, 3.0, 1)]
    inter = interactions_from_rows(rows)

    # Execute
    split = leave_one_out(inter, num_negatives=2, seed=0)
    with pytest.raises(DataError) as info:
        leave_one_out(inter, num_negatives=3, seed=0)

    # Assert
    assert sorted(split.test_negatives[0].tolist()) == [8, 9]
    assert_split_invariants(split, inter)
    assert "user 0 (raw id 7)" in str(info.value)


def test_half_dense_users_get_valid_negatives_via_exact_fallback():
    # Prepare: users rate 101 of 200 items, so rejection sampling of 99 negatives falls short
    rows = [(u, (u * 40 + k) % 200, 3.0, k) for u in range(5) for k in range(101)]
    inter = interactions_from_rows(rows)

    # Execute
    split = leave_one_out(inter, num_negatives=99, seed=1)

    # Assert
    assert_split_invariants(split, inter)
    assert split.test_negatives.shape == (5, 99)


def test_loo_without_timestamps_suggests_ncf(write, tmp_path):
    # Prepare
    write("ml-1m/ratings_uir_ordered.dat", "1::10::3\n1::20::4\n2::10::5\n")
    inter = load_interactions("ml-1m", tmp_path)

    # Execute
    with pytest.raises(DataError) as info:
        leave_one_out(inter)

    # Assert
    assert "timestamps" in str(info.value) and 'split = "ncf"' in str(info.value)


def test_loo_on_lastfm_points_to_a_split_without_times(write, tmp_path):
    # Prepare
    write("lastfm-kgcn/user_artists.dat", "userID\tartistID\tweight\n1\t5\t3\n1\t6\t1\n")
    inter = load_interactions("lastfm", tmp_path)

    # Execute
    with pytest.raises(DataError) as info:
        leave_one_out(inter)

    # Assert
    assert "'lastfm' has no timestamps" in str(info.value) and "ncf" not in str(info.value)


def test_duplicates_are_refused():
    # Prepare
    inter = interactions_from_rows([(1, 5, 1.0, 1), (1, 5, 2.0, 2), (1, 6, 1.0, 3)])

    # Execute / Assert
    with pytest.raises(DataError, match="duplicate"):
        leave_one_out(inter, num_negatives=0)


# ---------------------------------------------------------------- NCF split, tiny fake files


def _ncf_fixture(write, n_items_per_user: int = 60, negatives: dict | None = None):
    """3 users rating disjoint item blocks; test item = each user's 3rd rating."""
    lines = []
    for user in (1, 2, 3):
        for k in range(n_items_per_user):
            lines.append(f"{user}::{1000 * user + k}::{1 + k % 5}\n")
    write("ml-1m/ratings_uir_ordered.dat", "".join(lines))
    test_lines, neg_lines = [], []
    for u in range(3):
        item = u * n_items_per_user + 2
        test_lines.append(f"{u}\t{item}\t3\t978300000\n")
        other = [i for i in range(3 * n_items_per_user) if i // n_items_per_user != u][:99]
        if negatives and u in negatives:
            other = negatives[u]
        neg_lines.append(f"({u},{item})\t" + "\t".join(map(str, other)) + "\n")
    write("ncf-hexiangnan/ml-1m.test.rating", "".join(test_lines))
    return write("ncf-hexiangnan/ml-1m.test.negative", "".join(neg_lines))


def test_ncf_split_on_consistent_fake_files(write, tmp_path):
    # Prepare
    _ncf_fixture(write)

    # Execute
    split = ncf_split(tmp_path)

    # Assert
    assert split.name == "ml-1m" and split.n_users == 3 and split.n_items == 180
    assert split.test_items.tolist() == [2, 62, 122]
    assert split.n_train == 180 - 3
    assert split.test_ratings.tolist() == [3.0, 3.0, 3.0]
    assert_split_invariants(split)


def test_ncf_negative_that_is_a_positive_is_resampled_or_refused(write, tmp_path):
    # Prepare: user 1's list contains its own test item 62 and a train positive 70
    planted = [62, 70] + list(range(120, 180)) + list(range(0, 37))
    path = _ncf_fixture(write, negatives={1: planted})

    # Execute
    fixed = ncf_split(tmp_path, seed=0)
    with pytest.raises(DataError) as info:
        ncf_split(tmp_path, on_overlap="raise")

    # Assert
    assert_split_invariants(fixed)
    assert fixed.test_negatives[1].tolist()[2:] == planted[2:]
    assert f"{path}, line 2:" in str(info.value)


@pytest.mark.parametrize(
    ("break_it", "file", "line", "words"),
    [
        (lambda t, n: (t, n[:2]), "negative", None, ["expected 3 lines"]),
        (lambda t, n: (t, [n[0], n[2], n[1]]), "negative", 2, ["must start with (1,62)"]),
        (lambda t, n: (t, [n[0], n[1], n[2].rsplit("\t", 1)[0]]), "negative", 3, ["99", "98"]),
        (lambda t, n: (t, [n[0].replace("\t60\t", "\t999\t", 1), *n[1:]]), "negative", 1, ["999"]),
        (lambda t, n: ([t[0], t[1].replace("62", "63"), t[2]], n), "negative", 2, ["(1,63)"]),
        (lambda t, n: ([t[1], t[0], t[2]], n), "rating", 1, ["expected user 0"]),
        (lambda t, n: ([t[0], t[1], t[2].replace("122", "500")], n), "rating", 3, ["500"]),
        (lambda t, n: ([t[0], t[1], t[2].replace("\t3\t", "\t5\t")], n), "rating", 3, ["rating"]),
    ],
)
def test_ncf_file_problems_name_file_and_line(write, tmp_path, break_it, file, line, words):
    # Prepare
    _ncf_fixture(write)
    rating_path = tmp_path / "ncf-hexiangnan" / "ml-1m.test.rating"
    negative_path = tmp_path / "ncf-hexiangnan" / "ml-1m.test.negative"
    tests = rating_path.read_text().splitlines()
    negs = negative_path.read_text().splitlines()
    tests, negs = break_it(tests, negs)
    write("ncf-hexiangnan/ml-1m.test.rating", "\n".join(tests) + "\n")
    write("ncf-hexiangnan/ml-1m.test.negative", "\n".join(negs) + "\n")
    path = rating_path if file == "rating" else negative_path

    # Execute
    with pytest.raises(DataError) as info:
        ncf_split(tmp_path)

    # Assert
    message = str(info.value)
    assert str(path) in message
    if line is not None:
        assert f"line {line}:" in message
    for word in words:
        assert word in message


def test_ncf_requires_user_ids_in_order(write, tmp_path):
    # Prepare
    _ncf_fixture(write)
    ratings = tmp_path / "ml-1m" / "ratings_uir_ordered.dat"
    lines = ratings.read_text().splitlines(keepends=True)
    write("ml-1m/ratings_uir_ordered.dat", "".join(lines[60:120] + lines[:60] + lines[120:]))

    # Execute / Assert
    with pytest.raises(DataError, match="UserID"):
        ncf_split(tmp_path)


# ----------------------------------------------------------------------------- real data


def test_real_ncf_split(real_data):
    # Prepare
    root = real_data("ncf-hexiangnan/ml-1m.test.rating", "ncf-hexiangnan/ml-1m.test.negative")

    # Execute
    split = ncf_split(root)

    # Assert
    assert split.n_train == 994_169
    assert int((split.test_items >= 0).sum()) == 6_040
    assert split.test_items[0] == 25
    assert split.test_negatives.shape == (6_040, 99)
    assert_split_invariants(split)
    if (root / "kg-movie-mkr/kg.txt").is_file():  # the MKR KG hangs off the NCF item index
        assert int((split.item_side.kg.item_entity >= 0).sum()) == 2_347


def test_real_ncf_negatives_contain_test_items_on_156_lines(real_data):
    # Prepare (documents a data finding, see ncf_split's docstring)
    root = real_data("ncf-hexiangnan/ml-1m.test.rating", "ncf-hexiangnan/ml-1m.test.negative")

    # Execute
    with pytest.raises(DataError) as info:
        ncf_split(root, on_overlap="raise")

    # Assert
    message = str(info.value)
    assert "ml-1m.test.negative, line 13:" in message  # user 12, first affected line
    assert "156 published negative(s) on 156 line(s)" in message
    assert "156 of them the user's own test item" in message


def test_real_ml_100k_loo_invariants(real_data):
    # Prepare
    inter = load_interactions("ml-100k", real_data("ml-100k/u.data"))

    # Execute
    split = leave_one_out(inter, num_negatives=99, seed=0)

    # Assert
    assert_split_invariants(split, inter)
    assert np.array_equal(split.test_items, expected_latest_items(inter))
    assert split.n_train == 100_000 - 943
