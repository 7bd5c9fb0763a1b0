"""Frozen text vectors of the items (e.g. all-MiniLM-L6-v2 of the titles), by raw item id.

Sources, first found wins:

1. fedrec's own cache ``<data dir>/fedrec-text/<dataset>-minilm.npz`` (:func:`text_cache_path`)
   with arrays ``ids`` (int64 raw item ids) and ``vectors`` (float32 ``(len(ids), d)``),
   written by ``python -m fedrec.features text --dataset NAME``;
2. the precomputed shared matrices (:data:`SHARED_TEXT`):
   ``ml-100k-title-emb-minilm/u_item_title_minilm_l6_v2.npy`` (row ``i`` = ML-100K movie
   id ``i + 1``) and ``ml-1m-title-emb-minilm/movies_title_minilm_l6_v2.npy`` with
   ``movie_ids.npy`` (the MovieID of each row; rows are mapped by MovieID, never by position).

The vectors are aligned with the dense item ids; items without a vector get a zero row.
"""

from __future__ import annotations

import logging
import os
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.data.errors import DataError

logger = logging.getLogger(__name__)

#: Folder of fedrec's text-vector caches inside the data directory.
TEXT_CACHE_DIR = "fedrec-text"
#: Model tag in the cache file name.
TEXT_MODEL = "minilm"


@dataclass(frozen=True)
class SharedText:
    """A precomputed text matrix in the shared data layout.

    Attributes
    ----------
    vectors : str
        ``.npy`` matrix, relative to the data directory.
    ids : str or None
        ``.npy`` with the raw item id of each row; ``None``: row ``i`` is id ``i + 1``.
    """

    vectors: str
    ids: str | None = None


#: Precomputed matrices per dataset (used when fedrec's own cache is absent).
SHARED_TEXT: dict[str, SharedText] = {
    "ml-100k": SharedText("ml-100k-title-emb-minilm/u_item_title_minilm_l6_v2.npy"),
    "ml-1m": SharedText(
        "ml-1m-title-emb-minilm/movies_title_minilm_l6_v2.npy",
        "ml-1m-title-emb-minilm/movie_ids.npy",
    ),
}


def text_cache_path(data_dir: str | os.PathLike[str], dataset: str) -> Path:
    """The text-vector cache of ``dataset``: ``<data_dir>/fedrec-text/<dataset>-minilm.npz``.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Data directory.
    dataset : str
        Dataset name.

    Returns
    -------
    pathlib.Path
        The cache file (it need not exist). Its arrays: ``ids`` int64 raw item ids, ``vectors``
        float32 ``(len(ids), d)``.
    """
    return Path(data_dir) / TEXT_CACHE_DIR / f"{dataset}-{TEXT_MODEL}.npz"


def load_text_vectors(
    dataset: str, data_dir: str | os.PathLike[str], raw_item_ids: np.ndarray
) -> np.ndarray | None:
    """Text vectors of a dataset's items, aligned with its dense ids.

    Parameters
    ----------
    dataset : str
        Dataset name.
    data_dir : str or os.PathLike
        Data directory.
    raw_item_ids : numpy.ndarray
        The dataset's encoder (``raw_item_ids[dense] = raw id``).

    Returns
    -------
    numpy.ndarray or None
        float32 ``(n_items, d)``, zero rows for items without a vector (logged); ``None`` when
        no source exists (not an error: the feature is absent).

    Raises
    ------
    DataError
        A source file exists but is unreadable or inconsistent (file named).
    """
    root = Path(data_dir)
    cache = text_cache_path(root, dataset)
    if cache.is_file():
        ids, vectors = read_text_cache(cache)
        return align_vectors(ids, vectors, raw_item_ids, cache)
    shared = SHARED_TEXT.get(dataset)
    if shared is not None and (root / shared.vectors).is_file():
        ids_path = None if shared.ids is None else root / shared.ids
        if ids_path is not None and not ids_path.is_file():
            logger.warning(
                "%s: %s is absent, text vectors not used", root / shared.vectors, ids_path
            )
            return None
        ids, vectors = read_shared_matrix(root / shared.vectors, ids_path)
        return align_vectors(ids, vectors, raw_item_ids, root / shared.vectors)
    logger.info("%s: no text vectors (looked for %s)", dataset, cache)
    return None


