"""Item side information from the dataset files, aligned to dense item ids.

MovieLens titles, genres and release years (``u.item``, ``movies.dat``, ``movies.csv``) and
Last.FM artist names (hetrec2011 ``artists.dat``) become an :class:`ItemFeatures`.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.data.errors import DataError
from fedrec.data.item_features import ItemFeatures
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
#: A title's trailing year, e.g. "Toy Story (1995)"; a range "(2006–2007)" gives its start.
_TITLE_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{4})?\)\s*$")
#: ML-100K release dates, e.g. "01-Jan-1995".
_RELEASE_DATE = re.compile(r"^\s*\d{1,2}-[A-Za-z]{3}-(\d{4})\s*$")
_YEARS = (1800, 2100)


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
        Title (or name) per row.
    genres : numpy.ndarray, optional
        float32 multi-hot ``(n_rows, n_genres)``.
    genre_names : tuple of str
        Names of the genre columns.
    years : numpy.ndarray, optional
        float32 release year per row, NaN where unknown.
    """

    path: Path
    raw_ids: np.ndarray
    titles: list[str]
    genres: np.ndarray | None = None
    genre_names: tuple[str, ...] = ()
    years: np.ndarray | None = None


def parse_title_year(title: str) -> float:
    """The release year at the end of a MovieLens title, e.g. ``"Toy Story (1995)"`` -> 1995.

    Parameters
    ----------
    title : str
        The title; trailing spaces are ignored; a year range ``"(2006-2007)"`` gives 2006.

    Returns
    -------
    float
        The year, NaN when the title ends without one (or it is outside 1800..2100).
    """
    match = _TITLE_YEAR.search(title)
    return _year(match.group(1)) if match else float("nan")


def parse_release_year(date: str, title: str = "") -> float:
    """The year of an ML-100K release date ``"01-Jan-1995"``, else of the title.

    Parameters
    ----------
    date : str
        ``u.item`` release date (may be empty).
    title : str
        Fallback (:func:`parse_title_year`) when the date is empty or malformed.

    Returns
    -------
    float
        The year, NaN when neither gives one.
    """
    match = _RELEASE_DATE.match(date)
    year = _year(match.group(1)) if match else float("nan")
    return parse_title_year(title) if np.isnan(year) else year


def read_u_item(path: Path) -> ItemTable:
    """Read ML-100K ``u.item`` (``|``-separated, latin-1, 5 fields + 19 genre flags).

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    ItemTable
        Ids, titles, 19 genre flags and release years (from the release date, else the title).

    Raises
    ------
    DataError
        Malformed line (file and line named).
    """
    n_fields = 5 + len(ML100K_GENRES)
    ids, titles, rows, lines, years = [], [], [], [], []
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
        years.append(parse_release_year(fields[2], fields[1]))
        rows.append([float(f) for f in flags])
    genres = np.asarray(rows, dtype=np.float32).reshape(-1, n_fields - 5)
    return _table(path, ids, lines, titles, genres, ML100K_GENRES, years)


def read_movies_dat(path: Path) -> ItemTable:
    """Read ML-1M ``movies.dat`` (``MovieID::Title::Genres``, latin-1, genres ``|``-joined).

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    ItemTable
        Ids, titles, 18 genre flags (:data:`ML1M_GENRES`) and years from the titles.

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
    years = [parse_title_year(t) for t in titles]
    return _table(path, ids, lines, titles, genres, ML1M_GENRES, years)


def read_movies_csv(path: Path) -> ItemTable:
    """Read ml-latest(-small) ``movies.csv`` (header ``movieId,title,genres``, quoted titles).

    Parameters
    ----------
    path : pathlib.Path
        The file.

    Returns
    -------
    ItemTable
        Ids, titles, genre flags (:data:`MLLATEST_GENRES`) and years from the titles.

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
    years = [parse_title_year(t) for t in titles]
    return _table(path, ids, lines, titles, genres, MLLATEST_GENRES, years)


