"""Knowledge-graph files of the KG recommenders (MKR, KGCN) -> :class:`KnowledgeGraph`.

Both reference repositories (``hwwang55/MKR`` ``data/movie/``, ``hwwang55/KGCN``
``data/music/``) ship the same two files:

- ``kg.txt``: one triple per line, ``head<TAB>relation name<TAB>tail`` (entity ids are
  integers, the relation is a Freebase name such as ``film.film.writer``);
- ``item_index2entity_id.txt``: ``raw item id<TAB>entity id`` (ML-1M MovieID, or hetrec
  Last.FM artistID).

CRLF and LF line endings are both accepted; blank lines are skipped. Relation names get ids
in order of first appearance in ``kg.txt`` (as the papers' preprocessing does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.data.errors import DataError
from fedrec.data.item_features import KnowledgeGraph
from fedrec.data.validate import iter_lines

logger = logging.getLogger(__name__)

#: KG files (triples, item map) per dataset, relative to the data directory.
KG_FILES: dict[str, tuple[str, str]] = {
    "ml-1m": ("kg-movie-mkr/kg.txt", "kg-movie-mkr/item_index2entity_id.txt"),
    "lastfm": ("lastfm-kgcn/kg.txt", "lastfm-kgcn/item_index2entity_id.txt"),
}


@dataclass(frozen=True)
class Triples:
    """The content of a ``kg.txt`` file.

    Attributes
    ----------
    triples : numpy.ndarray
        int64 ``(n_triples, 3)``: head entity, relation id, tail entity (file order).
    relations : tuple of str
        Relation names; relation ids index this tuple (order of first appearance).
    """

    triples: np.ndarray
    relations: tuple[str, ...]


def read_kg_triples(path: str | Path) -> Triples:
    """Read a ``head<TAB>relation<TAB>tail`` triples file.

    Parameters
    ----------
    path : str or pathlib.Path
        The file (UTF-8; CRLF or LF line endings).

    Returns
    -------
    Triples
        int64 triples with relation ids, and the relation names.

    Raises
    ------
    DataError
        Empty file, a line without exactly 3 tab-separated fields, an entity id that is not a
        non-negative integer, or an empty relation name (file and line named).
    """
    path = Path(path)
    rows: list[tuple[int, int, int]] = []
    relation_ids: dict[str, int] = {}
    for number, line in _lines(path, "head<TAB>relation<TAB>tail"):
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(
                f"expected 3 tab-separated fields (head<TAB>relation<TAB>tail), found "
                f"{len(fields)} in {line!r}",
                path,
                number,
            )
        head = _entity(fields[0], "head", path, number)
        tail = _entity(fields[2], "tail", path, number)
        name = fields[1].strip()
        if not name:
            raise DataError(
                "empty relation name; expected head<TAB>relation<TAB>tail", path, number
            )
        rel = relation_ids.setdefault(name, len(relation_ids))
        rows.append((head, rel, tail))
    triples = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    logger.debug("read %s: %d triples, %d relations", path, len(triples), len(relation_ids))
    return Triples(triples=triples, relations=tuple(relation_ids))


def read_item_entity_map(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an ``item_index2entity_id.txt`` file (``raw item id<TAB>entity id``).

    Parameters
    ----------
    path : str or pathlib.Path
        The file (CRLF or LF line endings).

    Returns
    -------
    (raw_item_ids, entities)
        int64 arrays of equal length, file order.

    Raises
    ------
    DataError
        Empty file, a line without exactly 2 tab-separated integers, a negative entity id, or
        an item id listed twice (file and line named).
    """
    path = Path(path)
    items: list[int] = []
    entities: list[int] = []
    first_line: dict[int, int] = {}
    for number, line in _lines(path, "item id<TAB>entity id"):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"expected 2 tab-separated fields (item id<TAB>entity id), found {len(fields)} "
                f"in {line!r}",
                path,
                number,
            )
        try:
            item = int(fields[0].strip())
        except ValueError:
            raise DataError(
                f"item id must be an integer, found {fields[0]!r}", path, number
            ) from None
        if item in first_line:
            raise DataError(
                f"item id {item} already appears on line {first_line[item]}; each item maps to "
                "one entity",
                path,
                number,
            )
        first_line[item] = number
        items.append(item)
        entities.append(_entity(fields[1], "entity", path, number))
    return np.asarray(items, dtype=np.int64), np.asarray(entities, dtype=np.int64)


