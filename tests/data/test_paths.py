"""Data directory resolution and missing-file messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrec.data.errors import DataError, DataFileNotFoundError
from fedrec.data.loaders import load_interactions
from fedrec.data.paths import find_file, resolve_data_dir


def test_resolve_prefers_argument_then_env_then_default(tmp_path, monkeypatch):
    # Prepare
    monkeypatch.setenv("FEDREC_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    # Execute
    from_arg = resolve_data_dir(tmp_path / "arg")
    from_env = resolve_data_dir(None)
    monkeypatch.delenv("FEDREC_DATA_DIR")
    from_default = resolve_data_dir(None)

    # Assert
    assert from_arg == tmp_path / "arg"
    assert from_env == tmp_path / "env"
    assert from_default == tmp_path / "home" / ".cache" / "fedrec" / "data"


def test_find_file_returns_first_existing_candidate(write, tmp_path):
    # Prepare
    write("ml-1m/ratings_uir_ordered.dat", "1::1::5\n")

    # Execute
    found = find_file(tmp_path, "ml-1m", ["ml-1m/ratings.dat", "ml-1m/ratings_uir_ordered.dat"])

    # Assert
    assert found == tmp_path / "ml-1m" / "ratings_uir_ordered.dat"


def test_missing_file_says_which_where_and_how_to_get_it(tmp_path):
    # Prepare
    candidates = ["ml-1m/ratings.dat", "ml-1m/ratings_uir_ordered.dat"]

    # Execute
    with pytest.raises(DataFileNotFoundError) as info:
        find_file(tmp_path, "ml-1m", candidates)

    # Assert
    message = str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, FileNotFoundError)
    assert "ml-1m/ratings.dat" in message and "ratings_uir_ordered.dat" in message
    assert str(tmp_path / "ml-1m" / "ratings.dat") in message
    assert str(tmp_path / "ml-1m" / "ratings_uir_ordered.dat") in message
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert "--data-dir" in message and "FEDREC_DATA_DIR" in message
    assert "download=True" in message


def test_missing_ncf_file_points_to_the_ncf_repository(tmp_path):
    # Execute
    with pytest.raises(DataFileNotFoundError) as info:
        find_file(tmp_path, "ncf-hexiangnan", ["ncf-hexiangnan/ml-1m.test.negative"])

    # Assert
    message = str(info.value)
    assert "https://github.com/hexiangnan/neural_collaborative_filtering" in message
    assert "Data/" in message
    assert str(tmp_path / "ncf-hexiangnan" / "ml-1m.test.negative") in message


def test_loader_on_empty_dir_raises_missing_file(tmp_path: Path):
    # Execute
    with pytest.raises(DataFileNotFoundError) as info:
        load_interactions("ml-100k", tmp_path)

    # Assert
    assert str(tmp_path / "ml-100k" / "u.data") in str(info.value)
    assert "ml-100k.zip" in str(info.value)


def test_unknown_dataset_lists_known_ones():
    # Execute
    with pytest.raises(ValueError) as info:
        load_interactions("ml-20m")

    # Assert
    for name in ("ml-100k", "ml-1m", "ml-latest-small", "synthetic"):
        assert name in str(info.value)
