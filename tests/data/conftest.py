"""Fixtures for the data-layer tests (real datasets only via FEDREC_DATA_DIR)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fedrec.data import prepare


@pytest.fixture(autouse=True)
def _fresh_split_cache():
    prepare.clear_cache()
    yield
    prepare.clear_cache()


@pytest.fixture
def real_data() -> Callable[..., Path]:
    """Return the real data dir, skipping unless FEDREC_DATA_DIR holds the given files."""

    def need(*relative: str) -> Path:
        value = os.environ.get("FEDREC_DATA_DIR")
        if not value:
            pytest.skip("FEDREC_DATA_DIR is not set")
        root = Path(value)
        for rel in relative:
            if not (root / rel).is_file():
                pytest.skip(f"{root / rel} is absent")
        return root

    return need


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """Write a file under tmp_path (text is written byte-exact, no newline translation)."""

    def _write(relative: str, content: str | bytes) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("latin-1") if isinstance(content, str) else content)
        return path

    return _write
