"""The explain_matches hook: the contract, the runner's guarantees, and the real acceptance run.

Unit tests drive the runner with ``FakeEngine`` (results built from the golden PAIR-X arrays, with
injected failures and CUDA out-of-memory); the acceptance tests run the real engine and the real
ImageNet EfficientNet-Lite0 on the sea-turtle images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pairx_plugin.artifacts.compact import materialize
from pairx_plugin.artifacts.store import ArtifactStore, read_manifest
from pairx_plugin.config import ALL_PANELS, PairXConfig
from pairx_plugin.engine.results import LayerExplanation, Match, PairExplanation, PairMetrics
from pairx_plugin.errors import ConfigError, InvalidInputError, StepError
from pairx_plugin.hook import explain_matches
from pairx_plugin.images import LoadedImage
from pairx_plugin.records import MatchRecord

LAYER = "blocks.3"
FAST = {"render": ["display"], "k_colors": 3, "k_lines": 20}  # rendering the clean images only: fast


# --------------------------------------------------------------------------- helpers (shared with other test files)


def golden_pair(golden_dir: Path, k_colors: int = 3) -> tuple[PairExplanation, LoadedImage, LoadedImage]:
    """The golden p12 pair as an engine result plus the two images it was computed from."""
    z = np.load(golden_dir / "effnet_lite0_224.npz")
    matches = [
        Match(
            query_cell=tuple(int(v) for v in z["p12__match_coord0"][i]),
            candidate_cell=tuple(int(v) for v in z["p12__match_coord1"][i]),
            query_xy=tuple(float(v) for v in z["p12__match_kp0"][i]),
            candidate_xy=tuple(float(v) for v in z["p12__match_kp1"][i]),
            relevance=float(z["p12__match_relevance"][i]),
            distance=float(z["p12__match_distance"][i]),
        )
        for i in range(len(z["p12__match_relevance"]))
    ]
    layer = LayerExplanation(
        key=LAYER,
        relevance_query=z["p12__ir0"],
        relevance_candidate=z["p12__ir1"],
        matches=matches,
        pixel_relevance_query=z["p12__pix0"][:k_colors],
        pixel_relevance_candidate=z["p12__pix1"][:k_colors],
        metrics=PairMetrics(
            irm=None, mc=float(np.mean(z["p12__match_relevance"])), inlier_ratio=None, match_count=len(matches)
        ),
    )
    pair = PairExplanation(
        cosine=float(z["p12__cos"]),
        layers={LAYER: layer},
        query_size=(224, 224),
        candidate_size=(224, 224),
        mode="parity",
        backend="zennit-lrp",
    )
    query = LoadedImage(tensor=torch.from_numpy(z["p12__input0"].copy()), display=z["p12__img_np0"].copy())
    candidate = LoadedImage(tensor=torch.from_numpy(z["p12__input1"].copy()), display=z["p12__img_np1"].copy())
    return pair, query, candidate


class ArraySource:
    """Image ids -> distinct images: the golden candidate image shifted by a per-id marker value.

    ``marker(tensor)`` recovers the id's number, so a fake engine can fail chosen candidates.
    Ids listed in ``broken`` raise like an unreadable file; unknown ids raise like a missing one.
    """

    def __init__(self, base: LoadedImage, ids: list[str], broken: tuple[str, ...] = ()) -> None:
        self.base = base
        self.numbers = {identifier: number for number, identifier in enumerate(ids, start=1)}
        self.broken = set(broken)
        self.loads: list[str] = []

    def load(self, image_id: str) -> LoadedImage:
        self.loads.append(image_id)
        if image_id in self.broken:
            raise InvalidInputError(f"image {image_id!r}: not a readable image (injected)")
        if image_id not in self.numbers:
            raise KeyError(f"no image with id {image_id!r}")
        number = self.numbers[image_id]
        return LoadedImage(tensor=self.base.tensor + number * 1e-3, display=self.base.display, sha256=None)

    def marker(self, tensor: torch.Tensor) -> int:
        return int(round(float(tensor[0, 0, 0, 0] - self.base.tensor[0, 0, 0, 0]) * 1000))


class FakeEngine:
    """Stands in for ``PairX``: returns the golden pair, fails marked candidates, injects OOM."""

    layer_keys = [LAYER]

    def __init__(self, pair, source: ArraySource, *, fail=(), oom_above: int | None = None, oom_always=()):
        self.pair, self.source = pair, source
        self.fail = {source.numbers[i] for i in fail}
        self.oom_always = {source.numbers[i] for i in oom_always}
        self.oom_above = oom_above
        self.calls: list[list[int]] = []

    def explain_query(self, query, candidates, *, return_exceptions=False):
        markers = [self.source.marker(c) for c in candidates]
        self.calls.append(markers)
        assert return_exceptions is True  # the hook must never let one pair raise for all
        if self.oom_above is not None and len(candidates) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        if self.oom_always & set(markers):
            raise torch.OutOfMemoryError("CUDA out of memory (injected, every size)")
        return [InvalidInputError(f"candidate {m} failed (injected)") if m in self.fail else self.pair for m in markers]


def make_records(queries: list[str], candidates: list[str], score0: float = 1.0) -> list[MatchRecord]:
    return [
        MatchRecord(query_id=q, candidate_id=c, rank=rank, score=score0 - 0.1 * rank, extras={"n": rank})
        for q in queries
        for rank, c in enumerate(candidates)
    ]


@pytest.fixture()
def golden(golden_dir):
    return golden_pair(golden_dir)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


# --------------------------------------------------------------------------- the contract


def test_the_hook_is_keyword_only():
    with pytest.raises(TypeError):
        explain_matches([], None, None, PairXConfig())  # type: ignore[misc]


# --------------------------------------------------------------------------- whole-call checks


def test_empty_and_disabled_runs_do_no_work(tmp_path, golden, model):
    pair, _, base = golden
    source = ArraySource(base, ["q", "a"])
    engine = FakeEngine(pair, source)
    store = ArtifactStore(tmp_path)
    assert explain_matches(records=[], images=source, model=model, config=PairXConfig(), store=store) == []
    records = make_records(["q"], ["a"])
    out = explain_matches(
        records=records, images=source, model=model, engine=engine, store=store, config=PairXConfig(enabled=False)
    )
    assert out == records and out[0] is not records[0]
    assert engine.calls == [] and source.loads == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"records": "q,a"}, InvalidInputError, "records must be a sequence"),
        (
            {"records": [{"query_id": "q", "candidate_id": "a", "rank": -1, "score": 1}]},
            InvalidInputError,
            r"records\[0\] is not a valid MatchRecord: rank",
        ),
        ({"records": [("q", "a")]}, InvalidInputError, r"records\[0\] must be a MatchRecord"),
        ({"images": object()}, InvalidInputError, "images must have a load"),
        ({"store": None}, ConfigError, "pairx.output_dir: not set"),
        ({"run_name": "../escape"}, InvalidInputError, "run name '../escape' is not a safe file name"),
        ({"config": {"k_lines": 0}}, ConfigError, "pairx.k_lines: must be >= 1"),
        ({"config": PairXConfig(device="cuda:3")}, ConfigError, "pairx.device"),
    ],
)
def test_problems_of_the_whole_call_raise_before_any_work(tmp_path, golden, model, kwargs, error, fragment):
    pair, _, base = golden
    source = ArraySource(base, ["q", "a"])
    engine = FakeEngine(pair, source)
    arguments = dict(
        records=make_records(["q"], ["a"]),
        images=source,
        model=model,
        config=PairXConfig(**FAST),
        store=ArtifactStore(tmp_path),
        engine=engine,
        progress=False,
    )
    arguments.update(kwargs)
    with pytest.raises(error, match=fragment):
        explain_matches(**arguments)
    assert engine.calls == []


# --------------------------------------------------------------------------- the runner with a fake engine


def test_each_query_runs_once_in_chunks_and_order_scores_ranks_are_kept(tmp_path, golden, model):
    pair, _, base = golden
    ids = ["q1", "q2", "c1", "c2", "c3", "c4", "c5"]
    source = ArraySource(base, ids)
    engine = FakeEngine(pair, source)
    records = make_records(["q1"], ["c1", "c2", "c3", "c4", "c5"]) + make_records(
        ["q2"], ["c1", "c2"], score0=-math.inf
    )
    interleaved = [records[i] for i in (0, 5, 1, 6, 2, 3, 4)]  # queries mixed: grouping must not reorder
    before = [r.model_dump() for r in interleaved]
    config = PairXConfig(**FAST, max_batch_images=2)
    out = explain_matches(
        records=interleaved,
        images=source,
        model=model,
        config=config,
        store=ArtifactStore(tmp_path),
        engine=engine,
        progress=False,
        run_name="r1",
    )
    assert [r.model_dump() for r in interleaved] == before  # inputs untouched
    assert [(r.pair, r.rank) for r in out] == [(r.pair, r.rank) for r in interleaved]
    for given, got in zip(interleaved, out):
        assert got is not given and got.explanation_error is None and got.explanation is not None
        assert got.score == given.score or (math.isinf(got.score) and got.score == given.score)
    # chunks of at most 2 candidates; query q1's candidates never mixed with q2's
    assert all(1 <= len(call) <= 2 for call in engine.calls)
    assert sorted(m for call in engine.calls for m in call) == sorted(
        [source.numbers[c] for c in ("c1", "c2", "c3", "c4", "c5", "c1", "c2")]
    )
    assert source.loads.count("q1") == 1 and source.loads.count("c1") == 1  # images cached for the run


def test_an_error_raised_for_a_whole_chunk_fails_only_that_chunk(tmp_path, golden, model, caplog):
    """Out-of-memory halving is the engine's job; what still escapes it costs only that chunk's records."""
    pair, _, base = golden
    candidates = ["c0", "c1", "c2", "c3"]
    source = ArraySource(base, ["q", *candidates])
    engine = FakeEngine(pair, source, oom_always=("c2",))
    with caplog.at_level("DEBUG", logger="pairx_plugin"):
        out = explain_matches(
            records=make_records(["q"], candidates),
            images=source,
            model=model,
            config=PairXConfig(**FAST, max_batch_images=2),
            store=ArtifactStore(tmp_path),
            engine=engine,
            progress=False,
        )
    failed = [r for r in out if r.explanation_error is not None]
    assert [r.candidate_id for r in failed] == ["c2", "c3"]  # the chunk [c2, c3]; [c0, c1] is explained
    assert {r.explanation_error.type for r in failed} == {"OutOfMemoryError"}
    assert {r.explanation_error.stage for r in failed} == {"forward"}
    assert [len(call) for call in engine.calls] == [2, 2]
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and r.name.startswith("pairx_plugin")]
    debugs = [r for r in caplog.records if r.levelname == "DEBUG" and r.exc_info]
    assert len(warnings) == 2 and all("\n" not in r.getMessage() for r in warnings)
    assert "'c2'" in warnings[0].getMessage() and "OutOfMemoryError" in warnings[0].getMessage()
    assert len(debugs) == 2 and debugs[0].exc_info[0] is torch.OutOfMemoryError


def test_a_raised_error_naming_one_candidate_costs_only_that_record(tmp_path, golden, model):
    """Failure context comes from PairXError's declared fields: candidate_index fails one record, is_query all."""
    pair, _, base = golden
    candidates = ["c0", "c1", "c2"]
    source = ArraySource(base, ["q", *candidates])

    class RaisingEngine(FakeEngine):
        def __init__(self, *args, culprit: str, is_query: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.culprit, self.is_query = source.numbers[culprit], is_query

        def explain_query(self, query, candidates, *, return_exceptions=False):
            markers = [self.source.marker(c) for c in candidates]
            if self.culprit in markers:
                self.calls.append(markers)
                raise StepError(
                    "RuntimeError: bad input (injected)",
                    stage="relevance",
                    candidate_index=markers.index(self.culprit),
                    is_query=self.is_query,
                )
            return super().explain_query(query, candidates, return_exceptions=return_exceptions)

    for is_query, expected in ((False, ["c1"]), (True, ["c0", "c1", "c2"])):
        engine = RaisingEngine(pair, source, culprit="c1", is_query=is_query)
        out = explain_matches(
            records=make_records(["q"], candidates),
            images=source,
            model=model,
            config=PairXConfig(**FAST, max_batch_images=3),
            store=ArtifactStore(tmp_path / str(is_query)),
            engine=engine,
            progress=False,
        )
        failed = [r for r in out if r.explanation_error is not None]
        assert [r.candidate_id for r in failed] == expected
        assert {r.explanation_error.stage for r in failed} == {"relevance"}
        assert all(r.explanation is not None for r in out if r.candidate_id not in expected)


def test_failures_cost_only_their_records(tmp_path, golden, model):
    pair, _, base = golden
    source = ArraySource(base, ["q", "ok1", "bad_pair", "ok2", "broken", "lonely_q"], broken=("broken",))
    engine = FakeEngine(pair, source, fail=("bad_pair",))
    records = make_records(["q"], ["ok1", "bad_pair", "missing", "broken", "ok2"])
    records.append(records[0].model_copy(update={"score": 0.123}))  # duplicate pair
    records += make_records(["missing_query"], ["ok1"])
    records.append(MatchRecord(query_id="q", candidate_id="far", rank=9, score=0.01))  # outside top_k
    out = explain_matches(
        records=records,
        images=source,
        model=model,
        config=PairXConfig(**FAST, top_k=5),
        store=ArtifactStore(tmp_path),
        engine=engine,
        progress=False,
        run_name="mixed",
    )
    outcome = {(r.query_id, r.candidate_id, r.score): r for r in out}
    assert len(out) == len(records)
    for given, got in zip(records, out):
        assert (got.pair, got.rank, got.score) == (given.pair, given.rank, given.score)
    errors = {(r.candidate_id, r.score): r.explanation_error for r in out if r.explanation_error}
    assert errors[("bad_pair", records[1].score)].type == "InvalidInputError"
    assert (
        errors[("missing", records[2].score)].stage == "load"
        and errors[("missing", records[2].score)].type == "KeyError"
    )
    assert (
        errors[("broken", records[3].score)].stage == "load"
        and "not a readable image" in errors[("broken", records[3].score)].message
    )
    assert "duplicate record" in errors[("ok1", 0.123)].message
    assert errors[("ok1", records[6].score)].stage == "load"  # its query image is missing
    assert outcome[("q", "ok1", records[0].score)].explanation is not None
    assert outcome[("q", "ok2", records[4].score)].explanation is not None
    far = out[-1]
    assert far.explanation is None and far.explanation_error is None
    manifest = read_manifest(tmp_path / "runs" / "mixed.jsonl")
    assert sorted(e.index for e in manifest) == list(range(len(records)))
    status = {e.index: e.status for e in manifest}
    assert status[0] == "explained" and status[1] == "error" and status[len(records) - 1] == "not_explained"


def test_a_store_hit_skips_the_engine(tmp_path, golden, model):
    pair, _, base = golden
    source = ArraySource(base, ["q", "a", "b"])
    store = ArtifactStore(tmp_path)
    config = PairXConfig(**FAST)
    first_engine = FakeEngine(pair, source)
    first = explain_matches(
        records=make_records(["q"], ["a", "b"]),
        images=source,
        model=model,
        config=config,
        store=store,
        engine=first_engine,
        progress=False,
    )
    assert len(first_engine.calls) == 1 and not any(r.explanation.cache_hit for r in first)
    second_engine = FakeEngine(pair, source)
    second = explain_matches(
        records=make_records(["q"], ["a", "b"]),
        images=source,
        model=model,
        config=config,
        store=store,
        engine=second_engine,
        progress=False,
    )
    assert second_engine.calls == [] and all(r.explanation.cache_hit for r in second)
    assert [r.explanation.artifact_id for r in first] == [r.explanation.artifact_id for r in second]
    # a setting that changes the artifact is a miss
    third_engine = FakeEngine(pair, source)
    explain_matches(
        records=make_records(["q"], ["a"]),
        images=source,
        model=model,
        config=config.model_copy(update={"k_lines": 5}),
        store=store,
        engine=third_engine,
        progress=False,
    )
    assert len(third_engine.calls) == 1


def test_store_failure_is_recorded_on_its_record(tmp_path, golden, model, monkeypatch):
    import errno

    import pairx_plugin.artifacts.store as store_module

    pair, _, base = golden
    source = ArraySource(base, ["q", "a", "b", "c"])
    real_write = store_module._write_bytes
    calls = {"n": 0}

    def disk_fills_up(fd, data):
        calls["n"] += 1
        # the first artifact fits (2 shared display images, 3 display PNGs, pair_data.npz, the JSON),
        # then the disk is full
        if calls["n"] > 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(store_module, "_write_bytes", disk_fills_up)
    store = ArtifactStore(tmp_path)
    out = explain_matches(
        records=make_records(["q"], ["a", "b", "c"]),
        images=source,
        model=model,
        config=PairXConfig(**FAST),
        store=store,
        engine=FakeEngine(pair, source),
        progress=False,
    )
    assert out[0].explanation is not None and store.has(out[0].explanation.artifact_id)
    for record in out[1:]:
        assert record.explanation_error.stage == "store" and record.explanation_error.type == "ArtifactError"
        assert (
            "No space left on device" in record.explanation_error.message
            and str(tmp_path) in record.explanation_error.message
        )
    visible = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert not [p for p in visible if p.name.startswith(".")]  # no temporary file left
    assert len([p for p in visible if p.name == "explanation.json"]) == 1


def test_unwritable_store_directory_is_recorded_on_each_record(tmp_path, golden, model):
    pair, _, base = golden
    source = ArraySource(base, ["q", "a"])
    store = ArtifactStore(tmp_path / "store")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "artifacts").write_text("a file where the artifacts directory should be")
    out = explain_matches(
        records=make_records(["q"], ["a"]),
        images=source,
        model=model,
        config=PairXConfig(**FAST),
        store=store,
        engine=FakeEngine(pair, source),
        progress=False,
    )
    error = out[0].explanation_error
    assert error.stage == "store" and error.type == "ArtifactError"
    assert str(tmp_path / "store" / "artifacts") in error.message and "writable output_dir" in error.message


