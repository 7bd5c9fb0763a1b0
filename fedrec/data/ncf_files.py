"""Readers for the NCF reference test files (``ml-1m.test.rating`` / ``ml-1m.test.negative``)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedrec.data.errors import DataError
from fedrec.data.paths import find_file
from fedrec.data.tables import read_table
from fedrec.data.validate import TableFormat, iter_lines

logger = logging.getLogger(__name__)

NCF_DATASET = "ncf-hexiangnan"
TEST_RATING = "ncf-hexiangnan/ml-1m.test.rating"
TEST_NEGATIVE = "ncf-hexiangnan/ml-1m.test.negative"
TEST_RATING_FORMAT = TableFormat(
    "\t", ("user", "item", "rating", "timestamp"), "userID<TAB>itemID<TAB>rating<TAB>timestamp"
)
_HEADER_RE = re.compile(r"^\((\d+),(\d+)\)$")


@dataclass
class NcfTest:
    """One test row per user from ``ml-1m.test.rating`` (line k holds user k - 1)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray


def find_ncf_files(root: Path) -> tuple[Path, Path]:
    """Locate the two NCF test files.

    Parameters
    ----------
    root : pathlib.Path
        Data directory.

    Returns
    -------
    tuple of pathlib.Path
        ``(test.rating path, test.negative path)``.

    Raises
    ------
    DataFileNotFoundError
        A file is missing (message says where to get it).
    """
    return find_file(root, NCF_DATASET, [TEST_RATING]), find_file(
        root, NCF_DATASET, [TEST_NEGATIVE]
    )


def read_test_rating(path: Path, n_users: int, n_items: int) -> NcfTest:
    """Read and check ``ml-1m.test.rating``: one line per user, in user order, ids in range.

    Parameters
    ----------
    path : pathlib.Path
        The file.
    n_users, n_items : int
        Sizes of the ML-1M interactions it refers to.

    Returns
    -------
    NcfTest
        Test rows, row ``u`` for user ``u``.

    Raises
    ------
    DataError
        Malformed file, wrong line count, user out of order or item out of range.
    """
    table = read_table(path, TEST_RATING_FORMAT)
    if len(table) != n_users:
        raise DataError(
            f"expected {n_users} lines (one test rating per ML-1M user), found {len(table)}", path
        )
    users = table["user"].to_numpy()
    items = table["item"].to_numpy()
    wrong_user = users != np.arange(n_users)
    if wrong_user.any():
        k = int(np.flatnonzero(wrong_user)[0])
        raise DataError(f"expected user {k} on this line, found user {users[k]}", path, k + 1)
    out_of_range = (items < 0) | (items >= n_items)
    if out_of_range.any():
        k = int(np.flatnonzero(out_of_range)[0])
        raise DataError(f"item {items[k]} outside 0..{n_items - 1}", path, k + 1)
    return NcfTest(
        users=users,
        items=items,
        ratings=table["rating"].to_numpy(dtype=np.float32),
        timestamps=table["timestamp"].to_numpy(),
    )


def read_test_negative(path: Path, test: NcfTest, n_items: int, num: int) -> np.ndarray:
    """Read and check ``ml-1m.test.negative`` (``(u,i)<TAB>neg1 ... neg99`` per line).

    Parameters
    ----------
    path : pathlib.Path
        The file.
    test : NcfTest
        Rows of ``ml-1m.test.rating``; line k's ``(u,i)`` header must equal its line k.
    n_items : int
        Negatives must lie in ``0..n_items-1``.
    num : int
        Negatives per line.

    Returns
    -------
    numpy.ndarray
        int64 ``(n_users, num)`` in file order.

    Raises
    ------
    DataError
        Wrong line count, header mismatch, wrong number of negatives, non-integer, out of range
        or repeated negatives (file and line named).
    """
    n_users = len(test.users)
    rows: list[list[int]] = []
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        if len(rows) == n_users:
            raise DataError(f"more than {n_users} lines (one per user expected)", path, number)
        k = len(rows)
        fields = line.split("\t")
        match = _HEADER_RE.match(fields[0].strip())
        expected = f"({test.users[k]},{test.items[k]})"
        if match is None or (int(match[1]), int(match[2])) != (test.users[k], test.items[k]):
            raise DataError(
                f"line must start with {expected} (line {k + 1} of the test ratings), found "
                f"{fields[0]!r}",
                path,
                number,
            )
        if len(fields) - 1 != num:
            raise DataError(f"expected {num} tab-separated negatives, found {len(fields) - 1}",
                            path, number)  # fmt: skip
        try:
            negs = [int(f) for f in fields[1:]]
        except ValueError:
            raise DataError(
                f"negatives must be integers, found {fields[1:]!r}", path, number
            ) from None
        if min(negs) < 0 or max(negs) >= n_items:
            bad = next(x for x in negs if not 0 <= x < n_items)
            raise DataError(f"negative item {bad} outside 0..{n_items - 1}", path, number)
        if len(set(negs)) != num:
            raise DataError("a negative item is repeated on this line", path, number)
        rows.append(negs)
    if len(rows) != n_users:
        raise DataError(f"expected {n_users} lines (one per user), found {len(rows)}", path)
    return np.asarray(rows, dtype=np.int64).reshape(n_users, num)
