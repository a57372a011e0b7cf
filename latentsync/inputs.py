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

from collections.abc import Mapping

import numpy as np

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


def parse_audio(audio) -> tuple[np.ndarray, int]:
    """Caller's audio → (samples float32 (C, T) at the ORIGINAL rate, sample_rate). Raises InputError.
    Accepts ``(samples, sample_rate)`` or ComfyUI's AUDIO dict; samples as ``latentsync.audio.as_channels``."""
    from .audio import AudioClip

    if isinstance(audio, Mapping):
        clip = AudioClip.from_comfy(audio)
    elif isinstance(audio, (tuple, list)) and len(audio) == 2:
        clip = AudioClip.from_any(*audio)
    else:
        raise InputError("Audio must be (samples, sample_rate) or a dict {'waveform': [B, C, T], 'sample_rate': int}; "
                         f"got {type(audio).__name__}.")
    return clip.samples, clip.sample_rate