def test_hostile_ids_are_stored_safely(tmp_path, golden, model):
    pair, _, base = golden
    hostile = ["../../x", "y" * 10_000, "ünïcødé/鯨 ☃", "nul\x00byte", "/etc/passwd", "C:\\x\\..\\y"]
    source = ArraySource(base, hostile)
    out = explain_matches(
        records=make_records([hostile[0]], hostile[1:]),
        images=source,
        model=model,
        config=PairXConfig(**FAST),
        store=ArtifactStore(tmp_path / "store"),
        engine=FakeEngine(pair, source),
        progress=False,
        run_name="hostile",
    )
    assert all(r.explanation is not None for r in out)
    root = (tmp_path / "store").resolve()
    for path in tmp_path.rglob("*"):
        assert path.resolve().is_relative_to(root) or path == tmp_path / "store"
        assert len(path.name) <= 100 and path.name.isascii() and "\x00" not in path.name
    entries = read_manifest(tmp_path / "store" / "runs" / "hostile.jsonl")
    assert {e.record.candidate_id for e in entries} == set(hostile[1:])
    store = ArtifactStore(tmp_path / "store")
    for record in out:
        artifact = store.load(record.explanation.artifact_id)
        assert artifact.query_id == "../../x" and artifact.candidate_id in hostile


