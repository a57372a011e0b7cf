"""FaceDetector: finds the chosen face in each frame of a video and returns its three alignment points.

Search (first frame, after a lost track, every ``redetect_every`` frames — 2 s at 25 fps — so a face that
becomes the chosen one, e.g. the largest, is picked up): mediapipe's face detector is a
short-range model that sees the image at 128×128, so faces smaller than ~12 % of the image are missed. We
therefore look at the whole frame, then at overlapping square tiles (25 % overlap) of the short side and of
halves of it down to ``FINE_TILE`` px (where an 80 px face is still ~12 % of the tile), each scaled to
≤ ``SEARCH_SIDE`` px, and merge duplicates: 1 + 3 views at 720p, 1 + 3 + 8 at 1080p. Every candidate is then
scored by a second model (see ``SolutionsMesh.verify``). Tracking (every other frame):
the landmark model runs on a square crop of twice the previous face size around the previous face, scaled
to ≤ ``TRACK_SIDE`` px — a few ms per frame whatever the frame size. A frame without an acceptable face gives
None, never an exception. ``FaceFinder`` holds these search and tracking steps; ``FaceTracker`` (tracks.py)
uses them for every face.

``DetectionSettings`` set which faces count (size, confidence, region) and the re-search interval; a smaller
minimum face height also shrinks the finest search tile in proportion, so smaller faces stay in reach.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from ..errors import InputError
from .detection_settings import DetectionSettings
from .landmarks import RawFace, make_backend
from .select import MIN_HEIGHT, acceptable, choose, parse_choice

log = logging.getLogger(__name__)

SEARCH_SIDE = 640
TRACK_SIDE = 320
TRACK_CONTEXT = 2.0  # crop side / face size
VERIFY_CONTEXT, VERIFY_SIDE = 2.0, 256
FINE_TILE = 660
MIN_TILE = 200  # the finest search tile, however small the minimum face height


class Detection:
    """One face: ``points`` float32 (3, 2) (x, y) left-brow, right-brow, nose centre; ``box`` (x0, y0, x1, y1);
    ``score``; ``landmarks`` float32 (N, 2); ``tracked`` True when found by tracking instead of a search."""

    __slots__ = ("points", "box", "score", "landmarks", "tracked")

    def __init__(self, points, box, score, landmarks=None, tracked=False):
        self.points = np.asarray(points, np.float32).reshape(3, 2)
        self.box = tuple(float(v) for v in box)
        self.score = float(score)
        self.landmarks = landmarks
        self.tracked = tracked

    @classmethod
    def from_raw(cls, raw: RawFace, tracked: bool = False) -> "Detection":
        return cls(raw.points, raw.box, raw.score, raw.landmarks, tracked)

    def __repr__(self) -> str:
        box = ", ".join(f"{v:.0f}" for v in self.box)
        return f"Detection(box=({box}), score={self.score:.2f}, tracked={self.tracked})"


def _scaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    side = max(image.shape[:2])
    if side <= max_side:
        return np.ascontiguousarray(image), 1.0
    scale = max_side / side
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _tile_sides(height: int, width: int, fine_tile: int = FINE_TILE) -> list[int]:
    """Square tile sides: the short side, then halving down to ``fine_tile``, the side at which the smallest
    acceptable face (≈ 80 px high at FINE_TILE) still spans ~12 % of the tile, the detector's reach."""
    short = min(height, width)
    sides = [] if height == width else [short]
    side = short
    while side > fine_tile * 1.2:
        side = max(side // 2, fine_tile)
        sides.append(side)
    return sides


def _tiles(height: int, width: int, fine_tile: int = FINE_TILE) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) squares of each tile side with 25 % overlap."""
    out = []
    for side in _tile_sides(height, width, fine_tile):
        stride = max(1, int(side * 0.75))
        ys = sorted({*range(0, max(height - side, 0) + 1, stride), max(height - side, 0)})
        xs = sorted({*range(0, max(width - side, 0) + 1, stride), max(width - side, 0)})
        out += [(x, y, x + side, y + side) for y in ys for x in xs]
    return out


def box_overlap(a, b) -> float:
    """Intersection over the smaller box's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(small, 1e-6)


