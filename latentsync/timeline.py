"""Timeline rules: how many frames come out, which source frame each one shows, and the output audio.

All functions are pure (no I/O, no models) so the rules are easy to test and to document.

Length rules
------------
``length_mode="audio"`` (default, as the reference LatentSync): the audio decides the length.
    n_out = max(1, round(audio_seconds * fps)).
    * video longer than that: it is cut after n_out frames;
    * video shorter: it is extended forward-backward ("ping-pong") without repeating the end frames:
      0, 1, ..., n-1, n-2, ..., 1, 0, 1, ... (period 2n-2); a 1-frame video simply repeats.
    Differences from the reference, on purpose: the reference makes N = samples // 640 + 2 frames at 25 fps
    (two more than the audio covers) and its backward passes repeat the end frames (..., n-1, n-1, ..., 0, 0,
    ...), a visible stall; here the count is the audio's duration at the video's own fps and the turn is smooth.
``length_mode="video"``: the video decides the length: n_out = number of video frames; the audio is padded
    with silence or trimmed to n_out / fps seconds.

The input fps is always kept (24, 25, 29.97, 30, 50, 60, ...): each output frame's audio window is centred on
that frame's own timestamp (see ``latentsync.audio.frame_chunks``), the video is never resampled in time.

The output audio is the caller's ORIGINAL audio (all channels, original sample rate), trimmed or padded with
silence to exactly round(n_out / fps * sample_rate) samples, never the 16 kHz copy used for the features.

Streaming and memory
--------------------
``played_frames`` turns a source of frame chunks into the played sequence (source index, frame) that the
rules above describe, with a bounded buffer:
* no ping-pong needed (video at least as long as the output): nothing is kept; frames stream through.
* ping-pong with a RE-OPENABLE source (a zero-argument callable returning a fresh chunk iterator, e.g. a file
  decoder): the first pass keeps the frames only while they fit in ``cache_bytes``; otherwise every later
  pass re-opens the source; backward passes are read in blocks of ``cache_bytes`` worth of frames (each block
  re-decodes the source from the start up to that block), so RAM stays <= ``cache_bytes`` + one chunk.
* ping-pong with a plain (one-shot) iterator: the source frames are kept; RAM then grows with the SOURCE
  length (not the output length). (The in-memory API passes a re-openable source over its own array; the CLI
  re-opens the file.)
  Pass ``n_frames`` when known so that nothing is kept when no ping-pong is needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import InputError

LENGTH_MODES = ("audio", "video")

ChunkSource = Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]]


@dataclass(frozen=True)
class Timeline:
    """The output's length: ``n_out`` frames at ``fps``; ``audio_samples`` at the original sample rate."""

    n_out: int
    fps: float
    sample_rate: int
    audio_samples: int
    length_mode: str

    @property
    def seconds(self) -> float:
        return self.n_out / self.fps


def check_fps(fps: float) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"fps must be a number, got {fps!r}.") from None
    if not math.isfinite(value) or value <= 0 or value > 1000:
        raise InputError(f"fps must be a positive number (e.g. 24, 25, 29.97, 30, 60), got {fps!r}.")
    return value


def output_frame_count(audio_seconds: float, fps: float, n_video: int | None, length_mode: str = "audio") -> int:
    """Number of output frames under ``length_mode`` (see the module docstring)."""
    if length_mode not in LENGTH_MODES:
        raise InputError(f"length_mode must be one of {LENGTH_MODES}, got {length_mode!r}.")
    if length_mode == "video":
        if n_video is None:
            raise InputError("length_mode='video' needs the number of video frames.")
        if n_video <= 0:
            raise InputError("The video has no frames.")
        return int(n_video)
    return max(1, int(round(audio_seconds * check_fps(fps))))


def audio_sample_count(n_out: int, fps: float, sample_rate: int) -> int:
    """Samples of the output audio for n_out frames: round(n_out / fps * sample_rate)."""
    return int(round(n_out / check_fps(fps) * sample_rate))


