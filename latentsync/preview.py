"""Face-tracking previews (pure drawing, no models): what the pipeline saw in a frame, for ``--preview DIR``.

    faces = [FaceReport(box, points, matrix, resolution, label="face 0 · 0.93")]  # [] for a frame without a face
    image = draw_preview(frame, faces, max_side=512, title="frame 12")
    sheet = contact_sheet([image, ...], columns=4)
    with PreviewWriter("previews/", every=25, max_images=48) as writer:   # frame_000012.png ..., contact_sheet.png
        writer.add(index, frame, faces)

A preview is the frame scaled down to ``max_side`` with, per face: its box (green), the three alignment points
(left brow, right brow: yellow; nose centre: cyan), the outline of the region LatentSync regenerates (the mouth
mask's regenerate area mapped into the frame through the inverse alignment matrix; magenta) and the label.
A frame without a face gets a red border and "no face". Images are RGB uint8.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError
from .face.align import crop_size
from .face.mask import load_mask

log = logging.getLogger(__name__)

BOX_COLOUR = (60, 220, 90)
BROW_COLOUR = (250, 220, 40)
NOSE_COLOUR = (40, 220, 250)
MOUTH_COLOUR = (240, 60, 220)
NO_FACE_COLOUR = (230, 40, 40)
SHEET_BACKGROUND = (24, 24, 24)
SUBPIXEL_BITS = 4  # cv2 drawing with fractional coordinates
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class FaceReport:
    """One face found in a frame: box (x0, y0, x1, y1) and points float32 (3, 2) (left brow, right brow, nose
    centre) in frame pixels, the alignment matrix (2, 3) frame → crop, the face resolution R and a label."""

    box: tuple[float, float, float, float]
    points: np.ndarray
    matrix: np.ndarray
    resolution: int
    label: str = ""

    @classmethod
    def from_detection(cls, detection, matrix: np.ndarray, resolution: int, label: str = "") -> "FaceReport":
        """From anything with ``box`` and ``points`` (e.g. latentsync.face.Detection)."""
        return cls(tuple(float(v) for v in detection.box), np.asarray(detection.points, np.float32).reshape(3, 2),
                   np.asarray(matrix, np.float32).reshape(2, 3), int(resolution), label)


@lru_cache(maxsize=4)
def _mouth_contours_crop(resolution: int) -> tuple[np.ndarray, ...]:
    """Outlines of the mask's regenerate area (mask < 0.5) in crop pixels (float64 (K, 2) each)."""
    region = (load_mask(resolution) < 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    width, height = crop_size(resolution)
    scale = np.array([width / resolution, height / resolution])
    # R pixel centres → crop pixel centres (the face is resized crop ↔ R with align_corners=False)
    return tuple((c.reshape(-1, 2).astype(np.float64) + 0.5) * scale - 0.5 for c in contours)


def mouth_outline(matrix: np.ndarray, resolution: int) -> list[np.ndarray]:
    """The regenerated region's outline(s) in frame pixels (float32 (K, 2) each)."""
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64).reshape(2, 3))
    return [(c @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32) for c in _mouth_contours_crop(int(resolution))]


def _fixed(points: np.ndarray, scale: float) -> np.ndarray:
    """Frame pixel coordinates → preview coordinates in cv2's fixed-point (SUBPIXEL_BITS) int32."""
    preview = (np.asarray(points, np.float64) + 0.5) * scale - 0.5
    return np.round(preview * (1 << SUBPIXEL_BITS)).astype(np.int32)


ASCII_STAND_INS = str.maketrans({"·": "-", "•": "-", "–": "-", "—": "-", "→": "->", "×": "x", "…": "..."})


def _text(image: np.ndarray, text: str, origin: tuple[int, int], size: float, colour, thickness: int) -> None:
    """Outlined text; OpenCV's Hershey fonts are ASCII-only, so a few symbols get stand-ins and others "?"."""
    text = text.translate(ASCII_STAND_INS).encode("ascii", "replace").decode("ascii")
    (width, height), _ = cv2.getTextSize(text, FONT, size, thickness + 2)
    x = max(min(origin[0], image.shape[1] - width - 2), 2)  # kept inside the image
    y = min(max(origin[1], height + 2), image.shape[0] - 4)
    cv2.putText(image, text, (x, y), FONT, size, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), FONT, size, colour, thickness, cv2.LINE_AA)


def _check_frame(frame) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        described = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise InputError(f"a preview needs an HxWx3 uint8 RGB frame, got {described}")


