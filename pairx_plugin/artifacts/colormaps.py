"""Colour maps and the line palette used by the renderer, as small numeric tables.

Each map is a list of ``(position, (r, g, b))`` anchors with positions rising from 0 to 1 and
channels in [0, 1]; values in between are interpolated linearly per channel. Keeping the tables
here (instead of importing matplotlib) keeps the core free of plotting libraries and makes every
rendered pixel a pure function of the inputs.

The sequential maps all start at exact white, so a pixel without relevance adds nothing when the
colour maps are accumulated subtractively over a white canvas.
"""

from __future__ import annotations

import functools

import numpy as np

ColourTable = tuple[tuple[float, tuple[float, float, float]], ...]

# dark blue -> blue -> cyan -> yellow -> red -> dark red
JET: ColourTable = (
    (0.00, (0.00, 0.00, 0.55)),
    (0.12, (0.00, 0.00, 1.00)),
    (0.37, (0.00, 1.00, 1.00)),
    (0.62, (1.00, 1.00, 0.00)),
    (0.87, (1.00, 0.00, 0.00)),
    (1.00, (0.55, 0.00, 0.00)),
)

# single-hue maps, white -> a mid tone -> a dark tone of the hue
SEQUENTIAL: dict[str, ColourTable] = {
    "greys": ((0.0, (1.0, 1.0, 1.0)), (0.5, (0.62, 0.62, 0.62)), (1.0, (0.12, 0.12, 0.12))),
    "purples": ((0.0, (1.0, 1.0, 1.0)), (0.5, (0.66, 0.60, 0.82)), (1.0, (0.30, 0.06, 0.50))),
    "blues": ((0.0, (1.0, 1.0, 1.0)), (0.5, (0.46, 0.66, 0.86)), (1.0, (0.04, 0.20, 0.50))),
    "greens": ((0.0, (1.0, 1.0, 1.0)), (0.5, (0.52, 0.80, 0.52)), (1.0, (0.00, 0.30, 0.10))),
    "oranges": ((0.0, (1.0, 1.0, 1.0)), (0.5, (0.99, 0.62, 0.32)), (1.0, (0.55, 0.18, 0.02))),
    "reds": ((0.0, (1.0, 1.0, 1.0)), (0.5, (0.97, 0.52, 0.42)), (1.0, (0.46, 0.00, 0.06))),
}
SEQUENTIAL_ORDER: tuple[str, ...] = ("greys", "purples", "blues", "greens", "oranges", "reds")

# distinct, saturated colours for match lines and points (RGB 0-255), cycled by match index
LINE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 160, 60),
    (230, 20, 20),
    (20, 60, 240),
    (250, 170, 0),
    (150, 20, 170),
    (0, 190, 210),
    (240, 90, 200),
    (130, 130, 130),
    (120, 80, 20),
    (170, 230, 40),
)


LUT_SIZE = 1024  # colour steps per map: finer than the 256 levels a PNG channel can hold


@functools.lru_cache(maxsize=32)
def _lookup_table(table: ColourTable) -> np.ndarray:
    positions = np.array([p for p, _ in table], dtype=np.float64)
    colours = np.array([c for _, c in table], dtype=np.float64)
    samples = np.linspace(0.0, 1.0, LUT_SIZE)
    return np.stack([np.interp(samples, positions, colours[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def apply_table(values: np.ndarray, table: ColourTable) -> np.ndarray:
    """Map values in [0, 1] (any shape) to float32 RGB in [0, 1], shape ``values.shape + (3,)``.

    The table is sampled once into :data:`LUT_SIZE` steps and values index it (fast on large maps).
    """
    clipped = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    indices = np.rint(clipped * (LUT_SIZE - 1)).astype(np.intp)
    return _lookup_table(table)[indices]


def jet(values: np.ndarray) -> np.ndarray:
    """Jet colours for values in [0, 1]."""
    return apply_table(values, JET)


def sequential(index: int, values: np.ndarray) -> np.ndarray:
    """The ``index``-th sequential map (cycling through :data:`SEQUENTIAL_ORDER`) applied to values."""
    return apply_table(values, SEQUENTIAL[SEQUENTIAL_ORDER[index % len(SEQUENTIAL_ORDER)]])


def line_colour(index: int) -> tuple[int, int, int]:
    """Colour of the ``index``-th match line (cycling through :data:`LINE_PALETTE`)."""
    return LINE_PALETTE[index % len(LINE_PALETTE)]


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the map's own minimum and maximum; a flat map becomes all zeros."""
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def power_norm(values: np.ndarray, gamma: float = 0.95) -> np.ndarray:
    """``(clip(v, 0, vmax) / vmax) ** gamma`` with vmin 0 and vmax the map's own maximum."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    vmax = float(values.max()) if values.size else 0.0
    if vmax <= 0.0:
        return np.zeros_like(values)
    return np.power(np.clip(values / vmax, 0.0, 1.0), gamma).astype(np.float32)
