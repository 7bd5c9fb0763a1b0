"""Atomic checkpoint files: a crashed or interrupted run resumes from the last one."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

_ROUND = re.compile(r"round-(\d+)\.(pkl|npz)$")


def save_pickle(path: Path, obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_pickle(path: Path) -> Any:
    with open(path, "rb") as fh:
        return pickle.load(fh)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to an ``.npz`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def round_files(directory: Path) -> dict[int, Path]:
    """``{round: path}`` of ``round-N.pkl|npz`` files in ``directory``."""
    out: dict[int, Path] = {}
    if directory.is_dir():
        for p in directory.iterdir():
            m = _ROUND.match(p.name)
            if m:
                out[int(m.group(1))] = p
    return out


def prune(directory: Path, keep: int = 2) -> None:
    """Delete all but the ``keep`` newest round files."""
    files = round_files(directory)
    for r in sorted(files)[:-keep]:
        files[r].unlink(missing_ok=True)
