"""The explain service as a drop-in for WildMe ml-service's ``/explain/``, through real HTTP on loopback.

ml-service's own test file (``app/test_main.py``) sends two good requests and nine bad ones; the same
cases are restated here in our words, plus every other rule of its router, our URI policy, limits
and per-pair errors. A MiewID-shaped model (the built-in EfficientNet-Lite0 as ``.backbone`` with
GeM and a BatchNorm neck, so ``backbone.blocks.3`` exists) is configured under ``miewid-msv4.1``.
"""

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
import tracemalloc
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pairx_plugin.errors import ConfigError, InvalidInputError
from pairx_plugin.images import crop_box
from pairx_service.config import ServiceConfig
from pairx_service.crops import crop_rotated
from pairx_service.request import ExplainRequest
from pairx_service.uris import UriNotAllowedError, resolve_uri

REPO = Path(__file__).resolve().parents[1]
MIEWID_SPEC = "benchmarks.reference_models:miewid_shaped_lite0"
HINT = "x-pairx-hint"


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def roots(tmp_path_factory, seaturtle_dir):
    """An image root with ml-service's layout (Images/img1.png, img2.png), extra turtles, a broken file,
    a symlink leading out, and a secret outside the root."""
    base = tmp_path_factory.mktemp("service")
    root = base / "root"
    (root / "Images").mkdir(parents=True)
    for name, rel in (("img1.png", "identity_a/image_1.JPG"), ("img2.png", "identity_a/image_2.JPG")):
        Image.open(seaturtle_dir / "images" / rel).convert("RGB").resize((320, 384)).save(root / "Images" / name)
    shutil.copy(seaturtle_dir / "images/identity_b/image_3.JPG", root / "b3.jpg")
    (root / "broken.jpg").write_bytes(b"not an image at all")
    secret = base / "secret.jpg"
    shutil.copy(seaturtle_dir / "images/identity_b/image_4.JPG", secret)
    (root / "escape.jpg").symlink_to(secret)
    return {"base": base, "root": root, "secret": secret}


