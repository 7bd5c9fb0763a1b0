"""Validation of interaction files: formats, line-level checks and value checks.

The fast readers in :mod:`fedrec.data.tables` parse whole files with pandas; when that fails or
yields bad values, the functions here find the first offending line (re-reading the file line by
line) and turn it into a :class:`~fedrec.data.errors.DataError` that names file and line.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.data.errors import DataError

logger = logging.getLogger(__name__)

#: Canonical column names of interaction tables and what each must hold.
COLUMN_KINDS = {"user": "int", "item": "int", "rating": "float", "timestamp": "int"}
_COLUMN_WORDS = {"user": "user id", "item": "item id", "rating": "rating", "timestamp": "timestamp"}
_SEP_NAMES = {"\t": "tab", "::": "'::'", ",": "comma", ";": "semicolon", "|": "'|'", " ": "space"}
_INT_RE = re.compile(r"^[+-]?\d+$")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class TableFormat:
    """Layout of one delimited interactions file.

    Attributes
    ----------
    sep : str
        Field separator (``"\\t"``, ``"::"``, ``","``).
    columns : tuple of str
        Canonical column per field, from :data:`COLUMN_KINDS`.
    layout : str
        Human description used in messages, e.g. ``"UserID::MovieID::Rating::Timestamp"``.
    header : tuple of str, optional
        Exact header fields expected on line 1, or ``None`` for files without header.
    encoding : str
        Text encoding used when re-reading lines for error messages.
    """

    sep: str
    columns: tuple[str, ...]
    layout: str
    header: tuple[str, ...] | None = None
    encoding: str = "latin-1"

    @property
    def first_data_line(self) -> int:
        """1-based line number of the first data row."""
        return 2 if self.header is not None else 1

    @property
    def sep_name(self) -> str:
        """Readable name of the separator."""
        return _SEP_NAMES.get(self.sep, repr(self.sep))


def check_not_empty(path: Path, raw: bytes, fmt: TableFormat) -> None:
    """Raise when a file holds no data rows.

    Parameters
    ----------
    path : pathlib.Path
        File (for the message).
    raw : bytes
        Full file content.
    fmt : TableFormat
        Expected layout.

    Raises
    ------
    DataError
        The file is empty or holds only blank lines / the header.
    """
    body = strip_trailing_blank_lines(raw).strip()
    only_header = fmt.header is not None and b"\n" not in body
    if not body or only_header:
        what = "only a header" if body else "nothing"
        raise DataError(f"empty file: it contains {what}; expected lines like {fmt.layout}", path)


def check_header(path: Path, fmt: TableFormat, line: str) -> None:
    """Check the header line against ``fmt.header``.

    Parameters
    ----------
    path : pathlib.Path
        File (for the message).
    fmt : TableFormat
        Expected layout with a header.
    line : str
        First line of the file, without line terminator.

    Raises
    ------
    DataError
        The header differs (missing, extra, renamed columns or another delimiter).
    """
    if fmt.header is None:
        return
    line = line.lstrip("\ufeff").rstrip("\r\n")
    found = tuple(f.strip() for f in line.split(fmt.sep))
    if found == fmt.header:
        return
    expected = fmt.sep.join(fmt.header)
    detail = [f"expected the header {expected!r}, found {line!r}"]
    missing = [c for c in fmt.header if c not in found]
    extra = [c for c in found if c not in fmt.header]
    if len(found) == 1 and (hint := _delimiter_hint(line, fmt.sep)):
        detail.append(hint)
    else:
        if missing:
            detail.append("missing column(s): " + ", ".join(missing))
        if extra:
            detail.append("extra column(s): " + ", ".join(extra))
    raise DataError("; ".join(detail), path, 1)


def check_line(line: str, fmt: TableFormat) -> str | None:
    """Return what is wrong with one data line, or ``None`` when it is valid.

    Parameters
    ----------
    line : str
        The line without its terminator (``\\r`` is tolerated).
    fmt : TableFormat
        Expected layout.

    Returns
    -------
    str or None
        Description of the first problem found.
    """
    line = line.rstrip("\r")
    if not line.strip():
        return f"empty line; expected {fmt.layout}"
    fields = line.split(fmt.sep)
    n_expected = len(fmt.columns)
    if len(fields) != n_expected:
        msg = (
            f"expected {n_expected} fields separated by {fmt.sep_name} ({fmt.layout}), "
            f"found {len(fields)}"
        )
        hint = _delimiter_hint(line, fmt.sep) if len(fields) == 1 else None
        if hint:
            return f"{msg}; {hint}"
        if len(fields) < n_expected:
            missing = ", ".join(_COLUMN_WORDS[c] for c in fmt.columns[len(fields) :])
            return f"{msg}; missing column(s): {missing}"
        return f"{msg}; {len(fields) - n_expected} extra column(s)"
    for column, value in zip(fmt.columns, fields, strict=True):
        problem = check_value(column, value)
        if problem:
            return problem
    return None


def check_value(column: str, value: str) -> str | None:
    """Return what is wrong with one field value, or ``None``.

    Parameters
    ----------
    column : str
        Canonical column name (key of :data:`COLUMN_KINDS`).
    value : str
        Raw field text.

    Returns
    -------
    str or None
        Description of the problem.
    """
    word = _COLUMN_WORDS[column]
    text = value.strip()
    if text == "":
        return f"empty {word}; expected {'an integer' if column != 'rating' else 'a number'}"
    if COLUMN_KINDS[column] == "int":
        if not _INT_RE.match(text):
            return f"{word} must be an integer, found {value!r}"
        if abs(int(text)) > _INT64_MAX:
            return f"{word} {value!r} does not fit in 64 bits"
        return None
    try:
        number = float(text)
    except ValueError:
        return f"{word} must be a number, found {value!r}"
    if not math.isfinite(number):
        return f"{word} must be a finite number, found {value!r}"
    return None


def iter_lines(path: Path, encoding: str = "latin-1") -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, line without terminator)`` of a text file.

    Parameters
    ----------
    path : pathlib.Path
        File to read.
    encoding : str
        Text encoding.

    Yields
    ------
    tuple of (int, str)
        Line number and content; ``\\r\\n`` and ``\\n`` endings are both removed.
    """
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            yield number, line.rstrip("\n").rstrip("\r")


