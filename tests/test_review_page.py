"""The review page: its data, escaping and CSP (no browser), then real clicks and keys in headless Chromium.

The page-structure tests use a hand-made store whose images are the golden PAIR-X drawings (real
arrays from ../shared/golden). The browser tests use a real run: the hook with the built-in
EfficientNet-Lite0 on the sea-turtle sample, ids "1".."4" as a WBIA host would give them (str(aid)),
so one exported decisions file is applied to both a wildlife-tools table and the WBIA stand-in.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html as html_lib
import json
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairx_plugin.artifacts.review import render_review_html, write_review_page
from pairx_plugin.artifacts.schema import ManifestEntry
from pairx_plugin.errors import ArtifactError, InvalidInputError
from pairx_plugin.evidence.models import EvidenceScores
from pairx_plugin.records import ExplanationErrorInfo, ExplanationMetrics, ExplanationRef, MatchRecord

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-artifacts"
HOSTILE_LABEL = '<script>window.__pwned = 1; alert("label")</script>'
HOSTILE_ID = '"><img src=x onerror="window.__pwned=2">'
HOSTILE_NOTE = '</textarea><img src=x onerror="window.__pwned=3"><script>window.__pwned=4</script> & done'
RUN = "review-test"


def _write_artifact(
    root: Path, composite: np.ndarray, heat: np.ndarray, seed: str, evidence: EvidenceScores | None = None
) -> ExplanationRef:
    artifact_id = hashlib.sha256(seed.encode()).hexdigest()
    folder = root / "artifacts" / artifact_id[:2] / artifact_id
    folder.mkdir(parents=True)
    Image.fromarray(composite).save(folder / "composite.png")
    Image.fromarray(heat).save(folder / "heatmaps.png")
    (folder / "explanation.json").write_text(json.dumps({"artifact_id": artifact_id}))
    rel = f"artifacts/{artifact_id[:2]}/{artifact_id}"
    return ExplanationRef(
        artifact_id=artifact_id,
        layer="blocks.3",
        json_path=f"{rel}/explanation.json",
        images={"composite": f"{rel}/composite.png", "heatmaps": f"{rel}/heatmaps.png"},
        metrics=ExplanationMetrics(irm=0.41, mc=1.5e-4, inlier_ratio=0.6, match_count=37, evidence=evidence),
        cosine=0.8123,
    )


@pytest.fixture()
def review_store(tmp_path: Path, golden_dir: Path) -> tuple[Path, list[ManifestEntry]]:
    """A store root with a run of 2 queries: explained, failed and unexplained records, hostile strings."""
    golden = np.load(golden_dir / "effnet_lite0_224.npz")
    root = tmp_path / "store"
    refs = [
        _write_artifact(
            root,
            golden["p12__explain"],
            golden["p12__img_np0"],
            "a",
            evidence=EvidenceScores(score=0.27, on_animal=0.9, geometric=0.5, support=0.6, inliers=4, foreground="box"),
        ),
        _write_artifact(root, golden["p13__explain"], golden["p13__img_np1"], "b"),
        _write_artifact(root, golden["p13__explain"], golden["p12__img_np1"], "c"),
    ]
    records = [  # manifest order deliberately not rank order
        MatchRecord(
            query_id="q1", candidate_id="c2", rank=1, score=0.7, query_label="turtle a", candidate_label=HOSTILE_LABEL
        ).with_explanation([refs[1]]),
        MatchRecord(
            query_id="q1", candidate_id="c1", rank=0, score=0.9, query_label="turtle a", candidate_label="turtle a"
        ).with_explanation([refs[0]]),
        MatchRecord(
            query_id="q1",
            candidate_id=HOSTILE_ID,
            rank=2,
            score=0.5,
            query_label="turtle a",
            candidate_label="turtle b",
        ).with_error(ExplanationErrorInfo(type="InvalidInputError", message="image <b>unreadable</b>", stage="load")),
        MatchRecord(
            query_id=HOSTILE_ID, candidate_id="c1", rank=0, score=0.6, query_label=None, candidate_label="turtle a"
        ).with_explanation([refs[2]]),
        MatchRecord(query_id=HOSTILE_ID, candidate_id="c2", rank=1, score=float("-inf")),
    ]
    statuses = ["explained", "explained", "error", "explained", "not_explained"]
    entries = [
        ManifestEntry(run_name=RUN, index=i, status=s, record=r) for i, (s, r) in enumerate(zip(statuses, records))
    ]
    (root / "runs").mkdir(parents=True)
    (root / "runs" / f"{RUN}.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in entries))
    return root, entries


def _data(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', html, re.DOTALL)
    assert block is not None
    return json.loads(block.group(1))


def _records(data: dict) -> list[dict]:
    return [r for q in data["queries"] for r in q["records"]]


def test_page_data_has_one_record_per_entry_in_rank_order(review_store):
    root, _ = review_store
    page = write_review_page(root, RUN)
    data = _data(page.read_text())
    assert page == root / "review" / f"{RUN}.html"
    assert [q["q"] for q in data["queries"]] == ["q1", HOSTILE_ID]
    # q1's three records come first, sorted by rank (manifest indices 1, 0, 2), then the second query
    assert [r["i"] for r in _records(data)] == [1, 0, 2, 3, 4]
    first = _records(data)[0]
    assert first["same"] is True and first["cosine"] == pytest.approx(0.8123) and first["metrics"]["mc"] == 1.5e-4
    assert [r["same"] for r in _records(data)] == [True, False, False, None, None]
    # the page's evidence number is the combined evidence score where the record has one (else absent)
    assert first["metrics"]["evidence"] == pytest.approx(0.27) and first["metrics"]["inlier_ratio"] == 0.6
    assert _records(data)[1]["metrics"]["evidence"] is None
    assert _records(data)[-1]["score"] == "-Infinity" and _records(data)[2]["error"].startswith("InvalidInputError")
    assert data["run"] == RUN and data["decision_schema"] == "1.0.0" and data["post_url"] is None
    assert "2 queries, 5 match records:" in page.read_text() and "1 failed" in page.read_text()


def test_every_host_string_is_escaped(review_store):
    root, entries = review_store
    html = render_review_html(entries, root, root / "review", title=f"run {HOSTILE_LABEL}")
    assert html.lower().count("<script") == 2  # the data block and our own script; a label adds none
    block = re.search(r'id="review-data">(.*?)</script>', html, re.DOTALL).group(1)
    assert "<" not in block and ">" not in block  # \u003c escapes: the block cannot be closed from data
    assert "&lt;script&gt;window.__pwned = 1" in html  # the title, escaped by jinja2
    assert 'onerror="window' not in html
    records = _records(_data(html))
    assert records[1]["cl"] == HOSTILE_LABEL and records[2]["c"] == HOSTILE_ID  # the data itself is intact
    assert "<b>unreadable</b>" in records[2]["error"]


def test_csp_allows_exactly_our_inline_script_and_style(review_store):
    root, entries = review_store
    html = render_review_html(entries, root, root / "review", title="t")
    csp = html_lib.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1))
    script = re.search(r"<script>(.*?)</script>", html, re.DOTALL).group(1)
    style = re.search(r"<style>(.*?)</style>", html, re.DOTALL).group(1)

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert f"script-src {digest(script)};" in csp and f"style-src {digest(style)};" in csp
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp and "unsafe" not in csp
    assert "http" not in script.replace("http://www.w3.org/2000/svg", "")  # no CDN, no network
    served = render_review_html(entries, root, root / "review", title="t", decisions_url="/runs/review-test/decisions")
    assert "connect-src &#39;self&#39;" in served and _data(served)["post_url"] == "/runs/review-test/decisions"
    with pytest.raises(InvalidInputError, match=r"decisions_url 'javascript:alert\(1\)' is not a plain path"):
        render_review_html(entries, root, root / "review", title="t", decisions_url="javascript:alert(1)")


def test_links_are_relative_and_point_at_existing_files(review_store):
    root, _ = review_store
    page = write_review_page(root, RUN)
    links = [href for r in _records(_data(page.read_text())) for href in [*r["files"].values(), r["json"]] if href]
    assert len(links) == 9
    for link in links:
        assert not re.match(r"^[a-z]+:", link), link  # relative: no scheme, so never javascript:
        assert (page.parent / link).resolve().is_file(), link


def test_missing_image_is_reported_not_linked(review_store):
    root, entries = review_store
    composite = root / entries[0].record.explanation.images["composite"]
    composite.unlink()
    records = {r["i"]: r for r in _records(_data(write_review_page(root, RUN).read_text()))}
    assert records[0]["missing"] == [entries[0].record.explanation.images["composite"]]
    assert "composite" not in records[0]["files"] and "composite" in records[1]["files"]


def test_bad_inputs_raise_our_errors(review_store, tmp_path):
    root, _ = review_store
    with pytest.raises(InvalidInputError, match=r"run name '\.\./x'"):
        write_review_page(root, "../x")
    with pytest.raises(ArtifactError, match="no-such-run.jsonl' does not exist"):
        write_review_page(root, "no-such-run")
    manifest = root / "runs" / f"{RUN}.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0], '{"run_name": 3}', *lines[1:]]) + "\n")
    with pytest.raises(ArtifactError, match=r"line 2 is not a manifest entry"):
        write_review_page(root, RUN)
    assert not (root / "review" / f"{RUN}.html").exists()  # nothing half-written


def test_read_manifest_is_still_importable_from_review():
    from pairx_plugin.artifacts import review, store

    assert review.read_manifest is store.read_manifest  # kept for one release


# --------------------------------------------------------------------------- headless Chromium


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextmanager
def _browser(tmp_path: Path, downloads: Path | None = None, size: str = "1400,1300"):
    found = _chromium()
    if found is None:
        pytest.skip("chromium/chromedriver not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / f'chrome-{uuid.uuid4().hex}'}",
        f"--window-size={size}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if downloads is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        )
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    try:
        if downloads is not None:
            driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        yield driver
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        assert driver.execute_script("return window.__pwned === undefined")
    finally:
        driver.quit()


def _wait(driver, script: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def _keys(driver, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()


IMAGES = {
    "1": "identity_a/image_1.JPG",
    "2": "identity_a/image_2.JPG",
    "3": "identity_b/image_3.JPG",
    "4": "identity_b/image_4.JPG",
}
LABELS = {"1": "a", "2": "a", "3": "b", "4": "b"}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, seaturtle_dir, lite0_imagenet):
    """A real run: query 2 against 1, 3, 4 and query 4 against 3, 1 and a hostile id (top_k 2: 4 explained)."""
    import torch

    from pairx_plugin.artifacts.store import ArtifactStore
    from pairx_plugin.config import PairXConfig
    from pairx_plugin.hook import explain_matches
    from pairx_plugin.images import FileImageSource
    from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("review_real")
    source = FileImageSource(
        {k: seaturtle_dir / "images" / v for k, v in IMAGES.items()}, 224, IMAGENET_MEAN, IMAGENET_STD
    )
    records = []
    for query, candidates in (("2", ["1", "3", "4"]), ("4", ["3", "1", HOSTILE_ID])):
        for rank, candidate in enumerate(candidates):
            records.append(
                MatchRecord(
                    query_id=query,
                    candidate_id=candidate,
                    rank=rank,
                    score=0.9 - rank / 10,
                    query_label=LABELS[query],
                    candidate_label=LABELS.get(candidate, HOSTILE_LABEL),
                )
            )
    out = explain_matches(
        records=records,
        images=source,
        model=lite0_imagenet,
        config=PairXConfig(top_k=2),
        store=ArtifactStore(root),
        progress=False,
        run_name="real",
    )
    assert [r.explanation is not None for r in out] == [True, True, False, True, True, False]
    return root, out


def _stage_geometry(driver) -> dict:
    return driver.execute_script("""
        const stage = document.querySelector('.stage').getBoundingClientRect();
        const out = {stage: [stage.left, stage.top, stage.width, stage.height]};
        for (const side of ['query', 'candidate']) {
          const b = document.querySelector('figure.photo.' + side + ' img.clean').getBoundingClientRect();
          out[side] = [b.left - stage.left, b.top - stage.top, b.width, b.height];
        }
        return out;""")


def _shot(element) -> np.ndarray:
    """The element's pixels, after two animation frames (so a toggle is painted)."""
    import io

    element.parent.execute_async_script(
        "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(() => done()));"
    )

    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")).astype(np.int16)


