"""Optional mouth-detail restoration through spandrel models in their native file formats: strength 0 is the
identity, 1x and 4x models, the effect stays inside the regenerated region, clear errors for unusable models."""

from __future__ import annotations

import numpy as np
import pytest
import spandrel
import torch

from latentsync.errors import InputError
from latentsync.face import load_mask
from latentsync.face.enhance import FaceRestorer, load_model, restoration_weight
from tools.make_tiny_restorer import compact_state_dict, sharpener_state_dict, write_compact, write_sharpener

RES = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("restorers")
    write_compact(folder / "tiny_1x.pth", compact_state_dict(scale=1, seed=1))
    write_compact(folder / "tiny_4x.pth", compact_state_dict(scale=4, seed=4))
    write_compact(folder / "zero_4x.pth", {k: v * 0 for k, v in compact_state_dict(scale=4).items()})
    write_compact(folder / "gray_1x.pth", compact_state_dict(scale=1, channels=1))
    write_sharpener(folder / "sharpen_1x.pth", amount=2.0)
    torch.save({"fc1.weight": torch.zeros(4, 8), "fc1.bias": torch.zeros(4)}, folder / "mlp.pth")
    (folder / "notes.pth").write_text("not a model")
    return folder


@pytest.fixture(scope="module")
def faces():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=(RES, RES), mode="bilinear")
    return (smooth + 0.1 * torch.rand(2, 3, RES, RES)) * 1.6 - 0.8  # in [-1, 1]


def keep_mask() -> np.ndarray:
    return load_mask(RES)


def test_strength_zero_returns_the_input(model_dir, faces):
    restorer = FaceRestorer.from_file(model_dir / "tiny_1x.pth", strength=0)
    assert restorer(faces, keep_mask()) is faces
    assert FaceRestorer.from_file(model_dir / "tiny_1x.pth")(faces, keep_mask(), strength=0.0) is faces


@pytest.mark.parametrize("name", ["tiny_1x.pth", "tiny_4x.pth"])
def test_effect_only_inside_the_regenerated_region(model_dir, faces, name):
    restorer = FaceRestorer.from_file(model_dir / name, strength=1.0)
    mask = keep_mask()
    out = restorer(faces, mask)
    assert out.shape == faces.shape and out.dtype == faces.dtype and out.device == faces.device
    changed = (out != faces).any(dim=1)  # (N, R, R)
    weight = restoration_weight(mask, RES / 32)
    assert not changed[:, torch.from_numpy(weight == 0)].any()  # outside the region: the input bit for bit
    assert bool(changed[:, torch.from_numpy(weight == 1)].all())
    assert (mask[weight > 0] < 0.5).all()  # the weight never reaches outside the region
    assert out.min() >= -1 and out.max() <= 1


def test_strength_scales_the_change_linearly(model_dir, faces):
    restorer = FaceRestorer.from_file(model_dir / "tiny_1x.pth")
    full = restorer(faces, keep_mask(), strength=1.0) - faces
    half = restorer(faces, keep_mask(), strength=0.5) - faces
    torch.testing.assert_close(half, full * 0.5, atol=1e-5, rtol=0)
    assert full.abs().max() > 0.05


def test_four_times_model_is_resized_back(model_dir, faces):
    # all-zero weights: the compact net returns its nearest-upsampled input; area-resized back it is the input
    restorer = FaceRestorer.from_file(model_dir / "zero_4x.pth")
    assert restorer.model.scale == 4
    torch.testing.assert_close(restorer(faces, keep_mask()), faces, atol=1e-6, rtol=0)


