"""Where the data directory is and how to find (or explain how to get) a dataset file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fedrec.data.errors import DataFileNotFoundError

logger = logging.getLogger(__name__)

ENV_VAR = "FEDREC_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/fedrec/data")

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
NCF_URL = "https://github.com/hexiangnan/neural_collaborative_filtering"
KGCN_URL = "https://github.com/hwwang55/KGCN"
MKR_URL = "https://github.com/hwwang55/MKR"
HETREC_LASTFM_URL = "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip"

#: Where each dataset folder can be obtained (shown in missing-file errors).
SOURCES: dict[str, str] = {
    "ml-100k": GROUPLENS_URL.format(name="ml-100k")
    + " (unzip so that <data dir>/ml-100k/u.data exists)",
    "ml-1m": GROUPLENS_URL.format(name="ml-1m")
    + " (unzip so that <data dir>/ml-1m/ratings.dat exists)",
    "ml-latest-small": GROUPLENS_URL.format(name="ml-latest-small")
    + " (unzip so that <data dir>/ml-latest-small/ratings.csv exists)",
    "ncf-hexiangnan": f"{NCF_URL} , folder Data/ (ml-1m.test.rating, ml-1m.test.negative;"
    " put them in <data dir>/ncf-hexiangnan/)",
    "lastfm": f"{KGCN_URL} , folder data/music/ (user_artists.dat, kg.txt,"
    " item_index2entity_id.txt; put them in <data dir>/lastfm-kgcn/)",
    "kg-movie-mkr": f"{MKR_URL} , folder data/movie/ (kg.txt, item_index2entity_id.txt;"
    " put them in <data dir>/kg-movie-mkr/)",
    "lastfm-hetrec2011": HETREC_LASTFM_URL
    + " (artists.dat, for artist names; put it in <data dir>/lastfm-hetrec2011/)",
}

#: Datasets that :mod:`fedrec.data.download` can fetch when asked explicitly.
DOWNLOADABLE = frozenset({"ml-100k", "ml-1m", "ml-latest-small"})


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """Return the data directory to use.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Explicit directory (the ``--data-dir`` setting). When ``None``, the environment
        variable ``FEDREC_DATA_DIR`` is used, else ``~/.cache/fedrec/data``.

    Returns
    -------
    pathlib.Path
        Absolute path (``~`` expanded); it need not exist.
    """
    if data_dir is not None and str(data_dir) != "":
        chosen, origin = Path(data_dir), "argument"
    elif os.environ.get(ENV_VAR):
        chosen, origin = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        chosen, origin = DEFAULT_DATA_DIR, "default"
    resolved = chosen.expanduser().absolute()
    logger.debug("data dir %s (from %s)", resolved, origin)
    return resolved


def find_file(data_dir: Path, dataset: str, candidates: list[str]) -> Path:
    """Return the first candidate file that exists under ``data_dir``.

    Parameters
    ----------
    data_dir : pathlib.Path
        Data directory (see :func:`resolve_data_dir`).
    dataset : str
        Dataset the file belongs to (used for the "where to get it" hint).
    candidates : list of str
        Paths relative to ``data_dir`` in order of preference, e.g. ``["ml-1m/ratings.dat"]``.

    Returns
    -------
    pathlib.Path
        The first existing candidate.

    Raises
    ------
    DataFileNotFoundError
        None exists; the message names the file(s), the full paths looked at, where to get the
        data and how to point fedrec at it.
    """
    data_dir = Path(data_dir)
    looked = [data_dir / c for c in candidates]
    for path in looked:
        if path.is_file():
            return path
    raise DataFileNotFoundError(missing_file_message(data_dir, dataset, candidates))


def missing_file_message(data_dir: Path, dataset: str, candidates: list[str]) -> str:
    """Build the explanation used when none of ``candidates`` exists.

    Parameters
    ----------
    data_dir : pathlib.Path
        Data directory that was searched.
    dataset : str
        Dataset name (key of :data:`SOURCES`).
    candidates : list of str
        Relative paths that were tried.

    Returns
    -------
    str
        Multi-line message.
    """
    which = " or ".join(candidates)
    lines = [f"dataset {dataset!r}: required file not found: {which}", "looked at:"]
    lines += [f"  {data_dir / c}" for c in candidates]
    source = SOURCES.get(dataset)
    if source is not None:
        lines.append(f"get it from: {source}")
    if dataset in DOWNLOADABLE:
        lines.append(
            "or let fedrec fetch it (sha256-verified) with download=True / "
            "fedrec.data.download.download_dataset(" + repr(dataset) + ")"
        )
    if not data_dir.exists():
        lines.append(f"(the data directory {data_dir} does not exist)")
    lines.append(
        f"set the data directory with --data-dir or the environment variable {ENV_VAR} "
        f"(default {DEFAULT_DATA_DIR})"
    )
    return "\n".join(lines)
