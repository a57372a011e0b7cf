"""Opt-in paste-back blends (feather, poisson) and colour matching: defaults bit-identical to the reference,
untouched pixels outside the pasted region, colour statistics, option validation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from latentsync.errors import InputError
from latentsync.face import FaceAligner, load_mask, plan_restore, restore
from latentsync.face.blend import GROW_PX, PasteOptions, paste_face

CASES = [  # frame shape, three points, resolution
    ((360, 500, 3), [[200, 150], [262, 146], [233, 185]], 512),
    ((240, 320, 3), [[120, 90], [170, 88], [146, 120]], 256),
    ((240, 320, 3), [[5, 20], [60, 18], [30, 50]], 256),  # face over the top-left corner
    ((200, 300, 3), [[250, 150], [296, 152], [274, 180]], 256),  # face over the bottom-right edge
]


def smooth_frame(shape, seed=0) -> np.ndarray:
    """Skin-like smooth frame with mild noise (colour statistics and Poisson behave as on a face)."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([170 + 30 * np.sin(xx / 40), 120 + 20 * np.cos(yy / 35), 100 + 15 * np.sin((xx + yy) / 50)], -1)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def case(shape, points, resolution, seed=0):
    frame = smooth_frame(shape, seed)
    aligned, matrix = FaceAligner(resolution).align(frame, np.array(points, np.float32))
    return frame, aligned, matrix


def shifted_face(aligned: np.ndarray, resolution: int, shift=(6.0, 8.0, 8.0)) -> np.ndarray:
    """The pipeline's face: a Lab-shifted copy inside the mouth region, the original outside, in [−1, 1]."""
    lab = cv2.cvtColor(aligned.astype(np.float32) / 255, cv2.COLOR_RGB2Lab) + np.array(shift, np.float32)
    decoded = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0, 1) * 255
    mask = load_mask(resolution)[:, :, None]
    face = decoded * (1 - mask) + aligned.astype(np.float32) * mask
    return (face / 255 * 2 - 1).transpose(2, 0, 1).astype(np.float32)


def frame_region(matrix, frame_shape, resolution, grow: float) -> np.ndarray:
    """Independent frame-space mask of the regenerated region (cv2 warp of 1 − mask), grown by ``grow`` px."""
    from latentsync.face import crop_size

    crop = cv2.resize(1 - load_mask(resolution), crop_size(resolution), interpolation=cv2.INTER_LINEAR)
    inverse = cv2.invertAffineTransform(matrix.astype(np.float64))
    region = cv2.warpAffine(crop, inverse, (frame_shape[1], frame_shape[0]), flags=cv2.INTER_LINEAR) > 0
    size = 2 * int(np.ceil(grow)) + 1
    return cv2.dilate(region.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) > 0


@pytest.mark.parametrize("shape,points,resolution", CASES)
def test_default_options_are_the_reference_bit_for_bit(shape, points, resolution):
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    face = torch.from_numpy(rng.uniform(-1, 1, (3, resolution, resolution)).astype(np.float32))
    matrix = FaceAligner(resolution).matrix(np.array(points, np.float32))
    plan = plan_restore(matrix, shape[:2], resolution)
    expected = restore(frame, face, plan)
    assert np.array_equal(paste_face(frame, face, matrix), expected)
    assert np.array_equal(paste_face(frame, face.numpy(), matrix, PasteOptions(), plan), expected)
    # feather_px only matters for feather/poisson
    assert np.array_equal(paste_face(frame, face, matrix, PasteOptions(feather_px=3.5), plan), expected)
    assert PasteOptions().is_reference and not PasteOptions(color_match="mean").is_reference


@pytest.mark.parametrize("blend", ["feather", "poisson"])
@pytest.mark.parametrize("shape,points,resolution", CASES[1:])
def test_region_blends_keep_every_pixel_outside_the_grown_region(blend, shape, points, resolution):
    frame, aligned, matrix = case(shape, points, resolution)
    face = shifted_face(aligned, resolution)
    out = paste_face(frame, face, matrix, PasteOptions(blend, feather_px=6.0, color_match="mean"))
    assert out.dtype == np.uint8 and out.shape == frame.shape and out is not frame
    grown = frame_region(matrix, shape, resolution, GROW_PX + 1.5)
    changed = np.any(out != frame, axis=2)
    assert not changed[~grown].any()
    assert changed[grown].sum() > 0.3 * frame_region(matrix, shape, resolution, 0).sum()


def test_reference_blend_changes_the_whole_face_but_feather_does_not():
    shape, points, resolution = CASES[1]
    frame, aligned, matrix = case(shape, points, resolution)
    face = shifted_face(aligned, resolution, shift=(0, 0, 0))  # generated = original: only resampling remains
    reference = paste_face(frame, face, matrix)
    feather = paste_face(frame, face, matrix, PasteOptions("feather"))
    region = frame_region(matrix, shape, resolution, GROW_PX + 1.5)
    ref_changed = np.any(reference != frame, axis=2)
    assert ref_changed[~region].sum() > 1000  # the reference resamples the rest of the face too
    assert not np.any(feather != frame, axis=2)[~region].any()