def test_sharpener_sharpens_the_mouth(model_dir):
    step = torch.zeros(1, 3, RES, RES)
    step[..., RES // 2:] = 0.6  # a vertical edge through the mouth region
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(step, (2, 2, 2, 2), mode="replicate"), 5, 1)
    out = FaceRestorer.from_file(model_dir / "sharpen_1x.pth")(blurred, keep_mask())
    row = int(np.nonzero((keep_mask()[:, RES // 2] < 0.5))[0].max()) - 8  # a row well inside the region
    slope = lambda img: float(img[0, 0, row].diff().abs().max())  # noqa: E731
    assert slope(out) > 1.5 * slope(blurred)
    assert sharpener_state_dict(0.0)["body.4.weight"].abs().sum() == 0


def test_comfy_descriptor_dtype_and_release(model_dir, faces):
    state = torch.load(model_dir / "tiny_1x.pth", weights_only=True)  # what ComfyUI's loader hands spandrel
    descriptor = spandrel.ModelLoader().load_from_state_dict(state).eval()
    with FaceRestorer(descriptor, 1.0, dtype="bf16") as restorer:
        out_bf16 = restorer(faces, torch.from_numpy(keep_mask()))
        assert descriptor.dtype == torch.bfloat16
    assert descriptor.dtype == torch.float32  # given back as found
    out_fp32 = FaceRestorer(descriptor, 1.0)(faces, keep_mask())
    assert out_bf16.dtype == torch.float32
    assert (out_bf16 - out_fp32).abs().max() < 0.05
    half_faces = faces.to(torch.bfloat16)
    out = FaceRestorer(descriptor, 1.0)(half_faces, keep_mask())
    weight = torch.from_numpy(restoration_weight(keep_mask(), RES / 32) == 0)
    assert out.dtype == torch.bfloat16 and torch.equal(out[:, :, weight], half_faces[:, :, weight])


def test_unusable_models_are_explained(model_dir, tmp_path):
    with pytest.raises(InputError, match=r"restoration model file not found: .*missing\.pth"):
        load_model(tmp_path / "missing.pth")
    with pytest.raises(InputError, match=r"cannot load the restoration model .*mlp\.pth: spandrel says "
                                         r"UnsupportedModelError"):
        load_model(model_dir / "mlp.pth")
    with pytest.raises(InputError, match=r"cannot load the restoration model .*notes\.pth: spandrel says"):
        load_model(model_dir / "notes.pth")
    with pytest.raises(InputError, match=r"gray_1x\.pth is RealESRGAN Compact \(Restoration, 1x, 1→1 channels\); "
                                         r"face restoration needs a model that takes and gives 3 channels"):
        FaceRestorer.from_file(model_dir / "gray_1x.pth")
    with pytest.raises(InputError, match=r"must be a spandrel ImageModelDescriptor .*got Linear"):
        FaceRestorer(torch.nn.Linear(2, 2))


def test_inpainting_model_is_refused():
    from spandrel.architectures.LaMa import LaMaArch

    module = torch.nn.Conv2d(4, 3, 1)
    masked = spandrel.MaskedImageModelDescriptor(module, module.state_dict(), architecture=LaMaArch(),
                                                 purpose="Inpainting", tags=[], supports_half=False,
                                                 supports_bfloat16=True, input_channels=3, output_channels=3)
    with pytest.raises(InputError, match=r"is LaMa \(Inpainting, 1x, 3→3 channels\): a model that fills a masked "
                                         r"area .* needs an image-to-image model"):
        FaceRestorer(masked)


def test_parameter_validation(model_dir, faces):
    descriptor = load_model(model_dir / "tiny_1x.pth")
    for bad in (-0.1, 1.5, float("nan"), "strong"):
        with pytest.raises(InputError, match=r"restore_strength must be a number from 0 to 1, got"):
            FaceRestorer(descriptor, bad)
    with pytest.raises(InputError, match=r"unknown restoration dtype 'fp8': choose one of auto, fp16, bf16, fp32"):
        FaceRestorer(descriptor, dtype="fp8")
    no_half = spandrel.ImageModelDescriptor(descriptor.model, descriptor.model.state_dict(),
                                            architecture=descriptor.architecture, purpose="Restoration", tags=[],
                                            supports_half=False, supports_bfloat16=False, scale=1,
                                            input_channels=3, output_channels=3)
    with pytest.raises(InputError, match=r"does not support fp16; use fp32 or auto"):
        FaceRestorer(no_half, dtype="fp16")(faces, keep_mask())
    with pytest.raises(InputError, match=r"expected generated faces \(N, 3, R, R\), got \(3, 64, 64\)"):
        FaceRestorer(descriptor)(faces[0], keep_mask())
    with pytest.raises(InputError, match=r"the mask is 32x32 but the faces are 64x64"):
        FaceRestorer(descriptor)(faces, np.ones((32, 32), np.float32))


def test_half_precision_overflow_falls_back_to_fp32(faces, caplog):
    descriptor = spandrel.ModelLoader().load_from_state_dict(compact_state_dict(scale=1, seed=2, std=30.0))
    restorer = FaceRestorer(descriptor, 1.0, dtype="fp16")
    with caplog.at_level("WARNING", logger="latentsync.face.enhance"):
        out = restorer(faces, keep_mask())
    assert "non-finite values in torch.float16; running it in fp32" in caplog.text
    assert restorer.dtype == "fp32" and bool(torch.isfinite(out).all())
