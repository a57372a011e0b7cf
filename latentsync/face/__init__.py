"""Face work around the LatentSync model (framework-free, no ComfyUI): landmarks → three points → aligned
crop; the fixed mouth mask; paste-back of the generated face.

Public API::

    FaceDetector(backend="auto", face="largest", model_dir=None, ...).detect(frame) -> Detection | None
    FaceAligner(resolution).align(frame, points) -> (face uint8 (R, R, 3), M float32 (2, 3)); .reset()
    restore_face(frame, face (3, R, R) in [-1, 1], M) -> new uint8 frame
    load_mask(resolution) -> float32 (R, R); latent_mask(mask) -> (R/8, R/8)
    analyze_frames(frames, detector, aligner, strict=False) -> list[AlignedFace | None]
"""

from .align import FaceAligner, crop_size, similarity_transform, template_points
from .clip import AlignedFace, analyze_frames
from .detector import Detection, FaceDetector
from .landmarks import LANDMARKER_URL, available_backends, find_landmarker_model
from .mask import latent_mask, load_mask
from .restore import RestorePlan, plan_restore, restore, restore_face

__all__ = [
    "AlignedFace", "Detection", "FaceAligner", "FaceDetector", "LANDMARKER_URL", "RestorePlan",
    "analyze_frames", "available_backends", "crop_size", "find_landmarker_model", "latent_mask", "load_mask",
    "plan_restore", "restore", "restore_face", "similarity_transform", "template_points",
]
