"""Registry of models: ``register_model("mf")`` and ``build_model("mf", ...)``."""

from __future__ import annotations

from fedrec.models.base import Recommender
from fedrec.registry import Registry


def _load_builtin() -> None:
    # Explicit imports of the built-in model files (no discovery by module name).
    from fedrec.models import gmf, mf, mlp, neumf, pfedrec  # noqa: F401


MODELS: Registry[Recommender] = Registry("model", _load_builtin)
register_model = MODELS.register
build_model = MODELS.build
known_models = MODELS.known
