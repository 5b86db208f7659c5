"""The Wildbook-compatible explain service: real HTTP on loopback, URI policy, limits, per-pair errors."""
from __future__ import annotations

import base64
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pairx_plugin.errors import ConfigError, InvalidInputError
from pairx_plugin.images import crop_box
from pairx_plugin.service import (
    ExplainRequest,
    ServiceConfig,
    UriNotAllowedError,
    create_app,
    crop_rotated,
    resolve_uri,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = {"k_colors": 2, "k_lines": 5, "layer_key": "blocks.3"}


@pytest.fixture(scope="module")
def roots(tmp_path_factory, seaturtle_dir):
    """An image root holding copies of the turtles, a symlink leading out, and a secret outside it."""
    base = tmp_path_factory.mktemp("service")
    root = base / "images"
    root.mkdir()
    for name, rel in (("a1.jpg", "identity_a/image_1.JPG"), ("a2.jpg", "identity_a/image_2.JPG"),
                      ("b3.jpg", "identity_b/image_3.JPG")):
        shutil.copy(seaturtle_dir / "images" / rel, root / name)
    (root / "broken.jpg").write_bytes(b"not an image at all")
    secret = base / "secret.jpg"
    shutil.copy(seaturtle_dir / "images/identity_b/image_4.JPG", secret)
    (root / "escape.jpg").symlink_to(secret)
    return {"base": base, "root": root, "secret": secret}


@pytest.fixture(scope="module")
def config(roots):
    torch.set_num_threads(1)
    return ServiceConfig(image_roots=[str(roots["root"])], output_dir=str(roots["base"] / "store"))


@pytest.fixture(scope="module")
def client(config):
    from fastapi.testclient import TestClient

    with TestClient(create_app(config)) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict | bytes) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _png(b64: str) -> Image.Image:
    raw = base64.b64decode(b64, validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(raw))
    image.verify()
    return Image.open(io.BytesIO(raw))


@pytest.mark.slow
def test_service_answers_real_http_request_on_loopback(config, roots):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        assert server.started
        body = {"algorithm": "pairx", "visualization_type": "lines_and_colors", "model_id": "default",
                "crop_bbox": False, "image1_uris": ["a1.jpg"], "image2_uris": ["a2.jpg", "b3.jpg"],
                "theta1": [0.0], "theta2": [0.0, 0.0], "bb1": [[0, 0, 518, 631]],
                "bb2": [[0, 0, 518, 637], [0, 0, 589, 518]], "return_artifacts": True, **SMALL}
        status, reply = _post(f"http://127.0.0.1:{port}/explain/", body)
        assert status == 200, reply
        assert len(reply["images"]) == 2 and reply["errors"] == [None, None]
        for b64 in reply["images"]:
            image = _png(b64)
            assert image.size == (448, 448)  # the composite: 2 rows x 2 images of 224 px
        # our JSON artifact for the first pair, on request
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/artifacts/{reply['artifact_ids'][0]}") as resp:
            artifact = json.loads(resp.read())
        assert artifact["artifact_id"] == reply["artifact_ids"][0]
        assert artifact["layer"] == "blocks.3" and len(artifact["matches"]) <= 5
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_service_rejects_path_traversal_symlinks_and_foreign_hosts(client, roots):
    base = {"algorithm": "pairx", "image1_uris": ["a1.jpg"], **SMALL}
    refused = [
        "../secret.jpg",
        "a1/../../secret.jpg",
        str(roots["secret"]),
        "file://" + str(roots["secret"]),
        "escape.jpg",  # a symlink inside the root that points outside it
        "http://example.org/x.jpg",  # http is off by default
        "ftp://example.org/x.jpg",
        "file://otherhost" + str(roots["root"] / "a1.jpg"),
    ]
    for uri in refused:
        response = client.post("/explain/", json={**base, "image2_uris": [uri]})
        assert response.status_code == 403, (uri, response.json())
        assert uri in response.json()["detail"] and response.json()["type"] == "UriNotAllowedError"


def test_uri_policy_http_needs_switch_and_listed_host(roots):
    config = ServiceConfig(image_roots=[str(roots["root"])], allow_http=True, http_allowed_hosts=["images.example.org"])
    assert resolve_uri("https://images.example.org/a.jpg", config).url == "https://images.example.org/a.jpg"
    with pytest.raises(UriNotAllowedError, match="evil.example.org"):
        resolve_uri("https://evil.example.org/a.jpg", config)
    with pytest.raises(UriNotAllowedError, match="credentials"):
        resolve_uri("https://u:p@images.example.org/a.jpg", config)
    inside = resolve_uri("file://" + str(roots["root"] / "a1.jpg"), config)
    assert inside.path == (roots["root"] / "a1.jpg").resolve()
    with pytest.raises(UriNotAllowedError, match="image-root"):
        resolve_uri("a1.jpg", ServiceConfig())
    with pytest.raises(UriNotAllowedError, match="NUL"):
        resolve_uri("a1.jpg\x00", config)


