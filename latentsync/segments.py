"""One long video split across workers, with the same result as one process.

    plan = plan_segments(video, audio, settings, segment_frames=480)   # a face pass over the frames, no models
    parts = [run_segment(video, audio, part_path(k), settings, plan, k, models=...) for k in range(len(plan))]
    join_segments(video, audio, parts, output, plan)                    # one H.264 encode with the audio

How each segment reproduces exactly what the single-process run does there:
* faces: the plan's face pass runs the same detector over the source frames in order (the streaming run also
  detects each source frame once, in order), and every worker is given those detections (``GivenFaces``);
* segments start on window boundaries: the windows are grouped from the faces before any denoising, so the
  boundaries are known in advance (a frame where no speaker's window is open);
* alignment smoothing: a worker warms its aligner up on the points of the frames before its segment;
* random numbers: a worker makes the random draws of every earlier window (the initial noise, then two VAE
  posterior draws per window) without denoising them, so its windows draw the same numbers.
Parts are lossless (FFV1, RGB) so the joined frames equal the single-process frames before the final encode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import timeline as tl
from .api import FileResult, run_with_models
from .checkpoints import PACK_CHECKPOINTS
from .errors import CancelledError, InputError
from .inputs import FrameSource
from .job import fitted_audio, mix_tracks, output_length
from .pipeline import LipSyncPipeline
from .settings import LipSyncSettings
from .speakers import GivenFaces, as_speakers, find_faces
from .video import VideoWriter, iter_frames, probe
from .windows import FaceSlot, FrameWork, WindowBuilder

log = logging.getLogger(__name__)


@dataclass
class SegmentPlan:
    faces: GivenFaces  # every source frame's faces, per speaker
    n_out: int
    n_source: int
    fps: float
    segments: list[tuple[int, int]]  # [start, stop) output frames

    def __len__(self) -> int:
        return len(self.segments)


def window_starts(faces: GivenFaces, source_order: np.ndarray) -> list[int]:
    """Output frames where a segment may start: no speaker has a window open across it (the windows the pipeline
    will group, computed from the faces alone)."""
    n_out, n_speakers = len(source_order), faces.n_speakers
    inside = np.zeros(n_out + 1, bool)  # inside[j]: some window spans frames j-1 and j
    for speaker in range(n_speakers):
        builder = WindowBuilder(speaker)
        windows = []
        for j, src in enumerate(source_order):
            work = FrameWork(j, int(src), np.empty(0))
            found = faces.find(int(src), None)[speaker]
            work.slots = [None] * n_speakers
            if found is None:
                windows.append(builder.miss())
            else:
                work.slots[speaker] = FaceSlot(speaker, found, np.zeros((2, 3), np.float32))
                windows.append(builder.add(work))
        windows.append(builder.finish())
        for window in filter(None, windows):
            inside[window.frames[0].index + 1:window.frames[-1].index + 1] = True
    return [j for j in range(n_out) if not inside[j]]


def plan_segments(video: str | Path, audio, settings: LipSyncSettings, segment_frames: int, *,
                  model_dir=None, allow_download: bool = True) -> SegmentPlan:
    """Find every source frame's faces (one pass, no models) and cut the output into segments of about
    ``segment_frames`` frames, each starting on a window boundary. ``model_dir``: where mediapipe's Tasks model
    (face_landmarker.task) is looked for (default: the pack's checkpoints/)."""
    if segment_frames < 16:
        raise InputError(f"segment_frames must be at least one window (16 frames), got {segment_frames}.")
    info = probe(video)
    speakers = as_speakers(video if audio is None else audio)
    n_out = output_length([s.audio for s in speakers], info.fps, settings, info.n_frames)
    frames = (frame for chunk in FrameSource.from_file(video, info.n_frames).open(0) for frame in chunk)
    faces = find_faces(frames, speakers, settings, fps=info.fps, model_dir=model_dir or PACK_CHECKPOINTS,
                       allow_download=allow_download)
    order = tl.source_indices(n_out, info.n_frames, "reference" if settings.reference else "smooth")
    starts, segments, begin = window_starts(faces, order), [], 0
    for j in starts[1:]:
        if j - begin >= segment_frames:
            segments.append((begin, j))
            begin = j
    segments.append((begin, n_out))
    log.info("%d output frames in %d segments: %s", n_out, len(segments), segments)
    return SegmentPlan(faces, n_out, info.n_frames, info.fps, segments)


def run_segment(video: str | Path, audio, part: str | Path, settings: LipSyncSettings, plan: SegmentPlan,
                index: int, *, models=None, host=None, progress=None, cancel=None) -> FileResult:
    """Lip-sync segment ``index`` of ``plan`` into ``part`` (FFV1 .mkv, no audio)."""
    start, stop = plan.segments[index]
    speakers = as_speakers(video if audio is None else audio)
    source = FrameSource.from_file(video, plan.n_source)

    def work(loaded, memory_plan) -> FileResult:
        pipe = LipSyncPipeline(loaded)
        job = pipe.prepare(speakers, plan.fps, settings, n_frames=plan.n_source, plan=memory_plan, faces=plan.faces,
                           start=start)
        info = probe(video)
        with VideoWriter(part, plan.fps, info.width, info.height, lossless=True) as writer:
            stream = pipe.stream(source, job, progress, cancel)
            try:
                for chunk in stream:
                    if cancel is not None and cancel():
                        raise CancelledError("Lip-sync was cancelled.")
                    writer.write(chunk[:stop - start - writer.n_written])
                    if writer.n_written >= stop - start:
                        break
            finally:
                stream.close()
        return FileResult(Path(part), writer.n_written, plan.fps, info.width, info.height, np.zeros(0, bool))

    return run_with_models(models, work, host, settings)


def part_is_complete(part: str | Path, frames: int) -> bool:
    """A segment's part exists with all its frames (parts are written to a temporary name and renamed at the end,
    so an existing part is whole; the count guards against a part of another plan)."""
    part = Path(part)
    if not part.is_file():
        return False
    try:
        return probe(part).n_frames == frames
    except InputError:
        return False


def join_segments(video: str | Path, audio, parts: list[str | Path], output: str | Path,
                  plan: SegmentPlan) -> FileResult:
    """Decode the parts in order and write ``output`` once (H.264 + the original audio fitted, as lipsync_file)."""
    info = probe(video)
    speakers = as_speakers(video if audio is None else audio)
    output_audio = fitted_audio(mix_tracks([s.audio for s in speakers]), plan.n_out, plan.fps)
    with VideoWriter(output, info.rate or info.fps, info.width, info.height, audio=output_audio) as writer:
        for part in parts:
            for chunk in iter_frames(part):
                writer.write(chunk)
    if writer.n_written != plan.n_out:
        raise InputError(f"The parts hold {writer.n_written} frames, the plan {plan.n_out}.")
    return FileResult(Path(output), writer.n_written, plan.fps, info.width, info.height, np.zeros(0, bool))