# --------------------------------------------------------------------------- acceptance: the real engine


def _flip(image: LoadedImage) -> LoadedImage:
    return LoadedImage(
        tensor=image.tensor.flip(-1).contiguous(), display=np.ascontiguousarray(image.display[:, ::-1]), sha256=None
    )


class TurtleSource:
    """The four sea-turtle images and their horizontal flips under arbitrary (hostile) ids."""

    def __init__(self, seaturtle_dir: Path, broken_file: Path, mapping: dict[str, tuple[str, bool]]):
        from pairx_plugin.images import FileImageSource
        from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

        files = {
            name: seaturtle_dir / "images" / f"identity_{ident}" / f"{name}.JPG"
            for name, ident in [("image_1", "a"), ("image_2", "a"), ("image_3", "b"), ("image_4", "b")]
        }
        files["broken"] = broken_file
        self.files = FileImageSource({k: str(v) for k, v in files.items()}, 224, IMAGENET_MEAN, IMAGENET_STD)
        self.mapping = mapping

    def load(self, image_id: str) -> LoadedImage:
        if image_id == "exploding candidate":
            raise RuntimeError("the host's image service is down (injected)")
        name, flipped = self.mapping[image_id]  # KeyError for an id the host has no image for
        image = self.files.load(name)
        return _flip(image) if flipped else image


