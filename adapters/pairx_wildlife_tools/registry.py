"""Registration of the adapter's components in wildlife-tools' config store (``tools.Store``).

``realize(config)`` looks ``config["method"]`` up in ``Store.modules``, a class-level dict of
``name -> (module path, class name)``. Registering adds our entries to that dict. Importing
``pairx_wildlife_tools`` registers once; :func:`register` does it explicitly and is idempotent.
"""
from __future__ import annotations

from pairx_plugin.errors import PairXError

#: method name in a wildlife-tools config -> (module, attribute)
COMPONENTS: dict[str, tuple[str, str]] = {
    "PairXKnnClassifier": ("pairx_wildlife_tools.classifier", "PairXKnnClassifier"),
}


def register() -> dict[str, tuple[str, str]]:
    """Add :data:`COMPONENTS` to ``wildlife_tools.tools.Store.modules``; returns what was registered.

    Safe to call any number of times. Raises :class:`PairXError` when the installed wildlife-tools
    has no ``Store.modules`` table (a release this adapter does not know).
    """
    from wildlife_tools import tools

    store = getattr(tools, "Store", None)
    table = getattr(store, "modules", None)
    if not isinstance(table, dict):
        raise PairXError(
            "wildlife_tools.tools.Store.modules is missing in the installed wildlife-tools; build "
            "PairXKnnClassifier directly instead of through realize(), or install wildlife-tools==0.0.9"
        )
    for name, target in COMPONENTS.items():
        existing = table.get(name)
        if existing is not None and tuple(existing) != target:
            raise PairXError(
                f"wildlife-tools config store already has {name!r} -> {existing}; another package "
                f"registered that name, so {target} cannot be added under it"
            )
        table[name] = target
    return dict(COMPONENTS)
