"""Optional, explicit download of public MovieLens zips into the data directory.

Nothing here runs unless asked (``download=True`` in a loader, or :func:`download_dataset`).
Each download is verified with sha256: the zip itself where its hash is known, otherwise (and in
addition, where known) the extracted files, with the values recorded in the ``SOURCE.md`` files of
the shared data folder. Files are fetched and extracted into a temporary folder inside the data
directory and only moved into place once every check passed, so a failed download leaves nothing
half-written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fedrec.data.errors import DataError
from fedrec.data.paths import GROUPLENS_URL, resolve_data_dir

logger = logging.getLogger(__name__)

Fetch = Callable[[str, Path], None]


@dataclass(frozen=True)
class ZipSource:
    """A downloadable zip and the checksums that make it trustworthy.

    Attributes
    ----------
    url : str
        Where the zip is served.
    folder : str
        Top-level folder inside the zip (and inside the data directory).
    zip_sha256 : str or None
        sha256 of the zip, where known.
    member_sha256 : dict
        sha256 of extracted files, keyed by path relative to ``folder``.
    """

    url: str
    folder: str
    zip_sha256: str | None = None
    member_sha256: dict[str, str] = field(default_factory=dict)


#: Known public zips. Hashes come from the ``SOURCE.md`` files of the shared data folder.
ZIP_SOURCES: dict[str, ZipSource] = {
    "ml-100k": ZipSource(
        url=GROUPLENS_URL.format(name="ml-100k"),
        folder="ml-100k",
        zip_sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        member_sha256={
            "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
            "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
        },
    ),
    "ml-1m": ZipSource(
        url=GROUPLENS_URL.format(name="ml-1m"),
        folder="ml-1m",
        member_sha256={
            "ratings.dat": "506d64ca44484487c11dc2d9a28de5c54948213e6b96285e298afe28d6ea4e0f",
            "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
            "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
        },
    ),
    "ml-latest-small": ZipSource(
        url=GROUPLENS_URL.format(name="ml-latest-small"),
        folder="ml-latest-small",
        member_sha256={
            "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
            "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
        },
    ),
}


def fetch_url(url: str, dest: Path) -> None:
    """Stream ``url`` (http(s):// or file://) into ``dest``.

    Parameters
    ----------
    url : str
        Source address.
    dest : pathlib.Path
        File to create.
    """
    with urllib.request.urlopen(url, timeout=120) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file.

    Parameters
    ----------
    path : pathlib.Path
        File to hash.

    Returns
    -------
    str
        Lower-case hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    fetch: Fetch | None = None,
    url: str | None = None,
) -> Path:
    """Download, verify and unpack a public dataset zip into the data directory.

    Parameters
    ----------
    name : str
        Key of :data:`ZIP_SOURCES` (``ml-100k``, ``ml-1m``, ``ml-latest-small``).
    data_dir : str or os.PathLike, optional
        Target data directory (see :func:`fedrec.data.paths.resolve_data_dir`).
    fetch : callable, optional
        ``fetch(url, dest_path)``; defaults to :func:`fetch_url` (tests pass a fake).
    url : str, optional
        Override the source address (e.g. a mirror or a ``file://`` URL); checksums still apply.

    Returns
    -------
    pathlib.Path
        The dataset folder ``<data_dir>/<name>``.

    Raises
    ------
    ValueError
        Unknown dataset name.
    DataError
        Checksum mismatch, unreadable zip or a zip without the expected files. Nothing is left
        in the data directory in that case.
    """
    if name not in ZIP_SOURCES:
        known = ", ".join(sorted(ZIP_SOURCES))
        raise ValueError(f"no download known for dataset {name!r}; downloadable: {known}")
    source = ZIP_SOURCES[name]
    src_url = url or source.url
    root = resolve_data_dir(data_dir)
    target = root / source.folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=root))
    try:
        zip_path = tmp / f"{name}.zip"
        logger.info("downloading %s from %s", name, src_url)
        (fetch or fetch_url)(src_url, zip_path)
        if not zip_path.is_file():
            raise DataError(f"download of {src_url} produced no file")
        if source.zip_sha256 is not None:
            _check_sha256(zip_path, source.zip_sha256, src_url, target)
        extracted = _extract(zip_path, source.folder, tmp / "unpacked", src_url)
        missing = sorted(set(source.member_sha256) - set(extracted))
        if missing:
            raise DataError(
                f"zip from {src_url} lacks expected file(s) {', '.join(missing)} under "
                f"{source.folder}/; nothing was written to {target}"
            )
        for rel, expected in source.member_sha256.items():
            _check_sha256(extracted[rel], expected, f"{src_url} member {rel}", target)
        target.mkdir(parents=True, exist_ok=True)
        for rel, path in extracted.items():
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
        logger.info("%s unpacked into %s (%d files)", name, target, len(extracted))
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_sha256(path: Path, expected: str, what: str, target: Path) -> None:
    actual = sha256_file(path)
    if actual != expected.lower():
        raise DataError(
            f"sha256 mismatch for {what}: expected {expected}, got {actual}; the download was "
            f"discarded and nothing was written to {target}"
        )


def _extract(zip_path: Path, folder: str, dest: Path, what: str) -> dict[str, Path]:
    """Extract the members under ``folder/`` safely; return {relative path: extracted file}."""
    out: dict[str, Path] = {}
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                parts = PurePosixPath(info.filename).parts
                if info.is_dir() or len(parts) < 2 or parts[0] != folder:
                    continue
                if any(p in ("..", "") for p in parts) or info.filename.startswith("/"):
                    raise DataError(f"zip from {what} has an unsafe member name {info.filename!r}")
                rel = "/".join(parts[1:])
                path = dest.joinpath(*parts[1:])
                path.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 20)
                out[rel] = path
    except zipfile.BadZipFile as exc:
        raise DataError(f"download from {what} is not a valid zip file ({exc})") from exc
    if not out:
        raise DataError(f"zip from {what} contains no files under {folder}/")
    return out