def _disc_mask(shape, centres, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for x, y in centres:
        mask |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return mask


def _segment_mask(shape, segments, width: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    mask = np.zeros(shape, bool)
    for (x1, y1), (x2, y2) in segments:
        dx, dy = x2 - x1, y2 - y1
        t = np.clip(((xx - x1) * dx + (yy - y1) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        mask |= (xx - (x1 + t * dx)) ** 2 + (yy - (y1 + t * dy)) ** 2 <= width**2
    return mask


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-pixels, pixels + 1):
        for dx in range(-pixels, pixels + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def _expected_mask(layer: str, shape, geometry: dict, root: Path, ref: ExplanationRef) -> np.ndarray:
    """Where a layer can draw on the stage screenshot, from the artifact's own files (not from the page)."""
    document = json.loads((root / ref.json_path).read_text())
    mask = np.zeros(shape, bool)
    points = {}
    for side in ("query", "candidate"):
        x, y, w, h = geometry[side]
        info = document[side]
        sx, sy = w / info["display_width"], h / info["display_height"]
        points[side] = [
            (x + m[f"{side}_display_xy"][0] * sx, y + m[f"{side}_display_xy"][1] * sy) for m in document["matches"]
        ]
        if layer in ("heat", "colours"):
            role = {"heat": "overlay_heatmap_", "colours": "overlay_colors_"}[layer] + side
            # compact (1.1) artifacts: the overlay layers are drawn from the stored data (as the page's are)
            from pairx_plugin.artifacts.compact import materialize
            from pairx_plugin.artifacts.store import ArtifactStore

            layers = materialize(ArtifactStore(root), ref.artifact_id, ["overlays"])
            alpha = Image.open(root / layers[role]).getchannel("A").resize((round(w), round(h)), Image.BILINEAR)
            region = np.asarray(alpha) > 0
            top, left = round(y), round(x)
            mask[top : top + region.shape[0], left : left + region.shape[1]] |= region[
                : shape[0] - top, : shape[1] - left
            ]
    if layer == "lines":
        mask |= _segment_mask(shape, list(zip(points["query"], points["candidate"])), 2.5)
    if layer == "points":
        centres = points["query"] + points["candidate"]
        mask |= _disc_mask(shape, centres, 7.5)
        for x, y in centres:  # the match number beside each point
            mask[max(0, int(y) - 20) : max(0, int(y) + 1), max(0, int(x) + 4) : max(0, int(x) + 30)] = True
    return _dilate(mask, 1)


@pytest.mark.browser
@pytest.mark.slow
def test_each_layer_changes_pixels_only_where_it_draws(real_run, tmp_path):
    from selenium.webdriver.common.by import By

    root, out = real_run
    page = write_review_page(root, "real")
    with _browser(tmp_path) as driver:
        driver.get(page.resolve().as_uri())
        driver.find_element(By.CSS_SELECTOR, 'button.row[data-record-index="0"]').click()
        _wait(
            driver,
            "return Array.from(document.querySelectorAll('.stage img')).every(i => i.complete && i.naturalWidth > 0)",
        )
        stage = driver.find_element(By.CSS_SELECTOR, ".stage")
        geometry = _stage_geometry(driver)
        ref = out[0].explanation
        for layer in ("heat", "lines", "colours", "points"):
            before = _shot(stage)
            driver.find_element(By.ID, f"layer-{layer}").click()
            after = _shot(stage)
            changed = np.abs(after - before).max(axis=-1) > 3
            expected = _expected_mask(layer, changed.shape, geometry, root, ref)
            outside = changed & ~expected
            assert changed.sum() > 200, f"{layer}: toggling changed only {changed.sum()} pixels"
            assert outside.sum() <= 0.002 * changed.sum(), (
                f"{layer}: {outside.sum()} of {changed.sum()} changed pixels are outside where the layer draws"
            )
            assert changed.sum() >= 0.15 * expected.sum() if layer != "heat" else changed.sum() >= 0.3 * expected.sum()
            driver.find_element(By.ID, f"layer-{layer}").click()  # back on/off: the stage is as before
            restored = np.abs(_shot(stage) - before).max(axis=-1)
            # the same picture again, but for a few anti-aliased pixels of the re-rastered match numbers
            differ = restored > 3
            assert differ.sum() <= 100, f"{layer}: toggled twice, {differ.sum()} pixels differ"
            assert not (differ & ~_expected_mask("points", differ.shape, geometry, root, ref)).any()
        # the keyboard toggles too, and the opacity slider fades the layers
        _keys(driver, "c")
        assert driver.execute_script("return document.getElementById('layer-colours').checked") is True
        _keys(driver, "[[[")
        assert driver.execute_script("return document.getElementById('opacity').value") == "40"
        # hovering a match in the table highlights it in both photos and says its relevance
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(driver).move_to_element(driver.find_element(By.CSS_SELECTOR, 'tr[data-match="2"]')).perform()
        assert driver.execute_script("return document.querySelectorAll('svg.marks .hl').length") == 3  # line + 2 points
        assert "Match 3:" in driver.find_element(By.CSS_SELECTOR, ".match-info").text
        assert driver.execute_script("return document.querySelectorAll('svg.marks .cells rect').length") == 2
        SHOTS.mkdir(exist_ok=True)
        assert driver.find_element(By.ID, "pair-view").screenshot(str(SHOTS / "review_pair_view.png"))
    assert (SHOTS / "review_pair_view.png").stat().st_size > 50_000


def _metadata_for_ids(seaturtle_dir: Path, path: Path) -> Path:
    """The sample's metadata table with the run's ids (image_N -> N) and image 2 of unknown identity."""
    with open(seaturtle_dir / "metadata.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["image_id"] = row["image_id"].removeprefix("image_")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.browser
@pytest.mark.slow
def test_keyboard_decisions_survive_reload_export_and_apply_to_both_hosts(real_run, tmp_path, seaturtle_dir, capsys):
    import jsonschema
    from selenium.webdriver.common.by import By
    from wbia_standin import annotmatch_funcs  # noqa: F401 - registers the annotmatch methods
    from wbia_standin.controller import StandinController

    from pairx_plugin.cli import main
    from pairx_plugin.decisions import read_decisions
    from wbia_pairx.decisions import apply_decisions

    root, out = real_run
    page = write_review_page(root, "real")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with _browser(tmp_path, downloads) as driver:
        driver.get(page.resolve().as_uri())
        # query 2: candidate 1 different, candidate 3 same, candidate 4 unsure; then a hostile note
        _keys(driver, "jnjyju")
        _keys(driver, "e")
        assert driver.switch_to.active_element.get_attribute("id") == "note"
        driver.switch_to.active_element.send_keys(HOSTILE_NOTE)
        _keys(driver, "\ue00c")  # Escape leaves the note; shortcuts work again
        _keys(driver, "j")
        driver.refresh()
        _wait(driver, "return window.pairxReview && window.pairxReview.ready")
        badges = driver.execute_script(
            "return Array.from(document.querySelectorAll('button.row')).map(b => [b.dataset.recordIndex, "
            "b.querySelector('.badge').textContent])"
        )
        assert badges[:4] == [
            ["0", "\u2717 different"],
            ["1", "\u2713 same individual"],
            ["2", "? unsure"],
            ["3", "undecided"],
        ]
        assert driver.find_element(By.ID, "decided-count").text == "3 of 6 decided"
        # a stored decision made on another run of the same name (other ids at that index) is not shown
        driver.execute_script("""
            const key = 'pairx-review/v1/real', stored = JSON.parse(localStorage.getItem(key));
            stored['3'] = {decision: 'same', note: '', decided_at: '2026-01-01T00:00:00Z', q: '9', c: '8'};
            localStorage.setItem(key, JSON.stringify(stored));""")
        driver.refresh()
        _wait(driver, "return window.pairxReview && window.pairxReview.ready")
        assert driver.find_element(By.ID, "decided-count").text == "3 of 6 decided"
        # the URL remembers the record; its pair view shows the decision in words and the note as text
        assert driver.find_element(By.CSS_SELECTOR, "#pair-view h2 .cid").text == "3"
        driver.find_element(By.CSS_SELECTOR, 'button.row[data-record-index="2"]').click()
        assert driver.find_element(By.CSS_SELECTOR, ".decision-status").text == "Decided: ? unsure"
        assert driver.find_element(By.ID, "note").get_attribute("value") == HOSTILE_NOTE
        assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
        # hostile ids and labels are shown as text, never run
        driver.find_element(By.CSS_SELECTOR, 'button.row[data-record-index="5"]').click()
        assert driver.find_element(By.CSS_SELECTOR, "#pair-view h2 .cid").text == HOSTILE_ID
        assert HOSTILE_LABEL in driver.find_element(By.CSS_SELECTOR, "#pair-view .labels").text
        # filters: only undecided leaves the three undecided records
        driver.find_element(By.ID, "f-undecided").click()
        assert driver.find_element(By.ID, "list-count").text == "3 of 6 records shown"
        SHOTS.mkdir(exist_ok=True)
        driver.find_element(By.ID, "f-undecided").click()
        driver.find_element(By.CSS_SELECTOR, 'button.row[data-record-index="1"]').click()
        assert driver.save_screenshot(str(SHOTS / "review_run_view.png"))
        driver.find_element(By.ID, "export").click()
        exported = downloads / "real.decisions.jsonl"
        deadline = time.monotonic() + 10
        while not exported.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    schema = json.loads((REPO / "docs" / "schema" / "decision.schema.json").read_text())
    lines = exported.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    for line in lines:
        jsonschema.validate(json.loads(line), schema)
    decisions = {d.record_index: d for d in read_decisions(exported)}
    assert {i: d.decision for i, d in decisions.items()} == {0: "different", 1: "same", 2: "unsure"}
    assert decisions[2].note == HOSTILE_NOTE and decisions[1].artifact_id == out[1].explanation.artifact_id
    assert (decisions[0].query_id, decisions[0].candidate_id, decisions[0].run_name) == ("2", "1", "real")

    metadata = _metadata_for_ids(seaturtle_dir, tmp_path / "metadata.csv")
    curated = tmp_path / "curated.csv"
    assert main(["decisions", "apply", str(exported), "--metadata", str(metadata), "--out", str(curated)]) == 0
    with open(curated, encoding="utf-8", newline="") as handle:
        identities = {row["image_id"]: row["identity"] for row in csv.DictReader(handle)}
    assert identities == {"1": "a", "2": "b", "3": "b", "4": "b"}  # 2 judged the same as 3
    assert "are both labelled 'a' but were judged different" in capsys.readouterr().out

    ibs = StandinController(seaturtle_dir, tmp_path / "cache")
    rowids = apply_decisions(ibs, read_decisions(exported))
    assert ibs.get_annotmatch_evidence_decision(rowids) == [0, 1, 3]
    assert ibs.get_annotmatch_rowid_from_undirected_superkey([1, 2, 2], [2, 3, 4]) == rowids


@pytest.mark.browser
@pytest.mark.slow
def test_a_thousand_records_load_in_seconds(real_run, tmp_path):
    from selenium.webdriver.common.by import By

    root, out = real_run
    refs = [r.explanation for r in out if r.explanation is not None]
    entries = []
    for index in range(1000):
        query, rank = divmod(index, 4)
        record = MatchRecord(
            query_id=f"q{query:04d}",
            candidate_id=f"c{index:04d}",
            rank=rank,
            score=1.0 - rank / 10 - query / 10000,
            query_label=str(query % 7),
            candidate_label=str(index % 7),
        )
        entries.append(
            ManifestEntry(
                run_name="big",
                index=index,
                status="explained",
                record=record.with_explanation([refs[index % len(refs)]]),
            )
        )
    (root / "runs" / "big.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in entries))
    started = time.perf_counter()
    page = write_review_page(root, "big")
    build_s = time.perf_counter() - started
    with _browser(tmp_path) as driver:
        started = time.perf_counter()
        driver.get(page.resolve().as_uri())
        _wait(driver, "return window.pairxReview && window.pairxReview.ready")
        load_s = time.perf_counter() - started
        rows = driver.execute_script("return document.querySelectorAll('button.row').length")
        assert 0 < rows < 1000  # the list renders lazily
        assert driver.find_element(By.ID, "list-count").text == "1000 of 1000 records shown"
        _keys(driver, "j" * 5)
        assert driver.find_element(By.CSS_SELECTOR, "#pair-view h2 .cid").text == "c0004"
        driver.execute_script("document.getElementById('run-view').scrollTop = 1e9")
        _wait(driver, f"return document.querySelectorAll('button.row').length > {rows}")
    print(f"1000 records: page built in {build_s:.2f} s, loaded in {load_s:.2f} s, {page.stat().st_size} bytes")
    assert load_s < 3.0 and build_s < 10.0


@pytest.mark.browser
@pytest.mark.slow
def test_served_page_posts_each_decision_beside_the_run(real_run, tmp_path):
    """Served over HTTP with a decisions URL, the page POSTs every decision; store_decisions keeps it."""
    import functools
    import http.server
    import threading

    from pairx_plugin.decisions import read_decisions, store_decisions

    root, _ = real_run
    page = write_review_page(root, "real", output=root / "review" / "served.html", decisions_url="/decisions")
    statuses: list[int] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8")
            try:
                store_decisions(root / "runs", body)
                status = 204
            except InvalidInputError:
                status = 400
            statuses.append(status)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stored = root / "runs" / "real.decisions.jsonl"
    stored.unlink(missing_ok=True)
    try:
        with _browser(tmp_path) as driver:
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/review/{page.name}")
            _wait(driver, "return window.pairxReview && window.pairxReview.ready")
            _keys(driver, "jyjn")
            _wait(driver, "return document.getElementById('save-status').textContent === 'Saved to the server.'")
            deadline = time.monotonic() + 10
            while len(statuses) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    assert statuses == [204, 204]
    assert [(d.record_index, d.decision) for d in read_decisions(stored)] == [(0, "same"), (1, "different")]
