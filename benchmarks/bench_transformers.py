"""Seconds per pair for transformer backbones under the gradient x input backend.

    python benchmarks/bench_transformers.py                    # swin_tiny@224, vit_small@224, 1 thread
    python benchmarks/bench_transformers.py --repeats 5 --gamma --device cuda

Random-init timm models (``num_classes=0``; weights do not change the cost) and two real sea-turtle
photos. For each model it prints the median wall seconds of ``PairX.explain_pair`` (default layer,
k_lines=20, k_colors=10) after one untimed warm-up pair, the engine's own stage times, and for
comparison a plain forward+backward and the same pass under the backend's rules.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (str(REPO), str(REPO / "adapters")):
    if path not in sys.path:
        sys.path.insert(0, path)

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pairx_plugin import PairX  # noqa: E402
from pairx_plugin.engine.relevance.gradient_x_input import GradientXInput  # noqa: E402

MODELS = {"swin_tiny@224": ("swin_tiny_patch4_window7_224", 224), "vit_small@224": ("vit_small_patch16_224", 224)}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def shared_dir() -> Path:
    for candidate in (os.environ.get("PAIRX_SHARED_DIR"), REPO.parent / "shared", REPO / "shared"):
        if candidate and (Path(candidate) / "data" / "seaturtle_sample").is_dir():
            return Path(candidate)
    raise SystemExit("shared/data/seaturtle_sample not found; set PAIRX_SHARED_DIR")


def turtle_pair(size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    root = shared_dir() / "data" / "seaturtle_sample" / "images" / "identity_a"
    tensors = []
    for name in ("image_1.JPG", "image_2.JPG"):
        image = Image.open(root / name).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
        tensors.append(((x - MEAN) / STD).to(device))
    return tensors[0], tensors[1]


def timed(fn, repeats: int, device: str) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of this process (the latter barely moves when
    other jobs share the cores; with one thread it is the work itself)."""
    wall, cpu = [], []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def plain_pass(model, x) -> None:
    x = x.clone().requires_grad_(True)
    torch.autograd.grad(model(x).sum(), x)


def ruled_pass(model, backend, x) -> None:
    x = x.clone().requires_grad_(True)
    with backend.context(model) as runner:
        torch.autograd.grad(runner(x).sum(), x)


def bench(label: str, timm_name: str, size: int, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = timm.create_model(timm_name, pretrained=False, num_classes=0).eval().to(args.device)
    x0, x1 = turtle_pair(size, args.device)
    rules = ["gradient", "gamma"] if args.gamma else ["gradient"]
    for rule in rules:
        engine = PairX(model, k_lines=args.k_lines, k_colors=args.k_colors, input_size=size)
        engine.backend = GradientXInput(linear_rule=rule)
        pair = engine.explain_pair(x0, x1)  # warm-up
        wall, cpu = timed(lambda e=engine: e.explain_pair(x0, x1), args.repeats, args.device)
        stages = ", ".join(f"{k} {v:.2f}" for k, v in sorted(pair.timings.items()))
        print(
            f"{label:<14} rule={rule:<8} layer={engine.layer_keys[0]:<9} {wall:6.2f} s/pair wall, "
            f"{cpu:6.2f} s CPU   (last pair's stages, wall: {stages})"
        )
    _, plain = timed(lambda: plain_pass(model, x0), args.repeats, args.device)
    _, ruled = timed(lambda: ruled_pass(model, GradientXInput(), x0), args.repeats, args.device)
    print(
        f"{label:<14} one forward+backward, CPU s: plain {plain:.3f}, under the gradient-x-input rules "
        f"{ruled:.3f} ({ruled / plain:.2f}x)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs per model (median reported)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--k-lines", type=int, default=20)
    parser.add_argument("--k-colors", type=int, default=10)
    parser.add_argument("--gamma", action="store_true", help="also time the gamma rule on linear/conv layers")
    parser.add_argument("--only", choices=sorted(MODELS), action="append")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, timm {timm.__version__}, device {args.device}, threads {args.threads}, "
        f"k_lines {args.k_lines}, k_colors {args.k_colors}, median of {args.repeats}, "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )
    for label in args.only or list(MODELS):
        bench(label, *MODELS[label], args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
