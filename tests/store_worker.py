"""A real explain_matches run in its own process, for the multi-process and crash tests.

    python tests/store_worker.py STORE [--run-name NAME] [--pairs N] [--offsets K,..] [--go FILE]

A tiny seeded CNN at 64 px and seeded random images (the same for every process), the real engine,
renderer and store. Prints ``ready`` once everything is imported and built, waits for ``--go FILE``
to exist when given (so several workers start their runs together), then prints the run's outcome
as one JSON line: run name and the status of every record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.reference_models import SeededImages, tiny_cnn
from pairx_plugin.artifacts.store import ArtifactStore
from pairx_plugin.config import ALL_PANELS, PairXConfig
from pairx_plugin.hook import explain_matches
from pairx_plugin.records import MatchRecord

SIZE = 64


def records(pairs: int, offset: int = 0) -> list[MatchRecord]:
    """One query per 4 candidates: ``img0`` vs img1..4, ``img10`` vs img11..14, ...

    ``offset`` K shifts every image number by 1000·K, so each K is a different set of images (and
    artifacts) in the same store.
    """
    out = []
    base = 1000 * offset
    for q in range(0, pairs, 4):
        query = base + q * 10 // 4
        for rank in range(min(4, pairs - q)):
            out.append(
                MatchRecord(
                    query_id=f"img{query}", candidate_id=f"img{query + rank + 1}", rank=rank, score=1.0 - rank / 10
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--run-name")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--go")
    parser.add_argument("--offsets", default="0", help="comma-separated image-set offsets (see records())")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = tiny_cnn()
    # every panel eagerly: the run writes shared display images, pair_data.npz and the PNGs (and lasts
    # long enough for the random kills to land inside it)
    config = PairXConfig(top_k=4, k_lines=5, k_colors=2, max_batch_images=2, render=list(ALL_PANELS))
    from pairx_plugin.engine import PairX

    engine = PairX(model, **config.engine_kwargs())
    print("ready", flush=True)
    if args.go:
        while not Path(args.go).exists():
            time.sleep(0.01)
    store = ArtifactStore(args.store)
    try:
        todo = [r for k in args.offsets.split(",") for r in records(args.pairs, int(k))]
        out = explain_matches(
            records=todo,
            images=SeededImages(SIZE),
            model=model,
            config=config,
            store=store,
            engine=engine,
            progress=False,
            run_name=args.run_name,
        )
    except Exception as exc:  # noqa: BLE001 - the test reads the message
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 2
    manifests = sorted(p.name for p in (Path(args.store) / "runs").glob("*.jsonl"))
    statuses = ["explained" if r.explanation else f"error:{r.explanation_error}" for r in out]
    print(json.dumps({"statuses": statuses, "manifests": manifests}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
