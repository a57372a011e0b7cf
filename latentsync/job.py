"""Steps 1-3 of the pipeline, before any frame: check the audio, fps and settings, compute each speaker's audio
features and the output timeline. The result, a ``LipSyncJob``, is what ``LipSyncPipeline.stream`` runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import timeline as tl
from .audio import AudioClip, audio_features, resample, to_mono_16k
from .errors import InputError
from .inputs import parse_audio
from .runtime import MemoryPlan, plan_for
from .settings import LipSyncSettings
from .silence import silence_weights
from .speakers import FaceFinder, SpeakerTrack, as_speakers

log = logging.getLogger(__name__)

MIN_SAMPLES_16K = 320  # one feature row (20 ms)


@dataclass
class LipSyncJob:
    settings: LipSyncSettings
    plan: MemoryPlan  # window batch, VAE slice, CFG halves
    fps: float
    n_out: int | None  # output frames (None: length_mode "video" with a source of unknown length)
    speakers: list[SpeakerTrack]
    audio: AudioClip  # the output's audio: the caller's original (several speakers: mixed), before fitting
    loop: str = "smooth"  # how a short video is extended (timeline.source_indices)
    source_order: np.ndarray | None = None  # source frame of each output frame, when the source length is known
    n_source: int | None = None  # the source's frame count, when known
    start: int = 0  # first output frame to produce (a segment)
    faces: FaceFinder | None = None  # None: the face detector with the settings' face choice and controls
    restorer: Callable | None = None  # (generated faces (N, 3, R, R), mouth mask) -> restored faces, on the device

    def __post_init__(self):
        self.paste_options = self.settings.paste_options()
        self.overlaps_logged: set[tuple[int, int]] = set()  # pairs of speakers whose faces were seen overlapping

    @property
    def keep_detections(self) -> bool:
        """Frames may be played again (a looped video): keep each source frame's faces."""
        return self.n_out is not None and (self.n_source is None or self.n_source < self.n_out)

    def face_weight(self, speaker: int, frame_index: int) -> float:
        return self.speakers[speaker].weight(frame_index)

    def output_audio(self, n_out: int | None = None) -> tuple[np.ndarray, int]:
        """The output's audio trimmed / padded with silence to ``n_out`` frames (default: the timeline's)."""
        n_out = self.n_out if n_out is None else n_out
        if n_out is None:
            return self.audio.samples, self.audio.sample_rate
        return fitted_audio(self.audio, n_out, self.fps)


def prepare_job(models, audio, fps, settings: LipSyncSettings, *, n_frames: int | None = None,
                plan: MemoryPlan | None = None, faces: FaceFinder | None = None, start: int = 0,
                restorer: Callable | None = None) -> LipSyncJob:
    """1. check the inputs, 2. compute the audio features, 3. make the timeline.

    ``audio``: one audio in any accepted form, or a list of ``Speaker``. ``n_frames``: the source's frame count
    when known. ``plan``: the memory plan (default: the one for the models' device, with the settings'
    overrides). ``faces``: faces known in advance (``GivenFaces``; needed for several speakers). ``start``:
    produce output frames from here on (needs ``faces``). ``restorer``: e.g. latentsync.face.enhance.FaceRestorer.
    Speaker k's seed is ``settings.seed + k``; with several speakers each keeps its original face where its own
    track is silent."""
    if str(settings.version) != str(models.version):
        log.warning("settings ask for LatentSync %s but the loaded models are %s; using the models",
                    settings.version, models.version)
    fps = tl.check_fps(fps)
    settings.gpu_levers().check(models.device, deepcache=settings.deepcache)  # impossible levers fail now
    speakers = as_speakers(audio)
    if faces is not None and faces.n_speakers != len(speakers):
        raise InputError(f"The faces given are for {faces.n_speakers} speakers, but there are {len(speakers)}.")
    if len(speakers) > 1 and faces is None:
        raise InputError("Several speakers need their faces found first (faces=GivenFaces(...), see api.find_faces).")
    if start and faces is None:
        raise InputError("A segment (start > 0) needs the faces of the frames before it (faces=GivenFaces(...)).")
    clips = [parse_audio(s.audio) for s in speakers]
    monos = [to_mono_16k(c.samples, c.sample_rate) for c in clips]
    n_out = output_length(clips, fps, settings, n_frames)
    if n_out is not None and start >= n_out:
        raise InputError(f"The segment starts at frame {start}, but the output has {n_out} frames.")

    tracks = []
    for k, (speaker, clip, mono) in enumerate(zip(speakers, clips, monos)):
        if n_out is not None and not settings.reference:  # the features hear exactly the output's audio
            mono = tl.fit_audio(mono, tl.audio_sample_count(n_out, fps, 16000))
        mono = tl.fit_audio(mono, max(len(mono), MIN_SAMPLES_16K))
        with torch.inference_mode():  # 2. audio features
            features = audio_features(models.audio_encoder, mono,
                                      mode="reference" if settings.reference else "stitched")
        weights = None
        if n_out is not None and (settings.silence == "keep" or len(speakers) > 1):
            weights = silence_weights(mono, fps, n_out, settings.silence_db)  # a dialogue's listeners stay still
        tracks.append(SpeakerTrack(speaker.face or settings.face, clip, features, fps, settings.seed + k,
                                   reference=settings.reference, weights=weights))

    loop = "reference" if settings.reference else "smooth"
    source_order = tl.source_indices(n_out, n_frames, loop) if n_out is not None and n_frames else None
    if start and source_order is None:
        raise InputError("A segment (start > 0) needs the source's frame count.")
    if plan is None:
        plan = plan_for(0, 0, models.device.type).with_overrides(settings.window_batch, settings.vae_slice)
    return LipSyncJob(settings, plan, fps, n_out, tracks, mix_tracks([t.clip for t in tracks]), loop, source_order,
                      n_frames, start, faces, restorer)


def output_length(clips: list[AudioClip], fps: float, settings: LipSyncSettings, n_frames: int | None) -> int | None:
    """Output frames (timeline rules; the longest track decides in audio mode); None in video mode when the
    source's length is unknown."""
    if settings.reference:  # the reference's frame count, from the track at 16 kHz
        return tl.reference_frame_count(max(len(to_mono_16k(c.samples, c.sample_rate)) for c in clips), fps)
    if settings.length_mode == "video" and n_frames is None:
        return None
    return tl.output_frame_count(max(c.duration for c in clips), fps, n_frames, settings.length_mode)


def fitted_audio(clip: AudioClip, n_out: int, fps: float) -> tuple[np.ndarray, int]:
    """``clip`` trimmed / padded with silence to exactly ``n_out`` frames at ``fps`` (timeline.audio_sample_count)."""
    return tl.fit_audio(clip.samples, tl.audio_sample_count(n_out, fps, clip.sample_rate)), clip.sample_rate


def mix_tracks(clips: list[AudioClip]) -> AudioClip:
    """One track: itself. Several (dialogue): summed at the highest sample rate with the most channels (mono
    tracks spread to every channel), clipped to [-1, 1]."""
    if len(clips) == 1:
        return clips[0]
    rate = max(c.sample_rate for c in clips)
    channels = max(c.n_channels for c in clips)
    parts = [resample(c.samples, c.sample_rate, rate) for c in clips]
    length = max(p.shape[1] for p in parts)
    mixed = np.zeros((channels, length), np.float32)
    for p in parts:
        mixed[:, :p.shape[1]] += p if p.shape[0] == channels else p.mean(axis=0, keepdims=True)
    return AudioClip(np.clip(mixed, -1.0, 1.0), rate)
