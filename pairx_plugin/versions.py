"""The package version, in one place (``pyproject.toml`` reads it: ``dynamic = ["version"]``)."""
from __future__ import annotations

__version__ = "0.1.0"
#: Bumped when the engine's numbers change for the same inputs (part of every artifact id).
ENGINE_VERSION = "3"
