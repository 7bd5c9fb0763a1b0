"""Bad input anywhere ends in ONE line ``error: ...`` naming the setting / file / argument, exit
status 2, no traceback, and nothing trained: a table over every script (launcher, privacy sweep,
central runner, explainer, quality / towers / speed / robustness benchmarks, feature CLI,
cluster script)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from fedrec.data import prepare

ROOT = Path(__file__).resolve().parents[1]
U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"


def _script(rel: str):
    """Import a script by path (benchmarks/ is not a package)."""
    name = "badinput_" + rel.replace("/", "_").removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / rel)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


LAUNCH, SWEEP, CENTRAL = "simulations/launch.py", "simulations/privacy_sweep.py", \
    "simulations/central.py"
EXPLAIN, QUALITY, TOWERS = "simulations/explain.py", "benchmarks/quality.py", "benchmarks/towers.py"
SPEED, ROBUST, FEATURES = "benchmarks/speed.py", "benchmarks/robustness.py", "fedrec.features"
CLUSTER = "simulations/cluster.py"

# (script, argv, files {relative path: content}, fragment the error line must contain)
CASES = [
    # settings
    (LAUNCH, ["--set", "model=nope"], {}, "unknown model 'nope'; known models: gmf, mf"),
    (LAUNCH, ["--set", "strategy=fedfoo"], {}, "setting 'strategy' = 'fedfoo' is unknown"),
    (LAUNCH, ["--set", "dataset=ml-2m"], {}, "unknown dataset 'ml-2m'"),
    (LAUNCH, ["--set", "dataset=ml-100k", "--set", "split=ncf"], {},
     '`split` = "ncf" (the published NCF test files) only exists for dataset "ml-1m"'),
    (LAUNCH, ["--set", "dataset=lastfm", "--set", "split=cold"], {}, "setting 'split' = 'cold'"),
    (LAUNCH, ["--set", "dataset=ml-1m", "--set", "split=ncf", "--set", "test-negatives=50"], {},
     "exactly 99 negatives per user"),
    (LAUNCH, ["--set", "num-round=3"], {}, "unknown setting 'num-round'"),
    (LAUNCH, ["--set", "num-rounds=0"], {}, "setting 'num-rounds' = 0 must be >= 1"),
    (LAUNCH, ["--set", "num-rounds=three"], {}, "setting 'num-rounds' expects int"),
    (LAUNCH, ["--set", "lr=-1"], {}, "setting 'lr' = -1.0 must be > 0"),
    (LAUNCH, ["--set", "lr=nan"], {}, "setting 'lr' expects float"),
    (LAUNCH, ["--set", "fraction-train=1.5"], {}, "'fraction-train' = 1.5 must be in (0, 1]"),
    (LAUNCH, ["--set", "users-per-node=0"], {}, "'users-per-node' = 0 must be >= 1"),
    (LAUNCH, ["--set", "resume=maybe"], {}, "setting 'resume' expects bool"),
    (LAUNCH, ["--set", "privacy=secret"], {}, "'privacy' = 'secret' must be none|user|sample"),
    (LAUNCH, ["--set", "towers=kg,smell"], {}, "unknown tower(s) ['smell']"),
    (LAUNCH, ["--set", "attack=sybil"], {}, "'attack' = 'sybil' must be one of"),
    (LAUNCH, ["--set", "defense=wall"], {}, "'defense' = 'wall' must be one of"),
    (LAUNCH, ["--set", "attack-fraction=2"], {}, "'attack-fraction' = 2.0 must be in [0, 1]"),
    (LAUNCH, ["--set", "max-update-norm=0"], {}, "'max-update-norm' = 0.0 must be > 0"),
    (LAUNCH, ["--set", "privacy=user", "--set", "strategy=fedavg-items"], {},
     "cannot be combined with privacy='user'"),
    (LAUNCH, ["--set", "num-nodes=5000"], {}, "setting 'num-nodes' = 5000 exceeds the 2000 users"),
    (LAUNCH, ["--set", "seed"], {}, "--set 'seed': expected key=value"),
    # config files
    (LAUNCH, ["{tmp}/missing.toml"], {}, "config file not found"),
    (LAUNCH, ["{tmp}/bad.toml"], {"bad.toml": "num-rounds = [\n"}, "bad.toml: invalid TOML"),
    (LAUNCH, ["{tmp}/k.toml"], {"k.toml": "rounds = 3\n"}, "k.toml: unknown setting 'rounds'"),
    (LAUNCH, ["{tmp}/t.toml"], {"t.toml": 'dim = "big"\n'}, "t.toml: setting 'dim' expects int"),
    # data files (the launcher reads them before Flower starts)
    (LAUNCH, ["--set", "dataset=ml-100k", "--data-dir", "{tmp}/none"], {},
     "ml-100k/u.data"),
    (LAUNCH, ["--set", "dataset=ml-100k", "--data-dir", "{tmp}"],
     {"ml-100k/u.data": U_DATA + "7,8,3,881250949\n"}, "u.data, line 4"),
    (LAUNCH, ["--set", "dataset=ml-100k", "--data-dir", "{tmp}"],
     {"ml-100k/u.data": U_DATA + "7\tx\t3\t881250949\n"}, "u.data, line 4"),
    (LAUNCH, ["--set", "dataset=ml-100k", "--data-dir", "{tmp}"],
     {"ml-100k/u.data": U_DATA + "7\t8\tnan\t881250949\n"}, "u.data, line 4"),
    (LAUNCH, ["--set", "dataset=ml-100k", "--data-dir", "{tmp}"],
     {"ml-100k/u.data": U_DATA + "7\t8\t3\n"}, "u.data, line 4"),
    (LAUNCH, ["--set", "dataset=ml-100k", "--data-dir", "{tmp}"], {"ml-100k/u.data": ""},
     "u.data"),
    (LAUNCH, ["--set", "dataset=ml-1m", "--data-dir", "{tmp}"],
     {"ml-1m/ratings.dat": "1::2::3::4\n1\t3\t3\t5\n"}, "ratings.dat, line 2"),
    # command-line arguments
    (LAUNCH, ["--bogus"], {}, "unrecognized arguments: --bogus"),
    (LAUNCH, ["--cpus", "two"], {}, "argument --cpus: invalid int value: 'two'"),
    (SWEEP, ["--out", "{tmp}/s", "--epsilons", "1,abc"], {}, "--epsilons: cannot read 'abc'"),
    (SWEEP, ["--out", "{tmp}/s", "--mode", "item"], {}, "argument --mode: invalid choice"),
    (SWEEP, [], {}, "the following arguments are required: --out"),
    (SWEEP, ["--out", "{tmp}/s", "--set", "model=nope"], {}, "unknown model 'nope'"),
    (SWEEP, ["--out", "{tmp}/s", "--set", "dataset=ml-100k", "--data-dir", "{tmp}/none"], {},
     "ml-100k/u.data"),
    (CENTRAL, ["{tmp}/missing.toml"], {}, "config file not found"),
    (CENTRAL, ["{tmp}/p.toml", "--set", "pretrain-epochs=2"], {"p.toml": 'model = "mf"\n'},
     "'pretrain-epochs' = 2 pre-trains the parts of NeuMF: model 'neumf'"),
    (LAUNCH, ["--set", "model=neumf", "--set", "pretrain-epochs=2"], {},
     "'pretrain-epochs' = 2 applies to central training only"),
    (EXPLAIN, ["{tmp}/norun", "--user", "0"], {}, "run directory"),
    (EXPLAIN, ["{tmp}/norun"], {}, "the following arguments are required: --user"),
    (QUALITY, ["--seeds", "a,b", "--quick"], {}, "--seeds 'a,b': expected comma-separated"),
    (QUALITY, ["--quick", "--only", "nothing-like-this"], {}, "no cell matches --only"),
    (QUALITY, ["--quick", "--jobs", "0"], {}, "--jobs 0: must be >= 1"),
    (QUALITY, ["--data-dir", "{tmp}/none", "--only", "ml-100k/*", "--seeds", "0"], {},
     "ml-100k/u.data"),
    (TOWERS, ["--seeds", "x"], {}, "--seeds 'x': expected comma-separated integers"),
    (TOWERS, ["--only", "nomatch.toml"], {}, "--only 'nomatch.toml' matches no config"),
    (SPEED, ["--bogus"], {}, "unrecognized arguments: --bogus"),
    (ROBUST, ["--fractions", "0.05,x"], {}, "--fractions"),
    (ROBUST, ["--attacks", "sybil"], {}, "--attacks: unknown attack 'sybil'"),
    (ROBUST, ["--defenses", "wall"], {}, "--defenses: unknown defense 'wall'"),
    (ROBUST, ["--data-dir", "{tmp}/none"], {}, "ml-1m"),
    (FEATURES, ["text"], {}, "the following arguments are required: --dataset"),
    (CLUSTER, ["--set", "model=nope", "--out", "{tmp}/c"], {}, "unknown model 'nope'"),
    (CLUSTER, ["--insecure", "--tls", "--out", "{tmp}/c"], {}, "--insecure contradicts"),
    (CLUSTER, ["--nodes", "0", "--out", "{tmp}/c"], {}, "--nodes must be at least 1"),
    (CLUSTER, ["--set", "dataset=ml-100k", "--out", "{tmp}/c"], {}, "ml-100k/u.data"),
    (CLUSTER, ["node", "--superlink", "h:1", "--partition-id", "3", "--num-partitions", "2"],
     {}, "--partition-id 3 is not in 0..1"),
    (FEATURES, ["colour"], {}, "argument COMMAND: invalid choice: 'colour'"),
]


@pytest.mark.parametrize("case", range(len(CASES)),
                         ids=[f"{i}-{c[0].split('/')[-1]}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_error_line(case, tmp_path, capsys, monkeypatch):
    script, argv, files, fragment = CASES[case]
    monkeypatch.setenv("FEDREC_DATA_DIR", str(tmp_path / "no-data-here"))
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    prepare.clear_cache()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if script == FEATURES:
        from fedrec.features import main
    else:
        main = _script(script).main
    rc = main(argv + (["--out", str(tmp_path / "run")] if script == LAUNCH else []))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("metrics.csv")), "training started"


def test_the_table_is_large_enough():
    assert len(CASES) >= 30
    assert {c[0] for c in CASES} == {LAUNCH, SWEEP, CENTRAL, EXPLAIN, QUALITY, TOWERS, SPEED,
                                     ROBUST, FEATURES, CLUSTER}
