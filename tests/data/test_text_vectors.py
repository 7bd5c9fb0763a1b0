"""Text vectors: fedrec's cache first, then the shared matrices; aligned by raw item id."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedrec.data.errors import DataError
from fedrec.data.loaders import load_interactions
from fedrec.data.text_vectors import (
    SHARED_TEXT,
    load_text_vectors,
    read_text_cache,
    text_cache_path,
    write_text_cache,
)


def _vectors(n: int, d: int = 3) -> np.ndarray:
    return (np.arange(n * d, dtype=np.float32).reshape(n, d) + 1) / 10


def test_cache_path_layout(tmp_path):
    # Assert
    assert text_cache_path(tmp_path, "ml-1m") == tmp_path / "fedrec-text" / "ml-1m-minilm.npz"


def test_cache_is_aligned_by_id_and_missing_items_get_zero_rows(tmp_path, caplog):
    # Prepare
    ids = np.array([30, 10, 20], dtype=np.int64)
    vectors = _vectors(3)
    write_text_cache(text_cache_path(tmp_path, "lastfm"), ids, vectors)

    # Execute
    with caplog.at_level(logging.WARNING, logger="fedrec.data.text_vectors"):
        text = load_text_vectors("lastfm", tmp_path, np.array([20, 99, 30]))

    # Assert
    assert text.dtype == np.float32 and text.shape == (3, 3)
    assert np.array_equal(text[0], vectors[2]) and np.array_equal(text[2], vectors[0])
    assert not text[1].any()
    assert "1 of 3 items have no text vector (e.g. raw id 99)" in caplog.text


def test_shared_ml_100k_matrix_row_i_is_movie_i_plus_1(tmp_path):
    # Prepare
    path = tmp_path / SHARED_TEXT["ml-100k"].vectors
    path.parent.mkdir(parents=True)
    vectors = _vectors(4)
    np.save(path, vectors)

    # Execute
    text = load_text_vectors("ml-100k", tmp_path, np.array([4, 1]))

    # Assert
    assert np.array_equal(text, vectors[[3, 0]])


def test_shared_ml_1m_matrix_is_mapped_by_movie_id_not_row(tmp_path):
    # Prepare
    shared = SHARED_TEXT["ml-1m"]
    (tmp_path / shared.vectors).parent.mkdir(parents=True)
    vectors = _vectors(3)
    np.save(tmp_path / shared.vectors, vectors)
    np.save(tmp_path / shared.ids, np.array([1, 5, 2], dtype=np.int64))

    # Execute
    text = load_text_vectors("ml-1m", tmp_path, np.array([2, 5, 3]))

    # Assert
    assert np.array_equal(text[0], vectors[2]) and np.array_equal(text[1], vectors[1])
    assert not text[2].any()


def test_fedrec_cache_wins_over_the_shared_matrix(tmp_path):
    # Prepare
    np.save(_mkdir(tmp_path / SHARED_TEXT["ml-100k"].vectors), _vectors(2))
    write_text_cache(text_cache_path(tmp_path, "ml-100k"), np.array([1, 2]), -_vectors(2, 5))

    # Execute
    text = load_text_vectors("ml-100k", tmp_path, np.array([2]))

    # Assert
    assert text.shape == (1, 5) and np.array_equal(text[0], -_vectors(2, 5)[1])


def test_no_source_means_no_text(tmp_path):
    # Execute / Assert
    assert load_text_vectors("ml-1m", tmp_path, np.array([1])) is None
    assert load_text_vectors("synthetic", tmp_path, np.array([1])) is None


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"ids": np.arange(2)}, "missing array(s) vectors"),
        ({"ids": np.arange(3), "vectors": _vectors(2)}, "ids must be 2 integers"),
        ({"ids": np.array([1, 1]), "vectors": _vectors(2)}, "item id 1 has more than one"),
        ({"ids": np.arange(2), "vectors": np.zeros(2)}, "numeric (n, d) matrix"),
        ({"ids": np.arange(2), "vectors": _vectors(2) * np.nan}, "NaN or infinite"),
    ],
)
def test_bad_cache_files_name_the_file(tmp_path, arrays, words):
    # Prepare
    path = _mkdir(text_cache_path(tmp_path, "ml-1m"))
    np.savez(path, **arrays)

    # Execute
    with pytest.raises(DataError) as info:
        load_text_vectors("ml-1m", tmp_path, np.array([1]))

    # Assert
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value)


def test_unreadable_cache_is_a_data_error(tmp_path):
    # Prepare
    path = _mkdir(text_cache_path(tmp_path, "ml-1m"))
    path.write_bytes(b"not a zip")

    # Execute
    with pytest.raises(DataError) as info:
        read_text_cache(path)

    # Assert
    assert str(path) in str(info.value) and "not a readable text-vector cache" in str(info.value)


def test_ml_100k_loader_attaches_text(write, tmp_path):
    # Prepare
    write("ml-100k/u.data", "1\t2\t4\t1\n1\t1\t4\t2\n")
    np.save(_mkdir(tmp_path / SHARED_TEXT["ml-100k"].vectors), _vectors(2))

    # Execute
    inter = load_interactions("ml-100k", tmp_path)
    without = load_interactions("ml-100k", tmp_path, side_info=False)

    # Assert
    assert inter.item_side.available() == ["text"]
    assert np.array_equal(inter.item_side.text, _vectors(2)[[1, 0]])
    assert without.item_side.text is None


# ----------------------------------------------------------------- real data (FEDREC_DATA_DIR)


def test_real_ml_1m_text_vectors_follow_movie_ids(real_data):
    # Prepare
    shared = SHARED_TEXT["ml-1m"]
    root = real_data(shared.vectors, shared.ids, "ml-1m/ratings_uir_ordered.dat")
    raw = np.load(root / shared.ids)
    matrix = np.load(root / shared.vectors)

    # Execute
    inter = load_interactions("ml-1m", root)

    # Assert
    text = inter.item_side.text
    assert text.shape == (3_706, 384) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    dense = int(np.flatnonzero(inter.raw_item_ids == 1193)[0])
    assert np.array_equal(text[dense], matrix[int(np.flatnonzero(raw == 1193)[0])])


def _mkdir(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
