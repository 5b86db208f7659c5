"""Soak: resident memory (RSS) over many explanations in one process, through the whole data path.

    python benchmarks/bench_soak.py [--explanations 300] [--warmup 30] [--every 10] [--size 64] [--model tiny]

Each explanation is one ``explain_matches`` call for a new (query, candidate) pair of seeded random
images, with the real engine, renderer and artifact store (a temporary directory), so memory kept
by any of them (hooks, caches, the image cache, rendered PNGs, manifests) shows up as growth.
Prints ``explanations rss_mb`` every ``--every`` calls, then one JSON line: RSS after the warm-up,
at the end, and the growth between them in percent.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable as a plain script from any directory
    sys.path.insert(0, str(REPO))

from benchmarks.reference_models import SeededImages, tiny_cnn  # noqa: E402
from pairx_plugin.artifacts.store import ArtifactStore  # noqa: E402
from pairx_plugin.config import PairXConfig  # noqa: E402
from pairx_plugin.hook import explain_matches  # noqa: E402
from pairx_plugin.records import MatchRecord  # noqa: E402


def rss_mb() -> float:
    """Current resident set size in MB (Linux ``VmRSS``), after a collection and ``malloc_trim``."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: measure as is
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status (Linux only)")


def soak(explanations: int, *, size: int, model_name: str, every: int, store_dir: Path) -> list[tuple[int, float]]:
    """(explanations done, RSS MB) at 0 and every ``every`` explanations; prints each point."""
    if model_name == "tiny":
        model = tiny_cnn()
    else:
        from pairx_plugin.models import load_model_spec

        model = load_model_spec(model_name).model
    config = PairXConfig(top_k=1, k_lines=5, k_colors=2, render=["composite", "display"])
    from pairx_plugin.engine import PairX

    engine = PairX(model, **config.engine_kwargs())
    store = ArtifactStore(store_dir)
    images = SeededImages(size)
    curve = [(0, rss_mb())]
    print(f"{0:6d} {curve[0][1]:9.1f}", flush=True)
    for index in range(explanations):
        record = MatchRecord(query_id=str(2 * index), candidate_id=str(2 * index + 1), rank=0, score=1.0)
        (out,) = explain_matches(
            records=[record], images=images, model=model, config=config, store=store, engine=engine, progress=False
        )
        if out.explanation is None:
            raise RuntimeError(f"explanation {index} failed: {out.explanation_error}")
        if (index + 1) % every == 0 or index + 1 == explanations:
            curve.append((index + 1, rss_mb()))
            print(f"{index + 1:6d} {curve[-1][1]:9.1f}", flush=True)
    return curve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explanations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30, help="explanations before the baseline RSS")
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--model", default="tiny", help="'tiny' (a seeded 2-layer CNN) or a model spec, e.g. builtin")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="pairx-soak-") as directory:
        print("explanations rss_mb", flush=True)
        curve = soak(
            args.explanations, size=args.size, model_name=args.model, every=args.every, store_dir=Path(directory)
        )
    baseline = next((rss for done, rss in curve if done >= args.warmup), curve[-1][1])
    final = curve[-1][1]
    summary = {
        "explanations": args.explanations,
        "warmup": args.warmup,
        "model": args.model,
        "size": args.size,
        "rss_start_mb": round(curve[0][1], 1),
        "rss_after_warmup_mb": round(baseline, 1),
        "rss_end_mb": round(final, 1),
        "growth_after_warmup_pct": round(100 * (final - baseline) / baseline, 2),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