HOSTILE = ["../../x", "z" * 10_240, "ウミガメ ü", "nul\x00id"]


@pytest.fixture(scope="module")
def turtle_run(tmp_path_factory, seaturtle_dir, lite0_imagenet):
    """3 queries x 5 candidates plus bad records: first interrupted after N artifacts, then re-run."""
    from pairx_plugin.artifacts.store import ArtifactStore

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("turtle_run")
    broken = tmp / "truncated.jpg"
    broken.write_bytes((seaturtle_dir / "images" / "identity_a" / "image_1.JPG").read_bytes()[:600])
    mapping = {
        HOSTILE[0]: ("image_1", False),
        "q2": ("image_3", False),
        HOSTILE[1]: ("image_2", True),
        "c_img2": ("image_2", False),
        "c_img3f": ("image_3", True),
        "c_img4": ("image_4", False),
        HOSTILE[2]: ("image_1", True),
        HOSTILE[3]: ("image_4", True),
        "c_img1": ("image_1", False),
        "c_img3": ("image_3", False),
        "unreadable": ("broken", False),
    }
    queries = {
        HOSTILE[0]: ["c_img2", "c_img3f", "c_img4", HOSTILE[2], HOSTILE[3]],
        "q2": ["c_img1", "c_img2", "c_img4", HOSTILE[2], HOSTILE[3]],
        HOSTILE[1]: ["c_img1", "c_img3", "c_img3f", "c_img4", "c_img2"],
    }
    records = []
    for q, cands in queries.items():
        for rank, c in enumerate(cands):
            records.append(
                MatchRecord(
                    query_id=q,
                    candidate_id=c,
                    rank=rank,
                    score=0.9 - 0.05 * rank,
                    query_label="a",
                    candidate_label=c[-1],
                    extras={"source": "test"},
                )
            )
    bad = [
        MatchRecord(query_id="q2", candidate_id="no such image", rank=5, score=0.3),
        MatchRecord(query_id="q2", candidate_id="unreadable", rank=6, score=float("-inf")),
        MatchRecord(query_id=HOSTILE[0], candidate_id="exploding candidate", rank=5, score=float("nan")),
        records[1].model_copy(update={"score": 0.0}),  # duplicate (query, candidate)
        MatchRecord(query_id="q2", candidate_id="c_img3", rank=12, score=0.01),  # beyond top_k
    ]
    records = [bad[0], *records[:7], bad[1], bad[3], *records[7:12], bad[2], *records[12:], bad[4]]
    config = PairXConfig(layer_keys=[LAYER], top_k=7, k_lines=20, k_colors=3, max_batch_images=8)
    source = TurtleSource(seaturtle_dir, broken, mapping)
    interrupt_after = 4

    class InterruptingStore(ArtifactStore):
        writes = 0

        def write(self, artifact, blobs):
            if InterruptingStore.writes == interrupt_after:
                raise KeyboardInterrupt  # the user pressed Ctrl-C while the 5th artifact was due
            document = super().write(artifact, blobs)
            InterruptingStore.writes += 1
            return document

    with pytest.raises(KeyboardInterrupt):
        explain_matches(
            records=records,
            images=source,
            model=lite0_imagenet,
            config=config,
            store=InterruptingStore(tmp / "store"),
            progress=False,
            run_name="first",
        )
    store = ArtifactStore(tmp / "store")
    complete_after_interrupt = [i for i in store.artifact_ids() if store.has(i)]
    state_before = {k: v.clone() for k, v in lite0_imagenet.state_dict().items()}
    training = lite0_imagenet.training
    out = explain_matches(
        records=records,
        images=source,
        model=lite0_imagenet,
        config=config,
        store=store,
        progress=False,
        run_name="second",
    )
    model_untouched = lite0_imagenet.training == training and all(
        torch.equal(v, state_before[k]) for k, v in lite0_imagenet.state_dict().items()
    )
    return {
        "records": records,
        "out": out,
        "store": store,
        "bad": bad,
        "dir": tmp / "store",
        "complete_after_interrupt": complete_after_interrupt,
        "interrupt_after": interrupt_after,
        "model_untouched": model_untouched,
    }


