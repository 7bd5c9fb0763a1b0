"""Fast reading of delimited interaction files into validated pandas tables."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.data.errors import DataError
from fedrec.data.validate import (
    TableFormat,
    check_frame,
    check_header,
    check_not_empty,
    locate_format_error,
    strip_trailing_blank_lines,
)

logger = logging.getLogger(__name__)

_PARSE_DTYPES = {"user": np.int64, "item": np.int64, "rating": np.float64, "timestamp": np.int64}
_UTF8_BOM = b"\xef\xbb\xbf"


def read_table(path: Path, fmt: TableFormat) -> pd.DataFrame:
    """Parse and validate a delimited interactions file.

    Parsing is done in one pass by pandas' C engine (multi-character separators such as
    ``::`` are rewritten to tabs first). When parsing fails, or produces bad values, the file is
    re-read line by line to report the first offending line. LF and CRLF endings are accepted;
    trailing blank lines are ignored, blank lines inside the data are not.

    Parameters
    ----------
    path : pathlib.Path
        File to read.
    fmt : TableFormat
        Expected layout.

    Returns
    -------
    pandas.DataFrame
        One row per data line in file order, columns ``fmt.columns`` with raw ids:
        ``user``/``item``/``timestamp`` int64, ``rating`` float32.

    Raises
    ------
    DataError
        Empty file, bad header, wrong delimiter, missing/extra fields, non-integer ids,
        non-numeric/NaN/empty ratings or duplicate (user, item) rows; file and line are named.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read file ({exc.strerror or exc})", path) from None
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM) :]
    check_not_empty(path, raw, fmt)
    body = strip_trailing_blank_lines(raw)
    if fmt.header is not None:
        cut = body.find(b"\n")
        check_header(path, fmt, body[:cut].decode(fmt.encoding, errors="replace"))
        body = body[cut + 1 :]
    sep = fmt.sep
    if len(sep) > 1:
        if b"\t" in body:
            raise _located(path, fmt, f"unexpected tab character; expected {fmt.layout}")
        body = body.replace(sep.encode(), b"\t")
        sep = "\t"
    dtypes = {k: _PARSE_DTYPES[c] for k, c in enumerate(fmt.columns)}
    try:
        df = pd.read_csv(
            io.BytesIO(body),
            sep=sep,
            header=None,
            dtype=dtypes,
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,
            engine="c",
        )
    except (ValueError, OverflowError, pd.errors.ParserError) as exc:
        raise _located(path, fmt, f"could not parse as {fmt.layout} ({exc})") from None
    if df.shape[1] != len(fmt.columns):
        raise _located(
            path, fmt, f"found {df.shape[1]} columns, expected {len(fmt.columns)} ({fmt.layout})"
        )
    df.columns = list(fmt.columns)
    n_lines = body.count(b"\n") + 1
    if len(df) != n_lines:
        raise _located(path, fmt, f"found {len(df)} rows in {n_lines} lines; expected {fmt.layout}")
    check_frame(path, fmt, df)
    if "rating" in df.columns:
        df["rating"] = df["rating"].astype(np.float32)
    logger.debug("read %s: %d rows", path, len(df))
    return df


def _located(path: Path, fmt: TableFormat, fallback: str) -> DataError:
    """The error for the first bad line of ``path``, else a file-level error."""
    return locate_format_error(path, fmt) or DataError(fallback, path)
