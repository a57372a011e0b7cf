"""Helpers for the cluster tests: a stand-in job with ``lipsync_file``'s signature (writes a small real video,
reports one progress step per ``settings.steps``, honours cancel), sample inputs and manifests.

Ray workers cannot import test modules, so the tests register this module to be pickled by value
(``ray.cloudpickle.register_pickle_by_value``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

STEP_S = 0.15  # seconds per pretend denoising step
FAKE_FRAMES, FAKE_FPS, FAKE_SIZE = 6, 25, 32


def fake_lipsync(video, audio, output, settings=None, *, models=None, progress=None, cancel=None):
    """Checks its inputs like lipsync_file, pretends to denoise ``settings.steps`` steps, then writes a small
    real video atomically (through VideoWriter) whose frames carry the seed as their grey level."""
    from latentsync.errors import CancelledError
    from latentsync.video import VideoWriter, probe

    probe(video)  # InputError for a missing or unreadable video
    for step in range(settings.steps):
        if cancel is not None and cancel():
            raise CancelledError("cancelled")
        time.sleep(STEP_S)
        if progress is not None:
            progress(step + 1, settings.steps, {})
    frames = np.full((FAKE_FRAMES, FAKE_SIZE, FAKE_SIZE, 3), settings.seed % 256, np.uint8)
    with VideoWriter(output, FAKE_FPS, FAKE_SIZE, FAKE_SIZE) as writer:
        writer.write(frames)
    return SimpleNamespace(output=Path(output), frames=FAKE_FRAMES, fps=float(FAKE_FPS),
                           seconds=FAKE_FRAMES / FAKE_FPS)


def write_tiny_video(path, frames: int = 4, size: int = 32) -> Path:
    from latentsync.video import VideoWriter

    with VideoWriter(path, 25, size, size) as writer:
        writer.write(np.zeros((frames, size, size, 3), np.uint8))
    return Path(path)


def write_jsonl(path, entries) -> Path:
    Path(path).write_text("".join(json.dumps(e) + "\n" for e in entries))
    return Path(path)
