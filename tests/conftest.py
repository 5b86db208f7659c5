"""Shared fixtures. ``../shared`` (read-only) holds the sea-turtle images and golden outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PAIRX_SHARED_DIR", REPO.parent / "shared"))

# one thread keeps CPU timings and float reductions repeatable on the 2-core CI machine
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"../shared not found at {SHARED}; set PAIRX_SHARED_DIR")
    return SHARED


@pytest.fixture(scope="session")
def seaturtle_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "seaturtle_sample"


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "golden"


@pytest.fixture(scope="session")
def lite0_imagenet():
    """The built-in ImageNet EfficientNet-Lite0 (session-wide; tests must not modify it)."""
    from pairx_plugin.pretrained import efficientnet_lite0_imagenet

    return efficientnet_lite0_imagenet()
