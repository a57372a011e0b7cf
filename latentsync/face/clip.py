"""Per-clip face analysis the pipeline uses: detect + align every frame, flag the faceless ones.

Smoothing across gaps: the reference has one smoothing state per video and never sees a missing face (it
crashes). Here a frame without a face ends a segment: the aligner is reset there, so the next face starts a
fresh state like a new video (after a gap the person may have moved or the shot changed; carrying a stale
bias would shift the first frames of the new segment). Consecutive frames with a face keep the state, also
across calls (chunks of one stream), as long as the caller keeps the same detector and aligner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from ..errors import NoFaceError
from .align import FaceAligner
from .detector import Detection, FaceDetector
from .restore import RestorePlan, plan_restore

log = logging.getLogger(__name__)


@dataclass
class AlignedFace:
    face: np.ndarray  # uint8 (R, R, 3)
    matrix: np.ndarray  # float32 (2, 3) frame → crop
    detection: Detection
    plan: RestorePlan | None = None  # paste-back geometry, when asked for


def analyze_frames(frames: Iterable[np.ndarray], detector: FaceDetector, aligner: FaceAligner, *,
                   strict: bool = False, with_plan: bool = False) -> list[AlignedFace | None]:
    """Detect and align each frame (uint8 HxWx3, an iterable or an (n, H, W, 3) array). None marks a frame
    without an acceptable face (the pipeline passes it through unchanged). When no frame has a face: a
    warning, or NoFaceError when ``strict``."""
    results: list[AlignedFace | None] = []
    for frame in frames:
        detection = detector.detect(frame)
        if detection is None:
            aligner.reset()
            results.append(None)
            continue
        face, matrix = aligner.align(frame, detection.points)
        plan = plan_restore(matrix, frame.shape[:2], aligner.resolution) if with_plan else None
        results.append(AlignedFace(face, matrix, detection, plan))
    missing = sum(r is None for r in results)
    if results and missing == len(results):
        message = (f"no usable face in any of the {len(results)} frames (a face must be at least 50x80 px and "
                   "clearly visible); the frames are returned unchanged")
        if strict:
            raise NoFaceError(message)
        log.warning(message)
    elif missing:
        log.info("%d of %d frames have no usable face; they pass through unchanged", missing, len(results))
    return results
