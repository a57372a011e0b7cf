"""Landmark backends: mediapipe legacy ``solutions`` FaceMesh (default, models inside the wheel), mediapipe
Tasks ``FaceLandmarker`` (needs ``face_landmarker.task`` in a models folder) and, optionally, InsightFace
(the reference's detector) when it is installed with its models.

Every backend maps an RGB uint8 image to a list of ``RawFace`` (landmarks, three alignment points, box,
score) in that image's pixel coordinates. Backends never look at more than ``max_faces`` faces.

The three alignment points (image-left eyebrow centre, image-right eyebrow centre, nose centre) are means of
landmark groups, like the reference which averages insightface 2d-106 points (eyebrow contour points
43, 48, 49, 51, 50 and 101..105; nose points 74, 77, 83, 86). MediaPipe's 468-point canonical mesh has the
anatomical equivalents (indices of the mesh topology shared by solutions FaceMesh and the Tasks model):

* image-left eyebrow (the subject's right): its whole contour, upper edge 70, 63, 105, 66, 107 and lower
  edge 46, 53, 52, 65, 55 — the mean is the eyebrow's centre, as the reference's 5 contour points give;
* image-right eyebrow (the subject's left): the mirrored contour 300, 293, 334, 296, 336, 276, 283, 282, 295,
  285;
* nose: the nasal midline 6, 197, 195, 5, 4 (from the bridge between the eyes down to just above the tip),
  whose mean is the middle of the nose's length — the reference's "nose centre" sits there, between the eye
  line and the tip, not at the tip.

Calibration on scikit-image's astronaut photo, by-eye points of the parity README (201, 90), (250, 93),
(224, 117): FaceDetector gives (199.5, 90.1), (251.8, 91.9), (224.3, 116.5) with the legacy FaceMesh and
(200.1, 90.2), (251.4, 92.4), (224.2, 116.5) with the Tasks model. Alternatives checked on the photo: the nose
mean moves ~2.4 px down without 6 and ~2.7 px up without 4; the upper or lower eyebrow edge alone is ~1.6 px
off vertically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..download import fetch_url
from ..errors import InputError, MissingWeightsError

log = logging.getLogger(__name__)

MESH_LEFT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
MESH_RIGHT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
MESH_NOSE = (6, 197, 195, 5, 4)
MESH_FACE_POINTS = 468  # the Tasks model adds 10 iris points (468..477); the box uses the face mesh only
# insightface 2d-106 groups used by the reference
IF106_LEFT_BROW = (43, 48, 49, 51, 50)
IF106_RIGHT_BROW = (101, 102, 103, 104, 105)
IF106_NOSE = (74, 77, 83, 86)

LANDMARKER_FILE = "face_landmarker.task"
LANDMARKER_URL = ("https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/"
                  "float16/1/face_landmarker.task")
MIN_SCORE = 0.5


@dataclass
class RawFace:
    landmarks: np.ndarray  # float32 (N, 2) x, y in image pixels
    points: np.ndarray  # float32 (3, 2): left-brow, right-brow, nose centre
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> "RawFace":
        """Map from a (scaled) sub-image back to the frame: frame = local / scale + (dx, dy)."""
        off = np.array([dx, dy], np.float32)
        box = (self.box[0] / scale + dx, self.box[1] / scale + dy, self.box[2] / scale + dx,
               self.box[3] / scale + dy)
        return RawFace(self.landmarks / np.float32(scale) + off, self.points / np.float32(scale) + off, box,
                       self.score)


def mesh_points(landmarks: np.ndarray) -> np.ndarray:
    """Three alignment points (float32 (3, 2)) from mediapipe mesh landmarks (N ≥ 468, 2)."""
    lm = np.asarray(landmarks, dtype=np.float32)
    return np.stack([lm[list(MESH_LEFT_BROW)].mean(0), lm[list(MESH_RIGHT_BROW)].mean(0),
                     lm[list(MESH_NOSE)].mean(0)]).astype(np.float32)


def _mesh_face(landmarks: np.ndarray, score: float = 1.0) -> RawFace:
    face = landmarks[:MESH_FACE_POINTS]
    box = (float(face[:, 0].min()), float(face[:, 1].min()), float(face[:, 0].max()), float(face[:, 1].max()))
    return RawFace(landmarks.astype(np.float32), mesh_points(landmarks), box, float(score))


def _normalized_to_pixels(landmarks, width: int, height: int) -> np.ndarray:
    return np.array([[p.x * width, p.y * height] for p in landmarks], dtype=np.float32)


def _solutions_face_mesh():
    import mediapipe as mp

    return mp.solutions.face_mesh  # absent from newer mediapipe wheels (Tasks API only)


def solutions_available() -> bool:
    try:
        _solutions_face_mesh()
    except Exception:  # ImportError, or a broken/newer mediapipe without the legacy API
        return False
    return True


def tasks_available() -> bool:
    try:
        from mediapipe.tasks.python import vision  # noqa: F401
    except Exception:
        return False
    return True


def insightface_available() -> bool:
    try:
        import insightface  # noqa: F401
    except Exception:
        return False
    return True


def available_backends() -> list[str]:
    """Backends usable in this environment, in the order ``auto`` tries them (Tasks needs a model file)."""
    names = []
    if solutions_available():
        names.append("solutions")
    if tasks_available():
        names.append("tasks")
    if insightface_available():
        names.append("insightface")
    return names


def find_landmarker_model(model_dir=None, allow_download: bool = False, *, progress=None) -> Path:
    """Path of ``face_landmarker.task`` in ``model_dir`` (or ``model_dir/mediapipe``); when allowed, downloads it
    once into ``model_dir`` (resumable, progress bar, no network use under HF_HUB_OFFLINE, an unreachable host
    fails at once: ``latentsync.download.fetch_url``); otherwise raises MissingWeightsError saying where to put it."""
    dirs = [Path(model_dir), Path(model_dir) / "mediapipe"] if model_dir else []
    for folder in dirs:
        if (folder / LANDMARKER_FILE).is_file():
            return folder / LANDMARKER_FILE
    if model_dir and allow_download:
        target = Path(model_dir) / LANDMARKER_FILE
        log.info("downloading %s to %s", LANDMARKER_URL, target)
        try:
            return fetch_url(LANDMARKER_URL, target, progress=progress)
        except MissingWeightsError as exc:
            raise MissingWeightsError(f"could not download {LANDMARKER_URL} ({exc}); download it by hand and "
                                      f"put it at {target}") from exc
    searched = ", ".join(str(d / LANDMARKER_FILE) for d in dirs) or "(no models folder given)"
    raise MissingWeightsError(
        f"mediapipe's Tasks API needs {LANDMARKER_FILE}; searched: {searched}. Download it from {LANDMARKER_URL} "
        f"and put it in your LatentSync models folder{f' ({model_dir})' if model_dir else ''}.")


class SolutionsMesh:
    """mediapipe legacy FaceMesh in static-image mode (detector + 468-point mesh on every call)."""

    name = "solutions"

    def __init__(self, max_faces: int = 4, min_score: float = MIN_SCORE):
        import mediapipe as mp

        self._mesh = _solutions_face_mesh().FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                                      refine_landmarks=False, min_detection_confidence=min_score)
        self._verifier = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.1)

    def __call__(self, image: np.ndarray) -> list[RawFace]:
        result = self._mesh.process(np.ascontiguousarray(image))
        height, width = image.shape[:2]
        # FaceMesh exposes no per-face score: every face it returns passed its detector's 0.5 threshold
        return [_mesh_face(_normalized_to_pixels(f.landmark, width, height))
                for f in (result.multi_face_landmarks or [])]

    def verify(self, image: np.ndarray) -> float:
        """Best score of mediapipe's full-range face detector on a face-centred crop (0 when it sees none).
        FaceMesh has no per-face score and its short-range detector fires now and then on face-like texture
        when it sees a zoomed-in tile; this independent second model gives the search its score."""
        result = self._verifier.process(np.ascontiguousarray(image))
        return max((float(d.score[0]) for d in (result.detections or [])), default=0.0)

    def close(self) -> None:
        self._mesh.close()
        self._verifier.close()


class TasksMesh:
    """mediapipe Tasks FaceLandmarker (IMAGE mode) from a ``face_landmarker.task`` bundle."""

    name = "tasks"

    def __init__(self, model_path, max_faces: int = 4, min_score: float = MIN_SCORE):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)), running_mode=vision.RunningMode.IMAGE,
            num_faces=max_faces, min_face_detection_confidence=min_score, min_face_presence_confidence=min_score)
        self._landmarker = vision.FaceLandmarker.create_from_options(options)

    def __call__(self, image: np.ndarray) -> list[RawFace]:
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        result = self._landmarker.detect(mp_image)
        height, width = image.shape[:2]
        return [_mesh_face(_normalized_to_pixels(f, width, height)) for f in (result.face_landmarks or [])]

    def close(self) -> None:
        self._landmarker.close()


class InsightFaceBackend:
    """InsightFace FaceAnalysis (detection + landmark_2d_106), the reference's detector; optional."""

    name = "insightface"

    def __init__(self, model_dir=None, max_faces: int = 4, min_score: float = MIN_SCORE):
        from insightface.app import FaceAnalysis

        kwargs = {"root": str(model_dir)} if model_dir else {}
        self._app = FaceAnalysis(allowed_modules=["detection", "landmark_2d_106"], **kwargs)
        self._app.prepare(ctx_id=-1, det_thresh=min_score, det_size=(512, 512))
        self._max_faces = max_faces

    def __call__(self, image: np.ndarray) -> list[RawFace]:
        faces = self._app.get(np.ascontiguousarray(image[:, :, ::-1]))  # insightface expects BGR
        out = []
        for face in faces[: self._max_faces]:
            lmk = np.round(face.landmark_2d_106).astype(np.float32)
            points = np.stack([lmk[list(IF106_LEFT_BROW)].mean(0), lmk[list(IF106_RIGHT_BROW)].mean(0),
                               lmk[list(IF106_NOSE)].mean(0)]).astype(np.float32)
            x0, y0, x1, y1 = (float(v) for v in face.bbox.astype(np.int64))
            out.append(RawFace(lmk, points, (x0, y0, x1, y1), float(face.det_score)))
        return out

    def close(self) -> None:
        self._app = None