@pytest.fixture(scope="module")
def config(roots):
    torch.set_num_threads(1)
    return ServiceConfig(
        image_roots=[str(roots["root"])],
        output_dir=str(roots["base"] / "store"),
        device="cpu",
        models={"miewid-msv4.1": {"spec": MIEWID_SPEC, "input_size": 224}},
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn serving the app on 127.0.0.1 in a thread; ``post``/``get`` return (status, json, headers)."""

    def __init__(self, config: ServiceConfig) -> None:
        import uvicorn

        from pairx_service.app import create_app

        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(config), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start on loopback"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def _open(self, request: urllib.request.Request) -> tuple[int, dict, dict]:
        try:
            with urllib.request.urlopen(request, timeout=600) as resp:
                return resp.status, json.loads(resp.read()), {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read()), {k.lower(): v for k, v in err.headers.items()}

    def post(self, body: dict | bytes, path: str = "/explain/") -> tuple[int, dict, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self._open(
            urllib.request.Request(
                f"http://127.0.0.1:{self.port}{path}",
                data=data,
                headers={"Content-Type": "application/json"},
                method="POST",
            )
        )

    def get(self, path: str) -> tuple[int, dict, dict]:
        return self._open(urllib.request.Request(f"http://127.0.0.1:{self.port}{path}"))


@pytest.fixture(scope="module")
def http(config):
    with Server(config) as server:
        yield server


def _png(b64: str) -> Image.Image:
    raw = base64.b64decode(b64, validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(raw))
    image.verify()
    return Image.open(io.BytesIO(raw))


def _mlservice_body(**change) -> dict:
    """The body ml-service's bad-request tests start from (no ``algorithm``: it defaults to pairx)."""
    body = {
        "image1_uris": ["Images/img1.png"],
        "bb1": [[1, 2, 3, 4]],
        "theta1": [0.0],
        "image2_uris": ["Images/img2.png"],
        "bb2": [[2, 3, 4, 5]],
        "theta2": [0.0],
        "model_id": "miewid-msv4.1",
        "crop_bbox": False,
        "visualization_type": "lines_and_colors",
        "layer_key": "backbone.blocks.3",
        "k_lines": 20,
        "k_colors": 5,
    }
    body.update(change)
    return body


# ------------------------------------------------------------------------------ ml-service's cases
@pytest.mark.slow
def test_mlservice_good_requests_get_visualizations_and_count(http):
    # one pair, whole images (the [0, 0, 0, 0] box means no crop), no 'algorithm' field
    body = {
        "image1_uris": ["Images/img1.png"],
        "bb1": [[0, 0, 0, 0]],
        "image2_uris": ["Images/img2.png"],
        "bb2": [[0, 0, 0, 0]],
        "model_id": "miewid-msv4.1",
        "crop_bbox": False,
        "visualization_type": "lines_and_colors",
        "layer_key": "backbone.blocks.3",
        "k_lines": 20,
        "k_colors": 5,
    }
    status, reply, _ = http.post(body)
    assert status == 200, reply
    assert reply["response"] == "visualizations" and reply["count"] == 1 and reply["errors"] == [None]
    assert _png(reply["images"][0]).size == (448, 448)  # the full figure: 2 rows x 2 images of 224 px
    # two image1s and two image2s (N-to-N), one box each side: the missing ones are padded (no crop)
    body.update(image1_uris=["Images/img1.png", "Images/img1.png"], image2_uris=["Images/img2.png", "Images/img1.png"])
    status, reply, _ = http.post(body)
    assert status == 200, reply
    assert reply["response"] == "visualizations" and reply["count"] == 2 == len(reply["images"])
    assert reply["errors"] == [None, None]
    assert reply["images"][0] != reply["images"][1]  # img1-img2 and img1-img1 are different pictures


@pytest.mark.slow
def test_miewid_id_mapped_to_a_wbia_state_dict_checkpoint(http, roots, tmp_path):
    from benchmarks.reference_models import miewid_shaped_lite0

    checkpoint = tmp_path / "miew_id.msv4_1.bin"  # a WBIA MiewIdNet-style state dict (lite0 backbone)
    torch.save(miewid_shaped_lite0().state_dict(), checkpoint)
    config = ServiceConfig(
        image_roots=[str(roots["root"])],
        output_dir=str(tmp_path / "store"),
        device="cpu",
        models={"MiewID-msv4.1": {"spec": f"miewid[efficientnet_lite0]:{checkpoint}", "input_size": 224}},
    )
    body = {
        "image1_uris": ["Images/img1.png"],
        "bb1": [[0, 0, 0, 0]],
        "image2_uris": ["Images/img2.png"],
        "bb2": [[0, 0, 0, 0]],
        "k_lines": 5,
        "k_colors": 2,
    }
    with Server(config) as checkpoint_server:
        status, from_checkpoint, _ = checkpoint_server.post(body)
        assert status == 200, from_checkpoint
        health = checkpoint_server.get("/health")[1]
    assert health["models"]["miewid-msv4.1"]["loaded"] is True
    status, from_callable = http.post(body)[:2]  # the same weights through a module:callable spec
    assert status == 200 and from_checkpoint["count"] == 1
    assert from_checkpoint["images"] == from_callable["images"]  # the same picture, byte for byte


@pytest.mark.parametrize(
    "change, detail",
    [
        # ml-service's own cases
        ({"bb1": [[1, 2, 3]]}, "Each bounding box should have 4 values"),
        ({"bb2": [[2, 3, 4]]}, "400: Each bounding box should have 4 values"),
        ({"model_id": "unknown", "algorithm": "pairx"}, "Unsupported model for pairx."),
        ({"model_id": "msv3", "visualization_type": "unknown"}, "Unsupported visualization type."),
        ({"layer_key": "backbone.blasdf"}, "Invalid layer key"),
        ({"k_lines": -3}, "K Lines must be positive"),
        ({"k_lines": 1000}, "K Lines must be less than 100"),
        ({"k_colors": -3}, "K Colors must be positive"),
        ({"k_colors": 100}, "K Colors must be less than 100"),
        # the other rules of its router
        ({"algorithm": "gradcam"}, "Unsupported algorithm."),
        ({"bb1": [[1, -2, 3, 4]]}, "Bounding box values should be positive"),
        ({"bb2": [[2, 3, -4, 5]]}, "400: Bounding box values should be positive"),
        (
            {"image1_uris": ["Images/img1.png"] * 2, "image2_uris": ["Images/img2.png"] * 3},
            "Either provide only one image 1 or the same number of image1s and image2s.",
        ),
        (
            {"image1_uris": ["Images/img1.png"] * 17, "image2_uris": ["Images/img2.png"] * 17},
            "Batch exceeded max size of 16",
        ),
    ],
)
def test_mlservice_bad_requests_get_400_and_its_exact_detail(http, change, detail):
    status, reply, headers = http.post(_mlservice_body(**change))
    assert status == 400
    assert reply == {"detail": detail}  # exactly ml-service's body
    assert headers.get(HINT) and len(headers[HINT]) > 10  # what to do, in our header


def test_mlservice_model_ids_are_case_insensitive_and_unconfigured_ones_name_the_key(http):
    status, reply, _ = http.post(_mlservice_body(model_id="MiewID-MSv4.1", layer_key="backbone.blasdf"))
    assert (status, reply) == (400, {"detail": "Invalid layer key"})  # the id was accepted
    status, reply, _ = http.post(_mlservice_body(model_id="miewid-msv3"))
    assert status == 400 and "models.miewid-msv3" in reply["detail"] and "service config" in reply["detail"]


def test_mlservice_unreadable_image_is_error_loading_image(http, roots):
    # ml-service's case: a query path that is no image (a relative name under the root that does not exist)
    status, reply, _ = http.post(_mlservice_body(image1_uris=["img1"], k_colors=10))
    assert status == 400 and reply["detail"].startswith("Error loading image")
    assert "img1" in reply["detail"] and str(roots["root"]) not in reply["detail"]
    # a candidate that cannot be read: ml-service's batch path prefixes "400: "
    status, reply, _ = http.post(_mlservice_body(image2_uris=["broken.jpg"], bb2=[[0, 0, 0, 0]]))
    assert status == 400 and reply["detail"].startswith("400: Error loading image: image 'broken.jpg'")


def test_body_that_is_not_the_request_shape_gets_422_naming_the_field(http):
    status, reply, _ = http.post({"image2_uris": ["Images/img2.png"]})
    assert status == 422 and "image1_uris" in reply["detail"] and reply["hint"]
    status, reply, _ = http.post(_mlservice_body(k_lines=True))
    assert status == 422 and "k_lines" in reply["detail"]
    status, reply, _ = http.post(b"{not json")
    assert status == 422


def test_request_defaults_and_padding_are_mlservices():
    request = ExplainRequest.model_validate(
        {
            "image1_uris": ["q"],
            "bb1": [[1, 2, 3, 4]],
            "image2_uris": ["a", "b", "c"],
            "bb2": [[5, 6, 7, 8]],
            "name1": "x",
        }
    )
    assert (request.algorithm, request.model_id) == ("pairx", "miewid-msv4.1")
    assert request.visualization_type == "only_colors"
    assert (request.k_lines, request.k_colors) == (20, 5) and request.crop_bbox is False
    assert request.boxes(2) == [(5, 6, 7, 8), (0, 0, 0, 0), (0, 0, 0, 0)]
    assert request.thetas(2) == [0.0, 0.0, 0.0] and request.thetas(1) == [0.0]
    assert request.pairs() == [(0, 0), (0, 1), (0, 2)]
    many = ExplainRequest.model_validate(
        {
            "image1_uris": ["q", "r"],
            "image2_uris": ["a", "b"],
            "bb1": [],
            "bb2": [[1, 1, 2, 2], [1, 1, 2, 2], [9, 9, 9, 9]],
            "theta2": 0.5,
        }
    )
    assert many.pairs() == [(0, 0), (1, 1)] and many.boxes(1) == [(0, 0, 0, 0)] * 2
    assert many.boxes(2) == [(1, 1, 2, 2)] * 2 and many.thetas(2) == [0.5, 0.5]  # extra entries ignored


# ------------------------------------------------------------------------------ our additions
@pytest.mark.slow
def test_one_bad_pair_gets_its_own_error_and_the_others_are_explained(http, roots):
    body = {
        "image1_uris": ["Images/img1.png"],
        "image2_uris": ["Images/img2.png", "missing.jpg", "broken.jpg", "b3.jpg"],
        "bb2": [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1e308, 1e308, 1e308, 1e308]],
        "theta2": [0, 0, 0, 0.3],
        "crop_bbox": True,
        "k_lines": 5,
        "k_colors": 2,
        "theta1": [-10.0],
        "return_artifacts": True,
    }
    status, reply, _ = http.post(body)
    assert status == 200, reply
    assert reply["count"] == 4 and len(reply["errors"]) == 4
    assert reply["errors"][0] is None and _png(reply["images"][0]).size == (448, 224)  # only_colors: one row
    for index, needle in ((1, "missing.jpg"), (2, "broken.jpg"), (3, "1e+308")):
        assert reply["images"][index] is None and reply["artifact_ids"][index] is None
        assert needle in reply["errors"][index]["message"], reply["errors"][index]
        assert str(roots["root"]) not in reply["errors"][index]["message"]
    assert "max_image_pixels" in reply["errors"][3]["message"]
    status, artifact, _ = http.get(f"/artifacts/{reply['artifact_ids'][0]}")
    assert status == 200 and artifact["layer"] == "backbone.blocks.3" and len(artifact["matches"]) <= 5


