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

``reference=True`` (settings): the reference's rules, for parity checks: N = the number of the reference's audio
    chunks (n_samples_16k // 640 + 2 at 25 fps, see ``reference_frame_count``) and its loop (backward passes
    repeat the end frames: ``source_indices(..., loop="reference")``).

Streaming and memory
--------------------
``played_frames`` turns a ``latentsync.inputs.FrameSource`` into the played sequence (output index, source
index, frame) that the rules above describe, with a bounded buffer:
* no ping-pong needed (video at least as long as the output): nothing is kept; frames stream through (a
  segment starting at frame k opens the source at k).
* ping-pong with a re-openable source (an array, a file): the first pass keeps the frames only while they fit
  in ``cache_bytes``; otherwise every later pass re-opens the source (backward passes in blocks of
  ``cache_bytes`` worth of frames, each block opened at its first frame), so RAM stays <= ``cache_bytes`` +
  one chunk.
* ping-pong with a one-shot source: its frames are kept; RAM then grows with the SOURCE length (not the
  output length).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator

import numpy as np

from .errors import InputError

LENGTH_MODES = ("audio", "video")

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


def reference_frame_count(n_samples_16k: int, fps: float) -> int:
    """The reference's frame count: it appends audio chunks i = 0, 1, .. until int(i * 50 / fps) exceeds the
    number of feature rows T = n_samples_16k // 320 (that last chunk included) — T // 2 + 2 at 25 fps."""
    rows, per_frame = int(n_samples_16k) // 320, 50.0 / check_fps(fps)
    i = 0
    while int(i * per_frame) <= rows:
        i += 1
    return i + 1


def audio_sample_count(n_out: int, fps: float, sample_rate: int) -> int:
    """Samples of the output audio for n_out frames: round(n_out / fps * sample_rate)."""
    return int(round(n_out / check_fps(fps) * sample_rate))


def fit_audio(samples: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim or zero-pad the last axis of ``samples`` (e.g. (C, T)) to exactly ``n_samples``."""
    samples = np.asarray(samples)
    have = samples.shape[-1]
    if have >= n_samples:
        return samples[..., :n_samples]
    pad = [(0, 0)] * (samples.ndim - 1) + [(0, n_samples - have)]
    return np.pad(samples, pad)


LOOPS = ("smooth", "reference")


def source_indices(n_out: int, n_video: int, loop: str = "smooth") -> np.ndarray:
    """Source frame shown at each output frame (int64, length n_out). ``smooth``: forward-backward without
    repeating the end frames (0..n-1, n-2..1, 0, ..); ``reference``: the reference's loop, whose backward passes
    repeat the end frames (0..n-1, n-1..0, 0..). A 1-frame video repeats."""
    if n_video <= 0:
        raise InputError("The video has no frames.")
    j = np.arange(n_out, dtype=np.int64)
    if n_video == 1:
        return np.zeros(n_out, dtype=np.int64)
    if loop == "smooth":
        k = j % (2 * n_video - 2)
        return np.where(k < n_video, k, 2 * n_video - 2 - k)
    k = j % (2 * n_video)
    return np.where(k < n_video, k, 2 * n_video - 1 - k)


def _passes(n_video: int, loop: str) -> Iterator[range]:
    """After the first forward pass: the source frames of the following passes, forever."""
    backward = range(n_video - 2, 0, -1) if loop == "smooth" else range(n_video - 1, -1, -1)
    while True:
        yield backward
        yield range(0, n_video)


def _iter_frames(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for chunk in chunks:
        yield from chunk


def played_frames(source, n_out: int | None, *, loop: str = "smooth", start: int = 0,
                  cache_bytes: int = 512 << 20) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(output index, source index, frame)`` for output frames ``start``..n_out-1 (all source frames
    from ``start`` when n_out is None) of a ``latentsync.inputs.FrameSource``, following ``source_indices``.

    The first pass streams; later (backward / forward) passes use the first pass's frames while they fit in
    ``cache_bytes``, else re-open the source (backward passes in blocks of ``cache_bytes``), so RAM stays at
    most ``cache_bytes`` + one chunk for a re-openable source; a one-shot source keeps its frames.
    """
    if loop not in LOOPS:
        raise InputError(f"loop must be one of {LOOPS}, got {loop!r}.")
    looping_needed = n_out is not None and (source.n_frames is None or source.n_frames < n_out)
    if start and not looping_needed:  # a segment of a long enough video: seek straight to it
        for j, frame in enumerate(_iter_frames(source.open(start)), start):
            if n_out is not None and j >= n_out:
                return
            yield j, j, frame
        return
    cache: list[np.ndarray] | None = [] if looping_needed else None
    used, n_video = 0, 0
    for frame in _iter_frames(source.open(0)):
        if n_out is not None and n_video >= n_out:
            return
        if cache is not None:
            used += frame.nbytes
            if source.reopenable and used > cache_bytes:
                cache = None  # too big to keep: later passes re-open the source instead
            else:
                cache.append(frame)
        if n_video >= start:
            yield n_video, n_video, frame
        n_video += 1
    if n_video == 0:
        raise InputError("The video has no frames.")
    j = n_video
    if n_out is None or j >= n_out:
        return
    per_block = max(1, cache_bytes // max(1, frame.nbytes))
    for order in ([0] * (n_out - j),) if n_video == 1 else _passes(n_video, loop):
        for src, frame in _frames_in_order(source, order, cache, per_block):
            if j >= n_out:
                return
            if j >= start:
                yield j, src, frame
            j += 1


def _frames_in_order(source, order, cache, per_block: int) -> Iterator[tuple[int, np.ndarray]]:
    """The source frames listed in ``order`` (a forward or backward range, or repeats of frame 0)."""
    if cache is not None:
        for i in order:
            yield i, cache[i]
    elif not isinstance(order, range):  # a one-frame video repeated
        frame = next(_iter_frames(source.open(0)))
        for i in order:
            yield i, frame
    elif order.step == 1:
        yield from zip(order, _iter_frames(source.open(order.start)))
    else:  # a backward pass from a re-opened source, read in blocks of per_block frames from its end
        hi, stop = order.start, order.stop
        while hi > stop:
            lo = max(stop + 1, hi - per_block + 1)
            block = list(itertools.islice(_iter_frames(source.open(lo)), hi - lo + 1))
            for k in range(len(block) - 1, -1, -1):
                yield lo + k, block[k]
            hi = lo - 1
