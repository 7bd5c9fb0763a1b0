"""What every command-line script shares: bad input ends in ONE line ``error: ...`` on stderr,
exit status 2, no traceback, before any training starts.

- :class:`ArgumentParser`: argparse whose usage errors are that one line (argparse's own prints
  a usage block first);
- :func:`guarded`: wraps a script's ``main(argv) -> int`` so that a :class:`UsageError`,
  :class:`~fedrec.config.ConfigError` or :class:`~fedrec.data.errors.DataError` becomes that
  line;
- :func:`preflight`: reads and validates the data of every config a script is about to run (the
  missing or malformed file is reported before the first round, not in the middle of a sweep).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Iterable
from typing import NoReturn

from fedrec.config import Config, ConfigError
from fedrec.data.errors import DataError


class UsageError(ValueError):
    """A bad command-line argument (the message names it)."""


#: Exceptions that mean "bad input" (one ``error:`` line, exit 2) rather than a bug.
BAD_INPUT = (UsageError, ConfigError, DataError)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` raising :class:`UsageError` instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line (line breaks of the message become ``; ``)."""
    text = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"error: {text}"


def guarded(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a script's ``main``: bad input prints :func:`error_line` and returns 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except BAD_INPUT as exc:
            print(error_line(exc), file=sys.stderr)
            return 2

    return wrapper


def preflight(configs: Iterable[Config]) -> list[int]:
    """Load (and so validate) the split of every distinct data setting in ``configs`` and check
    the node count each implies; raises ``DataError`` / ``ConfigError`` naming the culprit.
    Returns the node counts, one per config (so a caller need not load the split again)."""
    from fedrec.data.partition import num_partitions
    from fedrec.node import load_split

    nodes = []
    for cfg in configs:
        split = load_split(cfg)
        nodes.append(num_partitions(split.n_users, cfg.fed.users_per_node, cfg.fed.num_nodes))
    return nodes


def fail(message: str) -> NoReturn:
    """Raise :class:`UsageError` (for checks of argument values a parser cannot express)."""
    raise UsageError(message)