@pytest.mark.slow
def test_acceptance_every_record_back_with_artifact_or_error(turtle_run):
    import jsonschema

    from pairx_plugin.artifacts.schema import json_schemas

    records, out, store = turtle_run["records"], turtle_run["out"], turtle_run["store"]
    schema = json_schemas()["explanation_artifact.schema.json"]
    assert len(out) == len(records)
    bad = turtle_run["bad"]
    bad_positions = {i for i, r in enumerate(records) if any(r is b for b in bad[:4])}
    explained = 0
    for index, (given, got) in enumerate(zip(records, out)):
        assert (got.pair, got.rank, got.extras) == (given.pair, given.rank, given.extras)
        assert got.score == given.score or (math.isnan(got.score) and math.isnan(given.score))
        if index in bad_positions:
            assert got.explanation is None and got.explanation_error is not None, index
            continue
        if given.rank >= 7:
            assert got.explanation is None and got.explanation_error is None
            continue
        explained += 1
        assert got.explanation_error is None, got.explanation_error
        ref = got.explanation
        assert store.has(ref.artifact_id)
        document = json.loads((turtle_run["dir"] / ref.json_path).read_text(encoding="utf-8"))
        jsonschema.validate(document, schema)
        assert document["layer"] == LAYER and document["backend"] == "zennit-lrp"
        assert -1.0 <= document["cosine"] <= 1.0 and document["cosine"] == ref.cosine
        assert 0 < len(document["matches"]) <= 20 and document["metrics"]["match_count"] >= len(document["matches"])
        assert [m["color_index"] for m in document["matches"][:3]] == [0, 1, 2]
        # compact (1.2) default: the data every panel is drawn from is stored, the panels are drawn on demand
        assert [f["role"] for f in document["files"]] == ["pair_data"]
        images = materialize(store, ref.artifact_id, ALL_PANELS)
        for role in (
            "composite",
            "only_lines",
            "only_colors",
            "heatmap_query",
            "overlay_heatmap_query",
            "display_query",
        ):
            assert (turtle_run["dir"] / images[role]).is_file(), role
        width_scale = document["query"]["display_width"] / document["query"]["input_width"]
        first = document["matches"][0]
        assert first["query_display_xy"][0] == pytest.approx(first["query_xy"][0] * width_scale)
    assert explained == 15
    errors = {r.candidate_id: r.explanation_error for r in out if r.explanation_error}
    assert errors["no such image"].type == "KeyError" and errors["no such image"].stage == "load"
    assert errors["unreadable"].type == "InvalidInputError" and "truncated.jpg" in errors["unreadable"].message
    assert (
        errors["exploding candidate"].type == "RuntimeError"
        and "service is down" in errors["exploding candidate"].message
    )
    assert "duplicate record" in errors["c_img3f"].message
    assert turtle_run["model_untouched"]


