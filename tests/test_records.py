"""MatchRecord: id coercion, scores kept as given (NaN/inf through JSON), outcomes, copies."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import PurePosixPath

import pytest
from pydantic import ValidationError

from pairx_plugin.records import ExplanationErrorInfo, ExplanationMetrics, ExplanationRef, MatchRecord


def _ref() -> ExplanationRef:
    return ExplanationRef(
        artifact_id="a" * 64,
        layer="blocks.3",
        json_path="artifacts/aa/" + "a" * 64 + "/explanation.json",
        images={"composite": "artifacts/aa/" + "a" * 64 + "/composite.png"},
        metrics=ExplanationMetrics(irm=0.5, mc=1.0, inlier_ratio=0.25, match_count=12),
        cosine=0.8,
    )


def test_ids_of_any_host_kind_become_strings():
    identifier = uuid.uuid4()
    record = MatchRecord(query_id=17, candidate_id=identifier, rank=0, score=0.9, query_label=3)
    assert record.query_id == "17" and record.candidate_id == str(identifier) and record.query_label == "3"
    assert MatchRecord(query_id=PurePosixPath("a/b.jpg"), candidate_id="x", rank=0, score=1).query_id == "a/b.jpg"


@pytest.mark.parametrize("score", [float("-inf"), float("inf"), float("nan"), -0.0, 1e308, 0.123456789012345])
def test_scores_round_trip_through_json_unchanged(score):
    record = MatchRecord(query_id="q", candidate_id="c", rank=2, score=score)
    text = record.model_dump_json()
    json.loads(text)  # strict JSON: no bare NaN / Infinity tokens
    assert "NaN" not in text or '"NaN"' in text
    back = MatchRecord.model_validate_json(text)
    if math.isnan(score):
        assert math.isnan(back.score)
    else:
        assert back.score == score and math.copysign(1, back.score) == math.copysign(1, score)
    assert back.rank == 2


def test_python_dump_keeps_the_float():
    record = MatchRecord(query_id="q", candidate_id="c", rank=0, score=float("-inf"))
    assert record.model_dump()["score"] == float("-inf")
    assert record.model_dump(mode="json")["score"] == "-Infinity"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"query_id": ""}, "query_id"),
        ({"rank": -1}, "rank"),
        ({"rank": True}, "rank"),
        ({"score": "high"}, "score"),
        ({"score": None}, "score"),
        ({"extras": {"f": object()}}, "extras"),
        ({"candidate_id": True}, "candidate_id"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_bad_fields_are_rejected_naming_the_field(fields, fragment):
    data = {"query_id": "q", "candidate_id": "c", "rank": 0, "score": 0.5, **fields}
    with pytest.raises(ValidationError) as info:
        MatchRecord(**data)
    assert fragment in str(info.value)


def test_explanation_and_error_exclude_each_other():
    error = ExplanationErrorInfo(type="X", message="m", stage="load")
    with pytest.raises(ValidationError, match="either an explanation or an explanation_error"):
        MatchRecord(query_id="q", candidate_id="c", rank=0, score=1, explanation=_ref(), explanation_error=error)
    with pytest.raises(ValidationError, match="stage"):
        ExplanationErrorInfo(type="X", message="m", stage="lunch")


def test_outcome_copies_leave_the_original_alone():
    record = MatchRecord(query_id="q", candidate_id="c", rank=1, score=float("nan"), extras={"k": [1, 2]})
    explained = record.with_explanation([_ref(), _ref().model_copy(update={"layer": "blocks.5"})])
    assert explained is not record and record.explanation is None
    assert explained.explanation.layer == "blocks.3" and explained.other_layers[0].layer == "blocks.5"
    failed = explained.with_error(ExplanationErrorInfo.from_exception(OSError(28, "No space left"), "store"))
    assert failed.explanation is None and failed.other_layers == []
    assert failed.explanation_error.type == "OSError" and failed.explanation_error.stage == "store"
    assert "No space left" in failed.explanation_error.message
    assert math.isnan(failed.score) and failed.rank == 1 and failed.extras == {"k": [1, 2]}


def test_records_are_frozen():
    record = MatchRecord(query_id="q", candidate_id="c", rank=0, score=1)
    with pytest.raises(ValidationError):
        record.score = 2.0  # type: ignore[misc]


def test_error_info_from_an_exception_without_message_uses_its_repr():
    info = ExplanationErrorInfo.from_exception(KeyError(), "load")
    assert info.type == "KeyError" and info.message


def test_hostile_ids_survive_json():
    hostile = ["../../x", "a" * 10_000, "ünïcødé/鯨", "nul\x00byte", "C:\\windows\\system32"]
    for identifier in hostile:
        record = MatchRecord(query_id=identifier, candidate_id=identifier, rank=0, score=0.0)
        assert MatchRecord.model_validate_json(record.model_dump_json()).query_id == identifier
