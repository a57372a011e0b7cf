"""DetectionSettings: the user's controls over face search (minimum face height, confidence, search region,
re-detection interval), checked before any frame is processed; ``format_ranges`` names frames for the log.

The defaults reproduce the reference's filter (faces at least 80 px high and 50 px wide, detector score ≥ 0.5)
and today's re-search every 50 frames (2 s at 25 fps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import InputError
from .select import MIN_HEIGHT, MIN_SCORE, MIN_WIDTH


def _as_region(region):
    """None, a box of 4 ints (x0, y0, x1, y1), or a read-only bool mask (H, W) (a leading batch of 1, as a
    ComfyUI MASK has, is dropped; float masks count as inside where ≥ 0.5)."""
    if region is None:
        return None
    if isinstance(region, (tuple, list)):
        if len(region) != 4:
            raise InputError(f"a search region box needs 4 numbers (x0, y0, x1, y1) in pixels, got {region!r}")
        try:
            x0, y0, x1, y1 = (int(round(float(v))) for v in region)
        except (TypeError, ValueError) as exc:
            raise InputError(f"a search region box needs 4 numbers (x0, y0, x1, y1), got {region!r}") from exc
        if min(x0, y0, x1, y1) < 0:
            raise InputError(f"search region {region!r} has a negative coordinate; use pixels from the top-left")
        if x1 <= x0 or y1 <= y0:
            raise InputError(f"search region {region!r} is empty: it needs x1 > x0 and y1 > y0")
        return x0, y0, x1, y1
    mask = np.asarray(region)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2 or mask.dtype.kind not in "biuf":
        raise InputError(f"a search region mask must be a 2-D (H, W) boolean or number array, got "
                         f"{mask.dtype} {mask.shape}")
    mask = mask >= 0.5 if mask.dtype.kind == "f" else mask.astype(bool)
    if not mask.any():
        raise InputError("the search region mask is empty (no pixel is set), so no face could ever be found")
    mask.setflags(write=False)
    return mask


@dataclass(frozen=True, eq=False)
class DetectionSettings:
    """Face search controls.

    min_face_height: smallest accepted face box height, in pixels (≥ 1) or as a fraction of the frame height
        (< 1); the minimum width scales with it (50/80 of it, the reference's 50 x 80 px at the default).
    min_confidence: detector confidence a face needs, 0..1 (the reference's 0.5).
    region: where faces may be (their box centre must be inside): None (the whole frame), a box
        (x0, y0, x1, y1) in pixels, or a mask (H, W) of the frame's size, boolean or float (≥ 0.5 is inside),
        e.g. a ComfyUI MASK.
    redetect_every: frames between full searches while a face is being tracked (≥ 1).
    """

    min_face_height: float = float(MIN_HEIGHT)
    min_confidence: float = MIN_SCORE
    region: tuple[int, int, int, int] | np.ndarray | None = None
    redetect_every: int = 50

    def __post_init__(self):
        try:
            height = float(self.min_face_height)
            confidence = float(self.min_confidence)
        except (TypeError, ValueError) as exc:
            raise InputError(f"min_face_height and min_confidence must be numbers, got {self.min_face_height!r} "
                             f"and {self.min_confidence!r}") from exc
        if not height > 0:
            raise InputError(f"min_face_height must be > 0 (pixels, or a fraction of the frame height below 1), "
                             f"got {self.min_face_height!r}")
        if not 0.0 <= confidence <= 1.0:
            raise InputError(f"min_confidence must be between 0 and 1, got {self.min_confidence!r}")
        every = self.redetect_every
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise InputError(f"redetect_every must be a whole number of frames ≥ 1, got {every!r}")
        object.__setattr__(self, "min_face_height", height)
        object.__setattr__(self, "min_confidence", confidence)
        object.__setattr__(self, "redetect_every", int(every))
        object.__setattr__(self, "region", _as_region(self.region))

    # value semantics also with a mask (numpy arrays neither compare to one bool nor hash)
    def _key(self):
        region = self.region
        if isinstance(region, np.ndarray):
            region = (region.shape, np.packbits(region).tobytes())
        return self.min_face_height, self.min_confidence, self.redetect_every, region

    def __eq__(self, other):
        return isinstance(other, DetectionSettings) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def min_size(self, frame_height: int) -> tuple[float, float]:
        """(min width, min height) in pixels for frames ``frame_height`` px high."""
        height = self.min_face_height
        if height < 1:
            height *= frame_height
        return height * MIN_WIDTH / MIN_HEIGHT, height

    def check_frame_size(self, width: int, height: int) -> None:
        """InputError when the region does not fit frames of ``width`` x ``height`` px (call before processing)."""
        region = self.region
        if isinstance(region, np.ndarray):
            if region.shape != (height, width):
                raise InputError(f"the search region mask is {region.shape[1]}x{region.shape[0]} px but the frames "
                                 f"are {width}x{height}; give a mask of the frame size")
        elif region is not None and (region[2] > width or region[3] > height):
            raise InputError(f"search region {region} reaches outside the {width}x{height} frame; "
                             f"x1 ≤ {width} and y1 ≤ {height} are needed")

    def in_region(self, box) -> bool:
        """Whether the centre of ``box`` (x0, y0, x1, y1) lies in the region (always, without one)."""
        region = self.region
        if region is None:
            return True
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if isinstance(region, np.ndarray):
            x, y = int(cx), int(cy)
            return 0 <= y < region.shape[0] and 0 <= x < region.shape[1] and bool(region[y, x])
        return region[0] <= cx < region[2] and region[1] <= cy < region[3]


def format_ranges(frames: Iterable[int], limit: int = 8) -> str:
    """Frame indices as ranges: [3, 4, 5, 9, 20, 21] → "3–5, 9, 20–21". Beyond ``limit`` ranges the rest is
    counted: "3–5, 9, … and 4 more ranges (37 frames in all)". Empty input gives ""."""
    ranges: list[list[int]] = []
    for i in sorted({int(f) for f in frames}):
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    text = ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in ranges[:limit])
    if len(ranges) > limit:
        total = sum(b - a + 1 for a, b in ranges)
        text += f", … and {len(ranges) - limit} more ranges ({total} frames in all)"
    return text
