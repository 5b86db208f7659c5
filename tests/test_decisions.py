"""Curator decisions: the file format and its schema, storage beside a run, and the hand-back to the hosts."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from pairx_plugin.artifacts.schema import ManifestEntry
from pairx_plugin.cli import main
from pairx_plugin.decisions import (
    DECISION_SCHEMA_NAME,
    Decision,
    apply_to_metadata_csv,
    decision_json_schema,
    decisions_text,
    latest_decisions,
    parse_decisions,
    plan_identity_updates,
    read_decisions,
    store_decisions,
)
from pairx_plugin.errors import InvalidInputError
from pairx_plugin.records import MatchRecord

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "docs" / "schema" / DECISION_SCHEMA_NAME
T0 = datetime(2026, 11, 30, 17, 0, tzinfo=timezone.utc)


def _decision(
    index: int, query: str, candidate: str, kind: str, minutes: int = 0, note: str = "", run: str = "run1"
) -> Decision:
    return Decision(
        run_name=run,
        record_index=index,
        query_id=query,
        candidate_id=candidate,
        decision=kind,
        note=note,
        decided_at=T0 + timedelta(minutes=minutes),
    )


def test_checked_in_schema_is_current_and_valid(capsys):
    assert json.loads(SCHEMA.read_text(encoding="utf-8")) == decision_json_schema()
    jsonschema.Draft202012Validator.check_schema(decision_json_schema())
    assert main(["decisions", "schema", "--check"]) == 0
    assert main(["decisions", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$id"].endswith("/decision/1.0.0")


def test_schema_check_flags_a_stale_file(tmp_path, capsys):
    assert main(["decisions", "schema", "--check", "--dir", str(tmp_path)]) == 1
    assert main(["decisions", "schema", "--write", "--dir", str(tmp_path)]) == 0
    assert main(["decisions", "schema", "--check", "--dir", str(tmp_path)]) == 0
    assert "stale: " in capsys.readouterr().out


def test_lines_round_trip_and_validate_against_the_schema():
    decisions = [
        _decision(0, "a", "b", "same", note='<script>alert("x")</script>\nline two'),
        _decision(1, "a", "c", "unsure"),
    ]
    text = decisions_text(decisions)
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    for line in text.splitlines():
        jsonschema.validate(json.loads(line), schema)
    assert parse_decisions(text.splitlines()) == decisions


@pytest.mark.parametrize(
    "line, where",
    [
        ('{"run_name": "r"}', "record_index"),
        ("not json", "<line>"),
    ],
)
def test_bad_lines_are_named(line, where):
    good = decisions_text([_decision(0, "a", "b", "same")]).strip()
    with pytest.raises(InvalidInputError, match=rf"line 2 is not a valid decision \({where}"):
        parse_decisions([good, line], source="f.jsonl")


def test_bad_values_are_refused():
    base = json.loads(decisions_text([_decision(0, "a", "b", "same")]))
    for field, value in [
        ("decision", "maybe"),
        ("decided_at", "2026-11-30T17:00:00"),
        ("run_name", "../x"),
        ("artifact_id", "abc"),
        ("note", "x" * 5000),
        ("extra", 1),
    ]:
        with pytest.raises(InvalidInputError, match=field if field != "extra" else "extra"):
            parse_decisions([json.dumps({**base, field: value})])


def test_latest_decision_per_record_wins():
    decisions = [
        _decision(0, "a", "b", "same", 5),
        _decision(1, "a", "c", "unsure", 1),
        _decision(0, "a", "b", "different", 2),
        _decision(1, "a", "c", "different", 9),
    ]
    latest = latest_decisions(decisions)
    assert [(d.record_index, d.decision) for d in latest] == [(0, "same"), (1, "different")]


def test_identity_plan_relabels_same_and_reports_contradictions():
    identities = {"q1": "", "q2": "x", "c1": "a", "c2": "b", "c3": "x"}
    plan = plan_identity_updates(
        [
            _decision(0, "q1", "c1", "same"),
            _decision(1, "q2", "c3", "different"),  # both labelled x: a contradiction, not a change
            _decision(2, "q2", "c2", "unsure"),
        ],
        identities,
    )
    assert plan.updates == {"q1": "a"} and plan.previous == {"q1": ""}
    assert len(plan.contradictions) == 1 and "'q2' and 'c3' are both labelled 'x'" in plan.contradictions[0]
    assert plan.unused == 2


def test_identity_plan_refuses_conflicts_and_unknown_ids():
    identities = {"q1": "", "c1": "a", "c2": "b", "c4": ""}
    with pytest.raises(InvalidInputError, match=r"query 'q1' was judged the same as candidates of different "):
        plan_identity_updates([_decision(0, "q1", "c1", "same"), _decision(1, "q1", "c2", "same")], identities)
    with pytest.raises(InvalidInputError, match=r"record 3 names 'nope', not in the table"):
        plan_identity_updates([_decision(3, "q1", "nope", "different")], identities)
    with pytest.raises(InvalidInputError, match=r"candidate 'c4' has no identity"):
        plan_identity_updates([_decision(4, "q1", "c4", "same")], identities)


@pytest.fixture()
def metadata_csv(tmp_path, seaturtle_dir) -> Path:
    path = tmp_path / "metadata.csv"
    shutil.copy(seaturtle_dir / "metadata.csv", path)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_apply_writes_the_updated_metadata_and_pairs(tmp_path, metadata_csv, capsys):
    decisions = tmp_path / "run.decisions.jsonl"
    decisions.write_text(
        decisions_text(
            [
                _decision(0, "image_4", "image_1", "same", note="same scute pattern"),
                _decision(1, "image_2", "image_3", "different"),
            ]
        )
    )
    out, pairs = tmp_path / "curated.csv", tmp_path / "pairs.csv"
    before = metadata_csv.read_text()
    assert (
        main(
            [
                "decisions",
                "apply",
                str(decisions),
                "--metadata",
                str(metadata_csv),
                "--out",
                str(out),
                "--pairs-out",
                str(pairs),
            ]
        )
        == 0
    )
    assert metadata_csv.read_text() == before  # the original is kept
    original, curated = _rows(metadata_csv), _rows(out)
    assert [r["image_id"] for r in curated] == [r["image_id"] for r in original]
    changed = {r["image_id"]: r["identity"] for r, o in zip(curated, original) if r != o}
    assert changed == {"image_4": "a"}
    assert all(r["path"] == o["path"] and r["split"] == o["split"] for r, o in zip(curated, original))
    assert [(r["query_id"], r["decision"], r["note"]) for r in _rows(pairs)] == [
        ("image_4", "same", "same scute pattern"),
        ("image_2", "different", ""),
    ]
    assert "relabelled image_4: b -> a" in capsys.readouterr().out


def test_cli_apply_bad_input_writes_nothing(tmp_path, metadata_csv, capsys):
    decisions = tmp_path / "d.jsonl"
    decisions.write_text(decisions_text([_decision(0, "image_4", "image_99", "same")]))
    out = tmp_path / "curated.csv"
    assert main(["decisions", "apply", str(decisions), "--metadata", str(metadata_csv), "--out", str(out)]) == 2
    assert "'image_99', not in the table" in capsys.readouterr().err and not out.exists()
    assert (
        main(["decisions", "apply", str(tmp_path / "none.jsonl"), "--metadata", str(metadata_csv), "--out", str(out)])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "decisions",
                "apply",
                str(decisions),
                "--metadata",
                str(metadata_csv),
                "--out",
                str(out),
                "--identity-column",
                "name",
            ]
        )
        == 2
    )
    assert "has no column 'name'" in capsys.readouterr().err and not out.exists()


def test_apply_to_metadata_csv_keeps_rows_and_columns(tmp_path, metadata_csv):
    out = tmp_path / "out.csv"
    plan = apply_to_metadata_csv([_decision(0, "image_2", "image_3", "same")], metadata_csv, out)
    assert plan.updates == {"image_2": "b"}
    assert out.read_text().splitlines()[0] == metadata_csv.read_text().splitlines()[0]


def test_wildlife_tools_frame_is_updated_as_a_copy(metadata_csv):
    from pairx_wildlife_tools.decisions import apply_decisions

    frame = pd.read_csv(metadata_csv)
    updated, plan = apply_decisions(frame, [_decision(0, "image_4", "image_1", "same")])
    assert updated.loc[updated.image_id == "image_4", "identity"].item() == "a"
    assert frame.loc[frame.image_id == "image_4", "identity"].item() == "b"  # input unchanged
    assert (updated.drop(columns="identity") == frame.drop(columns="identity")).all().all()
    assert plan.updates == {"image_4": "a"}


def _run_dir(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    records = [MatchRecord(query_id="q", candidate_id=f"c{i}", rank=i, score=1.0 - i / 10) for i in range(3)]
    (runs / "run1.jsonl").write_text(
        "".join(
            ManifestEntry(run_name="run1", index=i, status="not_explained", record=r).model_dump_json() + "\n"
            for i, r in enumerate(records)
        )
    )
    return runs


def test_store_decisions_appends_beside_the_run(tmp_path):
    runs = _run_dir(tmp_path)
    first = decisions_text([_decision(0, "q", "c0", "same")])
    [path] = store_decisions(runs, first)
    assert path == runs / "run1.decisions.jsonl"
    store_decisions(runs, decisions_text([_decision(0, "q", "c0", "different", 3), _decision(2, "q", "c2", "unsure")]))
    stored = read_decisions(path)
    assert len(stored) == 3
    assert [(d.record_index, d.decision) for d in latest_decisions(stored)] == [(0, "different"), (2, "unsure")]


def test_store_decisions_refuses_a_bad_batch_whole(tmp_path):
    runs = _run_dir(tmp_path)
    good = decisions_text([_decision(0, "q", "c0", "same")])
    with pytest.raises(InvalidInputError, match=r"record 1 names \('q', 'c9'\) but the manifest has \('q', 'c1'\)"):
        store_decisions(runs, good + decisions_text([_decision(1, "q", "c9", "same")]))
    with pytest.raises(InvalidInputError, match=r"run 'other', which has no manifest"):
        store_decisions(runs, good + decisions_text([_decision(0, "q", "c0", "same", run="other")]))
    with pytest.raises(InvalidInputError, match="no decision lines"):
        store_decisions(runs, "\n")
    assert not (runs / "run1.decisions.jsonl").exists()


def test_wbia_decisions_set_annotmatch_evidence_on_the_standin(tmp_path, seaturtle_dir):
    from wbia_standin import annotmatch_funcs  # noqa: F401 - registers the annotmatch methods
    from wbia_standin.controller import StandinController

    from wbia_pairx.decisions import EVIDENCE_CODES, apply_decisions

    ibs = StandinController(seaturtle_dir, tmp_path / "cache")
    decisions = [
        _decision(0, "2", "1", "same"),
        _decision(1, "2", "3", "different"),
        _decision(2, "4", "5", "unsure"),
        _decision(1, "2", "3", "same", minutes=-5),
    ]  # older: ignored
    rowids = apply_decisions(ibs, decisions)
    assert len(rowids) == 3
    assert ibs.get_annotmatch_evidence_decision(rowids) == [1, 0, 3]
    assert ibs.get_annotmatch_rowid_from_undirected_superkey([1, 3], [2, 2]) == rowids[:2]  # undirected rows
    assert EVIDENCE_CODES == {"same": 1, "different": 0, "unsure": 3}
    # re-applying updates the same rows instead of adding new ones
    assert apply_decisions(ibs, [_decision(0, "2", "1", "unsure", minutes=10)]) == rowids[:1]
    assert ibs.get_annotmatch_evidence_decision(rowids[:1]) == [3]


def test_wbia_decisions_refuse_foreign_ids_before_writing(tmp_path, seaturtle_dir):
    from wbia_standin import annotmatch_funcs  # noqa: F401
    from wbia_standin.controller import StandinController

    from wbia_pairx.decisions import apply_decisions

    ibs = StandinController(seaturtle_dir, tmp_path / "cache")
    with pytest.raises(InvalidInputError, match=r"annotation ids \[99\] are not in this WBIA database"):
        apply_decisions(ibs, [_decision(0, "2", "1", "same"), _decision(1, "2", "99", "same")])
    with pytest.raises(InvalidInputError, match=r"candidate_id 'image_1', not a WBIA annotation id"):
        apply_decisions(ibs, [_decision(0, "2", "image_1", "same")])
    assert ibs.get_annotmatch_rowid_from_undirected_superkey([1], [2]) == [None]


def test_decisions_without_an_action_prints_help(capsys):
    assert main(["decisions"]) == 2
    assert "apply" in capsys.readouterr().err
