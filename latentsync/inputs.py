"""Input checks for the pipeline: frames and audio in every form a caller may hand over, turned into the
library's canonical forms or rejected with one clear :class:`InputError`.

Frames (decisions, documented in the README):
* a chunk is (n, H, W, C) or (n, H, W) (a 3-D array is a batch of grayscale frames); numpy or torch (CPU/GPU);
* uint8 0..255 is used as is; float (16/32/64) must be within 0..1 (ComfyUI IMAGE) and is rounded to uint8;
  any other dtype, NaN/Inf, or values outside 0..1 are an error;
* C = 1 (grayscale) is replicated to RGB; C = 4 (RGBA) drops the alpha channel; C = 3 is RGB; others: error;
* frames must be at least 64 x 64 pixels and all the same size.
Audio: ``(samples, sample_rate)`` or ComfyUI's ``{"waveform": [1, C, T], "sample_rate": int}``; samples
[T], [C, T] (or [T, C]) or [1, C, T], any float or int dtype (ints are scaled to -1..1); see ``latentsync.audio``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import video
from .audio import AudioClip
from .errors import InputError

MIN_SIDE = 64
_FLOAT_TOLERANCE = 1e-4  # float images slightly outside 0..1 from resampling are clipped, not rejected


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, any device/dtype
        x = x.detach()
        if x.dtype.is_floating_point and x.dtype not in (_torch().float32, _torch().float64):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _torch():
    import torch

    return torch


def frames_to_uint8(chunk, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """One chunk of frames → uint8 (n, H, W, 3) RGB (see module docstring for the accepted forms)."""
    try:
        arr = _to_numpy(chunk)
    except Exception as e:  # noqa: BLE001 - anything unconvertible is the caller's input problem
        raise InputError(f"Frames must be an array of images (n, H, W, 3); got {type(chunk).__name__}: {e}") from None
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise InputError(f"Frames must have shape (n, H, W, 3) (or (n, H, W) for grayscale), got {arr.shape}.")
    n, h, w, c = arr.shape
    if c not in (1, 3, 4):
        raise InputError(f"Frames must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {c} (shape {arr.shape}).")
    if min(h, w) < MIN_SIDE:
        raise InputError(f"Frames are {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed to find a face.")
    if expect_hw is not None and (h, w) != tuple(expect_hw):
        raise InputError(f"All frames must have the same size: got {w}x{h} after {expect_hw[1]}x{expect_hw[0]}.")
    if arr.dtype == np.uint8:
        out = arr
    elif np.issubdtype(arr.dtype, np.floating):
        if n and not np.isfinite(arr).all():
            raise InputError("Frames contain NaN or infinite values.")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        if lo < -_FLOAT_TOLERANCE or hi > 1 + _FLOAT_TOLERANCE:
            raise InputError(f"Float images must be in 0..1, got values from {lo:.4g} to {hi:.4g} "
                             "(uint8 frames are 0..255; divide by 255 or pass uint8).")
        out = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise InputError(f"Frames must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}.")
    if c == 1:
        out = np.repeat(out, 3, axis=3)
    elif c == 4:
        out = out[..., :3]
    return np.ascontiguousarray(out)


def to_uint8_array(frames, chunk: int = 64) -> np.ndarray:
    """A whole clip (N, H, W, C) in any accepted form → one uint8 (N, H, W, 3) array, converted ``chunk`` frames
    at a time (no full-size float temporaries). A uint8 numpy RGB array is returned as it is (no copy)."""
    if not hasattr(frames, "shape") or len(frames.shape) not in (3, 4):
        raise InputError(f"Frames must be an array (N, H, W, 3); got {type(frames).__name__}.")
    n = int(frames.shape[0])
    if n == 0:
        raise InputError("The video has no frames.")
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3:
        return frames_to_uint8(frames)
    first = frames_to_uint8(frames[:chunk])
    out = np.empty((n, *first.shape[1:]), np.uint8)
    out[:len(first)] = first
    for start in range(chunk, n, chunk):
        out[start:start + chunk] = frames_to_uint8(frames[start:start + chunk], first.shape[1:3])
    return out


@dataclass(frozen=True)
class FrameSource:
    """The pipeline's frames: uint8 RGB chunks (n, H, W, 3), checked once where they enter.

    ``open(start)`` returns an iterator of chunks beginning at frame ``start``; ``reopenable`` sources (arrays,
    files) can be opened again (bounded-RAM ping-pong); a one-shot iterator can be opened once. ``n_frames`` is
    the frame count when known."""

    open_at: Callable[[int], Iterator[np.ndarray]]
    n_frames: int | None = None
    reopenable: bool = True

    def open(self, start: int = 0) -> Iterator[np.ndarray]:
        return self.open_at(start)

    @classmethod
    def from_array(cls, frames: np.ndarray, chunk: int = 16) -> FrameSource:
        """A uint8 (N, H, W, 3) array (see ``to_uint8_array`` for other forms); chunks are views."""
        frames = to_uint8_array(frames)

        def open_at(start: int) -> Iterator[np.ndarray]:
            return (frames[i:i + chunk] for i in range(start, len(frames), chunk))

        return cls(open_at, len(frames))

    @classmethod
    def from_file(cls, path: str | Path, n_frames: int | None = None, chunk: int = 16) -> FrameSource:
        """A video file, decoded chunk by chunk (the decoder gives upright uint8 RGB frames)."""
        return cls(lambda start: video.iter_frames(path, chunk=chunk, start=start), n_frames)

    @classmethod
    def from_chunks(cls, chunks: Iterable, n_frames: int | None = None) -> FrameSource:
        """Chunks in any accepted form, checked as they come. A one-shot iterable can be opened once."""
        used = []

        def open_at(start: int) -> Iterator[np.ndarray]:
            if used:
                raise RuntimeError("a one-shot frame source was opened twice")
            used.append(True)
            return _checked(chunks, start)

        return cls(open_at, n_frames, reopenable=False)


def _checked(chunks: Iterable, start: int) -> Iterator[np.ndarray]:
    size = None
    seen = 0
    for chunk in chunks:
        out = frames_to_uint8(chunk, size)
        size = out.shape[1:3]
        skip = min(len(out), max(0, start - seen))
        seen += len(out)
        if len(out) > skip:
            yield out[skip:]


def parse_audio(audio) -> AudioClip:
    """Caller's audio → AudioClip (samples float32 (C, T) at the ORIGINAL rate). Raises InputError.
    Accepts ``(samples, sample_rate)``, ComfyUI's AUDIO dict, or a path to an audio/video file."""
    if isinstance(audio, AudioClip):
        return audio
    if isinstance(audio, Mapping):
        return AudioClip.from_comfy(audio)
    if isinstance(audio, (str, Path)):
        if not Path(audio).exists():
            raise InputError(f"Audio file not found: {audio}")
        decoded = video.read_audio(audio)
        if decoded is None:
            raise InputError(f"{audio} has no audio track.")
        return AudioClip.from_any(*decoded)
    if isinstance(audio, (tuple, list)) and len(audio) == 2:
        return AudioClip.from_any(*audio)
    raise InputError("Audio must be (samples, sample_rate), a dict {'waveform': [B, C, T], 'sample_rate': int} or "
                     f"a file path; got {type(audio).__name__}.")
