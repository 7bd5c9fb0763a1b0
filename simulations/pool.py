"""Run experiment cells ``jobs`` at a time, each in its own process (``benchmarks/quality.py``,
``benchmarks/robustness.py``).

``fn(item)`` runs one cell. With ``jobs`` > 1 it runs in a pool of ``spawn``-ed processes, so
``fn`` and the items must pickle: a module-level function of an importable module (or a
``functools.partial`` of one) and plain data. A cell that raises does not stop the others:
``on_done(item, None, error text with traceback)``; otherwise ``on_done(item, result, "")``,
in order of completion.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import traceback
from collections.abc import Callable, Iterable
from typing import Any


def call(fn: Callable[[Any], Any], item: Any) -> tuple[Any, str]:
    """``(fn(item), "")``, or ``(None, error text)`` when it raises."""
    logging.basicConfig(level=logging.WARNING)
    try:
        return fn(item), ""
    except Exception as exc:  # reported by the caller; other cells go on
        return None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def run_pool(fn: Callable[[Any], Any], items: Iterable[Any], jobs: int,
             on_done: Callable[[Any, Any, str], None]) -> None:
    """Run ``fn`` on every item, ``jobs`` at a time; report each through ``on_done``."""
    items = list(items)
    if jobs <= 1 or len(items) <= 1:
        for item in items:
            on_done(item, *call(fn, item))
        return
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=ctx) as pool:
        futures = {pool.submit(call, fn, item): item for item in items}
        for fut in cf.as_completed(futures):
            on_done(futures[fut], *fut.result())