def lab_mean(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[where].mean(axis=0)


@pytest.mark.parametrize("blend", ["reference", "feather"])
@pytest.mark.parametrize("color_match", ["mean", "mean_std"])
def test_colour_match_moves_the_region_towards_the_original(blend, color_match):
    shape, points, resolution = CASES[1]
    frame, aligned, matrix = case(shape, points, resolution)
    face = shifted_face(aligned, resolution, shift=(6.0, 8.0, 8.0))
    core = frame_region(matrix, shape, resolution, 0) & ~cv2.dilate(
        (~frame_region(matrix, shape, resolution, 0)).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    target = lab_mean(frame, core)
    off = lab_mean(paste_face(frame, face, matrix, PasteOptions(blend, color_match="off")), core)
    on = lab_mean(paste_face(frame, face, matrix, PasteOptions(blend, color_match=color_match)), core)
    error_off, error_on = np.linalg.norm(off - target), np.linalg.norm(on - target)
    assert error_off > 8  # the shift shows without matching
    assert error_on < 0.25 * error_off


def test_poisson_removes_a_smooth_colour_shift():
    shape, points, resolution = CASES[1]
    frame, aligned, matrix = case(shape, points, resolution)
    face = shifted_face(aligned, resolution, shift=(0.0, 8.0, 8.0))
    core = frame_region(matrix, shape, resolution, 0) & ~cv2.dilate(
        (~frame_region(matrix, shape, resolution, 0)).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    target = lab_mean(frame, core)
    feather = lab_mean(paste_face(frame, face, matrix, PasteOptions("feather")), core)
    poisson = lab_mean(paste_face(frame, face, matrix, PasteOptions("poisson")), core)
    assert np.linalg.norm(feather - target) > 8
    assert np.linalg.norm(poisson - target) < 2.5


def test_zero_feather_is_a_hard_edge_and_larger_feather_is_softer():
    shape, points, resolution = CASES[1]
    frame, aligned, matrix = case(shape, points, resolution)
    face = shifted_face(aligned, resolution, shift=(20.0, 0.0, 0.0))
    hard = paste_face(frame, face, matrix, PasteOptions("feather", feather_px=0)).astype(np.float32)
    soft = paste_face(frame, face, matrix, PasteOptions("feather", feather_px=10)).astype(np.float32)
    jump = [np.abs(np.diff(img - frame, axis=1)).max() for img in (hard, soft)]
    assert jump[0] > 3 * jump[1]


def test_face_outside_the_frame_gives_a_copy():
    frame = np.full((100, 120, 3), 9, np.uint8)
    matrix = FaceAligner(256).matrix(np.array([[5000, 5000], [5060, 5000], [5030, 5030]], np.float32))
    for blend in ("feather", "poisson"):
        out = paste_face(frame, np.zeros((3, 256, 256), np.float32), matrix, PasteOptions(blend, color_match="mean"))
        assert np.array_equal(out, frame) and out is not frame


def test_option_validation_messages():
    with pytest.raises(InputError, match=r"unknown blend 'gaussian': choose one of reference, feather, poisson"):
        PasteOptions(blend="gaussian")
    with pytest.raises(InputError, match=r"unknown color_match 'histogram': choose one of off, mean, mean_std"):
        PasteOptions(color_match="histogram")
    with pytest.raises(InputError, match=r"unknown blend None"):
        PasteOptions(blend=None)
    for bad in (-1, float("nan"), "wide"):
        with pytest.raises(InputError, match=r"feather_px must be a number of frame pixels >= 0, got"):
            PasteOptions(blend="feather", feather_px=bad)
    options = PasteOptions(blend=" Feather ", feather_px="4", color_match="Mean-Std")
    assert (options.blend, options.feather_px, options.color_match) == ("feather", 4.0, "mean_std")
    matrix = FaceAligner(256).matrix(np.array([[120, 90], [170, 88], [146, 120]], np.float32))
    with pytest.raises(InputError, match="expected an HxWx3 uint8 RGB frame"):
        paste_face(np.zeros((240, 320, 3), np.float32), np.zeros((3, 256, 256), np.float32), matrix,
                   PasteOptions("feather"))


@pytest.mark.parametrize("mode", ["mean", "mean_std"])
def test_colour_statistics_ignore_changed_content_on_the_band(mode):
    from latentsync.face.blend import match_colors

    rng = np.random.default_rng(5)
    original = np.clip(rng.normal((180, 130, 110), 6, (80, 80, 3)), 0, 255).astype(np.uint8)
    lab = cv2.cvtColor(original.astype(np.float32) / 255, cv2.COLOR_RGB2Lab) + np.float32([0, 8, 8])
    generated = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0, 1) * 255
    weight = np.zeros((80, 80), np.float32)
    weight[10:70, 10:70] = 1
    generated[10:70, 10:16] = 20  # a dark jaw line that moved: 18 % of the band
    matched = match_colors(generated.transpose(2, 0, 1).copy(), original, weight, mode, band_px=10)
    centre = (slice(30, 50), slice(30, 50))
    got = cv2.cvtColor(matched.transpose(1, 2, 0)[centre].astype(np.float32) / 255, cv2.COLOR_RGB2Lab).mean((0, 1))
    want = cv2.cvtColor(original[centre].astype(np.float32) / 255, cv2.COLOR_RGB2Lab).mean((0, 1))
    assert np.linalg.norm(got - want) < 1.5
    assert np.array_equal(matched[:, weight == 0], generated.transpose(2, 0, 1)[:, weight == 0])
