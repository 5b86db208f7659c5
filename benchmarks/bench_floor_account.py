"""Where a pair's time goes against the forward+backward floor, and which part of it LRP cannot avoid.

Prints, for one configuration (CPU, one thread, medians of ``--repeats``), in CPU seconds and as
multiples of the floor (one plain forward+backward of both images, input gradient only):

* ``pair``            — ``PairX.explain_pair`` (k_colors one-cell back-projections per image);
* ``forward``         — the engine's forward of both images (graph kept for the backward passes);
* ``constants``       — LRP's per-forward constants: the rules' modified forwards (z⁺, z⁻), their
                        stabilised inverses and the dead-unit shares, once per forward;
* ``lrp arithmetic``  — the transposed convolutions and element-wise products LRP must compute for
                        every seed, replayed alone at the exact shapes the pair used (receptive-field
                        boxes): the arithmetic no implementation of these rules avoids;
* ``gradient maps``   — for comparison, 2 × k_colors ordinary one-cell input gradients from the layer
                        (autograd, no LRP), one image each: what even a gradient map per cell costs;
* ``overhead``        — pair minus forward, constants and arithmetic: hook dispatch, support scans,
                        zero fills, relevance to the layer, matching, result building.

Usage: ``.venv/bin/python benchmarks/bench_floor_account.py [--only lite0_224] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_configs import PAIR, build, default_shared_dir, get_config  # noqa: E402
from bench_shapes import forward_backward_floor, frozen  # noqa: E402

from pairx_plugin import PairX  # noqa: E402
from pairx_plugin.engine.relevance import zennit_rules  # noqa: E402


@contextlib.contextmanager
def recorded_transposes(calls: list[tuple[torch.Size, torch.Tensor, tuple[int, ...], int]]) -> Iterator[None]:
    """Record every transposed convolution the rules compute (incoming shape, weight, stride, groups)."""
    original = torch.nn.functional.conv_transpose2d

    def record(g: torch.Tensor, weight: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append((g.shape, weight, tuple(kwargs.get("stride", 1)), int(kwargs.get("groups", 1))))
        return original(g, weight, *args, **kwargs)

    torch.nn.functional.conv_transpose2d = record  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.nn.functional.conv_transpose2d = original


@contextlib.contextmanager
def timed_constants(total: list[float]) -> Iterator[None]:
    """Add the CPU seconds spent on the rules' per-forward constants to ``total[0]``."""
    original = zennit_rules._FlatFallbackRule._denominators

    def timed(self: Any, module: Any) -> Any:
        start = time.process_time()
        try:
            return original(self, module)
        finally:
            total[0] += time.process_time() - start

    zennit_rules._FlatFallbackRule._denominators = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        zennit_rules._FlatFallbackRule._denominators = original  # type: ignore[method-assign]


def replay_arithmetic(calls: list[tuple[torch.Size, torch.Tensor, tuple[int, ...], int]]) -> float:
    """CPU seconds of the recorded transposes plus, per transpose, the two box products LRP applies
    (incoming relevance × 1/z on the box, input × transposed map), on fresh tensors of the same shapes."""
    inputs = [
        (torch.rand(shape).contiguous(memory_format=torch.channels_last), torch.rand(shape), w, s, g)
        for shape, w, s, g in calls
    ]
    start = time.process_time()
    for grad, scale, weight, stride, groups in inputs:
        part = torch.nn.functional.conv_transpose2d(grad * scale, weight, stride=stride, groups=groups)
        part = part * part  # the input × transposed-map product, same size
    return time.process_time() - start


def gradient_maps(model: torch.nn.Module, engine: PairX, x0: torch.Tensor, x1: torch.Tensor, cells: int) -> float:
    """CPU seconds of ``cells`` ordinary one-cell input gradients per image from the explained layer."""
    key = engine.layer_keys[0]
    module = engine.layer_modules[key]
    seconds = 0.0
    with frozen(model):
        for image in (x0, x1):
            x = image.contiguous(memory_format=torch.channels_last).clone().requires_grad_(True)
            captured: list[torch.Tensor] = []
            handle = module.register_forward_hook(lambda _m, _i, out, into=captured: into.append(out))
            try:
                with torch.enable_grad():
                    model(x)
            finally:
                handle.remove()
            fm = captured[0]
            h, w = fm.shape[-2:]
            start = time.process_time()
            for k in range(cells):
                seed = torch.zeros_like(fm)
                y, xx = divmod((k * 7) % (h * w), w)
                seed[0, :, y, xx] = fm[0, :, y, xx].detach()
                torch.autograd.grad(fm, x, grad_outputs=seed, retain_graph=True)
            seconds += time.process_time() - start
    return seconds


def account(name: str, repeats: int, shared_dir: Path) -> dict[str, float]:
    torch.set_num_threads(1)
    config = get_config(name)
    model, images = build(config, config.size, shared_dir)
    x0, x1 = images[PAIR[0] : PAIR[0] + 1].contiguous(), images[PAIR[1] : PAIR[1] + 1].contiguous()
    engine = PairX(model, [config.layer])
    engine.explain_pair(x0, x1)  # warm-up
    rows: dict[str, list[float]] = {k: [] for k in ("pair", "forward", "constants", "lrp arithmetic", "gradient maps")}
    for _ in range(repeats):
        calls: list[tuple[torch.Size, torch.Tensor, tuple[int, ...], int]] = []
        constants = [0.0]
        with recorded_transposes(calls), timed_constants(constants):
            start = time.process_time()
            explained = engine.explain_pair(x0, x1)
            rows["pair"].append(time.process_time() - start)
        rows["forward"].append(explained.timings["forward"])
        rows["constants"].append(constants[0])
        rows["lrp arithmetic"].append(replay_arithmetic(calls))
        rows["gradient maps"].append(gradient_maps(model, engine, x0, x1, engine.k_colors))
    _, floor = forward_backward_floor(model, x0, x1, repeats, lambda: None)
    out = {k: statistics.median(v) for k, v in rows.items()}
    out["floor"] = statistics.median(floor)
    out["overhead"] = out["pair"] - out["forward"] - out["constants"] - out["lrp arithmetic"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="lite0_224", help="configuration (see bench_configs.py)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shared-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    numbers = account(args.only, args.repeats, args.shared_dir or default_shared_dir())
    floor = numbers["floor"]
    print(f"{args.only}: CPU seconds, one thread, medians of {args.repeats} (torch {torch.__version__})")
    print(f"{'part':<16} | {'CPU s':>7} | {'x floor':>7}")
    for key in ("floor", "pair", "forward", "constants", "lrp arithmetic", "overhead", "gradient maps"):
        print(f"{key:<16} | {numbers[key]:7.3f} | {numbers[key] / floor:7.2f}")
    lower = numbers["forward"] + numbers["constants"] + numbers["lrp arithmetic"]
    print(f"forward + constants + arithmetic = {lower:.3f} s = {lower / floor:.2f} x floor (the rules' own work)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
