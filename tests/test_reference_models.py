"""Reference models for benchmarks: MiewID-like (BN-calibrated), ResNet-50, sea-turtle inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.reference_models import (
    GeM,
    calibrate_batchnorm,
    imagenet_tensor,
    miewid_like,
    resnet50_random,
    seaturtle_batch,
    seaturtle_paths,
)
from pairx_plugin.errors import InvalidInputError
from pairx_plugin.pretrained import IMAGENET_MEAN, IMAGENET_STD

SIZE = 96  # small enough for 2 shared cores; big enough for a 6x6 map at blocks.3 (stride 16)


@pytest.fixture(scope="module")
def calibration(shared_dir) -> torch.Tensor:
    return seaturtle_batch(shared_dir, SIZE)


@pytest.fixture(scope="module")
def miewid(calibration) -> nn.Module:
    torch.set_num_threads(1)
    return miewid_like(seed=0, calibration_images=calibration)


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# ------------------------------------------------------------------------------------------ inputs
def test_seaturtle_batch_is_the_four_images_then_their_flips(shared_dir, golden_dir):
    batch = seaturtle_batch(shared_dir, 224)
    assert batch.shape == (8, 3, 224, 224) and batch.dtype == torch.float32
    assert torch.equal(batch[4:], batch[:4].flip(-1))
    assert torch.equal(seaturtle_batch(shared_dir, 224, flips=False), batch[:4])
    # undo the ImageNet normalisation: the resized RGB images are the golden reference's display images
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = ((batch * std + mean) * 255).permute(0, 2, 3, 1).numpy()
    golden = np.load(golden_dir / "effnet_lite0_224.npz")
    for row, key in [(0, "p12__img_np0"), (1, "p12__img_np1"), (2, "p13__img_np1")]:
        assert np.abs(rgb[row] - golden[key].astype(np.float64)).max() < 0.01, key
    for i in range(4):  # four different photos
        for j in range(i + 1, 4):
            assert (batch[i] - batch[j]).abs().mean() > 0.1


def test_imagenet_tensor_matches_the_batch_row(shared_dir):
    path = seaturtle_paths(shared_dir)[2]
    assert path.name == "image_3.JPG"
    one = imagenet_tensor(path, 64)
    assert one.shape == (1, 3, 64, 64)
    assert torch.equal(one[0], seaturtle_batch(shared_dir, 64, flips=False)[2])


@pytest.mark.parametrize("size", [0, 7, -224, 224.0, "224", True, None])
def test_bad_size_is_refused(shared_dir, size):
    with pytest.raises(InvalidInputError, match="size must be an int of at least 8"):
        seaturtle_batch(shared_dir, size)
    with pytest.raises(InvalidInputError, match="size must be an int of at least 8"):
        imagenet_tensor(seaturtle_paths(shared_dir)[0], size)


def test_missing_shared_dir_names_the_path(tmp_path):
    with pytest.raises(InvalidInputError, match=r"no sea-turtle sample at .*nowhere.*data/seaturtle_sample"):
        seaturtle_batch(tmp_path / "nowhere", 64)


def test_metadata_without_path_column_is_refused(tmp_path):
    root = tmp_path / "data" / "seaturtle_sample"
    root.mkdir(parents=True)
    (root / "metadata.csv").write_text("image_id,identity\nimage_1,a\n")
    with pytest.raises(InvalidInputError, match="no 'path' column"):
        seaturtle_batch(tmp_path, 64)


def test_missing_image_file_names_the_file(tmp_path):
    root = tmp_path / "data" / "seaturtle_sample"
    root.mkdir(parents=True)
    (root / "metadata.csv").write_text("image_id,identity,path,split\nimage_1,a,images/gone.JPG,train\n")
    with pytest.raises(InvalidInputError, match=r"gone\.JPG.*file not found"):
        seaturtle_batch(tmp_path, 64)


# ------------------------------------------------------------------------------------------ GeM
def test_gem_is_average_pooling_at_p1_and_approaches_max_pooling():
    x = torch.rand(2, 5, 4, 6) + 0.01
    assert isinstance(GeM().p, nn.Parameter) and float(GeM().p.detach()) == 3.0
    assert torch.allclose(GeM(p=1.0)(x), x.mean(dim=(2, 3), keepdim=True), atol=1e-6)
    cubic = GeM(p=3.0)(x)
    assert torch.allclose(cubic, x.pow(3).mean(dim=(2, 3), keepdim=True).pow(1 / 3), atol=1e-6)
    assert (cubic > x.mean(dim=(2, 3), keepdim=True)).all()
    high = GeM(p=200.0)(x).detach()
    peak = x.amax(dim=(2, 3), keepdim=True)
    assert (high <= peak + 1e-6).all() and (high >= 0.97 * peak).all()
    assert GeM(eps=1e-6)(-torch.ones(1, 1, 2, 2)).item() == pytest.approx(1e-6, rel=1e-3)  # clamped, no NaN


# ------------------------------------------------------------------------------------------ MiewID-like
def test_miewid_like_layout_and_embedding(miewid, calibration):
    assert not miewid.training and all(not m.training for m in miewid.modules())
    assert isinstance(miewid.pooling, GeM) and isinstance(miewid.bn, nn.BatchNorm1d)
    names = dict(miewid.named_modules())
    assert "backbone.blocks.3" in names and "backbone.blocks.5" in names
    width = miewid.backbone.num_features
    with torch.no_grad():
        emb = miewid(calibration)
    assert emb.shape == (8, width) and width == miewid.bn.num_features
    assert torch.isfinite(emb).all()
    assert all(p.requires_grad and p.grad is None for p in miewid.parameters())


def test_calibration_sets_each_batchnorm_from_the_batch(miewid, calibration):
    # the first BatchNorm sees the stem conv's output: its running stats are that batch's statistics
    with torch.no_grad():
        stem = miewid.backbone.conv_stem(calibration)
    bn1 = miewid.backbone.bn1
    assert torch.allclose(bn1.running_mean, stem.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert torch.allclose(bn1.running_var, stem.var(dim=(0, 2, 3), unbiased=True), atol=1e-5, rtol=1e-3)
    norms = _batchnorms(miewid)
    assert len(norms) > 50
    for m in norms:  # every one moved away from its init (mean 0, var 1) and has its momentum back
        assert not torch.equal(m.running_var, torch.ones_like(m.running_var))
        assert m.momentum == 0.1 and int(m.num_batches_tracked) == 1


def test_calibration_tames_the_random_init(miewid, calibration):
    raw = miewid_like(seed=0)
    with torch.no_grad():
        raw_emb = raw(calibration[:2])
        calibrated = miewid(calibration[:2])
    assert raw_emb.abs().max() > 1e3  # the blow-up issue 6 describes
    assert calibrated.abs().max() < 50
    # same seed, same parameters: only the BatchNorm buffers differ
    for (name, p_raw), p_cal in zip(raw.named_parameters(), miewid.parameters()):
        assert torch.equal(p_raw, p_cal), name


def test_miewid_like_is_deterministic_for_a_seed(miewid, calibration):
    again = miewid_like(seed=0, calibration_images=calibration)
    for (name, a), b in zip(miewid.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    other = miewid_like(seed=1)
    assert not torch.equal(other.backbone.conv_stem.weight, miewid.backbone.conv_stem.weight)


def test_resnet50_random_returns_calibrated_pooled_features(shared_dir):
    images = seaturtle_batch(shared_dir, 64)
    model = resnet50_random(seed=0, calibration_images=images)
    assert isinstance(model.fc, nn.Identity) and not model.training
    with torch.no_grad():
        emb = model(images[:2])
        stem = model.conv1(images)
    assert emb.shape == (2, 2048) and torch.isfinite(emb).all()
    assert torch.allclose(model.bn1.running_mean, stem.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "images, message",
    [
        ("not a tensor", "must be a \\(B, 3, H, W\\) float tensor, got str"),
        (torch.zeros(3, 32, 32), "must have shape \\(B, 3, H, W\\), got \\(3, 32, 32\\)"),
        (torch.zeros(2, 1, 32, 32), "must have shape \\(B, 3, H, W\\), got \\(2, 1, 32, 32\\)"),
        (torch.zeros(1, 3, 32, 32), "has 1 image\\(s\\); batch statistics need at least 2"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "has dtype torch.uint8; pass normalised float32"),
        (torch.full((2, 3, 32, 32), float("nan")), "contains NaN or infinite"),
    ],
)
def test_bad_calibration_images_are_refused_and_the_model_is_untouched(images, message):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InvalidInputError, match="calibration_images " + message):
        calibrate_batchnorm(model, images)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and model[1].momentum == 0.1
    with pytest.raises(InvalidInputError, match="calibration_images " + message):
        resnet50_random(seed=0, calibration_images=images)


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_bad_seed_is_refused(seed):
    with pytest.raises(InvalidInputError, match="seed must be an int"):
        miewid_like(seed=seed)
    with pytest.raises(InvalidInputError, match="seed must be an int"):
        resnet50_random(seed=seed)


def test_calibration_failure_mid_forward_restores_the_model():
    class Exploding(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), Exploding()).eval()
    model[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        calibrate_batchnorm(model, torch.rand(2, 3, 16, 16))
    assert model[1].momentum == 0.3 and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_reference_models_leave_the_callers_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = resnet50_random(seed=0)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator was not reseeded
    second = resnet50_random(seed=0)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name  # still deterministic for a seed
    expected_next = torch.rand(3)
    torch.set_rng_state(before)
    assert torch.equal(torch.rand(3), expected_next)
