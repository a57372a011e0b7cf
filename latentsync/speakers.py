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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from .audio import AudioClip, frame_chunks
from .face import Detection, FaceDetector
from .inputs import parse_audio


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

    def __init__(self, detector: FaceDetector):
        self.detector = detector

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


def _points_detection(points: np.ndarray) -> Detection:
    points = np.asarray(points, np.float32).reshape(3, 2)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return Detection(points, (x0, y0, x1, y1), 1.0)