def locate_format_error(path: Path, fmt: TableFormat) -> DataError | None:
    """Re-read ``path`` line by line and describe the first malformed line.

    Parameters
    ----------
    path : pathlib.Path
        File to scan.
    fmt : TableFormat
        Expected layout.

    Returns
    -------
    DataError or None
        Error naming file and line, or ``None`` if every line is well-formed.
    """
    last_data_line = _last_nonblank_line(path)
    for number, line in iter_lines(path, fmt.encoding):
        if number == 1 and fmt.header is not None:
            check_header(path, fmt, line)
            continue
        if number > last_data_line:
            break
        problem = check_line(line, fmt)
        if problem:
            return DataError(problem, path, number)
    return None


def check_frame(path: Path, fmt: TableFormat, df: pd.DataFrame) -> None:
    """Check parsed values: finite ratings and no duplicate (user, item) rows.

    Parameters
    ----------
    path : pathlib.Path
        Source file (for messages).
    fmt : TableFormat
        Layout (gives the line number of row 0).
    df : pandas.DataFrame
        Parsed table with canonical column names, one row per data line, file order.

    Raises
    ------
    DataError
        Naming file and line(s) of the first problem.
    """
    if "rating" in df.columns:
        bad = ~np.isfinite(df["rating"].to_numpy())
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            line = row + fmt.first_data_line
            error = locate_format_error(path, fmt)
            raise error or DataError("rating must be a finite number (found NaN/empty)", path, line)
    dup = first_duplicate(df["user"].to_numpy(), df["item"].to_numpy())
    if dup is not None:
        first, second = (r + fmt.first_data_line for r in dup)
        user, item = df["user"].iat[dup[1]], df["item"].iat[dup[1]]
        raise DataError(
            f"duplicate (user, item) = ({user}, {item}): already on line {first}; each pair "
            "must appear once",
            path,
            second,
        )


def first_duplicate(users: np.ndarray, items: np.ndarray) -> tuple[int, int] | None:
    """Find the first repeated (user, item) pair in file order.

    Parameters
    ----------
    users, items : numpy.ndarray
        Id columns (any integer ids).

    Returns
    -------
    tuple of (int, int) or None
        Row indices ``(first occurrence, earliest repeat)``, or ``None`` without duplicates.
    """
    if len(users) < 2:
        return None
    ucode = pd.factorize(users)[0].astype(np.int64)
    icode, iuniq = pd.factorize(items)
    key = ucode * len(iuniq) + icode
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    repeat = sorted_key[1:] == sorted_key[:-1]
    if not repeat.any():
        return None
    second = int(order[1:][repeat].min())
    first = int(np.flatnonzero(key == key[second])[0])
    return first, second


def _delimiter_hint(line: str, expected_sep: str) -> str | None:
    for candidate in ("::", "\t", ",", ";", "|", " "):
        if candidate != expected_sep and candidate in line.strip():
            found = _SEP_NAMES[candidate]
            wanted = _SEP_NAMES.get(expected_sep, repr(expected_sep))
            return (
                f"the line looks {found}-separated, but fields must be separated by {wanted} "
                "(wrong delimiter or wrong file?)"
            )
    return None


def strip_trailing_blank_lines(raw: bytes) -> bytes:
    """Drop trailing lines that hold only whitespace, and the final line terminator.

    Parameters
    ----------
    raw : bytes
        File content.

    Returns
    -------
    bytes
        Content up to the end of the last non-blank line.
    """
    body = raw
    while body:
        cut = body.rfind(b"\n")
        if body[cut + 1 :].strip():
            break
        body = body[:cut] if cut >= 0 else b""
    return body[:-1] if body.endswith(b"\r") else body


def _last_nonblank_line(path: Path) -> int:
    """1-based number of the last line holding anything but whitespace."""
    return strip_trailing_blank_lines(path.read_bytes()).count(b"\n") + 1
