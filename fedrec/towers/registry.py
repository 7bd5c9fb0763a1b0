"""Plain dict registry of towers: ``register_tower("kg")`` and ``build_tower("kg", ...)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedrec.towers.base import Tower

TOWERS: dict[str, type[Tower]] = {}


def register_tower(name: str) -> Callable[[type[Tower]], type[Tower]]:
    """Class decorator adding a tower to the registry under ``name``."""

    def deco(cls: type[Tower]) -> type[Tower]:
        if name in TOWERS:
            raise ValueError(f"tower '{name}' is already registered")
        cls.name = name
        TOWERS[name] = cls
        return cls

    return deco


def build_tower(name: str, **kwargs: Any) -> Tower:
    """Instantiate a registered tower; unknown name -> ``ValueError`` listing known ones."""
    _load_builtin()
    if name not in TOWERS:
        raise ValueError(f"unknown tower '{name}'; known towers: {', '.join(sorted(TOWERS))}")
    return TOWERS[name](**kwargs)


def known_towers() -> list[str]:
    _load_builtin()
    return sorted(TOWERS)


def parse_towers(text: str) -> list[str]:
    """``"kg, text"`` -> ``["kg", "text"]`` (order kept, duplicates and blanks dropped)."""
    out: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if name and name not in out:
            out.append(name)
    return out


def _load_builtin() -> None:
    # Explicit imports of the built-in tower files (no discovery by module name).
    from fedrec.towers import genre, kg, text, year  # noqa: F401
