"""Run isolation and crash safety of the store (issue 11, items 2 and 7).

* Default run names are unique across processes; a manifest is created exclusively, so an explicit
  name that is taken is an error before any work and two runs never share (or interleave) a manifest.
* A writer killed with SIGKILL at any point leaves the store recoverable: the next store opened on
  it removes the dead writer's temporary files, and a re-run completes every artifact.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pairx_plugin.artifacts.store import (
    _TEMP_PATTERN,
    ArtifactStore,
    atomic_write,
    new_run_name,
    read_manifest,
    sweep_temporary_files,
)
from pairx_plugin.errors import ArtifactError

WORKER = Path(__file__).with_name("store_worker.py")
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _start(store: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(store), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _wait_ready(process: subprocess.Popen[str]) -> None:
    line = process.stdout.readline() if process.stdout else ""
    assert line.strip() == "ready", (line, process.stderr.read() if process.stderr else "")


# --------------------------------------------------------------------------- run names and manifests


def test_new_run_names_are_unique_across_threads_and_carry_the_pid():
    names: list[str] = []
    threads = [threading.Thread(target=lambda: names.extend(new_run_name() for _ in range(200))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 800
    assert all(name.startswith("run-") and f"-p{os.getpid()}-" in name and len(name) <= 100 for name in names)


def test_a_taken_run_name_is_an_error_before_any_work(tmp_path):
    from store_worker import SIZE, records

    from benchmarks.reference_models import SeededImages, tiny_cnn
    from pairx_plugin.config import PairXConfig
    from pairx_plugin.hook import explain_matches

    model = tiny_cnn()
    store = ArtifactStore(tmp_path)
    with store.open_run("nightly"):
        pass
    loads: list[str] = []

    class CountingImages(SeededImages):
        def load(self, image_id):
            loads.append(image_id)
            return super().load(image_id)

    before = (tmp_path / "runs" / "nightly.jsonl").read_bytes()
    with pytest.raises(ArtifactError, match=r"run manifest .*nightly\.jsonl' already exists.*choose another run name"):
        explain_matches(
            records=records(2),
            images=CountingImages(SIZE),
            model=model,
            config=PairXConfig(top_k=2),
            store=store,
            progress=False,
            run_name="nightly",
        )
    assert loads == [] and not (tmp_path / "artifacts").exists()  # no work done
    assert (tmp_path / "runs" / "nightly.jsonl").read_bytes() == before  # the other run's manifest untouched
    assert store.remove_run("nightly") and not store.remove_run("nightly")
    with store.open_run("nightly"):
        pass  # the name is free again


@pytest.mark.slow
def test_two_processes_with_default_names_into_one_store_both_complete(tmp_path):
    """Started together (released by one file): two manifests, each whole and only its own."""
    store, go = tmp_path / "store", tmp_path / "go"
    workers = [_start(store, "--pairs", "4", "--go", str(go)) for _ in range(2)]
    for worker in workers:
        _wait_ready(worker)
    go.touch()
    outcomes = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert all(o["statuses"] == ["explained"] * 4 for o in outcomes)
    manifests = sorted((store / "runs").glob("*.jsonl"))
    assert len(manifests) == 2
    for manifest in manifests:
        entries = read_manifest(manifest)  # every line valid: nothing interleaved
        assert [e.index for e in entries] == [0, 1, 2, 3]
        assert {e.run_name for e in entries} == {manifest.stem} and {e.status for e in entries} == {"explained"}


@pytest.mark.slow
def test_two_processes_with_the_same_explicit_name_one_wins_the_other_gets_a_clear_error(tmp_path):
    store, go = tmp_path / "store", tmp_path / "go"
    workers = [_start(store, "--pairs", "2", "--go", str(go), "--run-name", "shared") for _ in range(2)]
    for worker in workers:
        _wait_ready(worker)
    go.touch()
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=600)
        results.append((worker.returncode, json.loads(out.strip().splitlines()[-1])))
    assert sorted(code for code, _ in results) == [0, 2]
    loser = next(result for code, result in results if code == 2)
    assert "ArtifactError" in loser["error"] and "shared.jsonl' already exists" in loser["error"]
    assert [e.index for e in read_manifest(store / "runs" / "shared.jsonl")] == [0, 1]


# --------------------------------------------------------------------------- temporary files of dead writers


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_opening_a_store_sweeps_temporary_files_of_dead_writers_only(tmp_path):
    directory = tmp_path / "artifacts" / "ab" / ("ab" + "0" * 62)
    directory.mkdir(parents=True)
    dead = directory / f".composite.png.{_dead_pid()}.0123456789ab.tmp"
    alive = directory / f".composite.png.{os.getpid()}.0123456789ab.tmp"
    old_alive = directory / f".heatmap.png.{os.getpid()}.ba9876543210.tmp"
    legacy_new = directory / ".only_lines.png.0123456789ab.tmp"  # written before pids were embedded
    legacy_old = directory / ".only_colors.png.0123456789ab.tmp"
    unrelated = directory / ".notes.tmp"
    for path in (dead, alive, old_alive, legacy_new, legacy_old, unrelated):
        path.write_bytes(b"partial")
    a_day_ago = time.time() - 2 * 24 * 3600
    for path in (old_alive, legacy_old):
        os.utime(path, (a_day_ago, a_day_ago))
    assert _TEMP_PATTERN.match(dead.name) and not _TEMP_PATTERN.match(legacy_new.name)
    removed = sweep_temporary_files(tmp_path)
    assert sorted(removed) == sorted([dead, old_alive, legacy_old])
    assert alive.exists() and legacy_new.exists() and unrelated.exists()


def test_atomic_write_names_its_temporary_file_with_its_pid(tmp_path, monkeypatch):
    seen: list[str] = []
    real_replace = os.replace

    def spy(source, target):
        seen.append(Path(source).name)
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write(tmp_path / "x.json", b"{}")
    match = _TEMP_PATTERN.match(seen[0])
    assert match and match.group("name") == "x.json" and int(match.group("pid")) == os.getpid()


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_gives_a_complete_store(tmp_path):
    """Ten writers killed at random moments of their run; a re-run completes the store, no .tmp is left."""
    import jsonschema

    from pairx_plugin.artifacts.schema import ExplanationArtifact, json_schemas

    # how long one uninterrupted run lasts after "ready" on this machine right now
    calibration = _start(tmp_path / "calibration", "--pairs", "4")
    _wait_ready(calibration)
    started = time.monotonic()
    calibration.communicate(timeout=600)
    run_seconds = time.monotonic() - started
    assert calibration.returncode == 0

    store_dir = tmp_path / "store"
    rng = random.Random(11)
    rounds = 10
    killed_while_running = 0
    for offset in range(rounds):
        # every round writes its own images and artifacts (offset), so no round finds earlier work cached
        worker = _start(store_dir, "--pairs", "4", "--offsets", str(offset))
        _wait_ready(worker)
        time.sleep(rng.uniform(0.02, 0.9) * run_seconds)
        if worker.poll() is None:
            killed_while_running += 1
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=60)
        for manifest in (store_dir / "runs").glob("*.jsonl") if (store_dir / "runs").is_dir() else []:
            read_manifest(manifest)  # a killed run leaves whole lines only
    assert killed_while_running >= 7, (killed_while_running, run_seconds)  # the kills landed inside the runs
    every_round = ",".join(str(k) for k in range(rounds))
    worker = _start(store_dir, "--pairs", "4", "--offsets", every_round)
    _wait_ready(worker)
    out, err = worker.communicate(timeout=900)
    assert worker.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["statuses"] == ["explained"] * 4 * rounds
    leftovers = [p for p in store_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    store = ArtifactStore(store_dir)
    ids = list(store.artifact_ids())
    assert len(ids) == 4 * rounds and all(store.has(identifier) for identifier in ids)
    schema = json_schemas()["explanation_artifact.schema.json"]
    for identifier in ids:
        document = json.loads(store.json_path(identifier).read_text(encoding="utf-8"))
        jsonschema.validate(document, schema)
        ExplanationArtifact.model_validate(document)