class FaceFinder:
    """Search and tracking steps on one landmark backend under ``DetectionSettings`` (used by FaceDetector and
    FaceTracker). ``check`` each frame first: it validates the frame and, once per frame size, the settings."""

    def __init__(self, backend: str = "auto", model_dir=None, *, allow_download: bool = False, max_faces: int = 4,
                 settings: DetectionSettings | None = None):
        self.settings = settings if settings is not None else DetectionSettings()
        if not isinstance(self.settings, DetectionSettings):
            raise InputError(f"settings must be a DetectionSettings, got {type(self.settings).__name__}")
        self._backend = make_backend(backend, model_dir, allow_download, max(4, int(max_faces)),
                                     self.settings.min_confidence)
        self.name = self._backend.name
        self._checked_shape: tuple[int, int] | None = None

    def check(self, frame: np.ndarray) -> None:
        """InputError for a frame that is not HxWx3 uint8 or that the settings do not fit (region, mask)."""
        _check_frame(frame)
        if frame.shape[:2] != self._checked_shape:
            self.settings.check_frame_size(frame.shape[1], frame.shape[0])
            self._checked_shape = frame.shape[:2]

    def accepts(self, box, score: float, frame_height: int) -> bool:
        settings = self.settings
        return (acceptable(box, score, settings.min_confidence, settings.min_size(frame_height))
                and settings.in_region(box))

    def search(self, frame: np.ndarray) -> list[RawFace]:
        """Every acceptable face of ``frame`` (whole frame, then tiles; duplicates merged; verified)."""
        height, width = frame.shape[:2]
        fine_tile = round(FINE_TILE * self.settings.min_size(height)[1] / MIN_HEIGHT)
        found: list[RawFace] = []
        for box in [(0, 0, width, height), *_tiles(height, width, max(fine_tile, MIN_TILE))]:
            for raw in self._run(frame, box, SEARCH_SIDE):
                if not self.accepts(raw.box, raw.score, height):
                    continue
                if all(box_overlap(raw.box, other.box) < 0.5 for other in found):
                    found.append(raw)
        verify = getattr(self._backend, "verify", None)
        if verify is not None:
            for raw in found:
                raw.score = verify(_crop(frame, raw.box, VERIFY_CONTEXT, VERIFY_SIDE)[0])
            found = [raw for raw in found if raw.score >= self.settings.min_confidence]
        return found

    def refine(self, frame: np.ndarray, raw: RawFace) -> Detection:
        """A searched face with its landmarks found again on a face-sized crop (sharper points)."""
        chosen = Detection.from_raw(raw)
        refined = self.track(frame, chosen)
        if refined is not None:
            refined.tracked = False
            return refined
        return chosen

    def track(self, frame: np.ndarray, last: Detection) -> Detection | None:
        """The acceptable face nearest ``last`` in a crop around it, or None."""
        image, box, scale = _crop(frame, last.box, TRACK_CONTEXT, TRACK_SIDE)
        if min(image.shape[:2]) < 16:
            return None
        cx, cy = (last.box[0] + last.box[2]) / 2, (last.box[1] + last.box[3]) / 2
        best, best_d = None, None
        for raw in (r.shifted(box[0], box[1], scale) for r in self._backend(image)):
            raw.score = last.score  # a tracked face keeps the score its search gave it
            if box_overlap(raw.box, last.box) < 0.3 or not self.accepts(raw.box, raw.score, frame.shape[0]):
                continue
            rx, ry = (raw.box[0] + raw.box[2]) / 2, (raw.box[1] + raw.box[3]) / 2
            d = (rx - cx) ** 2 + (ry - cy) ** 2
            if best_d is None or d < best_d:
                best, best_d = raw, d
        return None if best is None else Detection.from_raw(best, tracked=True)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def _run(self, frame: np.ndarray, box, max_side: int) -> list[RawFace]:
        x0, y0, x1, y1 = box
        image, scale = _scaled(frame[y0:y1, x0:x1], max_side)
        return [r.shifted(x0, y0, scale) for r in self._backend(image)]