def make_backend(name: str = "auto", model_dir=None, allow_download: bool = False, max_faces: int = 4,
                 min_score: float = MIN_SCORE):
    """Build a landmark backend. ``auto``: solutions FaceMesh if mediapipe has it, else the Tasks API (model
    file from ``model_dir``), else InsightFace. ``min_score``: the backend's own face detection threshold."""
    name = (name or "auto").lower()
    if name in ("mediapipe", "legacy"):
        name = "solutions"
    if name == "auto":
        if solutions_available():
            name = "solutions"
        elif tasks_available():
            name = "tasks"
        elif insightface_available():
            name = "insightface"
        else:
            raise InputError("no face landmark backend: install mediapipe (pip install mediapipe)")
    if name == "solutions":
        if not solutions_available():
            raise InputError("this mediapipe has no legacy 'solutions' FaceMesh; use backend='tasks'")
        return SolutionsMesh(max_faces=max_faces, min_score=min_score)
    if name == "tasks":
        if not tasks_available():
            raise InputError("mediapipe's Tasks API is not available; install mediapipe>=0.10.14")
        return TasksMesh(find_landmarker_model(model_dir, allow_download), max_faces=max_faces, min_score=min_score)
    if name == "insightface":
        if not insightface_available():
            raise InputError("backend 'insightface' asked for, but insightface is not installed")
        return InsightFaceBackend(model_dir, max_faces=max_faces, min_score=min_score)
    raise InputError(f"unknown face backend {name!r}; use auto, solutions, tasks or insightface")
