"""Benchmark the PAIR-X engine: seconds per pair and per top-5 query, peak memory, time per stage.

    python benchmarks/bench_engine.py                      # all four configurations, CPU, 1 thread
    python benchmarks/bench_engine.py --only lite0_224 --repeats 5 --json out.json
    python benchmarks/bench_engine.py --device cuda --threads all

Each configuration runs in a fresh subprocess (``--worker NAME``), so its peak RSS is its own and
one configuration failing (an error, a timeout) leaves the others' numbers intact. Times are wall
seconds of ``PairX.explain_pair`` / ``explain_query`` (CUDA-synchronised on a GPU), medians over
``--repeats`` runs after ``--warmup`` untimed pairs; stage times are the engine's own ``timings``
(forward, relevance, matching, pixels; on CUDA those are not synchronised per stage).

CPU seconds (``time.process_time`` of the worker, all its threads) are recorded beside wall
seconds: on a shared machine another process's load inflates wall time but hardly CPU time, so
with ``--threads 1`` the CPU seconds are the better estimate of the unloaded wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (str(REPO), str(HERE)):  # runnable as a plain script from any directory
    if path not in sys.path:
        sys.path.insert(0, path)

from bench_configs import CONFIGS  # noqa: E402
from bench_records import BenchReport, ConfigResult  # noqa: E402

RESULT_MARK = "PAIRX_BENCH_RESULT "
STAGES = ("forward", "relevance", "matching", "pixels")


# ---------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(CONFIGS),
        help="run only this configuration (repeatable); default: all four",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument(
        "--query-repeats",
        type=int,
        default=None,
        help="timed top-5 queries (default: --repeats; 0 skips the query measurement)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed explain_pair calls before timing")
    parser.add_argument("--threads", default="1", help="torch threads: an integer, or 'all' (every core)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--mode", default="conservative", choices=["conservative", "parity"])
    parser.add_argument("--k-lines", type=int, default=20)
    parser.add_argument("--k-colors", type=int, default=10)
    parser.add_argument(
        "--max-batch-images",
        type=int,
        default=None,
        help="PairX max_batch_images (candidates forwarded together; default: the engine's)",
    )
    parser.add_argument("--size", type=int, default=None, help="override every configuration's input size")
    parser.add_argument(
        "--shared-dir",
        type=Path,
        default=None,
        help="folder holding data/seaturtle_sample (default: $PAIRX_SHARED_DIR, ./shared, ../shared)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per configuration")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    parser.add_argument(
        "--e2e-repeats",
        type=int,
        default=None,
        help="timed explain_matches calls on 5 records (default: --repeats; 0 skips)",
    )
    parser.add_argument(
        "--floor-repeats",
        type=int,
        default=None,
        help="timed plain forward+backward passes (default: --repeats; 0 skips)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="source folder of the published PAIR-X code (read-only): time its pairx() on the "
        "same pair, side by side; skipped when not given",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    problems = []
    if args.repeats < 1:
        problems.append(f"--repeats must be at least 1, got {args.repeats}")
    if args.query_repeats is None:
        args.query_repeats = args.repeats
    for name in ("e2e_repeats", "floor_repeats"):
        if getattr(args, name) is None:
            setattr(args, name, args.repeats)
        if getattr(args, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.reference is not None and not args.reference.is_dir():
        problems.append(f"--reference must be the folder of the published PAIR-X source, got {args.reference}")
    if args.query_repeats < 0:
        problems.append(f"--query-repeats must be 0 or more, got {args.query_repeats}")
    if args.warmup < 0:
        problems.append(f"--warmup must be 0 or more, got {args.warmup}")
    if args.k_lines < 1 or args.k_colors < 1:
        problems.append(f"--k-lines and --k-colors must be at least 1, got {args.k_lines}, {args.k_colors}")
    if args.size is not None and args.size < 32:
        problems.append(f"--size must be at least 32 pixels, got {args.size}")
    if args.threads != "all" and not (args.threads.isdigit() and int(args.threads) >= 1):
        problems.append(f"--threads must be a positive integer or 'all', got {args.threads!r}")
    if args.max_batch_images is not None and args.max_batch_images < 1:
        problems.append(f"--max-batch-images must be at least 1, got {args.max_batch_images}")
    if args.timeout is not None and args.timeout <= 0:
        problems.append(f"--timeout must be positive, got {args.timeout}")
    if problems:
        parser.error("; ".join(problems))
    return args


def thread_count(threads: str) -> int:
    if threads == "all":
        return os.cpu_count() or 1
    return int(threads)


# ---------------------------------------------------------------------------------------- worker
def _timed(call, repeats: int, label: str, sync, wall: list, cpu: list) -> list:
    """Run ``call`` ``repeats`` times, appending wall and CPU seconds (device-synchronised)."""
    from tqdm import tqdm  # worker-only import, like the engine's

    outputs = []
    for _ in tqdm(range(repeats), desc=label, file=sys.stderr, leave=False):
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        outputs.append(call())
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return outputs


def _median_stages(timings: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in STAGES if any(k in t for t in timings)]
    keys += sorted({k for t in timings for k in t} - set(keys))
    return {k: statistics.median(t.get(k, 0.0) for t in timings) for k in keys}


def run_worker(args: argparse.Namespace, report=None) -> ConfigResult:
    """Measure one configuration in this process; ``report(result)`` gets the pair numbers early."""
    import torch
    from bench_configs import PAIR, QUERY, build, default_shared_dir, get_config
    from bench_memory import PeakMemory
    from bench_shapes import (
        end_to_end_records,
        forward_backward_floor,
        reference_pair,
        timed_cpu,
    )

    from pairx_plugin import PairX

    config = get_config(args.worker)
    size = args.size or config.size
    threads = thread_count(args.threads)
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    result = ConfigResult(
        name=config.name,
        model=config.model,
        weights=config.weights,
        size=size,
        layer=config.layer,
        device=str(device),
        mode=args.mode,
        threads=threads,
        repeats=args.repeats,
        query_repeats=args.query_repeats,
        warmup=args.warmup,
        k_lines=args.k_lines,
        k_colors=args.k_colors,
    )
    memory = PeakMemory(device)
    result.rss_scope = memory.scope

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    model, images = build(config, size, args.shared_dir or default_shared_dir())
    model = model.to(device)
    x = [images[i : i + 1].contiguous().to(device) for i in range(images.shape[0])]
    batch = {} if args.max_batch_images is None else {"max_batch_images": args.max_batch_images}
    engine = PairX(model, [config.layer], k_lines=args.k_lines, k_colors=args.k_colors, mode=args.mode, **batch)
    result.max_batch_images = engine.max_batch_images
    sync()
    result.setup_s = time.perf_counter() - start
    result.peak_rss_setup_mb = memory.peak_rss_mb()
    del images

    query, candidate = x[PAIR[0]], x[PAIR[1]]
    memory.reset()
    for _ in range(args.warmup):
        engine.explain_pair(query, candidate)
    outputs = _timed(
        lambda: engine.explain_pair(query, candidate),
        args.repeats,
        f"{config.name} pair",
        sync,
        result.pair_s,
        result.pair_cpu_s,
    )
    explained = outputs[-1]
    pair_stages = [out.timings for out in outputs]
    result.peak_rss_pair_mb = memory.peak_rss_mb()
    result.peak_gpu_pair_mb = memory.peak_gpu_mb()
    layer = explained.layers[config.layer]
    result.pair_match_count = layer.metrics.match_count
    result.pair_cosine = explained.cosine
    result.pair_median_s = statistics.median(result.pair_s)
    result.pair_cpu_median_s = statistics.median(result.pair_cpu_s)
    result.pair_stages_s = _median_stages(pair_stages)
    if report is not None:  # kept by the parent if the query phase dies (e.g. out of memory)
        report(ConfigResult.model_validate(result.model_dump()))

    q, cands = x[QUERY[0]], [x[i] for i in QUERY[1]]
    memory.reset()
    # top-5 query and the same five pairs, interleaved in this process, so the ratio sees the same load
    outputs = []
    for _ in range(args.query_repeats):
        outputs += _timed(
            lambda: engine.explain_query(q, cands),
            1,
            f"{config.name} top-5 query",
            sync,
            result.query_s,
            result.query_cpu_s,
        )
        _, five = timed_cpu(lambda: [engine.explain_pair(q, c) for c in cands], 1, sync)
        result.five_pairs_cpu_s += five
    query_stages = [out[0].timings for out in outputs]
    if result.five_pairs_cpu_s:
        result.five_pairs_cpu_median_s = statistics.median(result.five_pairs_cpu_s)
        result.query_vs_pairs = statistics.median(result.query_cpu_s) / result.five_pairs_cpu_median_s

    if args.floor_repeats:
        _, result.floor_cpu_s = forward_backward_floor(model, query, candidate, args.floor_repeats, sync)
        result.floor_cpu_median_s = statistics.median(result.floor_cpu_s)
        result.pair_floor_multiple = result.pair_cpu_median_s / result.floor_cpu_median_s
    result.engine_pairs_per_s = 1.0 / result.pair_cpu_median_s
    if args.e2e_repeats:
        _, result.e2e_cpu_s, n_records, result.e2e_shares = end_to_end_records(
            model,
            engine,
            config.layer,
            size,
            args.shared_dir or default_shared_dir(),
            args.e2e_repeats,
            sync,
            args.k_lines,
            args.k_colors,
            args.mode,
        )
        result.e2e_records_per_s = n_records / statistics.median(result.e2e_cpu_s)
        result.e2e_vs_engine = result.e2e_records_per_s / result.engine_pairs_per_s
    if args.reference is not None:
        _, result.reference_pair_cpu_s = reference_pair(
            args.reference, model, query, candidate, config.layer, args.repeats, sync, args.k_lines, args.k_colors
        )
        result.reference_pair_cpu_median_s = statistics.median(result.reference_pair_cpu_s)
        result.reference_speedup = result.reference_pair_cpu_median_s / result.pair_cpu_median_s
    if result.query_s:
        result.peak_rss_query_mb = memory.peak_rss_mb()
        result.peak_gpu_query_mb = memory.peak_gpu_mb()

    if result.query_s:
        result.query_median_s = statistics.median(result.query_s)
        result.query_cpu_median_s = statistics.median(result.query_cpu_s)
    result.query_stages_s = _median_stages(query_stages)
    return ConfigResult.model_validate(result.model_dump())


def worker_main(args: argparse.Namespace) -> int:
    def report(result: ConfigResult) -> None:
        print(RESULT_MARK + result.model_dump_json(), flush=True)

    report(run_worker(args, report=report))
    return 0


# ---------------------------------------------------------------------------------------- parent
def _worker_command(args: argparse.Namespace, name: str) -> list[str]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--repeats",
        str(args.repeats),
        "--query-repeats",
        str(args.query_repeats),
        "--warmup",
        str(args.warmup),
        "--threads",
        args.threads,
        "--device",
        args.device,
        "--mode",
        args.mode,
        "--k-lines",
        str(args.k_lines),
        "--k-colors",
        str(args.k_colors),
        "--e2e-repeats",
        str(args.e2e_repeats),
        "--floor-repeats",
        str(args.floor_repeats),
    ]
    if args.reference is not None:
        cmd += ["--reference", str(args.reference)]
    if args.size is not None:
        cmd += ["--size", str(args.size)]
    if args.max_batch_images is not None:
        cmd += ["--max-batch-images", str(args.max_batch_images)]
    if args.shared_dir is not None:
        cmd += ["--shared-dir", str(args.shared_dir)]
    return cmd


def run_config(args: argparse.Namespace, name: str) -> ConfigResult:
    """Run one configuration in a fresh process; a crash or timeout becomes the result's ``error``."""
    config = CONFIGS[name]
    placeholder = dict(
        name=name,
        model=config.model,
        weights=config.weights,
        size=args.size or config.size,
        layer=config.layer,
        device=args.device,
        mode=args.mode,
        threads=thread_count(args.threads),
        repeats=args.repeats,
        query_repeats=args.query_repeats,
        warmup=args.warmup,
        k_lines=args.k_lines,
        k_colors=args.k_colors,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        done = subprocess.run(
            _worker_command(args, name), stdout=subprocess.PIPE, stderr=None, text=True, env=env, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        return ConfigResult(**placeholder, error=f"timed out after {args.timeout} s")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result = ConfigResult.model_validate_json(line[len(RESULT_MARK) :])
            if done.returncode != 0:  # only the pair numbers made it out
                result.error = (
                    f"worker exited with code {done.returncode} during the top-5 query "
                    "(-9: killed, often out of memory); pair numbers kept"
                )
            return result
    tail = done.stdout.strip().splitlines()[-3:]
    return ConfigResult(
        **placeholder,
        error=f"worker exited with code {done.returncode} and no result "
        f"(see its stderr above) {' | '.join(tail)}".strip(),
    )


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: BenchReport) -> str:
    head = (
        f"PAIR-X engine benchmark - {report.date_utc} - {report.host} ({report.cpu}, {report.cpu_count} cores)"
        f" - torch {report.torch_version} - pairx_plugin {report.engine_revision}"
        f" - device {report.device} ({report.device_name}) - threads "
        f"{report.threads} - repeats {report.repeats} (runs column: timed pairs/queries) - mode {report.mode}"
        f" - load avg "
        f"{report.load_average_start[0]:.1f} -> {report.load_average_end[0]:.1f}"
    )
    gpu = report.device.startswith("cuda")
    cols = [
        "config",
        "layer",
        "size",
        "runs",
        "pair s (median)",
        "pair min-max",
        "pair CPU s",
        "top-5 query s",
        "query min-max",
        "query CPU s",
        "matches",
        "RSS pair MB",
        "RSS query MB",
        "RSS setup MB",
    ]
    if gpu:
        cols += ["GPU pair MB", "GPU query MB"]
    rows = []
    for r in report.results:
        if r.error and not r.pair_s:
            rows.append([r.name, r.layer, str(r.size), "-", "ERROR: " + r.error])
            continue
        query_range = f"{min(r.query_s):.3f}-{max(r.query_s):.3f}" if r.query_s else "-"
        row = [
            r.name,
            r.layer,
            str(r.size),
            f"{len(r.pair_s)}/{len(r.query_s)}",
            _fmt(r.pair_median_s),
            f"{min(r.pair_s):.3f}-{max(r.pair_s):.3f}",
            _fmt(r.pair_cpu_median_s),
            _fmt(r.query_median_s),
            query_range,
            _fmt(r.query_cpu_median_s),
            str(r.pair_match_count),
            _fmt(r.peak_rss_pair_mb, 0),
            _fmt(r.peak_rss_query_mb, 0),
            _fmt(r.peak_rss_setup_mb, 0),
        ]
        if gpu:
            row += [_fmt(r.peak_gpu_pair_mb, 0), _fmt(r.peak_gpu_query_mb, 0)]
        rows.append(row)
    stage_cols = ["config", "measure"] + list(STAGES) + ["total"]
    stage_rows = []
    for r in report.results:
        for label, stages in (("pair", r.pair_stages_s), ("top-5 query", r.query_stages_s)):
            if stages:
                stage_rows.append(
                    [r.name, label] + [_fmt(stages.get(s)) for s in STAGES] + [_fmt(sum(stages.values()))]
                )
    notes = [f"ERROR {r.name}: {r.error}" for r in report.results if r.error and r.pair_s]
    shape_cols = [
        "config",
        "floor CPU s",
        "pair / floor",
        "5 pairs CPU s",
        "top-5 query / 5 pairs",
        "engine pairs/s",
        "e2e records/s",
        "e2e / engine",
        "published pair CPU s",
        "speed-up",
    ]
    shape_rows = [
        [
            r.name,
            _fmt(r.floor_cpu_median_s),
            _fmt(r.pair_floor_multiple, 2),
            _fmt(r.five_pairs_cpu_median_s),
            _fmt(r.query_vs_pairs, 3),
            _fmt(r.engine_pairs_per_s, 2),
            _fmt(r.e2e_records_per_s, 2),
            _fmt(r.e2e_vs_engine, 2),
            _fmt(r.reference_pair_cpu_median_s),
            _fmt(r.reference_speedup, 2),
        ]
        for r in report.results
        if r.pair_s
    ]
    shares = [
        f"{r.name} explain_matches time shares: " + ", ".join(f"{k} {v:.0%}" for k, v in r.e2e_shares.items())
        for r in report.results
        if r.e2e_shares
    ]
    return "\n".join(
        [
            head,
            "",
            _grid(cols, rows),
            *notes,
            "",
            "seconds per stage (engine timings, medians):",
            _grid(stage_cols, stage_rows),
            "",
            "shapes users run (CPU seconds, medians; ratios measured in the same process):",
            _grid(shape_cols, shape_rows),
            *shares,
        ]
    )


def _grid(cols: list[str], rows: list[list[str]]) -> str:
    widths = [
        max([len(c)] + [len(r[i]) for r in rows if i < len(r) and len(r) == len(cols)]) for i, c in enumerate(cols)
    ]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths)), "-+-".join("-" * w for w in widths)]
    for r in rows:
        lines.append(" | ".join(v.ljust(w) for v, w in zip(r, widths)) if len(r) == len(cols) else " | ".join(r))
    return "\n".join(lines)


def engine_revision() -> str:
    """``git`` commit of the checkout, ``+dirty`` when ``pairx_plugin/`` has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "pairx_plugin"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False; run with --device cpu", file=sys.stderr)
        return 2
    load_start = list(os.getloadavg())
    revision = engine_revision()  # read before the runs: the code they import
    names = args.only or list(CONFIGS)
    results = [run_config(args, name) for name in names]
    report = BenchReport(
        date_utc=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        host=platform.node(),
        cpu=_cpu_name(),
        cpu_count=os.cpu_count() or 1,
        torch_version=torch.__version__,
        engine_revision=revision,
        device=args.device,
        device_name=torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        threads=args.threads,
        repeats=args.repeats,
        mode=args.mode,
        load_average_start=load_start,
        load_average_end=list(os.getloadavg()),
        results=results,
    )
    print(format_table(report), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.model_dump(), indent=2) + "\n")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
