"""wbia_pairx: PAIR-X explanations for WBIA (Wildbook-IA) identification plugins such as MiewID.

Importing the package imports :mod:`wbia_pairx._plugin`, which registers with WBIA when WBIA is
importable (see docs/wbia.md) and otherwise only defines plain functions.
"""

from . import _plugin
from ._plugin import attach, configure, get_runtime
from .config import XpxConfig
from .request_hook import PairxAttachment, enable_pairx
from .runtime import WbiaPairx

__all__ = ["attach", "configure", "get_runtime", "XpxConfig", "PairxAttachment", "enable_pairx", "WbiaPairx", "_plugin"]