@pytest.mark.slow
def test_acceptance_interrupted_run_then_rerun_completes_the_store(turtle_run):
    store, out = turtle_run["store"], turtle_run["out"]
    first_done = turtle_run["complete_after_interrupt"]
    assert len(first_done) == turtle_run["interrupt_after"]
    hits = {r.explanation.artifact_id for r in out if r.explanation and r.explanation.cache_hit}
    misses = {r.explanation.artifact_id for r in out if r.explanation and not r.explanation.cache_hit}
    assert hits == set(first_done) and not hits & misses
    all_ids = list(store.artifact_ids())
    assert len(all_ids) == 15 and all(store.has(i) for i in all_ids)
    assert not [p for p in turtle_run["dir"].rglob(".*") if p.is_file()]  # no temporary leftovers
    manifest = read_manifest(turtle_run["dir"] / "runs" / "second.jsonl")
    assert sorted(e.index for e in manifest) == list(range(len(turtle_run["records"])))
    by_index = {e.index: e for e in manifest}
    for index, record in enumerate(out):
        assert by_index[index].record.model_dump_json() == record.model_dump_json()  # NaN != NaN as floats


@pytest.mark.slow
def test_acceptance_hostile_ids_never_reach_the_file_system(turtle_run):
    root = turtle_run["dir"].resolve()
    for path in turtle_run["dir"].rglob("*"):
        assert path.resolve().is_relative_to(root)
        assert path.name.isascii() and len(path.name) <= 100
    ids_in_documents = set()
    for artifact_id in turtle_run["store"].artifact_ids():
        document = turtle_run["store"].load(artifact_id)
        ids_in_documents |= {document.query_id, document.candidate_id}
    assert set(HOSTILE) <= ids_in_documents


