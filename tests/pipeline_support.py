"""Helpers shared by the pipeline / CLI tests: a small-resolution view of the tiny model set, one pipeline per
process, real-face clips (the astronaut on a 640x360 canvas, drifting) and speech, and a UNet call counter.

The tiny model set (tools/make_tiny_models.py) has the real 1.6 config (512 px faces); to keep CPU time low on
shared cores most tests use the SAME weights with the face resolution set to 64 px (8x8 latents) through the
sidecar ``unet_config.json``. One test runs the tiny set at its own 512 px.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from tools.make_sample import make_frames, make_speech
from tools.make_tiny_models import small_model_dir  # noqa: F401 (the tests' import place)

ROOT = Path(__file__).resolve().parents[1]

W, H = 640, 360
# the photo at 70 % of the canvas height: the face's landmark box is then 88-94 px tall with either mediapipe
# backend, clear of the reference's 80 px minimum (at 60 % the Tasks box dips to 77 px on some drift positions)
PHOTO_HEIGHT = 0.7


class TinyRunner:
    """Loaded tiny models and a call that lip-syncs arrays with them: ``runner(frames, fps, audio, settings, ...)``
    is ``latentsync.api.lipsync_frames(..., models=runner.models)``; ``runner.pipeline`` is the pipeline itself."""

    def __init__(self, models):
        from latentsync.pipeline import LipSyncPipeline

        self.models = models
        self.pipeline = LipSyncPipeline(models)

    def __call__(self, frames, fps, audio, settings=None, **options):
        from latentsync.api import lipsync_frames

        return lipsync_frames(frames, fps, audio, settings, models=self.models, **options)


@lru_cache(maxsize=2)
def pipeline_for(model_dir: str) -> TinyRunner:
    import torch

    from latentsync.checkpoints import find_models
    from latentsync.models import load_models

    return TinyRunner(load_models(find_models("1.6", model_dir), "cpu", torch.float32))


def low_tier_plan():
    """The lowest GPU tier's plan (serial CFG halves), usable with CPU models."""
    from latentsync.runtime import GIB, plan_for

    return plan_for(6 * GIB, 6 * GIB, "cuda")


@lru_cache(maxsize=16)
def _clip(n: int, fps: float, faceless: tuple = ()) -> np.ndarray:
    return make_frames(n, fps, W, H, faceless=faceless, photo_height=PHOTO_HEIGHT)


def clip(n: int, fps: float = 25, faceless=()) -> np.ndarray:
    """uint8 (n, 360, 640, 3) astronaut clip (a fresh copy)."""
    return _clip(n, float(fps), tuple(faceless)).copy()


def speech(seconds: float, sr: int = 16000) -> tuple[np.ndarray, int]:
    return make_speech(seconds, sr), sr


@contextmanager
def torch_threads(n: int = 1):
    """Scoped intra-op thread count (restored afterwards): the tiny models' ops are so small that thread
    hand-offs dominate on busy shared cores (measured 0.14 s vs 1.6-3 s per UNet call)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class UNetCalls:
    """Context manager recording the sample shape of every UNet forward call."""

    def __init__(self, unet):
        self.unet, self.shapes, self._h = unet, [], None

    def __enter__(self):
        self._h = self.unet.register_forward_hook(lambda m, args, out: self.shapes.append(tuple(args[0].shape)))
        return self

    def __exit__(self, *exc):
        self._h.remove()


def changed_box(a: np.ndarray, b: np.ndarray):
    """Bounding box (x0, y0, x1, y1) of the pixels that differ between two frames, or None."""
    diff = np.any(a != b, axis=-1)
    if not diff.any():
        return None
    ys, xs = np.nonzero(diff)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
