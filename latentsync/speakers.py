"""Who speaks: each speaker is a voice (an audio track) and the face that speaks it, and the face finders that
say, for every played frame, where each speaker's face is.

* ``Speaker(audio, face)``: one voice; a dialogue has several (each face synced to its own track).
* ``SpeakerTrack``: a speaker prepared for one job — its audio features, the feature rows of every output
  frame, and its seed (speaker k uses ``seed + k``, so a single speaker uses the seed itself).
* Face finders (``find(source_index, frame) -> [Detection | None per speaker]``):
  ``DetectedFaces`` runs the face detector (the chosen face per frame); ``GivenFaces`` uses points or
  detections computed elsewhere (parity fixtures, a cluster pre-pass).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from .audio import AudioClip, frame_chunks
from .errors import CancelledError
from .face import Detection, FaceDetector, FaceTracker, format_ranges, track_faces
from .face.tracks import parse_speaker
from .inputs import parse_audio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speaker:
    """One voice and the face that speaks it. ``audio``: (samples, sample_rate), a ComfyUI AUDIO dict, a file path
    or an AudioClip; ``face``: a face choice (see latentsync.face.select); None = the settings' ``face``."""

    audio: Any
    face: str | None = None


@dataclass
class SpeakerTrack:
    """A speaker prepared for one job."""

    face: str
    clip: AudioClip  # the caller's original audio
    features: torch.Tensor  # (T, 5, C) Whisper features, float32 on the CPU
    fps: float
    seed: int
    reference: bool = False  # the reference's chunk rows (see latentsync.audio.chunk_rows)
    weights: np.ndarray | None = None  # per output frame: 1 = sync, 0 = keep the original face (silence)

    def window_audio(self, frame_indices: list[int]) -> torch.Tensor:
        """Audio tokens of the given output frames: (F, 50, C)."""
        return frame_chunks(self.features, frame_indices, self.fps, self.reference)

    def weight(self, frame_index: int) -> float:
        if self.weights is None:
            return 1.0
        return float(self.weights[min(frame_index, len(self.weights) - 1)])


def as_speakers(audio) -> list[Speaker]:
    """One audio (any accepted form) or a sequence of Speaker → a list of Speaker whose audio is decoded and
    checked (AudioClip)."""
    if isinstance(audio, Speaker):
        audio = [audio]
    if isinstance(audio, (list, tuple)) and audio and all(isinstance(s, Speaker) for s in audio):
        return [Speaker(parse_audio(s.audio), s.face) for s in audio]
    return [Speaker(parse_audio(audio))]


class FaceFinder(Protocol):
    n_speakers: int

    def find(self, source_index: int, frame: np.ndarray | None) -> list[Detection | None]: ...

    def close(self) -> None: ...


class DetectedFaces:
    """The face detector's chosen face on each frame (one speaker)."""

    n_speakers = 1

    def __init__(self, settings, face: str, model_dir=None, allow_download: bool = True):
        """The detector for ``face`` (a face choice) with the settings' backend and search controls — the same
        one for the streaming pipeline and for a pass over the frames first (``find_faces``)."""
        self.detector = FaceDetector(backend=settings.face_backend, face=face, model_dir=model_dir,
                                     allow_download=allow_download, settings=settings.detection())

    def find(self, source_index: int, frame: np.ndarray | None) -> list[Detection | None]:
        return [self.detector.detect(frame)]

    def close(self) -> None:
        self.detector.close()


class GivenFaces:
    """Faces known in advance, per source frame and speaker: ``Detection``s, or (n, 3, 2) alignment points
    (left brow, right brow, nose centre) for one speaker."""

    def __init__(self, faces: Sequence[Sequence[Detection | None]] | np.ndarray):
        if isinstance(faces, np.ndarray):
            faces = [[_points_detection(p)] for p in faces]
        self.faces = [list(f) for f in faces]
        self.n_speakers = len(self.faces[0]) if self.faces else 1

    def find(self, source_index: int, frame: np.ndarray | None) -> list[Detection | None]:
        return list(self.faces[source_index])

    def close(self) -> None:
        pass


def find_faces(frames: Iterable[np.ndarray], speakers: Sequence[Speaker], settings, *, fps: float = 25.0,
               model_dir=None, allow_download: bool = True,
               cancel: Callable[[], bool] | None = None) -> GivenFaces:
    """A pass over the source frames, before any model work: each speaker's face in every frame.

    One speaker: the face detector with the settings' face choice (the same detections the streaming pipeline
    makes, frame by frame). Several: every face tracked with a stable id (latentsync.face.FaceTracker), each
    speaker's selector (left, right, index:N, id:K) resolved once — unknown selectors, two speakers on one face
    or an id that never appears are an InputError naming the ids that do appear."""
    selectors = [s.face or settings.face for s in speakers]
    if len(speakers) == 1:
        faces = []
        finder = DetectedFaces(settings, selectors[0], model_dir, allow_download)
        try:
            for index, frame in enumerate(frames):
                _check_cancel(cancel)
                faces.append(finder.find(index, frame))
        finally:
            finder.close()
        return GivenFaces(faces)
    for selector in selectors:
        parse_speaker(selector)
    with FaceTracker(settings.face_backend, model_dir=model_dir, allow_download=allow_download,
                     settings=settings.detection(), fps=fps) as tracker:
        tracks = track_faces(frames, tracker, selectors, on_frame=lambda i: _check_cancel(cancel))
    ids = tracks.speaker_ids
    log.info("dialogue: speaker faces %s are face ids %s (ids in the clip: %s)", selectors, list(ids), tracks.ids())
    return GivenFaces([[found.get(face_id) for face_id in ids] for found in tracks.faces])


def faceless_summary(has_face: Sequence[bool]) -> str:
    """'' when every frame had a face, else e.g. 'no face in 7 of 120 frames: 3–5, 9, 20–21'."""
    missing = [i for i, found in enumerate(has_face) if not found]
    if not missing:
        return ""
    return f"no face in {len(missing)} of {len(has_face)} frames: {format_ranges(missing)}"


def _check_cancel(cancel) -> None:
    if cancel is not None and cancel():
        raise CancelledError("Lip-sync was cancelled.")


def _points_detection(points: np.ndarray) -> Detection:
    points = np.asarray(points, np.float32).reshape(3, 2)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return Detection(points, (x0, y0, x1, y1), 1.0)
