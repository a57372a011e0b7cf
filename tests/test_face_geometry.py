"""Face alignment, mask and paste-back without a detector: parity fixtures, ROI-exact paste-back, selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentsync.errors import InputError
from latentsync.face import FaceAligner, crop_size, latent_mask, load_mask, plan_restore, restore, restore_face, \
    similarity_transform, template_points
from latentsync.face.align import FILL_VALUE, bilinear_warp
from latentsync.face.select import acceptable, choose, parse_choice
from tools.parity_checks import affine as affine_check
from tools.parity_checks import mask as mask_check


def test_affine_parity(parity_dir):
    result = affine_check.check(parity_dir / "affine")
    assert result["ok"], result
    assert result["matrix_max_abs_err"] <= 1e-3 and result["restore_outside_identical"]


def test_mask_parity(parity_dir):
    result = mask_check.check(parity_dir / "mask")
    assert result["ok"] and result["latent_exact"] and result["resolutions"] == [256, 512], result


def test_mask_values():
    m256 = load_mask(256)
    assert m256.dtype == np.float32 and m256.shape == (256, 256)
    assert set(np.unique(m256)) == {0.0, 1.0} and int((m256 == 0).sum()) == 26673
    rows, cols = np.nonzero(m256 == 0)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (95, 242, 9, 247)
    assert m256[110, 120] == 1.0 and m256[110, 40] == 0.0  # the nose stays, the cheeks go
    m512 = load_mask(512)
    assert m512.shape == (512, 512) and len(np.unique(m512)) == 136
    lat = latent_mask(m512)
    assert lat.shape == (64, 64) and np.array_equal(lat, m512[::8, ::8])
    assert latent_mask(torch.from_numpy(m512)[None]).shape == (1, 64, 64)
    with pytest.raises(InputError):
        load_mask(100)


def test_template_and_crop_sizes():
    assert crop_size(512) == (420, 560) and crop_size(256) == (210, 280)
    np.testing.assert_allclose(template_points(512), [[95.2, 112], [324.8, 112], [210, 224]], atol=1e-9)


def test_similarity_recovers_known_transform():
    angle, scale, shift = np.deg2rad(12.0), 0.37, np.array([31.0, -7.5])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    tpl = template_points(512)
    points = (tpl - shift) @ np.linalg.inv(scale * rot).T  # M·points = template exactly
    matrix, bias = similarity_transform(points, tpl)
    np.testing.assert_allclose(matrix[:, :2], scale * rot, atol=1e-5)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=2e-3)
    # the smoothing input compares normalised (unrotated) coordinates: zero only without rotation
    assert np.abs(bias).max() > 0.01
    _, bias_upright = similarity_transform((tpl - shift) / scale, tpl)
    np.testing.assert_allclose(bias_upright, 0, atol=1e-5)


def test_smoothing_state_and_reset():
    frame = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    p0 = np.array([[150, 100], [210, 104], [181, 140]], np.float32)
    p1 = p0 + [[2, 0], [0, 1], [-3, 2]]
    aligner = FaceAligner(256)
    _, m0 = aligner.align(frame, p0)
    face1, m1 = aligner.align(frame, p1)
    fresh = FaceAligner(256)
    face1_fresh, m1_fresh = fresh.align(frame, p1)
    assert face1.shape == (256, 256, 3) and face1.dtype == np.uint8
    np.testing.assert_array_equal(m1[:, :2], m1_fresh[:, :2])  # smoothing only moves the translation
    assert np.abs(m1[:, 2] - m1_fresh[:, 2]).max() > 1e-3
    aligner.reset()
    _, m1_reset = aligner.align(frame, p1)
    np.testing.assert_array_equal(m1_reset, m1_fresh)


def test_bilinear_warp_fill_and_identity():
    src = np.arange(5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3)
    ident = np.array([[1, 0, 0], [0, 1, 0]], np.float64)
    chw = src.transpose(2, 0, 1)
    np.testing.assert_allclose(bilinear_warp(src, ident, (6, 5), FILL_VALUE), chw, atol=1e-4)
    np.testing.assert_allclose(bilinear_warp(chw, ident, (6, 5), FILL_VALUE, planar=True), chw, atol=1e-4)
    half = np.array([[1, 0, -0.5], [0, 1, 0]], np.float64)  # first column half outside → half fill
    out = bilinear_warp(src, half, (6, 5), FILL_VALUE)
    np.testing.assert_allclose(out[:, :, 0], 0.5 * chw[:, :, 0] + 0.5 * FILL_VALUE, atol=1e-4)


def _full_frame_restore(frame, face, matrix, resolution):
    """Straight full-frame paste-back (no ROI), to prove the ROI version equals it."""
    import cv2
    import torch.nn.functional as F

    w, h = crop_size(resolution)
    height, width = frame.shape[:2]
    crop = F.interpolate(torch.as_tensor(face)[None].float(), size=(h, w), mode="bicubic", align_corners=False,
                         antialias=True)[0].numpy()
    warped = bilinear_warp(crop, matrix.astype(np.float64), (width, height), FILL_VALUE, planar=True)
    warped = (np.clip(warped / 2 + 0.5, 0, 1) * 255).transpose(1, 2, 0)
    mask = bilinear_warp(np.ones((1, h, w), np.float32), matrix.astype(np.float64), (width, height), 0.0,
                         planar=True)[0]
    eroded = cv2.erode(mask, np.ones((2, 2), np.uint8), anchor=(1, 1))
    w_edge = int(np.sqrt(eroded.sum(dtype=np.float64))) // 20
    center = cv2.erode(eroded, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    size = 2 * w_edge + 1
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    soft = cv2.GaussianBlur(center, (size, size), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)[:, :, None]
    return (soft * (eroded[:, :, None] * warped) + (1 - soft) * frame.astype(np.float32)).astype(np.uint8)


@pytest.mark.parametrize("shape,points,resolution", [
    ((360, 500, 3), [[200, 150], [262, 146], [233, 185]], 512),
    ((240, 320, 3), [[5, 20], [60, 18], [30, 50]], 256),  # face hanging over the top-left corner
])
def test_restore_equals_full_frame_and_keeps_outside(shape, points, resolution):
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    face = torch.from_numpy(rng.uniform(-1, 1, (3, resolution, resolution)).astype(np.float32))
    matrix = FaceAligner(resolution).matrix(np.array(points, np.float32))
    out = restore_face(frame, face, matrix)
    assert out.dtype == np.uint8 and out.shape == frame.shape and out is not frame
    expected = _full_frame_restore(frame, face.numpy(), matrix, resolution)
    assert np.abs(out.astype(int) - expected).max() <= 1
    plan = plan_restore(matrix, frame.shape[:2], resolution)
    x0, y0, x1, y1 = plan.box
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    changed = np.any(out != frame, axis=2)
    assert not changed[outside].any()
    keep = np.ones(frame.shape[:2], np.float32)
    keep[y0:y1, x0:x1] = plan.keep  # 1 − soft mask
    assert not changed[keep == 1].any()  # only the feathered region changes
    assert changed.sum() > 100
    np.testing.assert_array_equal(restore(frame, face.numpy(), plan), out)


def test_restore_face_outside_frame_is_a_copy():
    frame = np.full((100, 120, 3), 9, np.uint8)
    matrix = FaceAligner(256).matrix(np.array([[5000, 5000], [5060, 5000], [5030, 5030]], np.float32))
    out = restore_face(frame, np.zeros((3, 256, 256), np.float32), matrix)
    assert np.array_equal(out, frame) and out is not frame


def test_selection_filter_and_choices():
    assert acceptable((0, 0, 50, 80), 0.5) and not acceptable((0, 0, 49.9, 80), 0.9)
    assert not acceptable((0, 0, 60, 79), 0.9) and not acceptable((0, 0, 130, 85), 0.9)  # w/h > 1.5
    assert not acceptable((0, 0, 60, 90), 0.49)
    boxes = [(300, 0, 400, 150), (10, 0, 90, 100), (600, 0, 660, 90)]
    assert choose(boxes, "largest") == 0 and choose(boxes, "leftmost") == 1 and choose(boxes, "rightmost") == 2
    assert choose(boxes, "index:0") == 1 and choose(boxes, "index 2") == 2 and choose(boxes, 1) == 0
    assert choose(boxes, "index:3") is None and choose([], "largest") is None
    assert choose(boxes, "center", (700, 150)) == 0 and choose(boxes, "centre", (200, 200)) == 1
    assert parse_choice("Index: 4") == ("index", 4) and parse_choice("left") == ("leftmost", 0)
    with pytest.raises(InputError):
        parse_choice("tallest")
