"""A plain dict registry by name: ``@REG.register("mf")``, ``REG.build("mf", ...)``.

Used for models and towers (DESIGN section 8): explicit registration, no discovery by module
name; an unknown name is a ``ValueError`` listing the known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes by name; ``load`` imports the built-in files (called before every lookup)."""

    def __init__(self, kind: str, load: Callable[[], None]) -> None:
        self.kind = kind
        self.load = load
        self.classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator adding a class under ``name`` (sets its ``name`` attribute)."""

        def deco(cls: type[T]) -> type[T]:
            if name in self.classes:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            cls.name = name
            self.classes[name] = cls
            return cls

        return deco

    def build(self, name: str, **kwargs: Any) -> T:
        """Instantiate a registered class; unknown name -> ``ValueError`` listing known ones."""
        self.load()
        if name not in self.classes:
            raise ValueError(f"unknown {self.kind} '{name}'; known {self.kind}s: "
                             f"{', '.join(sorted(self.classes))}")
        return self.classes[name](**kwargs)

    def known(self) -> list[str]:
        self.load()
        return sorted(self.classes)
