"""Audio for LatentSync: any waveform -> 16 kHz mono -> whole-clip log-mel -> Whisper hidden states -> one
50-token chunk per video frame.

Facts reproduced from the reference (bytedance/LatentSync 1.6, see tests/fixtures/parity/README.md):
log-mel over the WHOLE clip (clamp at global max - 8), 3000-frame (30 s) windows zero-padded in the normalised
log-mel domain, 5 hidden states per encoder position (20 ms), chunk = 10 positions x 5 layers.

``audio_features(mode="reference")`` cuts the clip at 0, 30, 60 s ... exactly as the reference, which makes the
features jump at every 30 s seam (the rows on either side come from different windows: no context across the
seam, positional embedding restarting at 0). ``mode="stitched"`` (default) runs overlapping windows every 20 s
and keeps each window's centre, cross-fading over 1 s around each cut, so the features stay continuous. Clips of
at most 30 s are one window in both modes, hence identical.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .errors import InputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
ROWS_PER_SECOND = 50  # encoder positions per second (20 ms each)
CHUNK_ROWS = 10  # rows per video frame: centre - 4 ... centre + 5
CHUNK_BEFORE = 4
STITCH_HOP_FRAMES = 2000  # stitched mode: a window every 20 s (mel frames)
STITCH_BLEND_ROWS = 50  # stitched mode: 1 s linear cross-fade centred on each cut
_MIN_SAMPLES = 2 * HOP  # one encoder row (20 ms)


# ----------------------------------------------------------------------------------------------- waveform


def _check_rate(sample_rate) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)):
        raise InputError(f"Audio sample rate must be a number, got {type(sample_rate).__name__}.")
    if not math.isfinite(float(sample_rate)) or float(sample_rate) != int(sample_rate):
        raise InputError(f"Audio sample rate must be a whole number of Hz, got {sample_rate}.")
    rate = int(sample_rate)
    if not 1000 <= rate <= 1_536_000:
        raise InputError(f"Audio sample rate {rate} Hz is not plausible (expected 1000 .. 1536000 Hz).")
    return rate


def as_channels(samples) -> np.ndarray:
    """Any waveform ([T], [C,T] or ComfyUI's [1,C,T]; numpy or torch; int or float) -> float32 (C, T) in about
    -1..1. Raises InputError for unusable input (empty, NaN/Inf, wrong rank, non-numeric)."""
    if isinstance(samples, torch.Tensor):
        t = samples.detach().cpu()
        samples = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
    try:
        x = np.asarray(samples)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"Audio samples are not an array of numbers ({exc}).") from exc
    if x.dtype.kind not in "iuf":
        raise InputError(f"Audio samples must be integers or floats, got dtype {x.dtype}.")
    if x.ndim == 3:
        if x.shape[0] != 1:
            raise InputError(f"Expected one audio clip (batch of 1, [1, C, T]), got a batch of {x.shape[0]}.")
        x = x[0]
    if x.ndim == 1:
        x = x[None]
    elif x.ndim == 2 and x.shape[0] > 64 >= x.shape[1]:
        x = x.T  # (T, C) as written by soundfile & co.
    elif x.ndim != 2:
        raise InputError(f"Audio samples must have shape [T], [C, T] or [1, C, T]; got shape {list(x.shape)}.")
    if x.size == 0:
        raise InputError(f"The audio is empty (shape {list(x.shape)}): there is nothing to lip-sync to.")
    if x.dtype.kind in "ui":  # exact for 8/16-bit PCM (powers of two), float32 keeps memory low
        half = float(2 ** (8 * x.dtype.itemsize - 1))
        y = x.astype(np.float32)
        if x.dtype.kind == "u":
            y -= half
        y *= np.float32(1.0 / half)
    else:
        if not np.isfinite(x).all():
            raise InputError("The audio contains NaN or infinite values; decode it again or clean it first.")
        y = x.astype(np.float32)
        if not np.isfinite(y).all():
            raise InputError("The audio values are too large for float32 (overflow to infinity).")
        peak = float(np.abs(y).max())
        if peak > 2.0:
            log.warning("audio peak is %.3g (float audio is expected in -1..1); using it as is", peak)
    return np.ascontiguousarray(y)


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """float32 (C, T) at ``rate`` -> float32 (C, T') at ``target`` with soxr (high quality)."""
    if rate == target:
        return x
    import soxr

    return np.ascontiguousarray(soxr.resample(x.T, rate, target, quality="HQ").T.astype(np.float32))


def to_mono_16k(samples, sample_rate: int) -> np.ndarray:
    """Any waveform (see :func:`as_channels`) at ``sample_rate`` -> float32 [T] mono at 16 kHz. Channels are
    averaged (like ffmpeg's down-mix); silent audio is allowed."""
    rate = _check_rate(sample_rate)
    x = as_channels(samples)
    mono = x.mean(axis=0, dtype=np.float64).astype(np.float32)[None] if x.shape[0] > 1 else x
    return np.ascontiguousarray(resample(mono, rate)[0])


@dataclass(frozen=True)
class AudioClip:
    """The caller's ORIGINAL audio (float32 (C, T), original rate): the output video gets this audio, trimmed or
    padded with silence to the output length, never the 16 kHz copy used for the features."""

    samples: np.ndarray
    sample_rate: int

    @classmethod
    def from_any(cls, samples, sample_rate) -> "AudioClip":
        return cls(as_channels(samples), _check_rate(sample_rate))

    @classmethod
    def from_comfy(cls, audio) -> "AudioClip":
        """ComfyUI AUDIO: ``{"waveform": Tensor [B, C, T], "sample_rate": int}`` (B must be 1)."""
        if not isinstance(audio, Mapping) or "waveform" not in audio or "sample_rate" not in audio:
            got = f"keys {sorted(map(str, audio))}" if isinstance(audio, Mapping) else type(audio).__name__
            raise InputError("AUDIO must be a dict with 'waveform' (a [B, C, T] tensor) and 'sample_rate' keys; "
                             f"got {got}.")
        return cls.from_any(audio["waveform"], audio["sample_rate"])

    @property
    def n_channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate

    def mono_16k(self) -> np.ndarray:
        return to_mono_16k(self.samples, self.sample_rate)

    def fit(self, duration_s: float) -> "AudioClip":
        """Trimmed, or padded at the end with silence, to ``round(duration_s * sample_rate)`` samples."""
        from .timeline import fit_audio

        n = max(0, int(round(duration_s * self.sample_rate)))
        return AudioClip(np.array(fit_audio(self.samples, n), np.float32), self.sample_rate)


# ----------------------------------------------------------------------------------------------- log-mel


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS) -> torch.Tensor:
    """Slaney-style mel filters for 16 kHz, n_fft 400 (as librosa.filters.mel's default): (n_mels, 201)."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                         max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney",
                         mel_scale="slaney")
    return torch.from_numpy(np.ascontiguousarray(fb.T)).float()


def log_mel(audio16k, n_mels: int = N_MELS, block_frames: int = 6000) -> torch.Tensor:
    """Whole-clip Whisper log-mel: float32 (n_mels, M) with M = len // 160, on the CPU. Computed in blocks of
    ``block_frames`` STFT frames to bound memory; the clamp uses the maximum over the whole clip."""
    if isinstance(audio16k, torch.Tensor):
        x = audio16k.detach().to("cpu", torch.float32).flatten()
    else:
        x = torch.as_tensor(np.asarray(audio16k, dtype=np.float32)).flatten()
    if x.numel() < _MIN_SAMPLES:
        raise InputError(f"The audio is too short ({x.numel()} samples at 16 kHz); at least {_MIN_SAMPLES} "
                         "samples (20 ms) are needed.")
    n_frames = x.numel() // HOP  # centred STFT has n // hop + 1 frames; the last one is dropped
    padded = torch.nn.functional.pad(x[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0, 0]
    window = torch.hann_window(N_FFT)
    filters = mel_filters(n_mels)
    parts = []
    for f0 in range(0, n_frames, block_frames):
        f1 = min(n_frames, f0 + block_frames)
        seg = padded[f0 * HOP:(f1 - 1) * HOP + N_FFT]
        spec = torch.stft(seg, N_FFT, HOP, window=window, center=False, return_complex=True)
        parts.append(torch.clamp(filters @ spec.abs() ** 2, min=1e-10).log10())
    logspec = torch.cat(parts, dim=1)
    logspec = torch.maximum(logspec, logspec.max() - 8.0)
    return (logspec + 4.0) / 4.0


# ----------------------------------------------------------------------------------------------- features


def _window(mel: torch.Tensor, start: int, frames: int) -> torch.Tensor:
    """mel[:, start:start+frames], zero-padded on the right (normalised log-mel domain, as the reference)."""
    w = mel[:, start:start + frames]
    if w.shape[1] < frames:
        w = torch.nn.functional.pad(w, (0, frames - w.shape[1]), value=0.0)
    return w


def _plan(n_mel: int, win: int, mode: str) -> list[tuple[int, np.ndarray]]:
    """[(start mel frame, float32 weight per window row)] — the weights of all windows sum to 1 per row."""
    rows_per_win = win // 2
    n_rows = n_mel // 2
    if mode == "reference" or n_mel <= win:
        plan = []
        for start in range(0, n_mel, win):
            w = np.zeros(rows_per_win, np.float32)
            w[:min(win, n_mel - start) // 2] = 1.0
            plan.append((start, w))
        return plan
    hop = min(STITCH_HOP_FRAMES, win) // 2 * 2
    starts = list(range(0, n_mel - win + hop, hop))  # the last window reaches the end of the clip
    margin = (rows_per_win - hop // 2) // 2  # rows of context each window keeps beyond its cuts
    half = min(STITCH_BLEND_ROWS, 2 * margin) // 2
    cut_in, cut_out = margin, margin + hop // 2  # window-local rows where it takes over / hands over
    r = np.arange(rows_per_win, dtype=np.float64)
    plan = []
    for i, start in enumerate(starts):
        row0 = start // 2
        w = np.ones(rows_per_win)
        if i > 0:  # linear fade-in centred on the cut with the previous window
            w = np.minimum(w, np.clip((r - (cut_in - half) + 0.5) / max(2 * half, 1), 0.0, 1.0))
        if i < len(starts) - 1:  # complementary fade-out centred on the cut with the next window
            w = np.minimum(w, np.clip(((cut_out + half) - r - 0.5) / max(2 * half, 1), 0.0, 1.0))
        w[max(0, n_rows - row0):] = 0.0
        plan.append((start, w.astype(np.float32)))
    return plan


def audio_features(encoder, audio16k, mode: str = "stitched", batch: int = 4) -> torch.Tensor:
    """16 kHz mono float32 [n] -> Whisper features float32 (T, n_layers + 1, C) on the CPU, T = n // 320.

    mode "reference": the reference's 30 s windows (parity-exact, jumps at 30 s, 60 s ...);
    mode "stitched" (default): overlapping windows, continuous across the seams. ``batch`` windows are run
    through the encoder at once."""
    if mode not in ("stitched", "reference"):
        raise ValueError(f"mode must be 'stitched' or 'reference', got {mode!r}")
    mel = log_mel(audio16k, n_mels=encoder.n_mels)
    win = 2 * encoder.n_ctx
    n_rows = mel.shape[1] // 2
    plan = _plan(mel.shape[1], win, mode)
    out = torch.zeros(n_rows, encoder.n_layers + 1, encoder.dim, dtype=torch.float32)
    for b0 in range(0, len(plan), max(1, int(batch))):
        group = plan[b0:b0 + max(1, int(batch))]
        mels = torch.stack([_window(mel, start, win) for start, _ in group])
        states = encoder.hidden_states(mels).float().cpu()
        for (start, weight), h in zip(group, states):
            row0 = start // 2
            keep = np.nonzero(weight)[0]
            if keep.size == 0:  # a last window of a single mel frame contributes no row (as the reference)
                continue
            lo, hi = int(keep[0]), int(keep[-1]) + 1
            wt = torch.from_numpy(weight[lo:hi])[:, None, None]
            part = h[lo:hi] if bool((wt == 1).all()) else h[lo:hi] * wt
            out[row0 + lo:row0 + hi] += part
    log.debug("audio features: %d rows from %d windows (%s)", n_rows, len(plan), mode)
    return out


def chunk_rows(frames, fps: float, n_rows: int, reference: bool = False) -> np.ndarray:
    """Feature rows of each frame's chunk: int64 (len(frames), 10) for ``frames`` (a count n → frames 0..n-1, or
    the frame numbers). Frame i is centred on its own timestamp i/fps: rows round(i * 50 / fps) - 4 + k,
    k = 0..9, clamped to [0, n_rows - 1]; ``reference``: the reference's int(i * 50 / fps) centre (the same at
    25 fps: clamp(2i - 4 + k))."""
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise InputError(f"Frame rate must be a positive number, got {fps}.")
    if n_rows <= 0:
        raise InputError("There are no audio features (the audio is shorter than 20 ms).")
    i = np.arange(int(frames), dtype=np.float64) if np.ndim(frames) == 0 else np.asarray(frames, np.float64)
    position = i * ROWS_PER_SECOND / fps
    centre = np.floor(position if reference else position + 0.5).astype(np.int64)
    rows = centre[:, None] - CHUNK_BEFORE + np.arange(CHUNK_ROWS, dtype=np.int64)[None]
    return np.clip(rows, 0, n_rows - 1)


def frame_chunks(features: torch.Tensor, frames, fps: float, reference: bool = False) -> torch.Tensor:
    """features (T, L, C) -> per-frame audio tokens (len(frames), 10 * L, C) (layer index fastest) for ``frames``
    (a count or frame numbers, as ``chunk_rows``); frames past the end of the audio repeat the last rows."""
    rows = torch.from_numpy(chunk_rows(frames, fps, features.shape[0], reference)).to(features.device)
    n, layers, c = rows.shape[0], features.shape[1], features.shape[2]
    return features[rows.reshape(-1)].reshape(n, CHUNK_ROWS * layers, c)


__all__ = ["AudioClip", "as_channels", "resample", "to_mono_16k", "mel_filters", "log_mel", "audio_features",
           "chunk_rows", "frame_chunks", "SAMPLE_RATE"]