def read_artists_dat(path: Path) -> ItemTable:
    """Read hetrec2011 Last.FM ``artists.dat`` (header ``id<TAB>name<TAB>url<TAB>pictureURL``).

    Parameters
    ----------
    path : pathlib.Path
        The file (UTF-8, odd bytes replaced; LF or CRLF).

    Returns
    -------
    ItemTable
        Artist ids and names (no genres, no years).

    Raises
    ------
    DataError
        Bad header, malformed line or duplicate id (file and line named).
    """
    expected = ["id", "name", "url", "pictureURL"]
    ids, titles, lines = [], [], []
    header_seen = False
    for number, line in _data_lines(path, "utf-8", "one line per artist"):
        fields = line.split("\t")
        if not header_seen:
            if [f.strip().lstrip("\ufeff") for f in fields] != expected:
                raise DataError(
                    f"expected the header {'<TAB>'.join(expected)}, found {line!r}", path, number
                )
            header_seen = True
            continue
        if len(fields) < 2:
            raise DataError(
                f"expected tab-separated fields ({'<TAB>'.join(expected)}), found {len(fields)}",
                path,
                number,
            )
        ids.append(_parse_id(fields[0], path, number, "artist"))
        lines.append(number)
        titles.append(fields[1])
    return _table(path, ids, lines, titles)


def align_items(
    table: ItemTable, raw_item_ids: np.ndarray, into: ItemFeatures | None = None
) -> ItemFeatures:
    """Align side information to dense item ids.

    Parameters
    ----------
    table : ItemTable
        Side information keyed by raw id.
    raw_item_ids : numpy.ndarray
        Encoder of the interactions (``raw_item_ids[dense] = raw``).
    into : ItemFeatures, optional
        Features to fill in place (titles, genres, genre_names, year are set); a new
        :class:`ItemFeatures` when omitted.

    Returns
    -------
    ItemFeatures
        ``titles`` (list of str), ``genres`` float32 ``(n_items, n_genres)`` with
        ``genre_names``, ``year`` float32 ``(n_items,)``, the last two only when the table has
        them. Items absent from the side file get an empty title, an all-zero genre row and a
        NaN year (logged as a warning).
    """
    raw_item_ids = np.asarray(raw_item_ids)
    features = ItemFeatures() if into is None else into
    index = pd.Index(table.raw_ids).get_indexer(raw_item_ids)
    missing = index < 0
    present = index[~missing]
    features.titles = [table.titles[k] if k >= 0 else "" for k in index.tolist()]
    if table.genres is not None:
        genres = np.zeros((len(index), table.genres.shape[1]), dtype=np.float32)
        genres[~missing] = table.genres[present]
        features.genres, features.genre_names = genres, tuple(table.genre_names)
    if table.years is not None:
        year = np.full(len(index), np.nan, dtype=np.float32)
        year[~missing] = table.years[present]
        features.year = year
    if missing.any():
        logger.warning(
            "%s: %d rated item(s) have no entry (e.g. raw id %s); empty title, zero genres and "
            "unknown year used",
            table.path,
            int(missing.sum()),
            raw_item_ids[np.flatnonzero(missing)[0]],
        )
    return features


def _data_lines(path: Path, encoding: str = "latin-1", expected: str = "one line per movie"):
    any_line = False
    for number, line in iter_lines(path, encoding):
        if line.strip():
            any_line = True
            yield number, line
    if not any_line:
        raise DataError(f"empty file; expected {expected}", path)


def _parse_id(text: str, path: Path, number: int, what: str = "movie") -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DataError(f"{what} id must be an integer, found {text!r}", path, number) from None


def _year(digits: str) -> float:
    year = float(digits)
    return year if _YEARS[0] <= year <= _YEARS[1] else float("nan")


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
    path: Path,
    ids: list[int],
    lines: list[int],
    titles: list[str],
    genres: np.ndarray | None = None,
    genre_names: tuple[str, ...] = (),
    years: list[float] | None = None,
) -> ItemTable:
    raw_ids = np.asarray(ids, dtype=np.int64)
    codes, uniques = pd.factorize(raw_ids)
    if len(uniques) != len(raw_ids):
        seen = np.zeros(len(uniques), dtype=bool)
        for row, code in enumerate(codes.tolist()):
            if seen[code]:
                first = lines[int(np.flatnonzero(codes == code)[0])]
                raise DataError(
                    f"id {raw_ids[row]} already appears on line {first}; ids must be unique",
                    path,
                    lines[row],
                )
            seen[code] = True
    return ItemTable(
        path=path,
        raw_ids=raw_ids,
        titles=titles,
        genres=genres,
        genre_names=genre_names,
        years=None if years is None else np.asarray(years, dtype=np.float32),
    )
