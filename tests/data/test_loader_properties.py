"""Property-based tests (hypothesis) of the interaction loaders: any file content either loads
into a consistent table or raises ``DataError`` naming the file (never another exception), and
a valid file with one corrupted line is reported at that line."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrec.data import prepare
from fedrec.data.errors import DataError
from fedrec.data.loaders import load_interactions

FILES = {  # dataset -> (file, separator, header line or "")
    "ml-100k": ("ml-100k/u.data", "\t", ""),
    "ml-1m": ("ml-1m/ratings.dat", "::", ""),
    "ml-latest-small": ("ml-latest-small/ratings.csv", ",", "userId,movieId,rating,timestamp\n"),
}
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

rows = st.lists(
    st.tuples(st.integers(1, 60), st.integers(1, 80), st.sampled_from([1, 2, 3, 4, 5]),
              st.integers(0, 2**31)),
    min_size=1, max_size=40, unique_by=lambda r: (r[0], r[1]),
)


def _load(dataset: str, content: str | bytes):
    rel, _, _ = FILES[dataset]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / rel
        path.parent.mkdir(parents=True)
        path.write_bytes(content.encode("latin-1", "replace") if isinstance(content, str)
                         else content)
        prepare.clear_cache()
        try:
            return load_interactions(dataset, tmp, side_info=False), None, str(path)
        except DataError as exc:
            return None, exc, str(path)


def _text(dataset: str, table: list[tuple]) -> str:
    _, sep, header = FILES[dataset]
    return header + "".join(sep.join(str(v) for v in r) + "\n" for r in table)


@SETTINGS
@given(dataset=st.sampled_from(sorted(FILES)), table=rows)
def test_valid_files_load_with_dense_ids_by_first_appearance(dataset, table):
    inter, err, _ = _load(dataset, _text(dataset, table))
    assert err is None, err
    df = inter.df
    assert len(df) == len(table)
    users = list(dict.fromkeys(r[0] for r in table))
    items = list(dict.fromkeys(r[1] for r in table))
    assert inter.raw_user_ids.tolist() == users and inter.raw_item_ids.tolist() == items
    assert df["user_id"].tolist() == [users.index(r[0]) for r in table]
    assert df["item_id"].tolist() == [items.index(r[1]) for r in table]
    np.testing.assert_array_equal(df["rating"].to_numpy(), [r[2] for r in table])


@SETTINGS
@given(dataset=st.sampled_from(sorted(FILES)), content=st.binary(max_size=300))
def test_any_bytes_load_or_raise_data_error_naming_the_file(dataset, content):
    inter, err, path = _load(dataset, content)  # any other exception fails the test
    if err is not None:
        assert str(err).startswith(path) or path in str(err)
    else:
        assert len(inter.df) > 0 and inter.df["rating"].notna().all()


@SETTINGS
@given(dataset=st.sampled_from(sorted(FILES)), table=rows.filter(lambda t: len(t) >= 2),
       data=st.data())
def test_one_corrupted_line_is_reported_at_that_line(dataset, table, data):
    _, sep, header = FILES[dataset]
    bad_row = data.draw(st.integers(0, len(table) - 1))
    field = data.draw(st.sampled_from(["user", "item", "rating", "fields"]))
    fields = [str(v) for v in table[bad_row]]
    if field == "user":
        fields[0] = data.draw(st.sampled_from(["x", "1.5", "", "-"]))
    elif field == "item":
        fields[1] = data.draw(st.sampled_from(["abc", "2.5", "", "#"]))
    elif field == "rating":
        fields[2] = data.draw(st.sampled_from(["nan", "five", "", "inf"]))
    else:
        fields = fields[:2]
    lines = [sep.join(str(v) for v in r) for r in table]
    lines[bad_row] = sep.join(fields)
    inter, err, path = _load(dataset, header + "\n".join(lines) + "\n")
    assert inter is None, f"corrupted {field} on row {bad_row} was accepted"
    line_no = bad_row + 1 + (1 if header else 0)
    assert f"{path}, line {line_no}:" in str(err), str(err)
