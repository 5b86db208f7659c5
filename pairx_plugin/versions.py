"""Version strings, in one leaf module that imports nothing (so reading them never pulls in torch).

``__version__`` is the package version (the one source; ``pyproject.toml`` reads it).
``ENGINE_VERSION`` changes whenever the engine computes different numbers for the same inputs; it is
part of every artifact id, so a newer engine never reuses artifacts an older one wrote.
"""

from __future__ import annotations

__version__ = "0.1.0"
ENGINE_VERSION = "3"

__all__ = ["ENGINE_VERSION", "__version__"]