def _crop(frame: np.ndarray, box, context: float, max_side: int):
    """Square crop of ``context`` × the box size around its centre (clipped), scaled to ≤ max_side."""
    height, width = frame.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * context / 2
    x0, y0 = max(int(cx - half), 0), max(int(cy - half), 0)
    x1, y1 = min(int(cx + half) + 1, width), min(int(cy + half) + 1, height)
    image, scale = _scaled(frame[y0:y1, x0:x1], max_side)
    return image, (x0, y0, x1, y1), scale


class FaceDetector:
    """Finds the chosen face per frame. Stateful per video (tracking): call ``reset`` between videos.

    backend: "auto" (legacy mediapipe FaceMesh if present, else Tasks), "solutions", "tasks", "insightface".
    face: "largest" (reference), "leftmost", "rightmost", "center" or "index:N" (left to right from 0);
    aliases "left", "right", "centre".
    model_dir: folder with ``face_landmarker.task`` for the Tasks backend (and insightface's models).
    settings: DetectionSettings (minimum face size, confidence, search region, re-search interval).
    """

    def __init__(self, backend: str = "auto", face="largest", model_dir=None, *, allow_download: bool = False,
                 max_faces: int = 4, track: bool = True, settings: DetectionSettings | None = None):
        self.choice = parse_choice(face)
        self.track = track
        self._finder = FaceFinder(backend, model_dir, allow_download=allow_download, max_faces=max_faces,
                                  settings=settings)
        self.settings = self._finder.settings
        self.backend = self._finder.name
        self._last: Detection | None = None
        self._since_search = 0
        self._warned = False

    # ------------------------------------------------------------------ public
    def detect(self, frame: np.ndarray) -> Detection | None:
        """The chosen acceptable face of ``frame`` (uint8 HxWx3 RGB), or None. Never raises for a frame
        without a face; a backend failure is logged and gives None. InputError for a bad frame or settings
        that do not fit it (checked before the frame is processed)."""
        self._finder.check(frame)
        try:
            last = self._last if self.track else None
            if last is None:
                found = self._search_choice(frame)
            elif self._since_search >= self.settings.redetect_every:  # periodic re-search (the choice may change)
                found = self._search_choice(frame)
                if found is None:  # the search can miss a face tracking still holds (e.g. near the size limit)
                    found = self._finder.track(frame, last)
            else:
                found = self._finder.track(frame, last)
                if found is None:
                    found = self._search_choice(frame)
                else:
                    self._since_search += 1
            self._last = found
            return found
        except InputError:
            raise
        except Exception as exc:  # a landmark backend crash must not kill a long job
            if not self._warned:
                log.warning("face landmark backend %s failed (%s: %s); treating the frame as faceless",
                            self.backend, type(exc).__name__, exc)
                self._warned = True
            self._last = None
            return None

    def reset(self) -> None:
        self._last = None
        self._since_search = 0

    def close(self) -> None:
        self._finder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ internals
    def _search_choice(self, frame: np.ndarray) -> Detection | None:
        self._since_search = 0
        faces = self._finder.search(frame)
        index = choose([f.box for f in faces], self.choice, (frame.shape[1], frame.shape[0]))
        return None if index is None else self._finder.refine(frame, faces[index])


def _check_frame(frame) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise InputError(f"expected an HxWx3 uint8 RGB frame, got {getattr(frame, 'dtype', type(frame))} {shape}")