def make_timeline(n_audio_samples: int, sample_rate: int, fps: float, n_video: int | None,
                  length_mode: str = "audio") -> Timeline:
    fps = check_fps(fps)
    n_out = output_frame_count(n_audio_samples / sample_rate, fps, n_video, length_mode)
    return Timeline(n_out, fps, int(sample_rate), audio_sample_count(n_out, fps, sample_rate), length_mode)


def fit_audio(samples: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim or zero-pad the last axis of ``samples`` (e.g. (C, T)) to exactly ``n_samples``."""
    samples = np.asarray(samples)
    have = samples.shape[-1]
    if have >= n_samples:
        return samples[..., :n_samples]
    pad = [(0, 0)] * (samples.ndim - 1) + [(0, n_samples - have)]
    return np.pad(samples, pad)


def source_indices(n_out: int, n_video: int) -> np.ndarray:
    """Source frame shown at each output frame (int64, length n_out): ping-pong without repeating the end frames
    (0..n-1, n-2..1, 0, ..); a 1-frame video repeats."""
    if n_video <= 0:
        raise InputError("The video has no frames.")
    j = np.arange(n_out, dtype=np.int64)
    if n_video == 1:
        return np.zeros(n_out, dtype=np.int64)
    k = j % (2 * n_video - 2)
    return np.where(k < n_video, k, 2 * n_video - 2 - k)


def _iter_frames(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for chunk in chunks:
        for frame in chunk:
            yield frame


def _passes(n_video: int) -> Iterator[tuple[int, int, int]]:
    """After the first forward pass: (start, stop, step) ranges of the following passes, forever."""
    while True:
        yield (n_video - 2, 0, -1)  # backward n-2 .. 1
        yield (0, n_video, 1)  # forward 0 .. n-1


def played_frames(source: ChunkSource, n_out: int | None, *, n_frames: int | None = None,
                  cache_bytes: int = 512 << 20) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(source_index, frame)`` for output frames 0..n_out-1 (all source frames when n_out is None).

    ``source`` is an iterable of chunks (n, ...) or a zero-argument callable returning a fresh one (re-openable,
    enables the bounded-RAM ping-pong). ``n_frames`` is a hint of the source length (frames are kept for a
    later ping-pong only when it says they may be needed). Raises InputError for a source without frames.
    """
    reopen = source if callable(source) else None
    first = reopen() if reopen is not None else source
    may_need_again = n_out is not None and (n_frames is None or n_frames < n_out)
    cache: list[np.ndarray] | None = [] if may_need_again else None
    used = 0
    n_video = 0
    for frame in _iter_frames(first):
        if n_out is not None and n_video >= n_out:
            return
        if cache is not None:
            used += frame.nbytes
            if reopen is not None and used > cache_bytes:
                cache = None  # too big to keep: later passes re-open the source instead
            else:
                cache.append(frame)
        yield n_video, frame
        n_video += 1
    if n_video == 0:
        raise InputError("The video has no frames.")
    if n_out is None or n_video >= n_out:
        return
    j = n_video
    if n_video == 1:
        frame = cache[0] if cache is not None else next(_iter_frames(reopen()))
        while j < n_out:
            yield 0, frame
            j += 1
        return
    for start, stop, step in _passes(n_video):
        if cache is not None:
            for i in range(start, stop, step):
                if j >= n_out:
                    return
                yield i, cache[i]
                j += 1
            continue
        if step == 1:  # forward pass: stream the re-opened source
            for i, frame in enumerate(_iter_frames(reopen())):
                if j >= n_out:
                    return
                yield i, frame
                j += 1
            continue
        # backward pass from a re-opened source, block by block from the end
        per_block = max(1, cache_bytes // max(1, frame.nbytes))
        hi = start
        while hi > stop and j < n_out:
            lo = max(stop + 1, hi - per_block + 1)
            block = []
            for i, frame in enumerate(_iter_frames(reopen())):
                if i >= lo:
                    block.append(frame)
                if i >= hi:
                    break
            for k in range(len(block) - 1, -1, -1):
                if j >= n_out:
                    return
                yield lo + k, block[k]
                j += 1
            hi = lo - 1
        if j >= n_out:
            return
