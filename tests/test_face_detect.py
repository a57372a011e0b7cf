"""Landmarks on real faces (scikit-image's astronaut) with both mediapipe APIs: placement on several canvases,
faceless frames mixed into one clip, face choice, jitter, paste-back of a real aligned face."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from latentsync.errors import MissingWeightsError, NoFaceError
from latentsync.face import FaceAligner, FaceDetector, analyze_frames, find_landmarker_model, plan_restore, \
    restore_face, template_points
from latentsync.face.landmarks import LANDMARKER_URL, tasks_available

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


@pytest.fixture(scope="module")
def models_dir(repo_root):
    return repo_root / "tests" / "fixtures" / "models"


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
    results = analyze_frames(frames, detector, aligner, with_plan=True)
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
    detector.reset()
    aligner = FaceAligner(512)
    detector.redetect_every = 2  # search, track, track, search, ...: both paths must agree
    try:
        results = analyze_frames([frame] * 5, detector, aligner)
    finally:
        detector.redetect_every = 50
    assert [r.detection.tracked for r in results] == [False, True, True, False, True]
    matrices = [r.matrix.astype(np.float64) for r in results]
    # where the true points land in the crop (the translation alone mixes in rotation about the frame origin)
    mapped = np.stack([truth @ m[:, :2].T + m[:, 2] for m in matrices])
    spread = np.ptp(mapped, axis=0).max()  # crop px; 1 frame px = ~3 crop px at this scale
    assert spread < 8.0, spread


def test_all_faceless_clip_warns_or_raises(detector, caplog):
    frames = [np.zeros((480, 640, 3), np.uint8), np.full((480, 640, 3), 255, np.uint8),
              np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8), np.zeros((8, 8, 3), np.uint8)]
    with caplog.at_level(logging.WARNING, logger="latentsync.face"):
        assert analyze_frames(frames, detector, FaceAligner(256)) == [None] * 4
    assert "no usable face" in caplog.text
    with pytest.raises(NoFaceError, match="no usable face"):
        analyze_frames(frames, detector, FaceAligner(256), strict=True)


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
            assert len(det.detect_all(frame)) == 2
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