def test_uri_policy_refuses_traversal_symlinks_and_foreign_schemes_with_403(http, roots):
    refused = [
        "../secret.jpg",
        "Images/../../secret.jpg",
        str(roots["secret"]),
        "file://" + str(roots["secret"]),
        "escape.jpg",
        "http://example.org/x.jpg",
        "ftp://example.org/x.jpg",
        "file://otherhost" + str(roots["root"] / "b3.jpg"),
    ]
    for uri in refused:
        status, reply, _ = http.post(_mlservice_body(image2_uris=[uri]))
        assert status == 403, (uri, reply)
        assert uri in reply["detail"] and reply["hint"]


def test_error_messages_never_show_server_paths(http, roots):
    root = str(roots["root"])
    for uri in ("d" * 5000 + ".jpg", "sub/" * 1250 + "x.jpg"):  # 5000 characters: shortened in messages
        status, reply, _ = http.post(_mlservice_body(image2_uris=[uri], bb2=[[0, 0, 0, 0]]))
        assert status == 400 and reply["detail"].startswith("400: Error loading image")
        assert root not in reply["detail"] and len(reply["detail"]) < 800, reply["detail"]
    status, reply, _ = http.get("/artifacts/" + "0" * 64)
    assert status == 404 and root not in json.dumps(reply) and str(roots["base"]) not in json.dumps(reply)
    status, reply, _ = http.get("/artifacts/NOT-A-HASH")
    assert status == 422 and "NOT-A-HASH" in reply["detail"]


