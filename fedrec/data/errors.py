"""Errors raised by the data layer.

Every message names the file and, where it applies, the 1-based line number, plus what was
expected, so that a malformed input never ends in a bare pandas/numpy traceback.
"""

from __future__ import annotations

from os import PathLike


class DataError(ValueError):
    """Malformed, inconsistent or unusable input data.

    Parameters
    ----------
    message : str
        What is wrong and what was expected.
    path : str or os.PathLike, optional
        The offending file; prefixed to the message.
    line : int, optional
        1-based line number inside ``path``; prefixed to the message.
    """

    def __init__(
        self,
        message: str,
        path: str | PathLike[str] | None = None,
        line: int | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.detail = message
        super().__init__(format_location(self.path, line) + message)


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A required data file is missing (message says which, where we looked, how to get it)."""


def format_location(path: str | PathLike[str] | None, line: int | None = None) -> str:
    """Return the ``"<path>, line <n>: "`` prefix used by data error messages.

    Parameters
    ----------
    path : str or os.PathLike, optional
        File name; an empty prefix is returned when ``None``.
    line : int, optional
        1-based line number.

    Returns
    -------
    str
        The prefix (possibly empty).
    """
    if path is None:
        return ""
    if line is None:
        return f"{path}: "
    return f"{path}, line {line}: "
