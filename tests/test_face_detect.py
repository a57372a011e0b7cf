"""Landmarks on real faces (scikit-image's astronaut) with both mediapipe APIs: placement on several canvases,
faceless frames mixed into one clip, face choice, jitter, paste-back of a real aligned face."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from latentsync.errors import InputError, MissingWeightsError
from latentsync.face import (
    DetectionSettings,
    FaceAligner,
    FaceDetector,
    FaceTracker,
    find_landmarker_model,
    format_ranges,
    plan_restore,
    restore_face,
    template_points,
)
from latentsync.face.landmarks import LANDMARKER_URL, tasks_available
from tools.make_sample import make_dialogue_frames, make_frames


def _analyze(frames, detector, aligner, with_plan=False) -> list:
    """Detect and align each frame as the pipeline does (the aligner restarts after a frameless gap); None for a
    frame without a face."""
    results = []
    for frame in frames:
        detection = detector.detect(frame)
        if detection is None:
            aligner.reset()
            results.append(None)
            continue
        face, matrix = aligner.align(frame, detection.points)
        plan = plan_restore(matrix, frame.shape[:2], aligner.resolution) if with_plan else None
        results.append(SimpleNamespace(face=face, matrix=matrix, detection=detection, plan=plan))
    return results


skimage_data = pytest.importorskip("skimage.data")
PHOTO = skimage_data.astronaut()
# by-eye points of the photo (parity README): left-brow, right-brow, nose centre
PHOTO_POINTS = np.array([[201, 90], [250, 93], [224, 117]], np.float64)


def place(width, height, scale=1.0, angle=0.0, centre=None, photo=PHOTO, canvas=None):
    """Photo rotated by ``angle`` (deg, ccw) and scaled about the nose, nose at ``centre``; true points."""
    cx, cy = centre if centre is not None else (width / 2, height / 2)
    matrix = cv2.getRotationMatrix2D((224, 117), angle, scale)
    matrix[:, 2] += (cx - 224, cy - 117)
    if canvas is None:
        out = cv2.warpAffine(photo, matrix, (width, height), borderValue=(52, 64, 80))
    else:
        out = cv2.warpAffine(photo, matrix, (width, height), dst=canvas.copy(), borderMode=cv2.BORDER_TRANSPARENT)
    return out, PHOTO_POINTS @ matrix[:, :2].T + matrix[:, 2]


MODELS = Path(__file__).parent / "fixtures" / "models"


@pytest.fixture(scope="module")
def models_dir():
    return MODELS


@pytest.fixture(scope="module", params=[pytest.param("solutions", marks=pytest.mark.legacy_mediapipe), "tasks"])
def detector(request, models_dir):
    det = FaceDetector(backend=request.param, model_dir=models_dir)
    yield det
    det.close()


CASES = [  # canvas (w, h), scale, angle, nose position as a fraction of the canvas
    ((1280, 720), 1.0, 0.0, (0.5, 0.5)),
    ((1280, 720), 1.6, 12.0, (0.3, 0.45)),
    ((1920, 1080), 1.0, -8.0, (0.7, 0.4)),
    ((1920, 1080), 3.0, 5.0, (0.5, 0.45)),
    ((853, 480), 1.2, 20.0, (0.35, 0.5)),
    ((720, 1280), 1.0, 0.0, (0.5, 0.5)),  # portrait, face small in a tall frame
    ((720, 1280), 2.0, -15.0, (0.45, 0.35)),
    ((1280, 720), 4.0, 0.0, (0.5, 0.42)),  # close-up
    ((1280, 720), 1.5, 0.0, (0.05, 0.5)),  # half the head outside the left edge
]


@pytest.mark.parametrize("canvas,scale,angle,where", CASES)
def test_landmarks_on_placed_faces(detector, canvas, scale, angle, where):
    width, height = canvas
    frame, truth = place(width, height, scale, angle, (where[0] * width, where[1] * height))
    detector.reset()
    det = detector.detect(frame)
    assert det is not None, f"{detector.backend}: no face found on {canvas} scale {scale}"
    err = np.abs(det.points - truth).max()
    assert err <= 2.5 * scale + 1.5, (detector.backend, err, det.points, truth)
    x0, y0, x1, y1 = det.box
    assert x0 < truth[:, 0].min() and x1 > truth[:, 0].max() and y0 < truth[:, 1].min() and y1 > truth[:, 1].max()
    again = detector.detect(frame)  # tracked now
    assert again is not None and again.tracked and np.abs(again.points - truth).max() <= 2.5 * scale + 1.5


@pytest.mark.legacy_mediapipe
def test_backends_agree(models_dir):
    frame, _ = place(1280, 720, 1.4, 6.0)
    with FaceDetector("solutions") as a, FaceDetector("tasks", model_dir=models_dir) as b:
        pa, pb = a.detect(frame).points, b.detect(frame).points
    assert np.abs(pa - pb).max() < 3.0


def _mixed_clip():
    rng = np.random.default_rng(7)
    w, h = 1280, 720
    frames, has_face, truths = [], [], []
    for k in range(6):  # a face moving right and down, slowly turning
        f, t = place(w, h, 1.3, 2.0 * k, (500 + 6 * k, 330 + 3 * k))
        frames.append(f), has_face.append(True), truths.append(t)
    frames.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), has_face.append(False), truths.append(None)
    frames.append(np.full((h, w, 3), (200, 30, 90), np.uint8)), has_face.append(False), truths.append(None)
    f, _ = place(w, h, 0.35, 0.0, (640, 360))  # a face far below 50x80 px
    frames.append(f), has_face.append(False), truths.append(None)
    for k in range(3):  # the face is back elsewhere
        f, t = place(w, h, 1.0, -5.0, (900 - 4 * k, 300))
        frames.append(f), has_face.append(True), truths.append(t)
    return frames, has_face, truths


def test_mixed_clip_flags_and_alignment(detector, caplog):
    frames, has_face, truths = _mixed_clip()
    detector.reset()
    aligner = FaceAligner(512)
    results = _analyze(frames, detector, aligner, with_plan=True)
    assert [r is not None for r in results] == has_face
    tpl = template_points(512)
    mapped = []
    for r, t in zip(results, truths):
        if r is None:
            continue
        assert r.face.shape == (512, 512, 3) and r.matrix.dtype == np.float32 and r.plan is not None
        # the true points land on the template within a few crop pixels (5.6 crop px per photo px here)
        err = np.abs(t @ r.matrix[:, :2].T.astype(np.float64) + r.matrix[:, 2] - tpl).max()
        assert err < 20, err
        mapped.append(t @ r.matrix[:, :2].T.astype(np.float64) + r.matrix[:, 2])
    # jitter bound: over the first, smoothly moving segment the crop position of the true points changes by
    # less than 12 crop px (~2 photo px) from frame to frame
    steps = [np.abs(mapped[i + 1] - mapped[i]).max() for i in range(5)]
    assert max(steps) < 12, steps


def test_static_clip_is_stable(detector):
    frame, truth = place(1280, 720, 1.5, 3.0)
    aligner = FaceAligner(512)
    # search, track, track, search, ...: both paths must agree
    with FaceDetector(detector.backend, model_dir=MODELS, settings=DetectionSettings(redetect_every=2)) as det:
        results = _analyze([frame] * 5, det, aligner)
    assert [r.detection.tracked for r in results] == [False, True, True, False, True]
    matrices = [r.matrix.astype(np.float64) for r in results]
    # where the true points land in the crop (the translation alone mixes in rotation about the frame origin)
    mapped = np.stack([truth @ m[:, :2].T + m[:, 2] for m in matrices])
    spread = np.ptp(mapped, axis=0).max()  # crop px; 1 frame px = ~3 crop px at this scale
    assert spread < 8.0, spread


def test_faceless_frames_give_none(detector):
    frames = [np.zeros((480, 640, 3), np.uint8), np.full((480, 640, 3), 255, np.uint8),
              np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8), np.zeros((8, 8, 3), np.uint8)]
    assert [detector.detect(frame) for frame in frames] == [None] * 4


@pytest.mark.parametrize("backend", [pytest.param("solutions", marks=pytest.mark.legacy_mediapipe), "tasks"])
def test_face_choice_in_a_two_person_shot(models_dir, backend):
    canvas, left_truth = place(1280, 720, 1.0, 0.0, (350, 330))
    frame, right_truth = place(1280, 720, 1.5, 0.0, (900, 330), canvas=canvas)
    expect = {"largest": right_truth, "leftmost": left_truth, "rightmost": right_truth, "index:0": left_truth,
              "index:1": right_truth, "center": right_truth, "left": left_truth}
    for choice, truth in expect.items():
        with FaceDetector(backend, face=choice, model_dir=models_dir) as det:
            found = det.detect(frame)
            assert found is not None and np.abs(found.points - truth).max() < 6, choice
    with FaceTracker(backend, model_dir=models_dir) as tracker:
        faces = tracker.update(frame)
    assert list(faces) == [0, 1]  # ids left to right
    assert np.abs(faces[0].points - left_truth).max() < 6 and np.abs(faces[1].points - right_truth).max() < 6
    with FaceDetector(backend, face="index:2", model_dir=models_dir) as det:
        assert det.detect(frame) is None


def test_restore_of_a_real_aligned_face(detector):
    frame, _ = place(1280, 720, 1.5, 8.0, (600, 340))
    detector.reset()
    det = detector.detect(frame)
    face, matrix = FaceAligner(512).align(frame, det.points)
    x = face.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
    out = restore_face(frame, x, matrix)
    x0, y0, x1, y1 = plan_restore(matrix, frame.shape[:2], 512).box
    changed = np.any(out != frame, axis=2)
    changed[y0:y1, x0:x1] = False
    assert not changed.any()  # bit-identical outside the face's region
    diff = np.abs(out[y0:y1, x0:x1].astype(int) - frame[y0:y1, x0:x1])
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 20  # round trip through the crop: nearly the same


def test_tasks_model_missing_names_url_and_folder(tmp_path):
    if not tasks_available():
        pytest.skip("mediapipe Tasks API not available")
    with pytest.raises(MissingWeightsError) as info:
        FaceDetector("tasks", model_dir=tmp_path)
    assert LANDMARKER_URL in str(info.value) and str(tmp_path) in str(info.value)
    (tmp_path / "mediapipe").mkdir()
    (tmp_path / "mediapipe" / "face_landmarker.task").write_bytes(b"x")
    assert find_landmarker_model(tmp_path) == tmp_path / "mediapipe" / "face_landmarker.task"


@pytest.mark.legacy_mediapipe
def test_auto_backend_prefers_solutions():
    with FaceDetector() as det:
        assert det.backend == "solutions"


def test_index_calibration_on_the_photo(detector):
    """The mesh groups land on the by-eye points of the parity README (within ~2 px) on the photo itself."""
    detector.reset()
    det = detector.detect(np.ascontiguousarray(PHOTO))
    assert det is not None
    assert np.abs(det.points - PHOTO_POINTS).max() <= 2.5, det.points


def test_landmarker_download_when_allowed(tmp_path, models_dir, monkeypatch):
    from latentsync.face import landmarks

    monkeypatch.setattr(landmarks, "LANDMARKER_URL", (models_dir / "face_landmarker.task").as_uri())
    path = find_landmarker_model(tmp_path / "models", allow_download=True)
    assert path == tmp_path / "models" / "face_landmarker.task"
    assert path.read_bytes() == (models_dir / "face_landmarker.task").read_bytes()
    assert not list((tmp_path / "models").glob("*.part"))


# ---------------------------------------------------------------- detection controls (DetectionSettings)
# FaceDetector's default output, recorded before DetectionSettings existed: three points per frame (2 decimals)
# and the tracked flag, on the pipeline tests' clip (faces near the 80 px limit: searched on every frame) and
# at 720p (search, track, track, faceless, search, track)
DEFAULT_CLIPS = {"640x360": dict(n=8, fps=25, width=640, height=360, faceless={5, 6}),
                 "1280x720": dict(n=6, fps=25, width=1280, height=720, faceless={3})}
DEFAULT_DETECTIONS = {
    "640x360": {
        "solutions": [
            ([297.19, 138.39, 336.2, 141.25, 315.62, 158.25], False),
            ([297.29, 137.77, 337.25, 139.95, 316.67, 158.43], False),
            ([297.29, 137.77, 337.25, 139.95, 316.67, 158.43], False),
            ([297.29, 137.77, 337.25, 139.95, 316.67, 158.43], False),
            ([300.11, 138.53, 337.77, 139.82, 317.45, 157.96], False),
            None,
            None,
            ([299.76, 137.13, 340.24, 139.2, 318.08, 157.67], False),
        ],
        "tasks": [
            ([298.31, 138.33, 335.99, 140.63, 315.53, 157.45], False),
            ([299.38, 138.78, 337.3, 140.47, 316.59, 158.05], False),
            ([299.38, 138.78, 337.3, 140.47, 316.59, 158.05], False),
            ([299.38, 138.78, 337.3, 140.47, 316.59, 158.05], False),
            None,
            None,
            None,
            ([301.34, 138.61, 339.66, 140.69, 319.01, 158.24], False),
        ],
    },
    "1280x720": {
        "solutions": [
            ([597.52, 276.41, 671.55, 279.56, 631.99, 314.39], False),
            ([598.54, 276.5, 672.83, 280.12, 633.13, 314.98], True),
            ([597.85, 277.13, 672.49, 280.09, 632.93, 315.08], True),
            None,
            ([598.82, 276.62, 673.6, 279.13, 634.02, 314.83], False),
            ([598.85, 277.22, 673.48, 280.13, 634.07, 315.19], True),
        ],
        "tasks": [
            ([596.83, 277.39, 671.65, 280.64, 631.54, 315.07], False),
            ([598.07, 277.38, 672.31, 280.56, 632.79, 315.14], True),
            ([598.0, 277.28, 672.11, 280.46, 632.78, 315.08], True),
            None,
            ([598.51, 276.78, 673.69, 280.25, 633.58, 314.7], False),
            ([599.01, 277.2, 673.19, 280.52, 633.71, 315.09], True),
        ],
    },
}


@pytest.mark.parametrize("clip", DEFAULT_CLIPS)
def test_default_detections_unchanged(detector, clip):
    frames = make_frames(**DEFAULT_CLIPS[clip])
    for settings in (None, DetectionSettings()):
        with FaceDetector(detector.backend, model_dir=MODELS, settings=settings) as det:
            found = [det.detect(f) for f in frames]
        for i, (got, want) in enumerate(zip(found, DEFAULT_DETECTIONS[clip][detector.backend], strict=True)):
            assert (got is None) == (want is None), i
            if want is not None:
                assert np.abs(got.points.ravel() - want[0]).max() <= 0.011 and got.tracked == want[1], i


def _detect_once(backend, frame, face="largest", **settings):
    with FaceDetector(backend, face=face, model_dir=MODELS, settings=DetectionSettings(**settings)) as det:
        return det.detect(frame)


def test_min_face_height_in_pixels_and_as_fraction(detector):
    frame = make_dialogue_frames(1)[0]  # 640x360, two faces ~105 px high
    height = _detect_once(detector.backend, frame).box
    assert 100 <= height[3] - height[1] <= 110
    assert _detect_once(detector.backend, frame, min_face_height=100) is not None
    assert _detect_once(detector.backend, frame, min_face_height=120) is None
    assert _detect_once(detector.backend, frame, min_face_height=0.25) is not None  # 90 px of 360
    assert _detect_once(detector.backend, frame, min_face_height=0.35) is None  # 126 px


def test_lower_min_face_height_finds_smaller_faces(detector):
    frame, truth = place(1280, 720, 0.7, 0.0, (700, 400))  # a face ~70 px high: below the reference's 80
    assert _detect_once(detector.backend, frame) is None
    found = _detect_once(detector.backend, frame, min_face_height=40)  # also a finer search tile
    assert found is not None and np.abs(found.points - truth).max() < 3


def test_min_confidence(detector):
    frame = make_dialogue_frames(1)[0]
    assert _detect_once(detector.backend, frame, min_confidence=0.6) is not None
    assert _detect_once(detector.backend, frame, min_confidence=0.99) is None


def test_search_region_box_and_masks(detector):
    frame = make_dialogue_frames(1)[0]
    left, right = _detect_once(detector.backend, frame, "leftmost"), _detect_once(detector.backend, frame, "rightmost")
    assert left.box[2] < 320 < right.box[0]
    in_right = _detect_once(detector.backend, frame, "leftmost", region=(320, 0, 640, 360))
    assert np.abs(in_right.points - right.points).max() < 2
    comfy_mask = np.zeros((1, 360, 640), np.float32)  # a ComfyUI MASK batch of one
    comfy_mask[0, :, 400:] = 1.0
    assert _detect_once(detector.backend, frame, "largest", region=comfy_mask).box[0] > 320
    bool_mask = np.zeros((360, 640), bool)
    bool_mask[150:160, 150:160] = True  # only the left face's centre
    assert _detect_once(detector.backend, frame, "rightmost", region=bool_mask).box[2] < 320


@pytest.mark.parametrize("kwargs,message", [
    ({"min_face_height": -5}, "min_face_height must be > 0"),
    ({"min_face_height": 0}, "min_face_height must be > 0"),
    ({"min_face_height": "big"}, "must be numbers"),
    ({"min_confidence": 1.5}, "min_confidence must be between 0 and 1, got 1.5"),
    ({"min_confidence": -0.1}, "min_confidence must be between 0 and 1"),
    ({"redetect_every": 0}, "redetect_every must be a whole number of frames ≥ 1, got 0"),
    ({"redetect_every": 2.5}, "redetect_every must be a whole number"),
    ({"region": (10, 10, 5, 40)}, "is empty: it needs x1 > x0 and y1 > y0"),
    ({"region": (-10, 0, 100, 100)}, "has a negative coordinate"),
    ({"region": (0, 0, 100)}, "needs 4 numbers"),
    ({"region": np.zeros((360, 640), bool)}, "the search region mask is empty"),
    ({"region": np.full((360, 640), 0.2, np.float32)}, "the search region mask is empty"),
    ({"region": np.ones((2, 360, 640), bool)}, "must be a 2-D (H, W)"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(InputError) as info:
        DetectionSettings(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("region,message", [
    ((0, 0, 700, 300), "search region (0, 0, 700, 300) reaches outside the 640x360 frame"),
    ((600, 300, 650, 361), "reaches outside the 640x360 frame"),
    (np.ones((720, 1280), bool), "the search region mask is 1280x720 px but the frames are 640x360"),
])
def test_region_that_does_not_fit_the_frame(region, message):
    settings = DetectionSettings(region=region)
    with pytest.raises(InputError) as info:
        settings.check_frame_size(640, 360)
    assert message in str(info.value)
    with FaceDetector(model_dir=MODELS, settings=settings) as det:
        det._finder._backend = None  # the check comes before any landmark work
        with pytest.raises(InputError, match="640x360"):
            det.detect(np.zeros((360, 640, 3), np.uint8))


def test_settings_compare_by_value():
    mask = np.zeros((4, 6), np.float32)
    mask[1, 2] = 1
    a, b = DetectionSettings(region=mask), DetectionSettings(region=mask > 0.5)
    assert a == b and hash(a) == hash(b) and a.region.dtype == bool and not a.region.flags.writeable
    assert a != DetectionSettings(region=np.ones((4, 6), bool)) and a != DetectionSettings()
    assert DetectionSettings(region=[1.0, 2, 30, 40]).region == (1, 2, 30, 40)
    assert DetectionSettings() == DetectionSettings(80, 0.5, None, 50)
    assert DetectionSettings(min_face_height=0.25).min_size(720) == (112.5, 180.0)
    assert DetectionSettings().min_size(720) == (50.0, 80.0)


def test_format_ranges():
    assert format_ranges([3, 4, 5, 9, 20, 21]) == "3–5, 9, 20–21"
    assert format_ranges([]) == ""
    assert format_ranges({7}) == "7"
    assert format_ranges([5, 3, 4, 4]) == "3–5"
    frames = [0, 1, 2, 10, 20, 21, 30, 40, 41, 42, 50]
    assert format_ranges(frames, limit=3) == "0–2, 10, 20–21, … and 3 more ranges (11 frames in all)"