def test_health_lists_the_configured_models(http):
    status, reply, _ = http.get("/health")
    assert status == 200 and reply["status"] == "healthy" and reply["device"] == "cpu"
    assert reply["models"]["miewid-msv4.1"]["spec"] == MIEWID_SPEC


def test_oversized_body_gets_413(roots):
    small = ServiceConfig(image_roots=[str(roots["root"])], max_body_bytes=2048)
    with Server(small) as server:
        status, reply, _ = server.post(_mlservice_body(image2_uris=["b3.jpg" + " " * 4000]))
        assert status == 413 and "max_body_bytes=2048" in reply["detail"]


def test_one_to_n_above_max_pairs_is_refused_like_a_batch(http):
    status, reply, _ = http.post(_mlservice_body(image2_uris=["Images/img2.png"] * 17))
    assert (status, reply) == (400, {"detail": "Batch exceeded max size of 16"})


def test_uri_policy_http_needs_switch_and_listed_host(roots):
    config = ServiceConfig(image_roots=[str(roots["root"])], allow_http=True, http_allowed_hosts=["images.example.org"])
    assert resolve_uri("https://images.example.org/a.jpg", config).url == "https://images.example.org/a.jpg"
    with pytest.raises(UriNotAllowedError, match="evil.example.org"):
        resolve_uri("https://evil.example.org/a.jpg", config)
    with pytest.raises(UriNotAllowedError, match="credentials"):
        resolve_uri("https://u:p@images.example.org/a.jpg", config)
    inside = resolve_uri("file://" + str(roots["root"] / "b3.jpg"), config)
    assert inside.path == (roots["root"] / "b3.jpg").resolve()
    with pytest.raises(UriNotAllowedError, match="image-root"):
        resolve_uri("b3.jpg", ServiceConfig())
    with pytest.raises(UriNotAllowedError, match="NUL"):
        resolve_uri("b3.jpg\x00", config)


