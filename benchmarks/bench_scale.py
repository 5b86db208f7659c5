"""Catalogue-scale benchmark (issue 13): bytes per record and records per second, 1 vs N Ray workers.

Records: every sea-turtle sample image (4) queries the other three, all explained (top_k 3): 12
records, 4 query groups. Three stores are written under --out:

* ``panels``  one process, ``render:`` every panel (the 1.0 behaviour: 16 PNGs per record);
* ``compact`` one process, the defaults (schema 1.1: pair_data.npz per record, display images shared);
* ``ray-N``   the compact defaults on N Ray workers, for each N in --workers (default 1 2).

Bytes per record = bytes under ``artifacts/`` / explained records; shared bytes = ``images/``. Records
per second time the explain call (the Ray rows include starting the workers and building a model in
each, a fixed cost per run that a long run amortises). Usable on a GPU machine: --device cuda gives
each worker one GPU (``num_gpus=1``).

    python benchmarks/bench_scale.py --out /tmp/bench_scale [--size 224] [--workers 1 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "seaturtle_sample" / "images"


def _records(ids: list[str]) -> list:
    from pairx_plugin.records import MatchRecord

    return [
        MatchRecord(query_id=q, candidate_id=c, rank=r, score=1.0 - r / 10)
        for q in ids
        for r, c in enumerate(x for x in ids if x != q)
    ]


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _row(name: str, root: Path, out: list, seconds: float, workers: int | str) -> dict:
    explained = sum(r.explanation is not None for r in out)
    return {
        "store": name,
        "workers": workers,
        "records": len(out),
        "explained": explained,
        "seconds": round(seconds, 2),
        "records_per_s": round(len(out) / seconds, 3) if seconds else None,
        "bytes_per_record": _bytes(root / "artifacts") // max(1, explained),
        "shared_image_bytes": _bytes(root / "images"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the benchmark stores (emptied first)")
    parser.add_argument("--images", default=str(DATA), help="folder of identity folders of .JPG images")
    parser.add_argument("--size", type=int, default=224, help="model input size (default 224, the built-in's)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts (default 1 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--skip-panels", action="store_true", help="skip the every-panel (1.0-style) store")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines")
    args = parser.parse_args(argv)

    import torch

    from pairx_plugin.artifacts.store import ArtifactStore
    from pairx_plugin.config import ALL_PANELS, PairXConfig
    from pairx_plugin.hook import explain_matches
    from pairx_plugin.images import FileImageSource
    from pairx_plugin.models import load_model_spec
    from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

    paths = {p.stem: p for p in sorted(Path(args.images).glob("*/*.JPG"))}
    if len(paths) < 2:
        print(f"bench_scale: need at least 2 .JPG images under {args.images!r}/<identity>/", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    shutil.rmtree(out_dir, ignore_errors=True)
    source = FileImageSource(paths, args.size, IMAGENET_MEAN, IMAGENET_STD)
    records = _records(sorted(paths))
    config = PairXConfig(top_k=len(paths) - 1, device=args.device)
    rows = []
    model = load_model_spec("builtin").model.eval()
    if args.device != "cpu":
        model = model.to(args.device)
    variants = [] if args.skip_panels else [("panels", config.model_copy(update={"render": list(ALL_PANELS)}))]
    variants.append(("compact", config))
    for name, variant in variants:
        start = time.perf_counter()
        out = explain_matches(
            records=records,
            images=source,
            model=model,
            config=variant,
            store=ArtifactStore(out_dir / name),
            progress=False,
        )
        threads = f"1 process ({torch.get_num_threads()} threads)"
        rows.append(_row(name, out_dir / name, out, time.perf_counter() - start, threads))

    from pairx_ray import explain_on_ray
    from pairx_ray.runner import connect

    connect("auto")
    for workers in args.workers:
        root = out_dir / f"ray-{workers}"
        start = time.perf_counter()
        out = explain_on_ray(
            records=records,
            images=source,
            model="builtin",
            config=config,
            store_root=root,
            workers=workers,
            progress=False,
        )
        rows.append(_row(f"ray-{workers}", root, out, time.perf_counter() - start, workers))
    for row in rows:
        print(
            json.dumps(row)
            if args.json
            else f"{row['store']:>8}  workers {row['workers']!s:>22}  {row['records']} records  "
            f"{row['seconds']:>7.1f} s  {row['records_per_s']:>6} rec/s  "
            f"{row['bytes_per_record'] / 1024:>8.1f} KiB/record  "
            f"shared images {row['shared_image_bytes'] / 1024:.0f} KiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
