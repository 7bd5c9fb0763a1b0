"""Plain dict registry of models: ``register_model("mf")`` and ``build_model("mf", ...)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedrec.models.base import Recommender

MODELS: dict[str, type[Recommender]] = {}


def register_model(name: str) -> Callable[[type[Recommender]], type[Recommender]]:
    """Class decorator adding a model to the registry under ``name``."""

    def deco(cls: type[Recommender]) -> type[Recommender]:
        if name in MODELS:
            raise ValueError(f"model '{name}' is already registered")
        cls.name = name
        MODELS[name] = cls
        return cls

    return deco


def build_model(name: str, **kwargs: Any) -> Recommender:
    """Instantiate a registered model; unknown name -> ``ValueError`` listing known ones."""
    _load_builtin()
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def known_models() -> list[str]:
    _load_builtin()
    return sorted(MODELS)


def _load_builtin() -> None:
    # Explicit imports of the built-in model files (no discovery by module name).
    from fedrec.models import gmf, mf, mlp, neumf, pfedrec  # noqa: F401
