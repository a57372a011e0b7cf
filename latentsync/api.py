"""The library's front door, used by the CLI, the ComfyUI nodes and the cluster workers alike.

    >>> from latentsync.api import lipsync_file, lipsync_frames, Speaker
    >>> lipsync_file("talk.mp4", "speech.wav", "out.mp4")                # file → file, streaming
    >>> result = lipsync_frames(frames, 25, (samples, sample_rate))      # arrays in memory → LipSyncResult
    >>> lipsync_file("two.mp4", [Speaker("a.wav", "left"), Speaker("b.wav", "right")], "dialogue.mp4")

``models`` is a ``runtime.ModelHandle`` (default: LatentSync 1.6, auto device and dtype, weights found or
fetched, torn down after the job): the job then runs under the memory policy of ``runtime.run_job`` (VRAM tier,
scoped memory fraction, OOM retry one tier lower, teardown unless kept). Already loaded ``LatentSyncModels`` are
used as they are, with ``plan`` or the plan of their device (no teardown). ``progress(done, total, info)`` is
called per denoising step; ``cancel()`` is polled and ends the job with ``CancelledError`` (no partial output file
is left behind). ``restore_model``: a face restoration model (a spandrel descriptor, e.g. ComfyUI's
UPSCALE_MODEL, or a model file) applied to the mouth at ``settings.restore_strength``. ``preview``: a folder for
preview PNGs and a contact sheet (lipsync_file), or True to get preview images back (lipsync_frames).
Several speakers (a list of ``Speaker``): their faces are found and checked in a pass over the frames before any
model work (``speakers.find_faces``).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .errors import CancelledError, InputError
from .face.enhance import FaceRestorer
from .inputs import FrameSource, to_uint8_array
from .pipeline import LipSyncPipeline
from .preview import FaceReport, PreviewWriter, draw_preview
from .runtime import Host, MemoryPlan, ModelHandle, plan_for, run_job
from .settings import LipSyncSettings
from .speakers import GivenFaces, Speaker, as_speakers, faceless_summary, find_faces
from .video import VideoWriter, probe
from .windows import FrameWork

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict], None]
Cancel = Callable[[], bool]
PREVIEW_SIDE = 384
__all__ = ["FileResult", "GivenFaces", "LipSyncResult", "Speaker", "lipsync_file", "lipsync_frames"]


@dataclass
class LipSyncResult:
    frames: np.ndarray | torch.Tensor  # uint8 (N, H, W, 3), or float 0..1 of the input's kind if float came in
    fps: float
    audio: tuple[np.ndarray, int]  # (samples (C, T) float32, sample_rate): the original audio fitted to N frames
    has_face: np.ndarray  # bool (N,): a face was synced in that frame
    preview: np.ndarray | None = None  # uint8 (M, h, w, 3) annotated frames, when asked for
    faceless: str = ""  # e.g. "no face in 7 of 120 frames: 3–5, 9, 20–21"


@dataclass
class FileResult:
    output: Path
    frames: int
    fps: float
    width: int
    height: int
    has_face: np.ndarray
    faceless: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def lipsync_frames(frames, fps: float, audio, settings: LipSyncSettings | None = None, *,
                   models: Any = None, host: Host | None = None, plan: MemoryPlan | None = None,
                   progress: Progress | None = None, cancel: Cancel | None = None, restore_model: Any = None,
                   preview: bool = False, **job_options) -> LipSyncResult:
    """Lip-sync frames held in memory: (N, H, W, 3) uint8, or float 0..1 (numpy or torch, e.g. ComfyUI IMAGE);
    ``audio`` in any accepted form, or a list of ``Speaker``. Returns frames of the same kind; pixels the pipeline
    did not change keep their exact input values. ``job_options``: see ``job.prepare_job``."""
    settings = settings or LipSyncSettings()
    pixels = to_uint8_array(frames)  # checked and converted once
    speakers = as_speakers(audio)
    source = FrameSource.from_array(pixels)
    is_float = not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8) and not (
        isinstance(frames, torch.Tensor) and frames.dtype == torch.uint8)
    previews: list[np.ndarray] = []
    step = max(1, len(pixels) // 120)  # at most ~120 preview images
    options = {**_faces_for(speakers, source, settings, fps, models, host, cancel), **job_options}

    def work(loaded, plan) -> LipSyncResult:
        pipe = LipSyncPipeline(loaded)
        with _restorer(restore_model, settings) as restorer:
            job = pipe.prepare(speakers, fps, settings, n_frames=len(pixels), plan=plan, restorer=restorer, **options)
            on_frame = _preview_collector(previews, step, loaded.resolution, speakers) if preview else None
            out, has_face = None, []
            for chunk, works in _chunks_with_frames(pipe, source, job, progress, cancel, on_frame):
                if out is None:  # the whole result, filled chunk by chunk (no second full-size copy)
                    out = _empty_like_input(frames, (job.n_out, *chunk.shape[1:]), is_float)
                first = works[0].index
                out[first:first + len(chunk)] = _as_input_kind(chunk, works, frames, pixels, is_float)
                has_face += [w.has_face for w in works]
        return LipSyncResult(out, job.fps, job.output_audio(), np.asarray(has_face, bool),
                             np.stack(previews) if previews else None, _report(has_face))

    return run_with_models(models, work, host, settings, plan)


def lipsync_file(video: str | Path, audio, output: str | Path, settings: LipSyncSettings | None = None, *,
                 models: Any = None, host: Host | None = None, plan: MemoryPlan | None = None,
                 progress: Progress | None = None, cancel: Cancel | None = None, restore_model: Any = None,
                 preview: str | Path | None = None, on_frame: Callable[[FrameWork], None] | None = None,
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
    options = {**_faces_for(speakers, source, settings, info.fps, models, host, cancel), **job_options}

    def work(loaded, plan) -> FileResult:
        pipe = LipSyncPipeline(loaded)
        with _restorer(restore_model, settings) as restorer, _preview_writer(preview) as writer:
            job = pipe.prepare(speakers, info.fps, settings, n_frames=info.n_frames, plan=plan, restorer=restorer,
                               **options)
            observe = _observers(on_frame, writer and _preview_writing(writer, loaded.resolution, speakers))
            has_face = []
            with VideoWriter(output, info.rate or info.fps, info.width, info.height, audio=job.output_audio()) as out:
                for chunk, works in _chunks_with_frames(pipe, source, job, progress, cancel, observe):
                    if cancel is not None and cancel():
                        raise CancelledError("Lip-sync was cancelled.")
                    out.write(chunk)
                    has_face += [w.has_face for w in works]
        return FileResult(output, out.n_written, job.fps, info.width, info.height, np.asarray(has_face, bool),
                          _report(has_face))

    return run_with_models(models, work, host, settings, plan)


def run_with_models(models, work: Callable, host: Host | None, settings: LipSyncSettings,
                    plan: MemoryPlan | None = None):
    """``work(loaded models, memory plan)`` with loaded models as they are, or as a memory-managed job of a
    ModelHandle (default: the settings' version)."""
    if models is not None and not isinstance(models, ModelHandle):  # networks already loaded: run as they are
        plan = plan or plan_for(0, 0, models.device.type).with_overrides(settings.window_batch, settings.vae_slice)
        return work(models, plan)
    if plan is not None:
        raise InputError("A memory plan can only be given with loaded models; a ModelHandle plans for itself.")
    handle = models or ModelHandle(settings.version)
    return run_job(handle, work, host, settings.window_batch, settings.vae_slice)


def _faces_for(speakers: list[Speaker], source: FrameSource, settings, fps, models, host, cancel) -> dict:
    """Several speakers: their faces from a pass over the frames, before the networks load (selectors that do
    not fit the clip fail here). The models folder is where face_landmarker.task is looked for."""
    if len(speakers) == 1:
        return {}
    if isinstance(models, ModelHandle) or models is None:
        handle = models or ModelHandle(settings.version)
        model_dir, allow_download = handle.paths(host or Host()).root, handle.download
    else:
        model_dir, allow_download = models.model_dir, models.allow_download
    frames = (frame for chunk in source.open(0) for frame in chunk)
    return {"faces": find_faces(frames, speakers, settings, fps=fps, model_dir=model_dir,
                                allow_download=allow_download, cancel=cancel)}


@contextlib.contextmanager
def _restorer(restore_model, settings: LipSyncSettings):
    if restore_model is None or settings.restore_strength == 0:
        yield None
        return
    restorer = FaceRestorer.from_file(restore_model, settings.restore_strength) \
        if isinstance(restore_model, (str, Path)) else FaceRestorer(restore_model, settings.restore_strength)
    with restorer:  # the model goes back where it came from (ComfyUI shares it)
        yield restorer


@contextlib.contextmanager
def _preview_writer(folder):
    if folder is None:
        yield None
        return
    with PreviewWriter(folder, every=25, max_side=PREVIEW_SIDE) as writer:
        yield writer


def _face_reports(work: FrameWork, resolution: int, speakers: list[Speaker]) -> list[FaceReport]:
    return [FaceReport.from_detection(slot.detection, slot.matrix, resolution,
                                      speakers[slot.speaker].face or "" if len(speakers) > 1 else "")
            for slot in work.slots if slot is not None]


def _preview_collector(images: list, step: int, resolution: int, speakers):
    def collect(work: FrameWork) -> None:
        if work.index % step == 0:
            images.append(draw_preview(work.frame, _face_reports(work, resolution, speakers), PREVIEW_SIDE,
                                       title=f"frame {work.index}"))
    return collect


def _preview_writing(writer: PreviewWriter, resolution: int, speakers):
    return lambda work: writer.add(work.index, work.frame, _face_reports(work, resolution, speakers))


def _observers(*observers):
    active = [o for o in observers if o]
    return (lambda work: [o(work) for o in active]) if active else None


def _report(has_face: list[bool]) -> str:
    summary = faceless_summary(has_face)
    if summary:
        log.warning("%s (passed through unchanged)", summary)
    return summary


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


