"""One entry point from settings to a split: ``prepare_split``, plus saving/loading splits.

``prepare_split`` memoises in-process (same arguments -> the same ``SplitData`` object; treat
it as read-only). Splits are deterministic: the same arguments give identical arrays in any
process, and :func:`save_split` stores one in a single ``.npz`` (no pickles) for run dirs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fedrec.data.errors import DataError
from fedrec.data.item_features import ItemFeatures, KnowledgeGraph
from fedrec.data.loaders import LOADERS, load_interactions
from fedrec.data.paths import resolve_data_dir
from fedrec.data.schema import LabeledPairs, SplitData
from fedrec.data.split import leave_one_out, ncf_split
from fedrec.data.split_cold import cold_items_split
from fedrec.data.split_ctr import ctr_split
from fedrec.data.split_tune import tuning_holdout
from fedrec.data.synthetic import generate

logger = logging.getLogger(__name__)

SPLITS = ("loo", "ncf", "ncf-tune", "ctr", "cold-items")
#: Positive threshold of the ``ctr`` split per dataset (MKR / KGCN ``preprocess.py``: a rating
#: ``>= threshold`` is a positive; Last.FM listening counts are all positives).
CTR_THRESHOLDS = {
    "ml-1m": 4.0,
    "ml-100k": 4.0,
    "ml-latest-small": 4.0,
    "synthetic": 4.0,
    "lastfm": 0.0,
}
COLD_FRACTION = 0.2
#: Version of the ``.npz`` layout of :func:`save_split` (3: typed item features, labels,
#: validation and click-through parts).
SPLIT_FILE_FORMAT = 3
_ARRAYS = (
    "train_indptr",
    "train_items",
    "train_ratings",
    "test_items",
    "test_negatives",
)
#: Optional parts: plain arrays, and click-through parts stored as ``<name>.<field>``.
_OPTIONAL = ("train_labels", "valid_items", "valid_negatives", "negative_pool")
_PAIRS = ("ctr_valid", "ctr_test")
_PAIR_FIELDS = ("indptr", "items", "labels")
_SIDE = "item_side."
_KG = _SIDE + "kg."
_MATRIX = _SIDE + "matrix."
_CACHE: dict[tuple, SplitData] = {}


def check_split_settings(dataset: str, split: str, num_test_negatives: int) -> None:
    """Raise ``ValueError`` naming the setting when ``dataset`` / ``split`` /
    ``test-negatives`` do not go together (called by config validation, before any work)."""
    if split not in SPLITS:
        raise ValueError(f"setting `split` must be one of {', '.join(SPLITS)}; got {split!r}")
    if dataset not in LOADERS:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(LOADERS)}")
    if split.startswith("ncf") and dataset != "ml-1m":
        raise ValueError(
            f'setting `split` = "{split}" (the published NCF test files) only exists for dataset '
            f'"ml-1m", not {dataset!r}; use split = "loo"'
        )
    if split.startswith("ncf") and num_test_negatives != 99:
        raise ValueError(
            f'setting `split` = "{split}" has exactly 99 negatives per user, as the published '
            f"NCF files; test-negatives={num_test_negatives} is not possible"
        )
    if split == "ctr" and dataset not in CTR_THRESHOLDS:
        raise ValueError(
            f'setting `split` = "ctr" labels ratings >= a per-dataset threshold as positives; '
            f"dataset {dataset!r} has none (datasets with one: {', '.join(CTR_THRESHOLDS)})"
        )


def prepare_split(
    dataset: str,
    split: str = "loo",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    num_test_negatives: int = 99,
    synthetic: dict | None = None,
) -> SplitData:
    """Load a dataset and split it (memoised in-process).

    Parameters
    ----------
    dataset : str
        ``synthetic``, ``ml-100k``, ``ml-1m``, ``ml-latest-small`` or ``lastfm``.
    split : {"loo", "ncf", "ncf-tune", "ctr", "cold-items"}
        Leave-one-out with sampled negatives, the published NCF split (``ml-1m`` only), its
        tuning split (:func:`fedrec.data.split_tune.tuning_holdout`: no NCF test rows), the
        MKR / KGCN click-through split (:func:`fedrec.data.split_ctr.ctr_split`, positive
        threshold from :data:`CTR_THRESHOLDS`) or the cold-items split
        (:func:`fedrec.data.split_cold.cold_items_split`, :data:`COLD_FRACTION` of the items).
    data_dir : str or os.PathLike, optional
        Data directory (argument, else ``FEDREC_DATA_DIR``, else ``~/.cache/fedrec/data``).
    seed : int
        Seed of the test negatives (and of the synthetic data unless ``synthetic`` has one).
    num_test_negatives : int
        Negatives per test user (must be 99 for ``ncf``; unused by ``ctr``, whose negatives
        are one per positive).
    synthetic : dict, optional
        Keyword arguments of :func:`fedrec.data.synthetic.generate` (``dataset="synthetic"``).

    Returns
    -------
    SplitData
        The split; repeated calls with the same arguments return the same object.

    Raises
    ------
    ValueError
        Unknown dataset or split, or a setting that does not apply to the dataset.
    DataError
        Missing or malformed data.
    """
    check_split_settings(dataset, split, num_test_negatives)
    if synthetic and dataset != "synthetic":
        raise ValueError(
            f"setting `synthetic` applies to dataset 'synthetic' only, not {dataset!r}"
        )
    root = None if dataset == "synthetic" else resolve_data_dir(data_dir)
    frozen = json.dumps(synthetic or {}, sort_keys=True, default=repr)
    key = (dataset, split, str(root), int(seed), int(num_test_negatives), frozen)
    if key in _CACHE:
        return _CACHE[key]
    if split == "ncf":
        result = ncf_split(root, seed=seed)
    elif split == "ncf-tune":
        result = tuning_holdout(ncf_split(root, seed=seed), seed)
    else:
        if dataset == "synthetic":
            inter = generate(**{"seed": seed, **(synthetic or {})})
        else:
            inter = load_interactions(dataset, root)
        if split == "ctr":
            result = ctr_split(inter, seed, CTR_THRESHOLDS[dataset])
        elif split == "cold-items":
            result = cold_items_split(inter, seed, num_test_negatives, COLD_FRACTION)
        else:
            result = leave_one_out(inter, num_test_negatives, seed)
    _CACHE[key] = result
    logger.info(
        "split %s/%s: %d users, %d items, %d train, %d test users",
        dataset,
        split,
        result.n_users,
        result.n_items,
        result.n_train,
        int((result.test_items >= 0).sum()),
    )
    return result


def clear_cache() -> None:
    """Forget the memoised splits of :func:`prepare_split`."""
    _CACHE.clear()


def save_split(split: SplitData, path: str | os.PathLike[str]) -> Path:
    """Write a split to one ``.npz`` file (atomically; no pickled objects).

    The typed item features are included (``item_side.titles``, ``.genres``,
    ``.genre_names``, ``.year``, ``.text``, ``.kg.triples`` / ``.kg.n_entities`` /
    ``.kg.relations`` / ``.kg.item_entity`` / ``.kg.source``, ``.matrix.<name>``), so that
    :func:`load_split_file` gives them back exactly. Id arrays are stored as int32 when they
    fit (uncompressed: fast to write) and come back as int64.

    Parameters
    ----------
    split : SplitData
        The split.
    path : str or os.PathLike
        Target file (written exactly there, whatever its suffix).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "format": np.array(SPLIT_FILE_FORMAT),
        "name": np.array(split.name),
        "n_users": np.array(split.n_users, dtype=np.int64),
        "n_items": np.array(split.n_items, dtype=np.int64),
    }
    arrays.update({name: _compact(np.asarray(getattr(split, name))) for name in _ARRAYS})
    if split.test_ratings is not None:
        arrays["test_ratings"] = np.asarray(split.test_ratings)
    for name in _OPTIONAL:
        if getattr(split, name) is not None:
            arrays[name] = _compact(np.asarray(getattr(split, name)))
    for name in _PAIRS:
        pairs = getattr(split, name)
        if pairs is not None:
            for part in _PAIR_FIELDS:
                arrays[f"{name}.{part}"] = _compact(np.asarray(getattr(pairs, part)))
    arrays.update(_features_to_arrays(split.item_side))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_split_file(path: str | os.PathLike[str]) -> SplitData:
    """Read a split written by :func:`save_split`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    SplitData
        The split with its :class:`~fedrec.data.item_features.ItemFeatures`.

    Raises
    ------
    DataError
        Not a split file, wrong format version or inconsistent arrays.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"not a readable split file ({exc})", path) from None
    required = ("format", "name", "n_users", "n_items", *_ARRAYS)
    missing = [name for name in required if name not in data]
    if missing:
        raise DataError(f"not a split file: missing array(s) {', '.join(missing)}", path)
    if int(data["format"]) != SPLIT_FILE_FORMAT:
        raise DataError(
            f"split file format {int(data['format'])}, expected {SPLIT_FILE_FORMAT} "
            "(written by another fedrec version; write it again with save_split)",
            path,
        )
    item_side = _features_from_arrays(data, path)
    split = SplitData(
        name=str(data["name"]),
        n_users=int(data["n_users"]),
        n_items=int(data["n_items"]),
        train_indptr=data["train_indptr"].astype(np.int64),
        train_items=data["train_items"].astype(np.int64),
        train_ratings=data["train_ratings"].astype(np.float32),
        test_items=data["test_items"].astype(np.int64),
        test_negatives=data["test_negatives"].astype(np.int64),
        test_ratings=data.get("test_ratings"),
        item_side=item_side,
        **_load_optional(data, path),
    )
    n_users = split.n_users
    if (
        len(split.train_indptr) != n_users + 1
        or len(split.test_items) != n_users
        or len(split.test_negatives) != n_users
        or split.train_indptr[-1] != len(split.train_items)
        or len(split.train_ratings) != len(split.train_items)
    ):
        raise DataError("inconsistent split file: array sizes do not match n_users/n_train", path)
    item_side.check(split.n_items, str(path))
    return split


def _load_optional(data: dict[str, np.ndarray], path: Path) -> dict:
    """The optional parts of a split file (labels, validation, click-through rows)."""
    out: dict = {}
    n_users = int(data["n_users"])
    if "train_labels" in data:
        out["train_labels"] = data["train_labels"].astype(np.float32)
        if len(out["train_labels"]) != len(data["train_items"]):
            raise DataError("inconsistent split file: train_labels do not match train_items", path)
    if "negative_pool" in data:
        out["negative_pool"] = data["negative_pool"].astype(np.int64)
    for name in ("valid_items", "valid_negatives"):
        if name in data:
            out[name] = data[name].astype(np.int64)
            if len(out[name]) != n_users:
                raise DataError(f"inconsistent split file: {name} has no row per user", path)
    for name in _PAIRS:
        have = [f"{name}.{part}" in data for part in _PAIR_FIELDS]
        if not any(have):
            continue
        if not all(have):
            raise DataError(f"inconsistent split file: {name} is incomplete", path)
        pairs = LabeledPairs(
            indptr=data[f"{name}.indptr"].astype(np.int64),
            items=data[f"{name}.items"].astype(np.int64),
            labels=data[f"{name}.labels"].astype(np.float32),
        )
        if (
            len(pairs.indptr) != n_users + 1
            or pairs.indptr[-1] != len(pairs.items)
            or len(pairs.labels) != len(pairs.items)
        ):
            raise DataError(f"inconsistent split file: {name} sizes do not match n_users", path)
        out[name] = pairs
    return out


def _features_to_arrays(side: ItemFeatures) -> dict[str, np.ndarray]:
    """The ``item_side.*`` arrays of a split file (strings as unicode arrays, no pickles)."""
    out: dict[str, np.ndarray] = {}
    if side.titles is not None:
        out[_SIDE + "titles"] = np.array(list(side.titles), dtype=str)
    if side.genres is not None:
        out[_SIDE + "genres"] = np.asarray(side.genres)
    if side.genre_names:
        out[_SIDE + "genre_names"] = np.array(list(side.genre_names), dtype=str)
    if side.year is not None:
        out[_SIDE + "year"] = np.asarray(side.year)
    if side.text is not None:
        out[_SIDE + "text"] = np.asarray(side.text)
    if side.kg is not None:
        kg = side.kg
        out[_KG + "triples"] = _compact(np.asarray(kg.triples, dtype=np.int64))
        out[_KG + "n_entities"] = np.array(kg.n_entities, dtype=np.int64)
        out[_KG + "relations"] = np.array(list(kg.relations), dtype=str)
        out[_KG + "item_entity"] = _compact(np.asarray(kg.item_entity, dtype=np.int64))
        out[_KG + "source"] = np.array(kg.source, dtype=str)
    for name, matrix in side.matrices.items():
        out[_MATRIX + name] = np.asarray(matrix)
    return out


def _features_from_arrays(data: dict[str, np.ndarray], path: Path) -> ItemFeatures:
    """Inverse of :func:`_features_to_arrays`."""
    side = ItemFeatures()
    if _SIDE + "titles" in data:
        side.titles = [str(t) for t in data[_SIDE + "titles"].tolist()]
    side.genres = data.get(_SIDE + "genres")
    if _SIDE + "genre_names" in data:
        side.genre_names = tuple(str(g) for g in data[_SIDE + "genre_names"].tolist())
    side.year = data.get(_SIDE + "year")
    side.text = data.get(_SIDE + "text")
    kg_keys = [k for k in data if k.startswith(_KG)]
    if kg_keys:
        parts = ("triples", "n_entities", "relations", "item_entity", "source")
        missing = [p for p in parts if _KG + p not in data]
        if missing:
            raise DataError(f"split file: KG array(s) {', '.join(missing)} missing", path)
        side.kg = KnowledgeGraph(
            triples=data[_KG + "triples"].astype(np.int64).reshape(-1, 3),
            n_entities=int(data[_KG + "n_entities"]),
            relations=tuple(str(r) for r in data[_KG + "relations"].tolist()),
            item_entity=data[_KG + "item_entity"].astype(np.int64),
            source=str(data[_KG + "source"]),
        )
    side.matrices = {k[len(_MATRIX) :]: v for k, v in data.items() if k.startswith(_MATRIX)}
    known = {_SIDE + n for n in ("titles", "genres", "genre_names", "year", "text")}
    unknown = [
        k
        for k in data
        if k.startswith(_SIDE) and k not in known and not k.startswith((_KG, _MATRIX))
    ]
    if unknown:
        logger.warning("%s: unknown item feature array(s) ignored: %s", path, ", ".join(unknown))
    return side


def _compact(array: np.ndarray) -> np.ndarray:
    """int64 -> int32 when every value fits (the reader widens it back)."""
    if array.dtype != np.int64 or array.size == 0:
        return array
    info = np.iinfo(np.int32)
    if array.min() >= info.min and array.max() <= info.max:
        return array.astype(np.int32)
    return array