def test_service_rejects_oversized_body_with_413(roots):
    from fastapi.testclient import TestClient

    small = ServiceConfig(image_roots=[str(roots["root"])], max_body_bytes=2048)
    with TestClient(create_app(small)) as c:
        body = {"algorithm": "pairx", "image1_uris": ["a1.jpg"], "image2_uris": ["a2.jpg" + " " * 4000]}
        response = c.post("/explain/", json=body)
        assert response.status_code == 413
        assert "max_body_bytes=2048" in response.json()["detail"]

        def chunks():  # no Content-Length: the stream itself is counted
            for _ in range(10):
                yield b" " * 512

        response = c.post("/explain/", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413


def test_service_rejects_more_than_16_pairs_with_422(client):
    body = {"algorithm": "pairx", "image1_uris": ["a1.jpg"], "image2_uris": ["a2.jpg"] * 17, **SMALL}
    response = client.post("/explain/", json=body)
    assert response.status_code == 422
    assert "17 pairs" in response.json()["detail"] and "16" in response.json()["detail"]


@pytest.mark.slow
def test_service_bad_pair_gets_its_own_error_and_others_still_explained(client, roots):
    body = {"algorithm": "pairx", "visualization_type": "only_colors", "image1_uris": ["a1.jpg"],
            "image2_uris": ["a2.jpg", "missing.jpg", "broken.jpg"], **SMALL}
    response = client.post("/explain/", json=body)
    assert response.status_code == 200, response.json()
    reply = response.json()
    assert len(reply["images"]) == len(reply["errors"]) == 3
    assert reply["images"][0] is not None and reply["errors"][0] is None
    assert _png(reply["images"][0]).size == (448, 224)  # only_colors: one row of two images
    for index, name in ((1, "missing.jpg"), (2, "broken.jpg")):
        assert reply["images"][index] is None
        error = reply["errors"][index]
        assert error["type"] == "InvalidInputError" and error["stage"] == "load"
        assert name in error["message"]
        assert str(roots["root"]) not in error["message"]  # the server's paths are not echoed


@pytest.mark.slow
def test_service_n_to_n_with_repeated_pairs_explains_each_distinct_pair_once(client, monkeypatch):
    import pairx_plugin.hook as hook

    seen = []
    real = hook.explain_matches

    def spy(**kwargs):
        seen.append([(r.query_id, r.candidate_id) for r in kwargs["records"]])
        return real(**kwargs)

    monkeypatch.setattr(hook, "explain_matches", spy)
    body = {"algorithm": "pairx", "visualization_type": "only_lines", "image1_uris": ["a1.jpg", "a1.jpg"],
            "image2_uris": ["a2.jpg", "a2.jpg"], **SMALL}
    reply = client.post("/explain/", json=body).json()
    assert len(seen) == 1 and len(seen[0]) == 1  # one distinct pair, two response slots
    assert reply["images"][0] == reply["images"][1] and reply["images"][0] is not None
    assert _png(reply["images"][0]).size == (448, 224)


@pytest.mark.parametrize("change, needle", [
    ({"algorithm": "other"}, "algorithm"),
    ({"visualization_type": "heatmap"}, "visualization_type"),
    ({"k_colors": 0}, "k_colors"),
    ({"k_lines": True}, "k_lines"),
    ({"image1_uris": ["a1.jpg", "a2.jpg"], "image2_uris": ["a1.jpg", "a2.jpg", "b3.jpg"]}, "image1_uris"),
    ({"image1_uris": []}, "image1_uris"),
    ({"bb2": [[0, 0, 1, 1], [0, 0, 1, 1]]}, "bb2"),
    ({"bb1": [[0, 0, 1]]}, "bb1"),
    ({"theta2": [0.1, 0.2]}, "theta2"),
])
def test_service_rejects_invalid_requests_with_422_naming_the_field(client, change, needle):
    body = {"algorithm": "pairx", "image1_uris": ["a1.jpg"], "image2_uris": ["a2.jpg"], **SMALL, **change}
    response = client.post("/explain/", json=body)
    assert response.status_code == 422, response.json()
    assert needle in response.json()["detail"]


def test_service_rejects_bad_json_unknown_model_and_layer(client):
    response = client.post("/explain/", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    body = {"algorithm": "pairx", "image1_uris": ["a1.jpg"], "image2_uris": ["a2.jpg"], **SMALL}
    response = client.post("/explain/", json={**body, "model_id": "miewid-msv4.1"})
    assert response.status_code == 422 and "miewid-msv4.1" in response.json()["detail"]
    assert "default" in response.json()["detail"]
    response = client.post("/explain/", json={**body, "layer_key": "backbone.blocks.3"})
    assert response.status_code == 422 and "backbone.blocks.3" in response.json()["detail"]


def test_service_artifact_endpoint_rejects_bad_and_unknown_ids(client):
    assert client.get("/artifacts/..%2F..%2Fetc").status_code in (404, 422)
    response = client.get("/artifacts/NOT-A-HASH")
    assert response.status_code == 422 and "NOT-A-HASH" in response.json()["detail"]
    response = client.get("/artifacts/" + "0" * 64)
    assert response.status_code == 404
    assert client.get("/health").json() == {"status": "ok", "models": ["default"]}


@pytest.mark.slow
def test_model_layer_key_from_config_replaces_wildbooks_key(roots):
    from fastapi.testclient import TestClient

    config = ServiceConfig(image_roots=[str(roots["root"])], output_dir=str(roots["base"] / "store"),
                           models={"default": {"spec": "builtin", "layer_key": "blocks.3"}})
    with TestClient(create_app(config)) as c:
        body = {"algorithm": "pairx", "visualization_type": "only_colors", "k_colors": 2, "k_lines": 5,
                "model_id": "default", "crop_bbox": True, "layer_key": "backbone.blocks.3",
                "image1_uris": ["a1.jpg"], "image2_uris": ["a2.jpg"], "theta1": 0.0, "theta2": [0.3],
                "bb1": [[20, 30, 400, 500]], "bb2": [[10, 20, 450, 520]]}
        reply = c.post("/explain/", json=body).json()
    assert reply["errors"] == [None]
    assert _png(reply["images"][0]).size == (448, 224)


def test_crop_rotated_removes_the_angle():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
    box = [30, 20, 40, 30]
    np.testing.assert_array_equal(crop_rotated(image, box, 0.0), crop_box(image, box))
    assert crop_rotated(image, None, 1.0) is image
    half_turn = crop_rotated(image, box, math.pi)  # the box turned upside down
    expected = crop_box(image, box)[::-1, ::-1]
    assert half_turn.shape == expected.shape
    assert np.abs(half_turn[1:-1, 1:-1].astype(int) - expected[1:-1, 1:-1]).max() <= 1
    with pytest.raises(InvalidInputError, match="theta"):
        crop_rotated(image, box, float("nan"))
    with pytest.raises(InvalidInputError, match="bbox"):
        crop_rotated(image, [0, 0, 0, 5], 0.5)


def test_service_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="service.image_roots"):
        ServiceConfig.load({"image_roots": [str(tmp_path / "nope")]})
    with pytest.raises(ConfigError, match="service.max_pairs"):
        ServiceConfig.load({"max_pairs": 0})
    with pytest.raises(ConfigError, match="service.colour"):
        ServiceConfig.load({"colour": "blue"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        ServiceConfig.load(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        ServiceConfig.load(tmp_path / "absent.yaml")
    good = tmp_path / "good.yaml"
    good.write_text(f"image_roots: [{tmp_path}]\nmax_pairs: 4\nmodels:\n  default: {{spec: builtin}}\n")
    assert ServiceConfig.load(good).max_pairs == 4


def test_explain_request_pairs_one_to_n_and_n_to_n():
    one = ExplainRequest(algorithm="pairx", image1_uris=["q"], image2_uris=["a", "b", "c"])
    assert one.pairs() == [(0, 0), (0, 1), (0, 2)]
    many = ExplainRequest(algorithm="pairx", image1_uris=["q", "r"], image2_uris=["a", "b"])
    assert many.pairs() == [(0, 0), (1, 1)]
    wildbook = ExplainRequest.model_validate({
        "algorithm": "pairx", "visualization_type": "only_colors", "k_colors": 5, "model_id": "miewid-msv4.1",
        "crop_bbox": False, "layer_key": "backbone.blocks.3", "image1_uris": ["q"], "image2_uris": ["a"],
        "theta1": [0.0], "theta2": [0.0], "bb1": [[1, 2, 3, 4]], "bb2": [[1, 2, 3, 4]], "future_field": 1})
    assert wildbook.k_colors == 5 and wildbook.k_lines is None


def test_serve_command_starts_uvicorn_in_a_subprocess(roots, tmp_path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'adapters'}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pairx_plugin.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--image-root", str(roots["root"]), "--output-dir", str(tmp_path / "store")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline, health = time.time() + 60, None
        while time.time() < deadline and health is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    health = json.loads(resp.read())
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
        assert health == {"status": "ok", "models": ["default"]}, proc.stdout.read() if proc.poll() else ""
        status, reply = _post(f"http://127.0.0.1:{port}/explain/",
                              {"algorithm": "pairx", "image1_uris": ["../x.jpg"], "image2_uris": ["a1.jpg"]})
        assert status == 403 and "../x.jpg" in reply["detail"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_command_bad_root_exits_2_with_message(capsys, tmp_path):
    from pairx_plugin.cli import main

    assert main(["serve", "--image-root", str(tmp_path / "absent")]) == 2
    assert "image_roots" in capsys.readouterr().err
