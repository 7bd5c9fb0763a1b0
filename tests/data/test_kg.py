"""Knowledge-graph readers (MKR / KGCN files) and their alignment with dense item ids."""

from __future__ import annotations

import numpy as np
import pytest

from fedrec.data.errors import DataError
from fedrec.data.kg import (
    KG_FILES,
    load_dataset_kg,
    load_knowledge_graph,
    read_item_entity_map,
    read_kg_triples,
)
from fedrec.data.loaders import load_interactions

KG_TEXT = (
    "10\tfilm.film.writer\t20\r\n"
    "11\tfilm.film.language\t21\r\n"
    "\r\n"
    "10\tfilm.film.language\t21\r\n"
    "12\tfilm.film.writer\t20\r\n"
)


def test_triples_get_relation_ids_in_order_of_first_appearance(write):
    # Prepare
    path = write("kg.txt", KG_TEXT)

    # Execute
    read = read_kg_triples(path)

    # Assert
    assert read.relations == ("film.film.writer", "film.film.language")
    assert read.triples.dtype == np.int64
    assert read.triples.tolist() == [[10, 0, 20], [11, 1, 21], [10, 1, 21], [12, 0, 20]]


def test_lf_endings_read_the_same_as_crlf(write):
    # Prepare
    crlf = write("crlf/kg.txt", KG_TEXT)
    lf = write("lf/kg.txt", KG_TEXT.replace("\r\n", "\n"))

    # Execute
    a, b = read_kg_triples(crlf), read_kg_triples(lf)

    # Assert
    assert a.relations == b.relations and np.array_equal(a.triples, b.triples)


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("1\tr\t2\r\n1\tr\r\n", 2, "expected 3 tab-separated fields"),
        ("1\tr\t2\r\n1 r 2\r\n", 2, "found 1"),
        ("1\tr\t2\r\n\r\n1\tr\t2\tx\r\n", 3, "found 4"),
        ("x\tr\t2\r\n", 1, "head entity id must be a non-negative integer, found 'x'"),
        ("1\tr\t-2\r\n", 1, "tail entity id must be a non-negative integer"),
        ("1\tr\t2.5\r\n", 1, "tail entity id"),
        ("1\t \t2\r\n", 1, "empty relation name"),
    ],
)
def test_malformed_triple_lines_name_file_and_line(write, content, line, words):
    # Prepare
    path = write("kg.txt", content)

    # Execute
    with pytest.raises(DataError) as info:
        read_kg_triples(path)

    # Assert
    assert str(info.value).startswith(f"{path}, line {line}: ")
    assert words in str(info.value)


def test_empty_kg_file_is_an_error(write):
    # Prepare
    path = write("kg.txt", "\r\n\r\n")

    # Execute
    with pytest.raises(DataError) as info:
        read_kg_triples(path)

    # Assert
    assert str(info.value).startswith(f"{path}: empty file")


def test_item_map_reads_pairs_in_file_order(write):
    # Prepare
    path = write("item_index2entity_id.txt", "1193\t0\r\n661\t1\r\n914\t2\r\n")

    # Execute
    items, entities = read_item_entity_map(path)

    # Assert
    assert items.tolist() == [1193, 661, 914] and entities.tolist() == [0, 1, 2]
    assert items.dtype == np.int64 and entities.dtype == np.int64


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("1\t0\r\n2\r\n", 2, "expected 2 tab-separated fields"),
        ("1\t0\r\nabc\t1\r\n", 2, "item id must be an integer, found 'abc'"),
        ("1\t0\r\n2\t-1\r\n", 2, "entity id must be a non-negative integer"),
        ("1\t0\r\n2\t1\r\n1\t2\r\n", 3, "item id 1 already appears on line 1"),
    ],
)
def test_malformed_map_lines_name_file_and_line(write, content, line, words):
    # Prepare
    path = write("item_index2entity_id.txt", content)

    # Execute
    with pytest.raises(DataError) as info:
        read_item_entity_map(path)

    # Assert
    assert str(info.value).startswith(f"{path}, line {line}: ")
    assert words in str(info.value)


def test_items_align_with_dense_ids_and_unmapped_items_get_minus_one(write):
    # Prepare
    kg = write("kg.txt", "0\tr\t3\r\n1\ts\t3\r\n")
    mapping = write("map.txt", "50\t0\r\n70\t1\r\n90\t4\r\n")
    raw_item_ids = np.array([70, 60, 50])  # 90 is mapped but not rated; 60 has no entity

    # Execute
    graph = load_knowledge_graph(kg, mapping, raw_item_ids)

    # Assert
    assert graph.item_entity.tolist() == [1, -1, 0]
    assert graph.n_entities == 5  # entity 4 only appears in the map
    assert graph.n_relations == 2 and graph.source == str(kg)
    graph.check()


def test_dataset_kg_is_absent_without_its_files(write, tmp_path):
    # Prepare
    write(KG_FILES["ml-1m"][0], "0\tr\t1\r\n")  # the map is missing

    # Execute
    missing_map = load_dataset_kg("ml-1m", tmp_path, np.array([1]))
    no_kg = load_dataset_kg("ml-100k", tmp_path, np.array([1]))

    # Assert
    assert missing_map is None and no_kg is None


# ----------------------------------------------------------------- real data (FEDREC_DATA_DIR)


def test_real_mkr_ml_1m_kg(real_data):
    # Prepare
    root = real_data("ml-1m/ratings_uir_ordered.dat", *KG_FILES["ml-1m"])
    map_items, _ = read_item_entity_map(root / KG_FILES["ml-1m"][1])

    # Execute
    inter = load_interactions("ml-1m", root)

    # Assert
    kg = inter.item_side.kg
    assert (len(kg.triples), kg.n_entities, kg.n_relations) == (20_782, 7_008, 7)
    assert kg.relations[0] == "film.film.writer"
    assert np.isin(map_items, inter.raw_item_ids).all(), "every mapped MovieID is a dense item"
    mapped = kg.item_entity >= 0
    assert int(mapped.sum()) == len(map_items) == 2_347
    assert np.array_equal(np.sort(kg.item_entity[mapped]), np.arange(2_347))  # movies: 0..2346
    adj_entity, adj_relation = kg.sample_neighbours(8, seed=0)
    assert adj_entity.shape == (7_009, 8)
    assert adj_relation[:-1].max() < kg.n_relations, "no entity is isolated"


def test_real_kgcn_lastfm_kg(real_data):
    # Prepare
    root = real_data(*KG_FILES["lastfm"])

    # Execute
    read = read_kg_triples(root / KG_FILES["lastfm"][0])
    items, entities = read_item_entity_map(root / KG_FILES["lastfm"][1])

    # Assert
    assert (len(read.triples), len(read.relations)) == (15_518, 60)
    assert int(read.triples[:, [0, 2]].max()) + 1 == 9_366
    assert len(np.unique(read.triples[:, [0, 2]])) == 9_366
    assert len(items) == 3_846 and np.array_equal(entities, np.arange(3_846))
