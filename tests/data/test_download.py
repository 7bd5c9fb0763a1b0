"""Explicit downloads: sha256 verification, atomicity. No network: fake fetch / file:// URLs."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from fedrec.data import download
from fedrec.data.download import ZipSource, download_dataset
from fedrec.data.errors import DataError
from fedrec.data.loaders import load_interactions

U_DATA = b"1\t10\t3\t100\n2\t20\t4\t101\n"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_zip(tmp_path) -> Path:
    return _zip(
        tmp_path / "src" / "ml-100k.zip", {"ml-100k/u.data": U_DATA, "ml-100k/README": b"x"}
    )


def _copying_fetch(source: Path, calls: list[str]):
    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        shutil.copyfile(source, dest)

    return fetch


def _use_source(monkeypatch, zip_sha: str | None, members: dict[str, str]) -> None:
    source = ZipSource("https://example.invalid/ml-100k.zip", "ml-100k", zip_sha, members)
    monkeypatch.setitem(download.ZIP_SOURCES, "ml-100k", source)


def test_verified_download_unpacks_into_data_dir(tmp_path, monkeypatch):
    # Prepare
    archive = _zip(tmp_path / "src" / "a.zip", {"ml-100k/u.data": U_DATA})
    _use_source(monkeypatch, _sha(archive.read_bytes()), {"u.data": _sha(U_DATA)})
    calls: list[str] = []
    data_dir = tmp_path / "data"

    # Execute
    folder = download_dataset("ml-100k", data_dir, fetch=_copying_fetch(archive, calls))

    # Assert
    assert calls == ["https://example.invalid/ml-100k.zip"]
    assert folder == data_dir / "ml-100k"
    assert (folder / "u.data").read_bytes() == U_DATA
    assert sorted(p.name for p in data_dir.iterdir()) == ["ml-100k"]  # no temp leftovers


def test_loader_downloads_only_when_asked(tmp_path, monkeypatch, fake_zip):
    # Prepare
    _use_source(monkeypatch, _sha(fake_zip.read_bytes()), {})
    calls: list[str] = []
    monkeypatch.setattr(download, "fetch_url", _copying_fetch(fake_zip, calls))
    data_dir = tmp_path / "data"

    # Execute
    with pytest.raises(FileNotFoundError):
        load_interactions("ml-100k", data_dir)
    inter = load_interactions("ml-100k", data_dir, download=True)

    # Assert
    assert len(calls) == 1
    assert len(inter.df) == 2


def test_file_url_download_verifies_extracted_file_when_zip_hash_unknown(tmp_path, monkeypatch):
    # Prepare
    archive = _zip(tmp_path / "src" / "b.zip", {"ml-100k/u.data": U_DATA})
    _use_source(monkeypatch, None, {"u.data": _sha(U_DATA)})

    # Execute
    folder = download_dataset("ml-100k", tmp_path / "data", url=archive.as_uri())

    # Assert
    assert (folder / "u.data").read_bytes() == U_DATA


def test_zip_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch, fake_zip):
    # Prepare
    _use_source(monkeypatch, "0" * 64, {})
    data_dir = tmp_path / "data"

    # Execute
    with pytest.raises(DataError) as info:
        download_dataset("ml-100k", data_dir, fetch=_copying_fetch(fake_zip, []))

    # Assert
    assert "sha256 mismatch" in str(info.value) and "0" * 64 in str(info.value)
    assert list(data_dir.iterdir()) == []


def test_real_hash_rejects_a_fake_ml_100k_zip(tmp_path, fake_zip):
    # Prepare
    data_dir = tmp_path / "data"

    # Execute
    with pytest.raises(DataError) as info:
        download_dataset("ml-100k", data_dir, url=fake_zip.as_uri())

    # Assert
    assert download.ZIP_SOURCES["ml-100k"].zip_sha256 in str(info.value)
    assert list(data_dir.iterdir()) == []


def test_member_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    # Prepare
    archive = _zip(tmp_path / "src" / "c.zip", {"ml-100k/u.data": U_DATA + b"3\t3\t3\t3\n"})
    _use_source(monkeypatch, None, {"u.data": _sha(U_DATA)})
    data_dir = tmp_path / "data"

    # Execute
    with pytest.raises(DataError) as info:
        download_dataset("ml-100k", data_dir, url=archive.as_uri())

    # Assert
    assert "u.data" in str(info.value) and "sha256 mismatch" in str(info.value)
    assert list(data_dir.iterdir()) == []


def test_not_a_zip_and_missing_member_are_data_errors(tmp_path, monkeypatch):
    # Prepare
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"not a zip")
    wrong = _zip(tmp_path / "src" / "wrong.zip", {"ml-100k/other": b"x"})
    _use_source(monkeypatch, None, {"u.data": _sha(U_DATA)})
    data_dir = tmp_path / "data"

    # Execute
    with pytest.raises(DataError) as bad_zip:
        download_dataset("ml-100k", data_dir, url=garbage.as_uri())
    with pytest.raises(DataError) as missing:
        download_dataset("ml-100k", data_dir, url=wrong.as_uri())

    # Assert
    assert "not a valid zip" in str(bad_zip.value)
    assert "u.data" in str(missing.value)
    assert list(data_dir.iterdir()) == []


def test_unknown_download_name():
    # Execute
    with pytest.raises(ValueError) as info:
        download_dataset("ncf-hexiangnan")

    # Assert
    assert "ml-100k" in str(info.value)