# --------------------------------------------------------------------------- images, layers, devices


@pytest.mark.parametrize(
    ("tensor", "display", "fragment"),
    [
        (torch.zeros(3, 8, 8), np.zeros((8, 8, 3), np.uint8), r"\(1, 3, H, W\) tensor, got \(3, 8, 8\)"),
        (torch.zeros(1, 1, 8, 8), np.zeros((8, 8, 3), np.uint8), "got \\(1, 1, 8, 8\\)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), np.zeros((8, 8, 3), np.uint8), "float tensor"),
        (torch.zeros(1, 3, 8, 8), np.zeros((8, 8, 3), np.float32), "uint8 RGB array"),
        (torch.zeros(1, 3, 8, 8), np.zeros((8, 8), np.uint8), "uint8 RGB array"),
        (torch.zeros(1, 3, 8, 8), [[0]], "got list"),
    ],
)
def test_loaded_image_rejects_wrong_shapes_and_types(tensor, display, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        LoadedImage(tensor=tensor, display=display)


def test_content_hash_follows_pixels_and_preprocessing(golden):
    _, query, candidate = golden
    assert (
        query.content_sha256()
        == LoadedImage(tensor=query.tensor.clone(), display=query.display.copy()).content_sha256()
    )
    assert query.content_sha256() != candidate.content_sha256()
    resized = torch.nn.functional.interpolate(query.tensor, size=(112, 112))
    assert LoadedImage(tensor=resized, display=query.display).content_sha256() != query.content_sha256()
    assert (
        LoadedImage(tensor=query.tensor, display=query.display, sha256="f" * 64).content_sha256()
        != query.content_sha256()
    )


def test_a_source_returning_the_wrong_type_costs_only_that_record(tmp_path, golden, model):
    pair, _, base = golden
    source = ArraySource(base, ["q", "good"])
    real_load = source.load

    def load(image_id):
        return ("not", "an image") if image_id == "odd" else real_load(image_id)

    source.load = load  # type: ignore[method-assign]
    out = explain_matches(
        records=make_records(["q"], ["good", "odd"]),
        images=source,
        model=model,
        config=PairXConfig(**FAST),
        store=ArtifactStore(tmp_path),
        engine=FakeEngine(pair, source),
        progress=False,
    )
    assert out[0].explanation is not None
    assert out[1].explanation_error.stage == "load" and "must return a LoadedImage" in out[1].explanation_error.message


def test_several_layers_give_one_artifact_each(tmp_path, golden, model):
    pair, _, base = golden
    second = LayerExplanation(**{**pair.layers[LAYER].__dict__, "key": "blocks.5"})
    two_layers = PairExplanation(**{**pair.__dict__, "layers": {LAYER: pair.layers[LAYER], "blocks.5": second}})
    source = ArraySource(base, ["q", "a"])
    engine = FakeEngine(two_layers, source)
    engine.layer_keys = [LAYER, "blocks.5"]
    store = ArtifactStore(tmp_path)

    def explain():
        return explain_matches(
            records=make_records(["q"], ["a"]),
            images=source,
            model=model,
            config=PairXConfig(**FAST),
            store=store,
            engine=engine,
            progress=False,
        )

    out = explain()
    refs = [out[0].explanation, *out[0].other_layers]
    assert [r.layer for r in refs] == [LAYER, "blocks.5"]
    assert len({r.artifact_id for r in refs}) == 2 and all(store.has(r.artifact_id) for r in refs)
    engine.layer_keys = [LAYER, "blocks.7"]  # the engine's result lacks a layer it claims
    out = explain()
    assert "has no layer 'blocks.7'" in out[0].explanation_error.message


def test_explicit_cpu_device_and_progress_bar(tmp_path, golden, model, capsys):
    pair, _, base = golden
    source = ArraySource(base, ["q", "a"])
    out = explain_matches(
        records=make_records(["q"], ["a"]),
        images=source,
        model=model,
        config=PairXConfig(**FAST, device="cpu"),
        store=ArtifactStore(tmp_path),
        engine=FakeEngine(pair, source),
        progress=True,
    )
    assert out[0].explanation is not None
    assert "PAIR-X" in capsys.readouterr().err


def test_the_store_defaults_to_output_dir(tmp_path, golden, model):
    pair, _, base = golden
    source = ArraySource(base, ["q", "a"])
    out = explain_matches(
        records=make_records(["q"], ["a"]),
        images=source,
        model=model,
        config=PairXConfig(**FAST, output_dir=str(tmp_path / "out")),
        engine=FakeEngine(pair, source),
        progress=False,
        run_name="default-store",
    )
    assert (tmp_path / "out" / out[0].explanation.json_path).is_file()
    assert (tmp_path / "out" / "runs" / "default-store.jsonl").is_file()


def test_the_same_images_under_two_ids_are_explained_and_written_once(tmp_path, golden, model):
    pair, _, base = golden
    source = ArraySource(base, ["q", "a"])
    source.numbers["a_alias"] = source.numbers["a"]  # the host knows one image under two ids
    store = ArtifactStore(tmp_path)
    writes = []
    real_write = store.write
    store.write = lambda document, blobs: writes.append(document.artifact_id) or real_write(document, blobs)  # type: ignore[method-assign]
    out = explain_matches(
        records=make_records(["q"], ["a", "a_alias"]),
        images=source,
        model=model,
        config=PairXConfig(**FAST),
        store=store,
        engine=FakeEngine(pair, source),
        progress=False,
    )
    assert out[0].explanation.artifact_id == out[1].explanation.artifact_id
    assert len(writes) == 1 and out[1].explanation.cache_hit
