"""Which of a pair's mutual matches should be drawn for a curator? Landing shares of candidate rules.

Runs the scene demo (``pairx-plugin demo --scenes --top-k 5 --k-colors 1``, no panels), captures
every explained layer's complete mutual-match list with the host's masks as the artifact builder
sees them, and for every correct record measures the share of the lines each rule draws that land
within one feature cell of the true correspondence (``correspondence.landed_lines``), plus how many
lines each rule draws per record.

    .venv/bin/python benchmarks/bench_curator_lines.py --seed 0 [--out DIR] [--lines 20]

Rules (f_i = foreground weight of both ends, r_i = relevance product; see docs/metrics.md):

* ``published``    top lines by r (what ``matches`` holds);
* ``on_animal``    top lines by r among f >= 0.5;
* ``on_animal_fit`` on-animal matches that are inliers of the r·f-weighted similarity fit over all
  on-animal matches first (by r), then the other on-animal matches (by r);
* ``r_times_f``    top lines by r·f (f > 0);
* ``curator``      the rule the plugin ships (``pairx_plugin.evidence.lines.select_on_animal``): the
  on-animal matches that are inliers of that fit, most relevant first, no filling with outliers.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RULES = ("published", "on_animal", "on_animal_fit", "r_times_f", "curator")


def _capture(out_dir: Path, seed: int) -> tuple[list[dict[str, Any]], Any]:
    """Run the scene demo; return one dict per explained record (full mutual matches, masks) and the set."""
    import pairx_plugin.evidence.attach as attach
    from pairx_wildlife_tools.demo import run_demo

    captured: list[dict[str, Any]] = []
    original = attach.attach_evidence

    def capturing(document: Any, pair: Any, layer_key: str, query: Any, candidate: Any) -> Any:
        layer = pair.layers[layer_key]
        captured.append(
            {
                "query_id": document.query_id,
                "candidate_id": document.candidate_id,
                "input_size": tuple(pair.query_size),
                "grid": tuple(layer.relevance_query.shape),
                "mutual": [(m.query_xy, m.candidate_xy, m.relevance) for m in layer.mutual_matches],
                "query_foreground": query.foreground,
                "candidate_foreground": candidate.foreground,
                "display_size": (tuple(query.display.shape[:2]), tuple(candidate.display.shape[:2])),
            }
        )
        return original(document, pair, layer_key, query, candidate)

    attach.attach_evidence = capturing
    try:
        result = run_demo(out_dir, top_k=5, k_colors=1, seed=seed, render=[], scenes=True, echo=None, progress=False)
    finally:
        attach.attach_evidence = original
    labels = {r.query_id: r.query_label for r in result.pipeline.records} | {
        r.candidate_id: r.candidate_label for r in result.pipeline.records
    }
    for item in captured:
        item["correct"] = labels[item["query_id"]] == labels[item["candidate_id"]]
    return captured, result.synthetic


def _rules(k: int) -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]]:
    from pairx_plugin.evidence.geometry import weighted_ransac

    def published(p: np.ndarray, q: np.ndarray, r: np.ndarray, f: np.ndarray, threshold: float) -> np.ndarray:
        return np.arange(min(k, len(r)))

    def on_animal(p: np.ndarray, q: np.ndarray, r: np.ndarray, f: np.ndarray, threshold: float) -> np.ndarray:
        return np.flatnonzero(f >= 0.5)[:k]  # r is sorted descending already

    def on_animal_fit(p: np.ndarray, q: np.ndarray, r: np.ndarray, f: np.ndarray, threshold: float) -> np.ndarray:
        on = np.flatnonzero(f >= 0.5)
        fit = weighted_ransac(p[on], q[on], r[on] * f[on], threshold)
        if fit is None:
            return on[:k]
        return np.concatenate([on[fit.inliers], on[~fit.inliers]])[:k]

    def r_times_f(p: np.ndarray, q: np.ndarray, r: np.ndarray, f: np.ndarray, threshold: float) -> np.ndarray:
        order = np.argsort(-(r * f), kind="stable")
        return order[(r * f)[order] > 0][:k]

    def curator(p: np.ndarray, q: np.ndarray, r: np.ndarray, f: np.ndarray, threshold: float) -> np.ndarray:
        from pairx_plugin.evidence.lines import select_on_animal

        return select_on_animal(p, q, r, f, threshold, k)

    return {
        "published": published,
        "on_animal": on_animal,
        "on_animal_fit": on_animal_fit,
        "r_times_f": r_times_f,
        "curator": curator,
    }


def measure(captured: list[dict[str, Any]], synthetic: Any, k: int) -> dict[str, dict[str, float]]:
    """Pooled landing share and lines per record of every rule over the correct records."""
    from pairx_plugin.evidence.foreground import as_mask, weights_at
    from pairx_plugin.evidence.geometry import INLIER_CELLS
    from pairx_wildlife_tools.correspondence import landed_lines

    rules = _rules(k)
    totals = {name: {"lines": 0, "landed": 0, "records": 0, "fewest": 10**9, "seconds": 0.0} for name in rules}
    for item in captured:
        if not item["correct"] or not item["mutual"]:
            continue
        size = item["input_size"]
        cell = (size[1] / item["grid"][1], size[0] / item["grid"][0])
        p = np.array([m[0] for m in item["mutual"]], float)
        q = np.array([m[1] for m in item["mutual"]], float)
        r = np.clip(np.array([m[2] for m in item["mutual"]], float), 0.0, None)
        masks = [
            as_mask(item[f"{side}_foreground"], item["display_size"][i], side)
            for i, side in enumerate(("query", "candidate"))
        ]
        f = weights_at(p, size, cell, masks[0]) * weights_at(q, size, cell, masks[1])
        mapping = synthetic.query_to_candidate(item["query_id"], item["candidate_id"], size)
        for name, rule in rules.items():
            start = time.perf_counter()
            chosen = rule(p, q, r, f, INLIER_CELLS * max(cell))
            totals[name]["seconds"] += time.perf_counter() - start
            hits, _ = landed_lines(p[chosen], q[chosen], mapping, max(cell))
            totals[name]["lines"] += len(hits)
            totals[name]["landed"] += int(hits.sum())
            totals[name]["records"] += 1
            totals[name]["fewest"] = min(totals[name]["fewest"], len(hits))
    return {
        name: {
            "share": t["landed"] / t["lines"] if t["lines"] else float("nan"),
            "lines_per_record": t["lines"] / t["records"] if t["records"] else 0.0,
            "fewest": t["fewest"],
            "records": t["records"],
            "ms_per_record": 1000 * t["seconds"] / max(1, t["records"]),
        }
        for name, t in totals.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lines", type=int, default=20, help="lines drawn per record (k_lines)")
    parser.add_argument("--out", type=Path, default=None, help="demo output folder (default: a temporary one)")
    parser.add_argument("--cache", type=Path, default=None, help="pickle of the captured matches (reused if present)")
    args = parser.parse_args()
    if args.cache is not None and args.cache.exists():
        captured, synthetic = pickle.loads(args.cache.read_bytes())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            captured, synthetic = _capture(args.out or Path(tmp), args.seed)
        if args.cache is not None:
            args.cache.write_bytes(pickle.dumps((captured, synthetic)))
    results = measure(captured, synthetic, args.lines)
    records = next(iter(results.values()))["records"]
    print(f"scene set seed {args.seed}, top {args.lines} lines, correct records: {records}")
    print(f"{'rule':<15} {'landing':>8} {'lines/record':>13} {'fewest':>7} {'ms/record':>10}")
    for name, row in results.items():
        print(
            f"{name:<15} {row['share']:>8.3f} {row['lines_per_record']:>13.1f} {row['fewest']:>7d} "
            f"{row['ms_per_record']:>10.1f}"
        )


if __name__ == "__main__":
    main()
