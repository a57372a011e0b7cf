"""The library's front door, used by the CLI, the ComfyUI nodes and the cluster workers alike.

    >>> from latentsync.api import lipsync_file, lipsync_frames
    >>> lipsync_file("talk.mp4", "speech.wav", "out.mp4")                # file → file, streaming
    >>> result = lipsync_frames(frames, 25, (samples, sample_rate))      # arrays in memory → LipSyncResult

``models`` is a ``runtime.ModelHandle`` (default: LatentSync 1.6, auto device and dtype, weights found or
fetched, torn down after the job): the job then runs under the memory policy of ``runtime.run_job`` (VRAM tier,
scoped memory fraction, OOM retry one tier lower, teardown unless kept). Already loaded ``LatentSyncModels`` are
used as they are, with ``plan`` or the plan of their device (no teardown). ``progress(done, total, info)`` is called per denoising step;
``cancel()`` is polled and ends the job with ``CancelledError`` (no partial output file is left behind).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import CancelledError, InputError
from .inputs import FrameSource, to_uint8_array
from .pipeline import LipSyncPipeline
from .runtime import Host, MemoryPlan, ModelHandle, plan_for, run_job
from .settings import LipSyncSettings
from .speakers import as_speakers
from .video import VideoWriter, probe
from .windows import FrameWork

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict], None]
Cancel = Callable[[], bool]


@dataclass
class LipSyncResult:
    frames: np.ndarray | torch.Tensor  # uint8 (N, H, W, 3), or float 0..1 of the input's kind if float came in
    fps: float
    audio: tuple[np.ndarray, int]  # (samples (C, T) float32, sample_rate): the original audio fitted to N frames
    has_face: np.ndarray  # bool (N,): a face was synced in that frame


@dataclass
class FileResult:
    output: Path
    frames: int
    fps: float
    width: int
    height: int
    has_face: np.ndarray

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def lipsync_frames(frames, fps: float, audio, settings: LipSyncSettings | None = None, *,
                   models: Any = None, host: Host | None = None, plan: MemoryPlan | None = None,
                   progress: Progress | None = None, cancel: Cancel | None = None, **job_options) -> LipSyncResult:
    """Lip-sync frames held in memory: (N, H, W, 3) uint8, or float 0..1 (numpy or torch, e.g. ComfyUI IMAGE);
    ``audio`` in any accepted form (or a list of ``Speaker``). Returns frames of the same kind; pixels the
    pipeline did not change keep their exact input values. ``job_options``: see ``job.prepare_job``."""
    settings = settings or LipSyncSettings()
    pixels = to_uint8_array(frames)  # checked and converted once
    speakers = as_speakers(audio)
    source = FrameSource.from_array(pixels)
    is_float = not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8) and not (
        isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8)

    def work(loaded, plan) -> LipSyncResult:
        pipe = LipSyncPipeline(loaded)
        job = pipe.prepare(speakers, fps, settings, n_frames=len(pixels), plan=plan, **job_options)
        out, has_face = None, []
        for chunk, works in _chunks_with_frames(pipe, source, job, progress, cancel):
            if out is None:  # the whole result, filled chunk by chunk (no second full-size copy)
                out = _empty_like_input(frames, (job.n_out, *chunk.shape[1:]), is_float)
            first = works[0].index
            out[first:first + len(chunk)] = _as_input_kind(chunk, works, frames, pixels, is_float)
            has_face += [w.has_face for w in works]
        return LipSyncResult(out, job.fps, job.output_audio(), np.asarray(has_face, bool))

    return _run(models, work, host, settings, plan)


def lipsync_file(video: str | Path, audio, output: str | Path, settings: LipSyncSettings | None = None, *,
                 models: Any = None, host: Host | None = None, plan: MemoryPlan | None = None,
                 progress: Progress | None = None,
                 cancel: Cancel | None = None, on_frame: Callable[[FrameWork], None] | None = None,
                 **job_options) -> FileResult:
    """Lip-sync a video file to ``audio`` (a file path, samples, a list of ``Speaker``; None = the video's own
    sound) and write ``output`` (.mp4/.mov/.mkv: H.264 + AAC of the original audio fitted to the output)."""
    settings = settings or LipSyncSettings()
    output = Path(output)
    if not output.parent.is_dir():
        raise InputError(f"The output folder does not exist: {output.parent}")
    if Path(video).exists() and output.resolve() == Path(video).resolve():
        raise InputError("The output must not overwrite the input video.")
    info = probe(video)
    speakers = as_speakers(video if audio is None else audio)  # every track decoded and checked now
    source = FrameSource.from_file(video, info.n_frames)

    def work(loaded, plan) -> FileResult:
        pipe = LipSyncPipeline(loaded)
        job = pipe.prepare(speakers, info.fps, settings, n_frames=info.n_frames, plan=plan, **job_options)
        has_face = []
        with VideoWriter(output, info.rate or info.fps, info.width, info.height, audio=job.output_audio()) as writer:
            for chunk, works in _chunks_with_frames(pipe, source, job, progress, cancel, on_frame):
                if cancel is not None and cancel():
                    raise CancelledError("Lip-sync was cancelled.")
                writer.write(chunk)
                has_face += [w.has_face for w in works]
        return FileResult(output, writer.n_written, job.fps, info.width, info.height, np.asarray(has_face, bool))

    return _run(models, work, host, settings, plan)


def _run(models, work: Callable, host: Host | None, settings: LipSyncSettings, plan: MemoryPlan | None):
    if models is not None and not isinstance(models, ModelHandle):  # networks already loaded: run as they are
        plan = plan or plan_for(0, 0, models.device.type).with_overrides(settings.window_batch, settings.vae_slice)
        return work(models, plan)
    if plan is not None:
        raise InputError("A memory plan can only be given with loaded models; a ModelHandle plans for itself.")
    handle = models or ModelHandle(settings.version)
    return run_job(handle, work, host, settings.window_batch, settings.vae_slice)


def _chunks_with_frames(pipe, source, job, progress, cancel, on_frame=None):
    """The stream's chunks, each with the FrameWork records of its frames."""
    finished: list[FrameWork] = []

    def seen(work: FrameWork) -> None:
        finished.append(work)
        if on_frame is not None:
            on_frame(work)

    for chunk in pipe.stream(source, job, progress, cancel, on_frame=seen):
        works = finished[:len(chunk)]
        del finished[:len(chunk)]
        yield chunk, works


def _empty_like_input(frames, shape, is_float: bool):
    if isinstance(frames, torch.Tensor) and is_float:
        return torch.empty(shape, dtype=torch.float32)
    return np.empty(shape, np.float32 if is_float else np.uint8)


def _as_input_kind(chunk: np.ndarray, works: list[FrameWork], frames, pixels: np.ndarray, is_float: bool):
    """uint8 chunk → the caller's kind; float input keeps its exact value wherever a pixel is unchanged."""
    if not is_float:
        return chunk
    sources = [w.source for w in works]
    original = frames[torch.as_tensor(sources)] if isinstance(frames, torch.Tensor) else frames[sources]
    original = original.detach().cpu().float().numpy() if isinstance(original, torch.Tensor) else \
        np.asarray(original, np.float32)
    out = chunk.astype(np.float32) / 255.0
    if original.shape == out.shape:  # RGB input: unchanged pixels keep their float value
        out = np.where(chunk == pixels[sources], original, out)
    return torch.from_numpy(out) if isinstance(frames, torch.Tensor) else out
