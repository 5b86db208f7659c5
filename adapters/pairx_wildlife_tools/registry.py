"""Registration of the adapter's components in wildlife-tools 0.0.9's config store (``tools.Store``).

``realize(config)`` (0.0.9) looks ``config["method"]`` up in ``Store.modules``, a class-level dict of
``name -> (module path, class name)``. Registering adds our entries to that dict. Importing
``pairx_wildlife_tools`` registers once; :func:`register` does it explicitly and is idempotent.
wildlife-tools 1.x has no config store: there :func:`register` registers nothing (the version
difference lives in :mod:`.host`).
"""

from __future__ import annotations

from .host import CONFIG_COMPONENTS as COMPONENTS  # kept for one release under its old name
from .host import register_config_components


def register() -> dict[str, tuple[str, str]]:
    """Register :data:`COMPONENTS` in 0.0.9's ``Store.modules`` (``{}`` on 1.x); returns what was registered."""
    return register_config_components()


__all__ = ["COMPONENTS", "register"]
