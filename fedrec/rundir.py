"""The run directory: config, per-round metrics, summary, negatives (DESIGN section 6)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.data.schema import SplitData

METRIC_FIELDS = ["round", "train_loss", "users", "rejected", "hr@10", "ndcg@10", "recall@20",
                 "ndcg@20-full", "rmse", "auc", "acc", "f1", "er@10", "er@100", "val-hr@10",
                 "val-ndcg@10",
                 "val-recall@20", "val-ndcg@20-full", "val-auc", "val-acc", "val-f1", "epsilon",
                 "epsilon_rdp", "missing", "train_bytes", "evaluate_bytes", "round_s",
                 "elapsed_s"]


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def read_metrics(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_metrics(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    """Rewrite ``metrics.csv`` (rows of a resumed run are kept, later ones dropped)."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: _fmt(row.get(k, "")) for k in fields})
    tmp.replace(path)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def save_negatives(path: Path, split: SplitData) -> None:
    """The fixed evaluation candidates of the run (test item + negatives per user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, test_items=split.test_items, test_negatives=split.test_negatives)