def draw_preview(frame: np.ndarray, faces: list[FaceReport], max_side: int = 512, title: str = "") -> np.ndarray:
    """The frame scaled to at most ``max_side`` px with every face drawn (see the module doc); an empty
    ``faces`` list marks the frame as having no face. ``title`` (e.g. "frame 12") is written top-left."""
    _check_frame(frame)
    if int(max_side) < 16:
        raise InputError(f"max_side must be at least 16 px, got {max_side!r}")
    height, width = frame.shape[:2]
    scale = min(1.0, int(max_side) / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if scale < 1 else frame.copy()
    side = max(image.shape[:2])
    line = max(1, round(side / 320))
    font = max(0.35, side / 1600)
    shift = SUBPIXEL_BITS
    for face in faces:
        for outline in mouth_outline(face.matrix, face.resolution):
            cv2.polylines(image, [_fixed(outline, scale)], True, MOUTH_COLOUR, line, cv2.LINE_AA, shift)
        x0, y0, x1, y1 = _fixed(np.array(face.box, np.float64).reshape(2, 2), scale).reshape(-1)
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), BOX_COLOUR, line, cv2.LINE_AA, shift)
        radius = max(2, line + 1) << shift
        for k, point in enumerate(_fixed(face.points, scale)):
            cv2.circle(image, tuple(int(v) for v in point), radius, NOSE_COLOUR if k == 2 else BROW_COLOUR, -1,
                       cv2.LINE_AA, shift)
        if face.label:
            origin = (int(x0) >> shift, (int(y0) >> shift) - 2 * line - 2)
            _text(image, face.label, origin, font, BOX_COLOUR, max(1, line // 2))
    if not faces:
        border = max(3, round(side / 100))
        cv2.rectangle(image, (0, 0), (image.shape[1] - 1, image.shape[0] - 1), NO_FACE_COLOUR, 2 * border)
        text_size = font * 1.6
        (tw, th), _ = cv2.getTextSize("no face", FONT, text_size, line + 1)
        _text(image, "no face", ((image.shape[1] - tw) // 2, border + th + 8), text_size, NO_FACE_COLOUR, line + 1)
    if title:
        _text(image, title, (6, int(22 * font) + 6), font, (255, 255, 255), max(1, line // 2))
    return image


def contact_sheet(images: list[np.ndarray], columns: int = 4, gap: int = 4) -> np.ndarray:
    """The images (RGB uint8, any sizes) in a grid of ``columns``, each centred in a cell of the largest size."""
    if not images:
        raise InputError("a contact sheet needs at least one image")
    if int(columns) < 1 or int(gap) < 0:
        raise InputError(f"columns must be >= 1 and gap >= 0, got columns={columns!r}, gap={gap!r}")
    columns = min(int(columns), len(images))
    rows = math.ceil(len(images) / columns)
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    sheet = np.empty((rows * cell_h + (rows + 1) * gap, columns * cell_w + (columns + 1) * gap, 3), np.uint8)
    sheet[:] = SHEET_BACKGROUND
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        y = gap + r * (cell_h + gap) + (cell_h - im.shape[0]) // 2
        x = gap + c * (cell_w + gap) + (cell_w - im.shape[1]) // 2
        sheet[y:y + im.shape[0], x:x + im.shape[1]] = im
    return sheet


def write_png(path: Path, image: np.ndarray) -> Path:
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise InputError(f"cannot write the preview image {path}")
    return path


class PreviewWriter:
    """Writes previews into ``folder``: frame_NNNNNN.png for every ``every``-th frame and for each frame where
    the face appears or disappears, at most ``max_images`` of them; ``close`` adds contact_sheet.png
    (thumbnails of ``sheet_side`` px, ``columns`` wide). Use as a context manager or call ``close``."""

    def __init__(self, folder, every: int = 25, max_images: int = 48, max_side: int = 512, *,
                 sheet_side: int = 256, columns: int = 6):
        for name, value, low in (("every", every, 1), ("max_images", max_images, 1), ("sheet_side", sheet_side, 16),
                                 ("columns", columns, 1)):
            if int(value) < low:
                raise InputError(f"preview {name} must be >= {low}, got {value!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.every, self.max_images, self.max_side = int(every), int(max_images), int(max_side)
        self.sheet_side, self.columns = int(sheet_side), int(columns)
        self.written: list[Path] = []
        self._thumbnails: list[np.ndarray] = []
        self._had_face: bool | None = None
        self._closed = False

    def add(self, index: int, frame: np.ndarray, faces: list[FaceReport]) -> Path | None:
        """Preview of frame ``index`` when it is due; returns the PNG's path, or None when skipped."""
        has_face = bool(faces)
        changed = self._had_face is not None and has_face != self._had_face
        self._had_face = has_face
        if self._closed or len(self.written) >= self.max_images or not (index % self.every == 0 or changed):
            return None
        image = draw_preview(frame, faces, self.max_side, title=f"frame {index}")
        path = write_png(self.folder / f"frame_{index:06d}.png", image)
        self.written.append(path)
        scale = self.sheet_side / max(image.shape[:2])
        self._thumbnails.append(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                                if scale < 1 else image)
        if len(self.written) == self.max_images:
            log.info("preview: %d images written to %s; no more for this job", self.max_images, self.folder)
        return path

    def close(self) -> Path | None:
        """Write contact_sheet.png (when any preview was written) and return its path."""
        if self._closed:
            return None
        self._closed = True
        if not self._thumbnails:
            return None
        path = write_png(self.folder / "contact_sheet.png", contact_sheet(self._thumbnails, self.columns))
        self._thumbnails = []
        log.info("preview: contact sheet %s", path)
        return path

    def __enter__(self) -> "PreviewWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
