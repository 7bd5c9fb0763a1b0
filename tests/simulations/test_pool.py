"""simulations/pool.py: every item runs once, in worker processes when jobs > 1; a failing item
is reported with its error and does not stop the others."""

import math

import pytest

from simulations.pool import run_pool


@pytest.mark.parametrize("jobs", [1, 3])
def test_every_item_once_and_a_failure_goes_on(jobs):
    done = {}
    run_pool(math.sqrt, [4.0, -1.0, 9.0, 16.0], jobs,
             lambda item, result, err: done.setdefault(item, (result, err)))
    assert set(done) == {4.0, -1.0, 9.0, 16.0}
    assert [done[x][0] for x in (4.0, 9.0, 16.0)] == [2.0, 3.0, 4.0]
    assert all(done[x][1] == "" for x in (4.0, 9.0, 16.0))
    result, err = done[-1.0]
    assert result is None and err.startswith("ValueError: math domain error")
    assert "Traceback" in err
