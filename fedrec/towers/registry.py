"""Registry of towers: ``register_tower("kg")`` and ``build_tower("kg", ...)``."""

from __future__ import annotations

from fedrec.registry import Registry
from fedrec.towers.base import Tower


def _load_builtin() -> None:
    # Explicit imports of the built-in tower files (no discovery by module name).
    from fedrec.towers import genre, kg, text, year  # noqa: F401


TOWERS: Registry[Tower] = Registry("tower", _load_builtin)
register_tower = TOWERS.register
build_tower = TOWERS.build
known_towers = TOWERS.known


def parse_towers(text: str) -> list[str]:
    """``"kg, text"`` -> ``["kg", "text"]`` (order kept, duplicates and blanks dropped)."""
    out: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if name and name not in out:
            out.append(name)
    return out

