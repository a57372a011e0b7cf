"""Face work around the LatentSync model (framework-free, no ComfyUI): landmarks → three points → aligned
crop; the fixed mouth mask; paste-back of the generated face.

Public API::

    FaceDetector(backend="auto", face="largest", model_dir=None, settings=DetectionSettings(...), ...)
        .detect(frame) -> Detection | None
    FaceTracker(backend, model_dir=None, settings=..., fps=25.0, memory_s=2.0).update(frame) -> {id: Detection}
    track_faces(frames, tracker, speakers=("left", "id:2")) -> FaceTracks (.faces per frame, .speaker_ids)
    format_ranges([3, 4, 5, 9]) -> "3–5, 9"
    FaceAligner(resolution).align(frame, points) -> (face uint8 (R, R, 3), M float32 (2, 3)); .reset()
    restore_face(frame, face (3, R, R) in [-1, 1], M) -> new uint8 frame     (the reference's paste-back)
    blend.paste_face(frame, face, M, PasteOptions(blend, feather_px, color_match)) -> new uint8 frame
    enhance.FaceRestorer(spandrel model, strength)(faces, mask) -> restored faces (the mouth region only)
    load_mask(resolution) -> float32 (R, R); latent_mask(mask) -> (R/8, R/8)
"""

from .align import FaceAligner, crop_size, similarity_transform, template_points
from .detection_settings import DetectionSettings, format_ranges
from .detector import Detection, FaceDetector
from .landmarks import LANDMARKER_URL, available_backends, find_landmarker_model
from .mask import latent_mask, load_mask
from .restore import RestorePlan, plan_restore, restore, restore_face
from .tracks import FaceTracker, FaceTracks, parse_speaker, track_faces

__all__ = [
    "Detection", "DetectionSettings", "FaceAligner", "FaceDetector", "FaceTracker", "FaceTracks",
    "LANDMARKER_URL", "RestorePlan", "available_backends", "crop_size", "find_landmarker_model",
    "format_ranges", "latent_mask", "load_mask", "parse_speaker", "plan_restore", "restore", "restore_face",
    "similarity_transform", "template_points", "track_faces",
]