# ------------------------------------------------------------------------------ crops
def test_crop_rotated_removes_the_angle_and_follows_mlservices_no_box_convention():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)
    box = [30, 20, 40, 30]
    np.testing.assert_array_equal(crop_rotated(image, box, 0.0), crop_box(image, box))
    assert crop_rotated(image, None, 0.0) is image
    assert crop_rotated(image, [0, 0, 0, 0], 0.0) is image  # ml-service's padding: no crop
    assert crop_rotated(image, [0, 0, 0, 0], 0.5).shape == image.shape  # an angle alone turns the whole frame
    half_turn = crop_rotated(image, box, math.pi)  # the box turned upside down
    expected = crop_box(image, box)[::-1, ::-1]
    assert half_turn.shape == expected.shape
    assert np.abs(half_turn[1:-1, 1:-1].astype(int) - expected[1:-1, 1:-1]).max() <= 1
    with pytest.raises(InvalidInputError, match="theta"):
        crop_rotated(image, box, float("nan"))


def test_crop_is_checked_against_max_pixels_before_allocating():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError, match=r"12000x12000 = 144000000 pixels, above max_image_pixels=50000000"):
            crop_rotated(image, [0, 0, 12000, 12000], 0.3, max_pixels=50_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # refused before OpenCV allocated the 432 MB canvas
    for box in ([1e308, 0, 10, 10], [0, 0, 1e308, 1e308], [-1e308, 5, 10, 10]):
        with pytest.raises(InvalidInputError, match=r"box \[") as caught:
            crop_rotated(image, box, 0.3, max_pixels=50_000_000)
        assert "OpenCV(" not in str(caught.value) and len(str(caught.value)) < 400
    with pytest.raises(InvalidInputError, match=r"box \[0, 0, 5000, 4000\] \(theta 0.2\).*5000x4000 = 20000000 pixels"):
        crop_rotated(image, [0, 0, 5000, 4000], 0.2, max_pixels=1_000_000)
    assert crop_rotated(image, [0, 0, 5000, 4000], 0.0, max_pixels=1_000_000).shape == image.shape  # clipped


# ------------------------------------------------------------------------------ config and command
def test_service_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="service.image_roots"):
        ServiceConfig.load({"image_roots": [str(tmp_path / "nope")]})
    with pytest.raises(ConfigError, match="service.max_pairs"):
        ServiceConfig.load({"max_pairs": 0})
    with pytest.raises(ConfigError, match="service.colour"):
        ServiceConfig.load({"colour": "blue"})
    with pytest.raises(ConfigError, match="service.device"):
        ServiceConfig.load({"device": "gpu0"})
    with pytest.raises(ConfigError, match="repeated"):
        ServiceConfig.load({"models": {"MiewID-msv3": {}, "miewid-msv3": {}}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        ServiceConfig.load(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        ServiceConfig.load(tmp_path / "absent.yaml")
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)]  # 9**7 values
    bomb.write_text("\n".join(lines) + "\nimage_roots: *a6\n")
    with pytest.raises(ConfigError, match="alias") as caught:
        ServiceConfig.load(bomb)
    assert len(str(caught.value)) < 1000
    good = tmp_path / "good.yaml"
    good.write_text(f"image_roots: [{tmp_path}]\nmax_pairs: 4\nmodels:\n  MiewID-msv4.1: {{spec: builtin}}\n")
    loaded = ServiceConfig.load(good)
    assert loaded.max_pairs == 4 and list(loaded.models) == ["miewid-msv4.1"]


def test_serve_command_comes_from_the_adapter_and_starts_uvicorn(roots, tmp_path):
    from pairx_plugin import cli

    assert "serve" not in cli.BUILTIN_COMMANDS  # contributed through the pairx_plugin.commands entry point
    config_file = tmp_path / "service.yaml"
    config_file.write_text(json.dumps({"models": {"miewid-msv4.1": {"spec": MIEWID_SPEC}}, "device": "cpu"}))
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'adapters'}")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pairx_plugin.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--image-root",
            str(roots["root"]),
            "--output-dir",
            str(tmp_path / "store"),
            "--config",
            str(config_file),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
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
        assert health is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert health["models"] == {"miewid-msv4.1": {"spec": MIEWID_SPEC, "loaded": False}}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_command_bad_root_exits_2_with_message(capsys, tmp_path):
    from pairx_plugin.cli import main

    assert main(["serve", "--image-root", str(tmp_path / "absent")]) == 2
    assert "image_roots" in capsys.readouterr().err


