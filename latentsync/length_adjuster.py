"""The VideoLengthAdjuster node's arithmetic, as pure torch functions on ComfyUI's IMAGE / AUDIO values.

Compatible with the old wrapper's node (modes normal / pingpong / loop_to_audio, `silent_padding_sec`), with
its faults fixed: the `fps` argument drives every duration, and frames are never copied into a Python list —
trimming returns a view, extending gathers with one `index_select` into the output tensor.

Rules (durations in seconds, n = input frames, padded = audio + `silent_padding_sec` of silence):
- normal: target = round(padded * fps). If n >= target the frames are cut to target; otherwise the frames are
  kept and the audio is cut to the video's length.
- pingpong: if padded audio is longer than the video, frames play forward-then-backward without repeating the
  end frames (0..n-1, n-2..1, 0..) up to target; otherwise the frames are kept and the audio is padded with
  silence to the video's length.
- loop_to_audio: frames repeat forward (0..n-1, 0..n-1, ..) up to target (cut when the video is longer).
The output audio always lasts exactly (output frames / fps): round(frames / fps * sample_rate) samples.
"""

from __future__ import annotations

import math

import torch

from .errors import InputError
from .timeline import source_indices

MODES = ("normal", "pingpong", "loop_to_audio")
NO_AUDIO = ("The audio input is empty: the source has no audio stream. Connect a Load Audio node (or a video "
            "with sound) to the audio input.")


class LengthError(InputError):
    """Unusable frames / audio for the adjuster (message meant for the user)."""


def pingpong_indices(n_out: int, n_frames: int) -> torch.Tensor:
    """Source frame per output frame: 0, 1, .., n-1, n-2, .., 1, 0, 1, .. (period 2n-2; the library's rule)."""
    return torch.from_numpy(source_indices(n_out, max(1, n_frames)))


def loop_indices(n_out: int, n_frames: int) -> torch.Tensor:
    return torch.arange(n_out, dtype=torch.int64) % max(1, n_frames)


def fit_waveform(waveform: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Trim (view) or zero-pad the last axis of a [B, C, T] waveform to exactly n_samples."""
    have = waveform.shape[-1]
    if have >= n_samples:
        return waveform[..., :n_samples]
    return torch.nn.functional.pad(waveform, (0, n_samples - have))


def _check(images: torch.Tensor, audio: dict, fps: float, pad_sec: float, mode: str) -> tuple[torch.Tensor, int]:
    if mode not in MODES:
        raise LengthError(f"mode must be one of {MODES}, got {mode!r}.")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise LengthError("VideoLengthAdjuster needs a non-empty IMAGE batch [frames, height, width, channels].")
    if audio is None:
        raise LengthError(NO_AUDIO)
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise LengthError("The AUDIO input must be a dict with 'waveform' [B, C, T] and 'sample_rate'.")
    waveform = audio["waveform"]
    if not isinstance(waveform, torch.Tensor):
        raise LengthError("The AUDIO input's waveform is not a tensor.")
    if waveform.ndim == 1:
        waveform = waveform[None, None]
    elif waveform.ndim == 2:
        waveform = waveform[None]
    sample_rate = int(audio["sample_rate"])
    if sample_rate <= 0:
        raise LengthError(f"The AUDIO input has an invalid sample rate {sample_rate}.")
    if not math.isfinite(fps) or fps <= 0:
        raise LengthError(f"fps must be positive, got {fps}.")
    if not math.isfinite(pad_sec) or pad_sec < 0:
        raise LengthError(f"silent_padding_sec must be ≥ 0, got {pad_sec}.")
    return waveform, sample_rate


def adjust_length(images: torch.Tensor, audio: dict, mode: str = "normal", fps: float = 25.0,
                  silent_padding_sec: float = 0.5) -> tuple[torch.Tensor, dict]:
    """Return (frames, audio) whose lengths follow `mode` (see the module docstring)."""
    waveform, sample_rate = _check(images, audio, float(fps), float(silent_padding_sec), mode)
    fps = float(fps)
    n = int(images.shape[0])
    padded_sec = waveform.shape[-1] / sample_rate + float(silent_padding_sec)
    target = max(1, int(round(padded_sec * fps)))
    video_sec = n / fps
    if mode == "normal":
        frames = images[:target] if n >= target else images
    elif mode == "pingpong":
        frames = images.index_select(0, pingpong_indices(target, n)) if padded_sec > video_sec and target > n \
            else images
    else:  # loop_to_audio
        frames = images[:target] if n >= target else images.index_select(0, loop_indices(target, n))
    n_out = int(frames.shape[0])
    samples = int(round(n_out / fps * sample_rate))
    out_audio = {"waveform": fit_waveform(waveform, samples), "sample_rate": sample_rate}
    return frames, out_audio
