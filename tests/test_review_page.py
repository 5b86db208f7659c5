"""The static review page: structure, ordering, escaping, bad inputs, and a real headless-Chromium load.

The page is built from a hand-made store directory whose images are the golden PAIR-X drawings
(real arrays from ../shared/golden); the end-to-end tests (test_wildlife_*.py, test_demo.py) build it
from real engine output.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairx_plugin.artifacts.review import read_manifest, render_review_html, write_review_page
from pairx_plugin.artifacts.schema import ManifestEntry
from pairx_plugin.errors import ArtifactError, InvalidInputError
from pairx_plugin.records import ExplanationErrorInfo, ExplanationMetrics, ExplanationRef, MatchRecord

REPO = Path(__file__).resolve().parents[1]
HOSTILE_LABEL = '<script>window.__pwned = 1; alert("label")</script>'
HOSTILE_ID = '"><img src=x onerror="window.__pwned=2">'
RUN = "review-test"


def _write_artifact(root: Path, composite: np.ndarray, heat: np.ndarray, seed: str) -> ExplanationRef:
    artifact_id = hashlib.sha256(seed.encode()).hexdigest()
    folder = root / "artifacts" / artifact_id[:2] / artifact_id
    folder.mkdir(parents=True)
    Image.fromarray(composite).save(folder / "composite.png")
    Image.fromarray(heat).save(folder / "heatmaps.png")
    (folder / "explanation.json").write_text(json.dumps({"artifact_id": artifact_id}))
    rel = f"artifacts/{artifact_id[:2]}/{artifact_id}"
    return ExplanationRef(
        artifact_id=artifact_id, layer="blocks.3", json_path=f"{rel}/explanation.json",
        images={"composite": f"{rel}/composite.png", "heatmaps": f"{rel}/heatmaps.png"},
        metrics=ExplanationMetrics(irm=0.41, mc=1.5e-4, inlier_ratio=0.6, match_count=37),
        cosine=0.8123,
    )


@pytest.fixture()
def review_store(tmp_path: Path, golden_dir: Path) -> tuple[Path, list[ManifestEntry]]:
    """A store root with a run of 2 queries: explained, failed and unexplained records, hostile strings."""
    golden = np.load(golden_dir / "effnet_lite0_224.npz")
    root = tmp_path / "store"
    refs = [
        _write_artifact(root, golden["p12__explain"], golden["p12__img_np0"], "a"),
        _write_artifact(root, golden["p13__explain"], golden["p13__img_np1"], "b"),
        _write_artifact(root, golden["p13__explain"], golden["p12__img_np1"], "c"),
    ]
    records = [  # manifest order deliberately not rank order
        MatchRecord(query_id="q1", candidate_id="c2", rank=1, score=0.7, query_label="turtle a",
                    candidate_label=HOSTILE_LABEL).with_explanation([refs[1]]),
        MatchRecord(query_id="q1", candidate_id="c1", rank=0, score=0.9, query_label="turtle a",
                    candidate_label="turtle a").with_explanation([refs[0]]),
        MatchRecord(query_id="q1", candidate_id=HOSTILE_ID, rank=2, score=0.5, query_label="turtle a",
                    candidate_label="turtle b").with_error(
            ExplanationErrorInfo(type="InvalidInputError", message="image <b>unreadable</b>", stage="load")),
        MatchRecord(query_id=HOSTILE_ID, candidate_id="c1", rank=0, score=0.6, query_label=None,
                    candidate_label="turtle a").with_explanation([refs[2]]),
        MatchRecord(query_id=HOSTILE_ID, candidate_id="c2", rank=1, score=float("-inf")),
    ]
    statuses = ["explained", "explained", "error", "explained", "not_explained"]
    entries = [ManifestEntry(run_name=RUN, index=i, status=s, record=r)
               for i, (s, r) in enumerate(zip(statuses, records))]
    (root / "runs").mkdir(parents=True)
    (root / "runs" / f"{RUN}.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in entries))
    return root, entries


def _cards(html: str) -> list[str]:
    return re.findall(r'<article class="card[^"]*"\s+data-record-index="(\d+)"', html)


def test_page_has_one_card_per_record_in_rank_order(review_store):
    root, entries = review_store
    page = write_review_page(root, RUN)
    html = page.read_text()
    assert page == root / "review" / f"{RUN}.html"
    # q1's three records come first, sorted by rank (manifest indices 1, 0, 2), then the second query
    assert _cards(html) == ["1", "0", "2", "3", "4"]
    assert html.count('<section class="query"') == 2
    assert "same identity" in html and "different identity" in html and "identity unknown" in html
    assert "explained cosine 0.8123" in html and "1.500e-04" in html
    assert "2 queries, 5 match records:" in html and "1 failed" in html and "1 not explained" in html


def test_every_host_string_is_escaped(review_store):
    root, entries = review_store
    html = render_review_html(entries, root, root / "review", title=f"run {HOSTILE_LABEL}")
    assert "<script" not in html.lower()  # the template has no script; a label must not add one
    assert "&lt;script&gt;" in html
    assert 'onerror="window' not in html
    assert "&lt;b&gt;unreadable&lt;/b&gt;" in html  # error messages are host-influenced too
    assert "<b>unreadable" not in html


def test_links_are_relative_and_point_at_existing_files(review_store):
    root, entries = review_store
    page = write_review_page(root, RUN)
    html = page.read_text()
    links = set(re.findall(r'(?:href|src)="([^"]+)"', html)) - {"data:,"}
    assert links, "the page links no files"
    for link in links:
        assert not re.match(r"^[a-z]+:", link), link  # relative: no scheme, so never javascript:
        assert (page.parent / link).resolve().is_file(), link
    assert html.count('class="json"') == 3


def test_missing_image_is_reported_not_linked(review_store):
    root, entries = review_store
    composite = root / entries[0].record.explanation.images["composite"]
    composite.unlink()
    html = write_review_page(root, RUN).read_text()
    assert "Missing files: " + entries[0].record.explanation.images["composite"] in html
    assert entries[0].record.explanation.images["composite"].split("/")[-1] in html  # only in the notice
    assert html.count('class="composite"') == 2


def test_bad_inputs_raise_our_errors(review_store, tmp_path):
    root, _ = review_store
    with pytest.raises(InvalidInputError, match=r"run name '\.\./x'"):
        write_review_page(root, "../x")
    with pytest.raises(ArtifactError, match="no-such-run.jsonl' does not exist"):
        write_review_page(root, "no-such-run")
    manifest = root / "runs" / f"{RUN}.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], '{"run_name": 3}', *lines[1:]]) + "\n")
    with pytest.raises(ArtifactError, match=r"line 2 is not a valid manifest entry"):
        read_manifest(manifest)
    assert not (root / "review" / f"{RUN}.html").exists()  # nothing half-written


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.browser
@pytest.mark.slow
def test_page_loads_in_headless_chromium_without_console_errors(review_store, tmp_path):
    found = _chromium()
    if found is None:
        pytest.skip("chromium/chromedriver not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    root, entries = review_store
    page = write_review_page(root, RUN)
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path / f'chrome-{uuid.uuid4().hex}'}", "--window-size=1400,1800"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    try:
        driver.get(page.resolve().as_uri())
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")  # load lazy panels
        cards = driver.find_elements(By.CSS_SELECTOR, "article.card")
        assert len(cards) == len(entries)
        assert [c.get_attribute("data-record-index") for c in cards] == ["1", "0", "2", "3", "4"]
        loaded = driver.execute_script(
            "return Array.from(document.querySelectorAll('img.composite'))"
            ".map(i => i.complete && i.naturalWidth > 0)")
        assert loaded == [True, True, True]
        assert driver.execute_script("return window.__pwned === undefined")
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text
        hostile = driver.find_element(By.CSS_SELECTOR, 'article.card[data-record-index="0"] h3').text
        assert HOSTILE_LABEL in hostile  # shown as text, not run
        driver.execute_script("window.scrollTo(0, 0)")
        shots = REPO / "test-artifacts"
        shots.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(shots / "review_page.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        driver.quit()
    assert (REPO / "test-artifacts" / "review_page.png").stat().st_size > 10_000
