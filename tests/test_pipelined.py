"""The pipelined stream (issue 10): decode + faces, the denoiser and paste-back in three background threads give
exactly the serial result; a cancel or an error in any stage ends the job promptly, leaves no thread running and
no partial output file."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from latentsync.api import lipsync_file, lipsync_frames
from latentsync.errors import CancelledError, InputError
from latentsync.inputs import FrameSource
from latentsync.settings import LipSyncSettings
from pipeline_support import clip, speech
from tools.make_sample import write_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = LipSyncSettings(steps=2, guidance=1.5, seed=21)


def _stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("latentsync-")]


def test_pipelined_output_equals_the_serial_one(pipe):
    frames = clip(37, 25, faceless=(5, 6, 7, 30))  # faceless frames inside windows; a short last window
    audio = speech(45 / 25)  # longer than the video: a ping-pong turn too
    serial = lipsync_frames(frames, 25, audio, replace(SETTINGS, pipelined=False), models=pipe.models)
    pipelined = lipsync_frames(frames, 25, audio, SETTINGS, models=pipe.models)
    np.testing.assert_array_equal(pipelined.frames, serial.frames)
    np.testing.assert_array_equal(pipelined.has_face, serial.has_face)
    assert not pipelined.has_face[[5, 6, 7, 30]].any() and pipelined.frames.shape[0] == 45
    assert _stage_threads() == []


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("pipelined"), seconds=1.6, fps=25, width=640, height=360)


def _cancel_in(stage: str, after: int):
    """cancel() that says yes on its ``after``-th call from the given stage's thread ("main" = the encoder)."""
    calls = {"n": 0}

    def cancel() -> bool:
        name = threading.current_thread().name
        if name == f"latentsync-{stage}" or (stage == "main" and name == "MainThread"):
            calls["n"] += 1
        return calls["n"] >= after

    return cancel


@pytest.mark.parametrize("stage, after", [("faces", 5), ("denoise", 2), ("main", 2)])
def test_a_cancel_in_any_stage_stops_everything_and_leaves_no_file(pipe, sample, tmp_path, stage, after):
    video, wav = sample
    out = tmp_path / "out.mp4"
    t0 = time.monotonic()
    with pytest.raises(CancelledError):
        lipsync_file(video, wav, out, SETTINGS, models=pipe.models, cancel=_cancel_in(stage, after))
    assert time.monotonic() - t0 < 60
    assert _stage_threads() == []  # every stage thread has ended
    assert list(tmp_path.iterdir()) == []  # neither the output nor a partial file


def test_an_error_in_a_stage_reaches_the_caller_with_its_message(pipe):
    good = clip(20, 25)

    def chunks():
        yield good[:16]
        yield np.zeros((4, 100, 100, 3), np.uint8)  # a frame of another size, in the decoder's thread

    job = pipe.pipeline.prepare(speech(20 / 25), 25, SETTINGS, n_frames=20)
    with pytest.raises(InputError, match="same size"):
        list(pipe.pipeline.stream(FrameSource.from_chunks(chunks(), 20), job))
    assert _stage_threads() == []
