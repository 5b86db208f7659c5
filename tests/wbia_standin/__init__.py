"""A stand-in for the parts of Wildbook-IA (WBIA) that a post-matching hook touches.

WBIA cannot be installed beside current torch, so the adapter's tests run against this package,
written from ``../shared/docs/wbia_contract.md`` (sections 1-5). It copies WBIA's calling
conventions and quirks on purpose (scalar/list getters, BGR chips of longest side 700, the
``-inf`` name-score quirk, ``from_dict`` dropping unknown keys, registration decorators and rule
checks); it is test support, not shipped.

``installed()`` is a context manager that makes ``import wbia`` (and the submodules the adapter
uses) resolve to this stand-in, and removes it again on exit.
"""

from __future__ import annotations

import contextlib
import sys
import types

from . import annotmatch, controller_inject, dtool

__all__ = ["installed", "modules_replaced", "annotmatch", "controller_inject", "dtool"]


@contextlib.contextmanager
def modules_replaced(modules: dict):
    """Put ``modules`` into ``sys.modules`` for the block; restore what was there on exit."""
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@contextlib.contextmanager
def installed():
    """Expose the stand-in as ``wbia`` in ``sys.modules`` for the duration of the block."""
    from . import constants

    wbia = types.ModuleType("wbia")
    wbia.__path__ = []  # a package, so ``import wbia.control.controller_inject`` works
    control = types.ModuleType("wbia.control")
    control.__path__ = []
    control.controller_inject = controller_inject
    wbia.control = control
    wbia.dtool = dtool
    wbia.constants = constants
    wbia.AnnotMatch = annotmatch.AnnotMatch
    names = {
        "wbia": wbia,
        "wbia.control": control,
        "wbia.control.controller_inject": controller_inject,
        "wbia.dtool": dtool,
        "wbia.constants": constants,
    }
    with modules_replaced(names):
        yield wbia
