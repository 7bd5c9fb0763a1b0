"""Every row of the quality tables is a shipped config file run as-is (issue 12, req. 5).

quality.py adds only the data directory and the seed (``--data-dir DIR --set seed=K``, as a
user would); the Config it runs is the one the row's own script builds from the file, and the
files of the reported tables read the test items once.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from fedrec.config import ConfigError, load_toml
from simulations import central, launch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402

DATA = "/data/somewhere"
SEED = 2
TABLES = {"full": quality.full_matrix(), "quick": quality.quick_matrix()}
ROWS = [(name, ds, m) for name, matrix in TABLES.items() for ds, methods in matrix
        for m in methods]
IDS = [f"{name}:{ds.key}/{m.name}" for name, ds, m in ROWS]
BOOKKEEPING = ("out", "data-dir", "seed")


def options(name: str, tmp_path: Path) -> quality.Options:
    return quality.Options(out=tmp_path, data_dir="" if name == "quick" else DATA)


def without(flat: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in flat.items() if k not in keys}


def test_a_row_carries_no_settings_of_its_own():
    assert {f.name for f in dataclasses.fields(quality.Method)} == {
        "name", "label", "kind", "config", "reference"}
    assert {f.name for f in dataclasses.fields(quality.Dataset)} == {"key", "label"}


@pytest.mark.parametrize(("name", "ds", "m"), ROWS, ids=IDS)
def test_the_cell_runs_the_config_its_script_builds_from_the_file(name, ds, m, tmp_path):
    # Prepare
    opts = options(name, tmp_path)
    cell = quality.Cell(ds, m, SEED)
    path = quality.CONFIGS / m.config
    script = central if quality.SCRIPTS[m.kind] == "simulations/central.py" else launch

    # Execute
    ours = quality.cell_config(cell, opts)
    users = script.parse_config([str(path)] + (["--data-dir", DATA] if opts.data_dir else []))

    # Assert: identical apart from bookkeeping; quality.py set the seed and data dir only
    assert without(ours.to_flat(), BOOKKEEPING) == without(users.to_flat(), BOOKKEEPING)
    assert ours.run.seed == SEED and ours.data.data_dir == opts.data_dir
    assert Path(ours.run.out) == quality.cell_dir(cell, opts)
    argv = quality.command(cell, opts)
    assert argv[:2] == [quality.SCRIPTS[m.kind], str(path.relative_to(ROOT))]
    extra = argv[2:]
    if m.kind == "federated":
        assert extra[:2] == ["--engine", "inprocess"]
        extra = extra[2:]
    assert extra == (["--data-dir", DATA] if opts.data_dir else []) + ["--set", f"seed={SEED}"]


def header_command(path: Path) -> str:
    """The command in a config file's opening comment, continuation lines joined."""
    head = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        head.append(line.lstrip("#").strip())
    return " ".join(" ".join(head).replace("\\ ", " ").split())


@pytest.mark.parametrize(("name", "ds", "m"), ROWS, ids=IDS)
def test_the_file_says_what_it_is_and_fixes_what_the_row_depends_on(name, ds, m):
    path = quality.CONFIGS / m.config
    flat = load_toml(path)
    script = quality.SCRIPTS[m.kind]
    command = f"python {script} {path.relative_to(ROOT)}"
    assert command in header_command(path), f"{m.config}: its comment must show `{command}`"
    for key in ("dataset", "split", "model", "num-rounds", "eval-every"):
        assert key in flat, f"{m.config} must fix {key}"
    if name == "full":  # the reported tables read the test items once per config
        assert flat["eval-every"] == flat["num-rounds"], m.config
        assert (flat["dataset"], flat["split"]) == {
            "ml-1m": ("ml-1m", "ncf"), "ml-100k": ("ml-100k", "loo")}[ds.key]


def test_every_shipped_quality_file_is_a_row():
    used = {m.config for _, _, m in ROWS}
    shipped = {str(p.relative_to(quality.CONFIGS))
               for p in (quality.CONFIGS / "quality").rglob("*.toml")}
    assert shipped <= used, shipped - used
    assert {"central/ml1m_ncf_mf_rendle.toml", "ml1m_ncf_fedmf_items.toml"} <= used


def test_the_launcher_refuses_a_central_only_setting():
    path = quality.CONFIGS / "quality" / "ml1m_central_neumf_d8_pre.toml"
    with pytest.raises(ConfigError, match="'pretrain-epochs' = 6 applies to central training"):
        launch.parse_config([str(path)])