def test_core_imports_no_web_framework():
    code = (
        "import sys, pairx_plugin, pairx_plugin.cli, pairx_plugin.hook; "
        "assert not {'fastapi', 'uvicorn', 'pairx_service'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ------------------------------------------------------------------------------ review + decisions
def _raw(http, path: str, data: bytes | None = None, content_type: str = "application/x-ndjson"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{http.port}{path}",
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": content_type} if data is not None else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, err.read(), {k.lower(): v for k, v in err.headers.items()}


@pytest.mark.slow
def test_served_review_page_posts_decisions_that_are_stored_beside_the_run(http, roots):
    from pairx_plugin.artifacts.review import read_manifest_entries, read_page_data
    from pairx_plugin.decisions import read_decisions

    status, _, _ = http.post(_mlservice_body(bb1=[[0, 0, 0, 0]], bb2=[[0, 0, 0, 0]]))
    assert status == 200
    runs = roots["base"] / "store" / "runs"
    manifest = max(
        (p for p in runs.glob("*.jsonl") if not p.name.endswith(".decisions.jsonl")), key=lambda p: p.stat().st_mtime
    )
    run = manifest.name[: -len(".jsonl")]
    entry = read_manifest_entries(manifest)[0]

    # the page: served with the run's decisions route, its relative links land on files the service serves
    status, html, headers = _raw(http, f"/store/review/{run}.html")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = html.decode()
    assert read_page_data(page)["post_url"] == f"/runs/{run}/decisions"
    assert "connect-src &#39;self&#39;" in page or "connect-src 'self'" in page
    assert entry.record.explanation is not None and entry.record.explanation.images
    panel = next(p for p in entry.record.explanation.images.values() if p.endswith(".png"))
    status, png, _ = _raw(http, f"/store/{panel}")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"

    line = json.dumps(
        {
            "run_name": run,
            "record_index": entry.index,
            "query_id": entry.record.query_id,
            "candidate_id": entry.record.candidate_id,
            "decision": "same",
            "note": "posted by the page",
            "decided_at": "2026-11-30T18:00:00Z",
        }
    )
    status, body, _ = _raw(http, f"/runs/{run}/decisions", (line + "\n").encode())
    assert status == 200, body
    stored = read_decisions(runs / f"{run}.decisions.jsonl")
    assert [(d.record_index, d.decision, d.note) for d in stored][-1] == (entry.index, "same", "posted by the page")
    count = len(stored)

    # bad posts: each refused with the service's error shape, nothing stored
    wrong_ids = line.replace(json.dumps(entry.record.candidate_id), json.dumps("someone-else"))
    other_run = line.replace(f'"run_name": "{run}"', '"run_name": "other-run"')
    for path, data, expected, words in (
        (f"/runs/{run}/decisions", wrong_ids.encode(), 422, "names"),
        (f"/runs/{run}/decisions", b"{not json\n", 422, "line 1"),
        (f"/runs/{run}/decisions", other_run.encode(), 422, "other-run"),
        (f"/runs/{run}/decisions", b"\xff\xfe", 400, "UTF-8"),
        ("/runs/no-such-run/decisions", line.encode(), 422, "no-such-run"),
        (
            f"/runs/{run}/decisions",
            b"\n" * (http.server.config.app.state.service.config.max_body_bytes + 1),
            413,
            "max_body_bytes",
        ),
    ):
        status, body, headers = _raw(http, path, data)
        reply = json.loads(body)
        assert status == expected and words in reply["detail"] and reply["hint"] == headers[HINT], (path, reply)
    assert len(read_decisions(runs / f"{run}.decisions.jsonl")) == count

    # the file route never leaves the store; unknown runs get 404 naming the run
    for path in ("/store/..%2Fsecret.jpg", "/store/../secret.jpg", "/store/nothing/here.png"):
        assert _raw(http, path)[0] == 404, path
    status, body, _ = _raw(http, "/store/review/no-such-run.html")
    assert status == 404 and "no-such-run" in json.loads(body)["detail"]