def read_text_cache(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a text cache ``.npz`` (arrays ``ids`` and ``vectors``).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    (ids, vectors)
        int64 ``(n,)`` and float32 ``(n, d)``.

    Raises
    ------
    DataError
        Unreadable file, missing array or inconsistent shapes.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files if name in ("ids", "vectors")}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"not a readable text-vector cache ({exc})", path) from None
    missing = [name for name in ("ids", "vectors") if name not in arrays]
    if missing:
        raise DataError(
            f"not a text-vector cache: missing array(s) {', '.join(missing)} "
            "(expected 'ids' and 'vectors')",
            path,
        )
    return _checked(arrays["ids"], arrays["vectors"], path)


def write_text_cache(path: str | os.PathLike[str], ids: np.ndarray, vectors: np.ndarray) -> Path:
    """Write a text cache ``.npz`` that :func:`read_text_cache` reads (atomically).

    Parameters
    ----------
    path : str or os.PathLike
        Target, normally :func:`text_cache_path` (parent folders are created).
    ids : numpy.ndarray
        Raw item ids (unique integers), one per row of ``vectors``.
    vectors : numpy.ndarray
        ``(len(ids), d)`` finite values; stored as float32.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    DataError
        Inconsistent ids/vectors (nothing is written).
    """
    path = Path(path)
    ids, vectors = _checked(np.asarray(ids), np.asarray(vectors), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a temporary file opened exclusively under a unique name in the same folder, then renamed:
    # the result gets the usual permissions (umask) and concurrent writers never share it
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            np.savez(fh, ids=ids, vectors=vectors)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_shared_matrix(
    vectors_path: str | os.PathLike[str], ids_path: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a shared precomputed matrix and the raw item id of each row.

    Parameters
    ----------
    vectors_path : str or os.PathLike
        ``.npy`` float matrix ``(n, d)``.
    ids_path : str or os.PathLike, optional
        ``.npy`` integer ids ``(n,)``; when ``None``, row ``i`` is item id ``i + 1``.

    Returns
    -------
    (ids, vectors)
        int64 ``(n,)`` and float32 ``(n, d)``.

    Raises
    ------
    DataError
        Unreadable file or inconsistent shapes.
    """
    vectors = _load_npy(Path(vectors_path))
    if ids_path is None:
        ids = np.arange(1, (vectors.shape[0] if vectors.ndim else 0) + 1, dtype=np.int64)
        return _checked(ids, vectors, Path(vectors_path))
    ids = _load_npy(Path(ids_path))
    return _checked(ids, vectors, Path(vectors_path), Path(ids_path))


def align_vectors(
    ids: np.ndarray, vectors: np.ndarray, raw_item_ids: np.ndarray, source: str | os.PathLike[str]
) -> np.ndarray:
    """Rows of ``vectors`` (keyed by ``ids``) in dense item order; zero rows where absent.

    Parameters
    ----------
    ids : numpy.ndarray
        Raw item id of each row of ``vectors`` (unique).
    vectors : numpy.ndarray
        ``(len(ids), d)``.
    raw_item_ids : numpy.ndarray
        The dataset's encoder.
    source : str or os.PathLike
        File named in the log message.

    Returns
    -------
    numpy.ndarray
        float32 ``(len(raw_item_ids), d)``.
    """
    raw = np.asarray(raw_item_ids, dtype=np.int64)
    index = pd.Index(np.asarray(ids, dtype=np.int64)).get_indexer(raw)
    out = np.zeros((len(raw), vectors.shape[1]), dtype=np.float32)
    found = index >= 0
    out[found] = vectors[index[found]]
    if not found.all():
        logger.warning(
            "%s: %d of %d items have no text vector (e.g. raw id %s); zero rows used",
            source,
            int((~found).sum()),
            len(raw),
            raw[np.flatnonzero(~found)[0]],
        )
    logger.info("text vectors %s: %d x %d", source, len(out), out.shape[1])
    return out


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable .npy array ({exc})", path) from None


def _checked(
    ids: np.ndarray, vectors: np.ndarray, path: Path, ids_path: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    if vectors.ndim != 2 or vectors.dtype.kind not in "fiu":
        raise DataError(
            f"text vectors must be a numeric (n, d) matrix, found {vectors.dtype} {vectors.shape}",
            path,
        )
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) != len(vectors):
        raise DataError(
            f"ids must be {len(vectors)} integers (one per row of the {vectors.shape} vectors"
            f"{'' if ids_path is None else f' in {path}'}), found {ids.dtype} {ids.shape}",
            ids_path or path,
        )
    ids = ids.astype(np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"item id {uniq[counts > 1][0]} has more than one text vector", path)
    vectors = vectors.astype(np.float32)
    if not np.isfinite(vectors).all():
        raise DataError("text vectors contain NaN or infinite values", path)
    return ids, vectors
