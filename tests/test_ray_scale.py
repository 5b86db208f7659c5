"""Ray scale-out (adapters/pairx_ray): a local Ray with 2 workers explains the sea-turtle records exactly
as one process does, survives a killed worker without losing or doubling a record, and a re-run is all
cache hits. Slow: starts Ray and loads the model in every worker."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from pairx_ray import explain_on_ray

from pairx_plugin.artifacts.store import ArtifactStore, read_manifest
from pairx_plugin.config import PairXConfig
from pairx_plugin.errors import ConfigError, InvalidInputError
from pairx_plugin.hook import explain_matches
from pairx_plugin.images import FileImageSource
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD
from pairx_plugin.records import MatchRecord

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow
SIZE = 64
CONFIG = PairXConfig(k_colors=2, k_lines=5, top_k=2, device="cpu")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(seaturtle_dir: Path) -> FileImageSource:
    paths = {p.stem: p for p in sorted((seaturtle_dir / "images").glob("*/*.JPG"))}
    return FileImageSource(paths, SIZE, IMAGENET_MEAN, IMAGENET_STD)


@pytest.fixture(scope="module")
def records(source) -> list[MatchRecord]:
    """Every image queries the other three (rank 2 is beyond top_k), plus one duplicate pair."""
    ids = sorted(source.paths)
    out = [
        MatchRecord(query_id=q, candidate_id=c, rank=r, score=1.0 - r / 10)
        for q in ids
        for r, c in enumerate(x for x in ids if x != q)
    ]
    return [*out, out[0].model_copy()]


def _rounded(value: Any) -> Any:
    """Floats to 5 significant digits: workers may use another torch thread count (other float sums)."""
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _lines(root: Path, run: str) -> dict[int, tuple[str, dict]]:
    entries = read_manifest(root / "runs" / f"{run}.jsonl")
    indices = [e.index for e in entries]
    assert len(indices) == len(set(indices)), "a record appears twice in the manifest"
    return {e.index: (e.status, _rounded(e.record.model_dump(mode="json"))) for e in entries}


def test_two_workers_give_the_single_process_records(local_ray, source, records, tmp_path, lite0_imagenet):
    single = explain_matches(
        records=records,
        images=source,
        model=lite0_imagenet,
        config=CONFIG,
        store=ArtifactStore(tmp_path / "one"),
        progress=False,
        run_name="one",
    )
    seen_pids: set[int] = set()
    spread = explain_on_ray(
        records=records,
        images=source,
        model="builtin",
        config=CONFIG,
        store_root=tmp_path / "ray",
        workers=2,
        run_name="ray",
        progress=False,
        on_outcome=lambda outcome, pid: seen_pids.add(pid),
    )
    assert [r.explanation.artifact_id if r.explanation else None for r in spread] == [
        r.explanation.artifact_id if r.explanation else None for r in single
    ]
    dumped = [_rounded(r.model_dump(mode="json")) for r in spread]
    assert dumped == [_rounded(r.model_dump(mode="json")) for r in single]
    assert _lines(tmp_path / "ray", "ray") == _lines(tmp_path / "one", "one")
    statuses = [status for status, _ in _lines(tmp_path / "ray", "ray").values()]
    assert statuses.count("explained") == 8 and statuses.count("not_explained") == 4 and statuses.count("error") == 1
    assert len(seen_pids - {os.getpid()}) == 2  # both workers did work


def test_a_killed_worker_loses_and_doubles_nothing_and_a_rerun_is_all_hits(
    local_ray, source, records, tmp_path, caplog
):
    killed: list[int] = []

    def kill_once(outcome, pid: int) -> None:
        if not killed and pid > 0 and pid != os.getpid():
            killed.append(pid)  # a moment later it is busy with its next query group
            threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()

    def explain(run_name: str, **extra):
        return explain_on_ray(
            records=records,
            images=source,
            model="builtin",
            config=CONFIG,
            store_root=tmp_path,
            workers=2,
            run_name=run_name,
            progress=False,
            **extra,
        )

    out = explain("crash", on_outcome=kill_once)
    assert killed
    assert any("a Ray worker died while explaining query" in r.getMessage() for r in caplog.records)  # it was busy
    lines = _lines(tmp_path, "crash")
    assert sorted(lines) == list(range(len(records)))
    assert [r.pair for r in out] == [r.pair for r in records]
    assert sum(status == "explained" for status, _ in lines.values()) == 8
    rerun = explain("again")
    explained = [r for r in rerun if r.explanation is not None]
    assert len(explained) == 8 and all(r.explanation.cache_hit for r in explained)
    assert [r.explanation.artifact_id for r in explained] == [
        r.explanation.artifact_id for r in out if r.explanation is not None
    ]


def test_bad_input_is_named(local_ray, source, records, tmp_path, lite0_imagenet):
    with pytest.raises(InvalidInputError, match="a live model is not sent"):
        explain_on_ray(records=records, images=source, model=lite0_imagenet, config=CONFIG, store_root=tmp_path)
    with pytest.raises(InvalidInputError, match="workers must be an integer >= 1"):
        explain_on_ray(records=records, images=source, model="builtin", config=CONFIG, store_root=tmp_path, workers=0)
    with pytest.raises(ConfigError, match="a Ray worker could not start.*no_such_module"):
        explain_on_ray(
            records=records,
            images=source,
            model="no_such_module:build",
            config=CONFIG,
            store_root=tmp_path,
            workers=1,
            progress=False,
        )
