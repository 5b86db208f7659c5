"""Measurements beside the engine's own timings, for ``bench_engine.py``'s worker.

* :func:`forward_backward_floor` — one plain forward+backward of both images of a pair (input
  gradient only, parameters frozen as the engine freezes them): what no explanation can beat.
* :func:`end_to_end_records` — ``explain_matches`` on a top-5 query of sea-turtle files, default
  artifacts, into a temporary store: decoding, hashing, rendering and encoding included.
* :func:`reference_pair` — the published implementation's ``pairx()`` on the same pair, loaded
  read-only from its source folder (``--reference PATH``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pairx_plugin.errors import InvalidInputError

IMAGE_FILES = ("identity_a/image_1.JPG", "identity_a/image_2.JPG", "identity_b/image_3.JPG", "identity_b/image_4.JPG")


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def timed_cpu(call: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``repeats`` calls (device-synchronised)."""
    wall, cpu = [], []
    for _ in range(repeats):
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        call()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return wall, cpu


def forward_backward_floor(
    model: nn.Module, x0: torch.Tensor, x1: torch.Tensor, repeats: int, sync: Callable[[], None]
) -> tuple[list[float], list[float]]:
    """Seconds of one forward of both images as one batch and one backward to the input."""
    batch = torch.cat([x0, x1]).contiguous(memory_format=torch.channels_last)

    def once() -> None:
        x = batch.clone(memory_format=torch.channels_last).requires_grad_(True)
        with torch.enable_grad():
            emb = model(x)
            (grad,) = torch.autograd.grad(emb, x, grad_outputs=torch.ones_like(emb))
        del grad

    with frozen(model):
        once()  # warm-up
        return timed_cpu(once, repeats, sync)


def _top5_source(shared_dir: Path, size: int):
    from pairx_plugin.images import FileImageSource

    root = shared_dir / "data" / "seaturtle_sample" / "images"
    paths = {f"img{i + 1}": root / name for i, name in enumerate(IMAGE_FILES)}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise InvalidInputError(f"sea-turtle images not found: {missing}; pass --shared-dir")
    # two more candidates: crops of image_2 and image_3, so five distinct candidates
    paths["img2crop"], paths["img3crop"] = paths["img2"], paths["img3"]
    bboxes = {"img2crop": (40, 30, 500, 380), "img3crop": (20, 10, 520, 400)}
    return FileImageSource(paths, size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), bboxes=bboxes)


def end_to_end_records(
    model: nn.Module,
    engine,
    layer: str,
    size: int,
    shared_dir: Path,
    repeats: int,
    sync: Callable[[], None],
    k_lines: int,
    k_colors: int,
    mode: str,
):
    """Wall and CPU seconds of ``explain_matches`` on 5 records (one top-5 query), default artifacts.

    Each call writes into a fresh temporary store, so no artifact is served from a cache.
    """
    from pairx_plugin.artifacts.store import ArtifactStore
    from pairx_plugin.config import PairXConfig
    from pairx_plugin.hook import explain_matches
    from pairx_plugin.records import MatchRecord

    source = _top5_source(shared_dir, size)
    records = [
        MatchRecord(query_id="img1", candidate_id=c, rank=r, score=0.9 - 0.1 * r)
        for r, c in enumerate(["img2", "img3", "img4", "img2crop", "img3crop"])
    ]
    config = PairXConfig(layer_keys=[layer], k_lines=k_lines, k_colors=k_colors, mode=mode, top_k=5)
    out: list[Any] = []

    def once() -> None:
        with tempfile.TemporaryDirectory(prefix="pairx-bench-") as tmp:
            out[:] = explain_matches(
                records=records,
                images=source,
                model=model,
                config=config,
                store=ArtifactStore(tmp),
                engine=engine,
                progress=False,
            )

    once()  # warm-up
    wall, cpu = timed_cpu(once, repeats, sync)
    failed = [r.explanation_error for r in out if getattr(r, "explanation_error", None) is not None]
    if failed:
        raise RuntimeError(f"explain_matches failed for {len(failed)} of 5 records: {failed[0]}")
    return wall, cpu, len(records), parts_of(once)


#: (label, module, function) of the parts of a record's cost, measured inclusive of what they call
E2E_PARTS = (
    ("engine", "pairx_plugin.engine.engine", "explain_query"),
    ("decode", "pairx_plugin.images", "load_image"),
    ("preprocess", "pairx_plugin.images", "prepare_image"),
    ("hash", "pairx_plugin.images", "image_sha256"),
    ("render", "pairx_plugin.artifacts.render", "render_pair"),
    ("encode", "pairx_plugin.artifacts.render", "encode_png"),
    ("pair_data", "pairx_plugin.artifacts.compact", "pair_data_bytes"),
    ("store", "pairx_plugin.artifacts.store", "write"),
)


def parts_of(call: Callable[[], Any]) -> dict[str, float]:
    """Shares of one call's time spent in each of :data:`E2E_PARTS` (cProfile, inclusive; ``preprocess``
    includes ``hash``; ``encode`` counts every PNG, the shared display images of compact artifacts and the
    panels that ``render`` draws when asked). Shares, because profiling slows Python."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    call()
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = max(v[3] for v in stats.values())
    shares = {}
    for label, module, function in E2E_PARTS:
        suffix = module.replace(".", "/") + ".py"
        seconds = sum(v[3] for (path, _, name), v in stats.items() if name == function and path.endswith(suffix))
        shares[label] = seconds / total
    return shares


def load_reference(path: Path):
    """The published implementation's ``core`` module from its source folder (read-only)."""
    for candidate in (path / "src" / "pairx" / "core.py", path / "pairx" / "core.py", path / "core.py"):
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("pairx_reference_core", candidate)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            if not hasattr(module, "pairx"):
                raise InvalidInputError(f"{candidate} has no pairx() function; pass the published PAIR-X source folder")
            return module
    raise InvalidInputError(
        f"--reference {path}: no src/pairx/core.py, pairx/core.py or core.py there; "
        "pass the folder of the published PAIR-X source (WildMeOrg/pairx)"
    )


def reference_pair(
    path: Path,
    model: nn.Module,
    x0: torch.Tensor,
    x1: torch.Tensor,
    layer: str,
    repeats: int,
    sync: Callable[[], None],
    k_lines: int,
    k_colors: int,
) -> tuple[list[float], list[float]]:
    """Seconds of the published ``pairx()`` on one pair (a private copy of the model: it sets grads)."""
    core = load_reference(path)
    ref_model = copy.deepcopy(model).eval()
    device = next(ref_model.parameters()).device

    def once() -> None:
        core.pairx(device, x0.clone(), x1.clone(), ref_model, [layer], k_lines, k_colors)

    once()
    return timed_cpu(once, repeats, sync)
