"""MovieLens item side information (titles, genres) aligned to dense item ids."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.data.errors import DataError
from fedrec.data.validate import iter_lines

logger = logging.getLogger(__name__)

#: Genre columns of ML-100K ``u.item`` (order of ``u.genre``).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
#: Genres of ML-1M ``movies.dat`` (its README).
ML1M_GENRES = ML100K_GENRES[1:]
#: Genres of ml-latest(-small) ``movies.csv``; ``(no genres listed)`` maps to an all-zero row.
MLLATEST_GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
_NO_GENRES = "(no genres listed)"


@dataclass
class ItemTable:
    """Side information keyed by raw item id, in file order.

    Attributes
    ----------
    path : pathlib.Path
        Source file.
    raw_ids : numpy.ndarray
        int64 raw item ids.
    titles : list of str
        Title per row.
    genres : numpy.ndarray
        float32 multi-hot ``(n_rows, n_genres)``.
    """

    path: Path
    raw_ids: np.ndarray
    titles: list[str]
    genres: np.ndarray


def read_u_item(path: Path) -> ItemTable:
    """Read ML-100K ``u.item`` (``|``-separated, latin-1, 5 fields + 19 genre flags).

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    ItemTable
        Ids, titles and 19 genre flags.

    Raises
    ------
    DataError
        Malformed line (file and line named).
    """
    n_fields = 5 + len(ML100K_GENRES)
    ids, titles, rows, lines = [], [], [], []
    for number, line in _data_lines(path):
        fields = line.split("|")
        if len(fields) != n_fields:
            raise DataError(
                f"expected {n_fields} '|'-separated fields (movie id|title|release date|video "
                f"release date|IMDb URL|19 genre flags), found {len(fields)}",
                path,
                number,
            )
        flags = fields[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataError(f"genre flags must be 0 or 1, found {'|'.join(flags)!r}", path, number)
        ids.append(_parse_id(fields[0], path, number))
        lines.append(number)
        titles.append(fields[1])
        rows.append([float(f) for f in flags])
    genres = np.asarray(rows, dtype=np.float32).reshape(-1, n_fields - 5)
    return _table(path, ids, lines, titles, genres)


def read_movies_dat(path: Path) -> ItemTable:
    """Read ML-1M ``movies.dat`` (``MovieID::Title::Genres``, latin-1, genres ``|``-joined).

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    ItemTable
        Ids, titles and 18 genre flags (:data:`ML1M_GENRES`).

    Raises
    ------
    DataError
        Malformed line or unknown genre (file and line named).
    """
    ids, titles, rows, lines = [], [], [], []
    for number, line in _data_lines(path):
        fields = line.split("::")
        if len(fields) != 3:
            raise DataError(
                f"expected 3 '::'-separated fields (MovieID::Title::Genres), found {len(fields)}",
                path,
                number,
            )
        ids.append(_parse_id(fields[0], path, number))
        lines.append(number)
        titles.append(fields[1])
        rows.append(_multi_hot(fields[2], ML1M_GENRES, path, number))
    genres = np.asarray(rows, dtype=np.float32).reshape(-1, len(ML1M_GENRES))
    return _table(path, ids, lines, titles, genres)


def read_movies_csv(path: Path) -> ItemTable:
    """Read ml-latest(-small) ``movies.csv`` (header ``movieId,title,genres``, quoted titles).

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    ItemTable
        Ids, titles and genre flags (:data:`MLLATEST_GENRES`).

    Raises
    ------
    DataError
        Bad header, malformed line or unknown genre (file and line named).
    """
    ids, titles, rows, lines = [], [], [], []
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError("empty file; expected the header 'movieId,title,genres'", path)
        if [h.strip().lstrip("\ufeff") for h in header] != ["movieId", "title", "genres"]:
            raise DataError(f"expected the header 'movieId,title,genres', found {header}", path, 1)
        for fields in reader:
            number = reader.line_num
            if not fields or not "".join(fields).strip():
                continue
            if len(fields) != 3:
                raise DataError(
                    "expected 3 comma-separated fields (movieId,title,genres), "
                    f"found {len(fields)}",
                    path,
                    number,
                )
            ids.append(_parse_id(fields[0], path, number))
            lines.append(number)
            titles.append(fields[1])
            rows.append(_multi_hot(fields[2], MLLATEST_GENRES, path, number))
    genres = np.asarray(rows, dtype=np.float32).reshape(-1, len(MLLATEST_GENRES))
    return _table(path, ids, lines, titles, genres)


def align_items(table: ItemTable, raw_item_ids: np.ndarray) -> dict:
    """Align side information to dense item ids.

    Parameters
    ----------
    table : ItemTable
        Side information keyed by raw id.
    raw_item_ids : numpy.ndarray
        Encoder of the interactions (``raw_item_ids[dense] = raw``).

    Returns
    -------
    dict
        ``{"genres": float32 (n_items, n_genres), "title": list of str}``; items absent from
        the side file get an all-zero genre row and an empty title (logged as a warning).
    """
    index = pd.Index(table.raw_ids).get_indexer(np.asarray(raw_item_ids))
    missing = index < 0
    genres = np.zeros((len(index), table.genres.shape[1]), dtype=np.float32)
    genres[~missing] = table.genres[index[~missing]]
    titles = [table.titles[k] if k >= 0 else "" for k in index.tolist()]
    if missing.any():
        logger.warning(
            "%s: %d rated item(s) have no entry (e.g. raw id %s); zero genres and empty title used",
            table.path,
            int(missing.sum()),
            raw_item_ids[np.flatnonzero(missing)[0]],
        )
    return {"genres": genres, "title": titles}


def _data_lines(path: Path):
    any_line = False
    for number, line in iter_lines(path, "latin-1"):
        if line.strip():
            any_line = True
            yield number, line
    if not any_line:
        raise DataError("empty file; expected one line per movie", path)


def _parse_id(text: str, path: Path, number: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DataError(f"movie id must be an integer, found {text!r}", path, number) from None


def _multi_hot(text: str, vocabulary: tuple[str, ...], path: Path, number: int) -> list[float]:
    row = [0.0] * len(vocabulary)
    if text.strip() == _NO_GENRES:
        return row
    for genre in text.split("|"):
        try:
            row[vocabulary.index(genre.strip())] = 1.0
        except ValueError:
            raise DataError(
                f"unknown genre {genre!r}; expected '|'-joined genres from {', '.join(vocabulary)}",
                path,
                number,
            ) from None
    return row


def _table(
    path: Path, ids: list[int], lines: list[int], titles: list[str], genres: np.ndarray
) -> ItemTable:
    raw_ids = np.asarray(ids, dtype=np.int64)
    codes, uniques = pd.factorize(raw_ids)
    if len(uniques) != len(raw_ids):
        seen = np.zeros(len(uniques), dtype=bool)
        for row, code in enumerate(codes.tolist()):
            if seen[code]:
                first = lines[int(np.flatnonzero(codes == code)[0])]
                raise DataError(
                    f"movie id {raw_ids[row]} already appears on line {first}; ids must be unique",
                    path,
                    lines[row],
                )
            seen[code] = True
    return ItemTable(path=path, raw_ids=raw_ids, titles=titles, genres=genres)
