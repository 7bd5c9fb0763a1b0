"""Dataset loaders: files in the data directory -> :class:`~fedrec.data.schema.Interactions`.

Dense ids are assigned in order of first appearance in the ratings file read top to bottom,
for users and items alike (for ML-1M this reproduces the NCF item index).

Item side information (:class:`~fedrec.data.item_features.ItemFeatures`) is attached when its
files are in the data directory, and is simply absent otherwise: titles, genres and release
years (MovieLens), artist names (Last.FM), text vectors (:mod:`fedrec.data.text_vectors`) and
knowledge graphs (:mod:`fedrec.data.kg`: ML-1M and Last.FM).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.data.download import download_dataset
from fedrec.data.errors import DataFileNotFoundError
from fedrec.data.item_features import ItemFeatures
from fedrec.data.kg import load_dataset_kg
from fedrec.data.paths import find_file, resolve_data_dir
from fedrec.data.schema import NO_TIMESTAMP, Interactions
from fedrec.data.side_info import (
    ItemTable,
    align_items,
    read_artists_dat,
    read_movies_csv,
    read_movies_dat,
    read_u_item,
)
from fedrec.data.synthetic import generate
from fedrec.data.tables import read_table
from fedrec.data.text_vectors import load_text_vectors
from fedrec.data.validate import TableFormat

logger = logging.getLogger(__name__)

_UIRT = ("user", "item", "rating", "timestamp")

ML100K_FORMAT = TableFormat("\t", _UIRT, "user id<TAB>item id<TAB>rating<TAB>timestamp")
ML1M_FORMAT = TableFormat("::", _UIRT, "UserID::MovieID::Rating::Timestamp")
ML1M_UIR_FORMAT = TableFormat("::", _UIRT[:3], "UserID::MovieID::Rating")
MLLATEST_FORMAT = TableFormat(
    ",",
    _UIRT,
    "userId,movieId,rating,timestamp",
    header=("userId", "movieId", "rating", "timestamp"),
)
LASTFM_FORMAT = TableFormat(
    "\t",
    _UIRT[:3],
    "userID<TAB>artistID<TAB>weight",
    header=("userID", "artistID", "weight"),
)
#: Last.FM (KGCN ``data/music/``) listening counts; artist names from hetrec2011.
LASTFM_RATINGS = "lastfm-kgcn/user_artists.dat"
LASTFM_ARTISTS = "lastfm-hetrec2011/artists.dat"

#: ML-1M ratings files, in order of preference, with their layouts.
ML1M_RATINGS: dict[str, TableFormat] = {
    "ml-1m/ratings.dat": ML1M_FORMAT,
    "ml-1m/ratings_uir_ordered.dat": ML1M_UIR_FORMAT,
}

DataDir = str | os.PathLike[str] | None


def load_interactions(name: str, data_dir: DataDir = None, **kwargs) -> Interactions:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        Key of :data:`LOADERS` (``ml-100k``, ``ml-1m``, ``ml-latest-small``, ``lastfm``,
        ``synthetic``).
    data_dir : str or os.PathLike, optional
        Data directory (argument, else ``FEDREC_DATA_DIR``, else ``~/.cache/fedrec/data``).
    **kwargs
        Passed to the loader (e.g. ``side_info=False``, ``download=True``, or the
        :func:`fedrec.data.synthetic.generate` parameters).

    Returns
    -------
    Interactions
        Dense-id interactions in file order.

    Raises
    ------
    ValueError
        Unknown dataset name (the message lists the known ones).
    DataFileNotFoundError
        A required file is missing.
    DataError
        A file is malformed.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(LOADERS)}")
    start = time.perf_counter()
    inter = LOADERS[name](data_dir=data_dir, **kwargs)
    logger.info(
        "loaded %s: %d interactions, %d users, %d items in %.2fs",
        name,
        len(inter.df),
        inter.n_users,
        inter.n_items,
        time.perf_counter() - start,
    )
    return inter


def load_ml_100k(
    data_dir: DataDir = None, *, side_info: bool = True, download: bool = False
) -> Interactions:
    """Load MovieLens 100K (``ml-100k/u.data``; titles, 19 genres and years from ``u.item``).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Data directory.
    side_info : bool
        Attach ``item_side.titles``, ``.genres`` (float32, (n_items, 19)) and ``.year``
        (release date, else the title's year) when ``u.item`` is present, and ``.text`` when
        text vectors are found (:func:`fedrec.data.text_vectors.load_text_vectors`).
    download : bool
        Fetch the GroupLens zip (sha256-verified) when ``u.data`` is missing.

    Returns
    -------
    Interactions
        100,000 ratings with timestamps for the original release.
    """
    root = resolve_data_dir(data_dir)
    path = _find(root, "ml-100k", ["ml-100k/u.data"], download)
    table = read_table(path, ML100K_FORMAT)
    return _build("ml-100k", table, True, root, "ml-100k/u.item", read_u_item, side_info)


def load_ml_1m(
    data_dir: DataDir = None, *, side_info: bool = True, download: bool = False
) -> Interactions:
    """Load MovieLens 1M from ``ml-1m/ratings.dat`` or ``ml-1m/ratings_uir_ordered.dat``.

    ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) is preferred. The reconstructed
    ``ratings_uir_ordered.dat`` (``UserID::MovieID::Rating``, original line order) has no
    timestamps: then ``has_timestamps`` is False and ``timestamp`` is ``NO_TIMESTAMP``.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Data directory.
    side_info : bool
        Attach titles, genres (18) and years from ``ml-1m/movies.dat`` when present, text
        vectors when found, and the MKR knowledge graph (``kg-movie-mkr/``) when its two
        files are present.
    download : bool
        Fetch the GroupLens zip when neither ratings file exists.

    Returns
    -------
    Interactions
        Dense item ids equal the NCF item index (first appearance in the ratings file).
    """
    root = resolve_data_dir(data_dir)
    path = _find(root, "ml-1m", list(ML1M_RATINGS), download)
    fmt = ML1M_RATINGS[path.relative_to(root).as_posix()]
    table = read_table(path, fmt)
    has_ts = "timestamp" in fmt.columns
    if not has_ts:
        logger.info("%s has no timestamps: time-based splits are unavailable", path)
    return _build("ml-1m", table, has_ts, root, "ml-1m/movies.dat", read_movies_dat, side_info)


def load_ml_latest_small(
    data_dir: DataDir = None, *, side_info: bool = True, download: bool = False
) -> Interactions:
    """Load ml-latest-small (``ratings.csv``; genres and titles from ``movies.csv``).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Data directory.
    side_info : bool
        Attach titles, genres (:data:`fedrec.data.side_info.MLLATEST_GENRES`) and years from
        ``movies.csv``, and text vectors from fedrec's cache when present.
    download : bool
        Fetch the GroupLens zip when ``ratings.csv`` is missing.

    Returns
    -------
    Interactions
        Half-star ratings (0.5 ... 5) with timestamps.
    """
    root = resolve_data_dir(data_dir)
    path = _find(root, "ml-latest-small", ["ml-latest-small/ratings.csv"], download)
    table = read_table(path, MLLATEST_FORMAT)
    side_file = "ml-latest-small/movies.csv"
    return _build("ml-latest-small", table, True, root, side_file, read_movies_csv, side_info)


def load_lastfm(data_dir: DataDir = None, *, side_info: bool = True) -> Interactions:
    """Load the Last.FM dataset of KGCN (``lastfm-kgcn/user_artists.dat``) with its KG.

    ``user_artists.dat`` is hetrec2011-lastfm-2k's ``userID<TAB>artistID<TAB>weight`` (with
    that header): the rating is the listening count (float), there are no timestamps.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Data directory.
    side_info : bool
        Attach the KGCN knowledge graph (``lastfm-kgcn/kg.txt`` and
        ``item_index2entity_id.txt``), artist names as titles
        (``lastfm-hetrec2011/artists.dat``) and text vectors from fedrec's cache, each when
        its files are present.

    Returns
    -------
    Interactions
        92,834 rows, 1,892 users, 17,632 artists for the original release;
        ``has_timestamps`` is False.
    """
    root = resolve_data_dir(data_dir)
    path = _find(root, "lastfm", [LASTFM_RATINGS], False)
    table = read_table(path, LASTFM_FORMAT)
    return _build("lastfm", table, False, root, LASTFM_ARTISTS, read_artists_dat, side_info)


def load_synthetic(data_dir: DataDir = None, **kwargs) -> Interactions:
    """Generate the synthetic dataset (``data_dir`` is ignored).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Unused; accepted for a uniform loader signature.
    **kwargs
        Parameters of :func:`fedrec.data.synthetic.generate`.

    Returns
    -------
    Interactions
        The generated dataset.
    """
    return generate(**kwargs)


#: Registry: dataset name -> loader(data_dir=..., **kwargs).
LOADERS: dict[str, Callable[..., Interactions]] = {
    "ml-100k": load_ml_100k,
    "ml-1m": load_ml_1m,
    "ml-latest-small": load_ml_latest_small,
    "lastfm": load_lastfm,
    "synthetic": load_synthetic,
}


def build_interactions(
    name: str,
    table: pd.DataFrame,
    has_timestamps: bool,
    item_side: ItemFeatures | None = None,
) -> Interactions:
    """Encode raw ids densely (order of first appearance) and build :class:`Interactions`.

    Parameters
    ----------
    name : str
        Dataset name.
    table : pandas.DataFrame
        Columns ``user``, ``item``, ``rating`` and optionally ``timestamp`` with raw ids, in
        file order.
    has_timestamps : bool
        Whether ``table["timestamp"]`` holds real times.
    item_side : ItemFeatures, optional
        Side information already aligned to the dense ids (copied; default: none).

    Returns
    -------
    Interactions
        Columns ``user_id`` int64, ``item_id`` int64, ``rating`` float32, ``timestamp`` int64.
    """
    user_codes, raw_users = pd.factorize(table["user"].to_numpy())
    item_codes, raw_items = pd.factorize(table["item"].to_numpy())
    if has_timestamps:
        timestamps = table["timestamp"].to_numpy(dtype=np.int64)
    else:
        timestamps = np.full(len(table), NO_TIMESTAMP, dtype=np.int64)
    df = pd.DataFrame(
        {
            "user_id": user_codes.astype(np.int64, copy=False),
            "item_id": item_codes.astype(np.int64, copy=False),
            "rating": table["rating"].to_numpy(dtype=np.float32),
            "timestamp": timestamps,
        }
    )
    return Interactions(
        name=name,
        df=df,
        raw_user_ids=np.asarray(raw_users, dtype=np.int64),
        raw_item_ids=np.asarray(raw_items, dtype=np.int64),
        has_timestamps=has_timestamps,
        item_side=ItemFeatures() if item_side is None else item_side.copy(),
    )


def _build(
    name: str,
    table: pd.DataFrame,
    has_timestamps: bool,
    root: Path,
    side_file: str,
    reader: Callable[[Path], ItemTable],
    want_side: bool,
) -> Interactions:
    inter = build_interactions(name, table, has_timestamps)
    if not want_side:
        return inter
    side = inter.item_side
    side_path = root / side_file
    if side_path.is_file():
        align_items(reader(side_path), inter.raw_item_ids, into=side)
    else:
        logger.info("%s not found: %s loaded without its item table", side_path, name)
    side.text = load_text_vectors(name, root, inter.raw_item_ids)
    side.kg = load_dataset_kg(name, root, inter.raw_item_ids)
    side.check(inter.n_items)
    logger.info("%s item features: %s", name, ", ".join(side.available()) or "none")
    return inter


def _find(root: Path, dataset: str, candidates: list[str], download: bool) -> Path:
    try:
        return find_file(root, dataset, candidates)
    except DataFileNotFoundError:
        if not download:
            raise
    download_dataset(dataset, root)
    return find_file(root, dataset, candidates)