def load_knowledge_graph(
    kg_path: str | Path, map_path: str | Path, raw_item_ids: np.ndarray
) -> KnowledgeGraph:
    """Read a KG and its item map and align the items with a dataset's dense ids.

    Parameters
    ----------
    kg_path : str or pathlib.Path
        ``kg.txt`` (see :func:`read_kg_triples`).
    map_path : str or pathlib.Path
        ``item_index2entity_id.txt`` (see :func:`read_item_entity_map`).
    raw_item_ids : numpy.ndarray
        The dataset's encoder (``raw_item_ids[dense] = raw id``).

    Returns
    -------
    KnowledgeGraph
        ``n_entities`` = largest entity id (in triples or map) + 1; ``item_entity[dense]`` is
        the entity of that item, ``-1`` for an item the map does not list. Mapped items the
        dataset does not have are logged.
    """
    kg_path, map_path = Path(kg_path), Path(map_path)
    read = read_kg_triples(kg_path)
    map_items, map_entities = read_item_entity_map(map_path)
    n_entities = int(max(read.triples[:, [0, 2]].max(initial=-1), map_entities.max(initial=-1)) + 1)
    raw = np.asarray(raw_item_ids, dtype=np.int64)
    index = pd.Index(map_items).get_indexer(raw)
    item_entity = np.where(index >= 0, map_entities[index.clip(0)], -1).astype(np.int64)
    n_mapped = int((index >= 0).sum())
    unused = len(map_items) - n_mapped
    logger.info(
        "KG %s: %d triples, %d entities, %d relations; %d of %d items mapped to an entity%s",
        kg_path,
        len(read.triples),
        n_entities,
        len(read.relations),
        n_mapped,
        len(raw),
        f" ({unused} mapped item(s) of {map_path.name} are not in the dataset)" if unused else "",
    )
    return KnowledgeGraph(
        triples=read.triples,
        n_entities=n_entities,
        relations=read.relations,
        item_entity=item_entity,
        source=str(kg_path),
    )


def load_dataset_kg(
    dataset: str, data_dir: str | Path, raw_item_ids: np.ndarray
) -> KnowledgeGraph | None:
    """The KG of a dataset (:data:`KG_FILES`) when both its files are in ``data_dir``.

    Parameters
    ----------
    dataset : str
        Dataset name (``ml-1m``, ``lastfm``); other names have no KG.
    data_dir : str or pathlib.Path
        Data directory.
    raw_item_ids : numpy.ndarray
        The dataset's encoder.

    Returns
    -------
    KnowledgeGraph or None
        ``None`` when the dataset has no KG or a file is absent (logged, not an error).
    """
    if dataset not in KG_FILES:
        return None
    paths = [Path(data_dir) / rel for rel in KG_FILES[dataset]]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        logger.info("%s: no knowledge graph (not found: %s)", dataset, ", ".join(absent))
        return None
    return load_knowledge_graph(paths[0], paths[1], raw_item_ids)


def _lines(path: Path, layout: str):
    """Non-blank lines of ``path`` (CRLF-safe); an error when there is none."""
    try:
        any_line = False
        for number, line in iter_lines(path, "utf-8"):
            if line.strip():
                any_line = True
                yield number, line
    except OSError as exc:
        raise DataError(f"cannot read file ({exc.strerror or exc})", path) from None
    if not any_line:
        raise DataError(f"empty file; expected lines {layout}", path)


def _entity(text: str, what: str, path: Path, number: int) -> int:
    value = text.strip()
    if not (value.isascii() and value.isdigit()):
        raise DataError(
            f"{what} entity id must be a non-negative integer, found {text!r}", path, number
        )
    return int(value)
