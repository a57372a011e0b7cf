"""Where a voice is silent, keep the original face: one weight per output frame, 1 = the lip-synced face,
0 = the original frame, in between = a cross-fade.

A frame is silent when the RMS level of its audio window (``window_s`` centred on the frame's timestamp) is
below ``threshold_db`` dBFS. Pauses shorter than ``min_pause_s`` stay synced (no flicker between words); at
the edges of a longer pause the weight ramps linearly over ``fade_s`` inside the pause, so the mouth settles
into the original face instead of jumping to it.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16000


def frame_levels_db(mono16k: np.ndarray, fps: float, n_frames: int, window_s: float = 0.2) -> np.ndarray:
    """RMS level (dBFS, float64 (n_frames,)) of the ``window_s`` window centred on each frame's timestamp."""
    samples = np.asarray(mono16k, np.float64)
    squares = np.concatenate([[0.0], np.cumsum(samples * samples)])
    centres = np.arange(n_frames) / fps * SAMPLE_RATE
    half = window_s * SAMPLE_RATE / 2
    start = np.clip(np.round(centres - half).astype(np.int64), 0, len(samples))
    stop = np.clip(np.round(centres + half).astype(np.int64), 0, len(samples))
    width = max(1.0, 2 * half)  # beyond the end of the audio counts as silence
    mean_square = (squares[stop] - squares[start]) / width
    return 10.0 * np.log10(np.maximum(mean_square, 1e-12))


def silence_weights(mono16k: np.ndarray, fps: float, n_frames: int, threshold_db: float = -45.0,
                    window_s: float = 0.2, min_pause_s: float = 0.3, fade_s: float = 0.12) -> np.ndarray:
    """float32 (n_frames,) weights (see the module docstring)."""
    silent = frame_levels_db(mono16k, fps, n_frames, window_s) < threshold_db
    min_pause = max(1, int(math.ceil(min_pause_s * fps)))
    fade = max(1, int(round(fade_s * fps)))
    weights = np.ones(n_frames, np.float32)
    j = 0
    while j < n_frames:
        if not silent[j]:
            j += 1
            continue
        end = j
        while end < n_frames and silent[end]:
            end += 1
        if end - j >= min_pause:  # a real pause: fade in from speech on either side that has speech
            k = np.arange(j, end)
            from_start = k - j + 1 if j > 0 else np.full(len(k), fade + 1)
            to_end = end - k if end < n_frames else np.full(len(k), fade + 1)
            distance = np.minimum(from_start, to_end)
            weights[j:end] = np.clip(1.0 - distance / (fade + 1), 0.0, 1.0)
        j = end
    return weights
