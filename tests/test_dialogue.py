"""Dialogue (issue 13): two faces in one shot, each synced to its own track; a silent track keeps its face's
original pixels; face ids survive a short occlusion; bad speaker input fails before any model work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentsync.api import Speaker, lipsync_frames
from latentsync.errors import InputError
from latentsync.settings import LipSyncSettings
from pipeline_support import UNetCalls, speech
from tools.make_sample import dialogue_layout, make_dialogue_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, FPS, HIDDEN = 30, 25, (10, 20)
LANDMARKER_DIR = Path(__file__).parent / "fixtures" / "models"  # face_landmarker.task for the Tasks API
FAST = LipSyncSettings(steps=1, guidance=1.0, seed=5)


@pytest.fixture(scope="module")
def clip():
    return make_dialogue_frames(N, FPS, 640, 360, hidden=HIDDEN, hidden_side="right")


def _silence(seconds: float, sr: int = 16000):
    return np.zeros(int(round(seconds * sr)), np.float32), sr


def _changed(out: np.ndarray, src: np.ndarray, side: int) -> np.ndarray:
    """Per frame: how many pixels changed in the half of the canvas where person ``side`` (0 left, 1 right) is."""
    half = slice(0, 320) if side == 0 else slice(320, 640)
    return np.any(out[:, :, half] != src[:, :, half], axis=-1).sum(axis=(1, 2))


def test_each_face_follows_its_own_track(pipe, clip):
    talk, quiet = speech(N / FPS), _silence(N / FPS)
    speakers = [Speaker(talk, "left"), Speaker(quiet, "right")]
    with UNetCalls(pipe.models.unet) as calls:
        res = lipsync_frames(clip, FPS, speakers, FAST, models=pipe.models)
    assert res.frames.shape == clip.shape
    left, right = _changed(res.frames, clip, 0), _changed(res.frames, clip, 1)
    assert (left > 200).all(), left  # the talking face is regenerated in every frame
    assert (right == 0).all(), right  # the silent face keeps its original pixels exactly
    assert [s[0] for s in calls.shapes] == [1, 1]  # the silent speaker's windows were never denoised
    swapped = lipsync_frames(clip, FPS, [Speaker(quiet, "left"), Speaker(talk, "right")], FAST, models=pipe.models)
    left, right = _changed(swapped.frames, clip, 0), _changed(swapped.frames, clip, 1)
    visible = np.r_[0:HIDDEN[0], HIDDEN[1]:N]
    assert (left == 0).all() and (right[visible] > 200).all()
    assert (right[HIDDEN[0]:HIDDEN[1]] == 0).all()  # hidden: nothing to sync, the frame passes through


def test_face_ids_are_the_same_before_and_after_the_gap(clip):
    from latentsync.speakers import find_faces

    faces = find_faces(iter(clip), [Speaker(_silence(1)), Speaker(_silence(1), "right")],
                       LipSyncSettings(face="left"), fps=FPS, model_dir=LANDMARKER_DIR)
    right = [found[1] for found in faces.faces]
    assert all(right[i] is None for i in range(*HIDDEN))
    assert all(right[i] is not None for i in range(N) if not HIDDEN[0] <= i < HIDDEN[1])
    size, corners = dialogue_layout(HIDDEN[1], FPS)
    x = (right[HIDDEN[1]].box[0] + right[HIDDEN[1]].box[2]) / 2
    assert corners[1][0] < x < corners[1][0] + size  # after the gap the right speaker is still the right face


def test_the_mixed_audio_is_both_tracks(pipe, clip):
    a, b = speech(N / FPS, 16000), speech(N / FPS, 22050)
    video_length = LipSyncSettings(steps=1, guidance=1.0, length_mode="video")
    res = lipsync_frames(clip[:4], FPS, [Speaker(a, "left"), Speaker(b, "right")], video_length, models=pipe.models)
    samples, rate = res.audio
    assert rate == 22050 and samples.shape == (1, round(4 / FPS * 22050))
    assert np.abs(samples).max() > np.abs(b[0][: samples.shape[1]]).max() * 0.5


@pytest.mark.parametrize("faces, message", [
    (("left", "tallest"), "unknown speaker face 'tallest'"),
    (("left", "index:0"), "both resolve to face id"),
    (("left", "id:7"), "face id 7 never appears"),
])
def test_bad_speakers_fail_before_model_work(pipe, clip, faces, message):
    speakers = [Speaker(_silence(0.4), f) for f in faces]
    with UNetCalls(pipe.models.unet) as calls, pytest.raises(InputError, match=message):
        lipsync_frames(clip[:10], FPS, speakers, FAST, models=pipe.models)
    assert calls.shapes == []


def test_a_missing_track_is_a_clear_error(pipe, clip, tmp_path):
    with pytest.raises(InputError, match="Audio file not found"):
        lipsync_frames(clip[:4], FPS, [Speaker(_silence(0.2), "left"), Speaker(tmp_path / "b.wav", "right")],
                       FAST, models=pipe.models)


def test_overlapping_faces_are_named_once_in_the_log(caplog):
    from types import SimpleNamespace

    from latentsync.face import Detection
    from latentsync.pipeline import _log_overlaps
    from latentsync.windows import FaceSlot, FrameWork

    def slot(speaker, box):
        return FaceSlot(speaker, Detection(np.zeros((3, 2)), box, 1.0), np.zeros((2, 3), np.float32))

    job = SimpleNamespace(overlaps_logged=set())
    apart = FrameWork(0, 0, None, [slot(0, (0, 0, 10, 10)), slot(1, (20, 0, 30, 10))])
    touching = FrameWork(7, 7, None, [slot(0, (0, 0, 10, 10)), slot(1, (5, 5, 15, 15))])
    with caplog.at_level("WARNING", logger="latentsync.pipeline"):
        for work in (apart, touching, touching):
            _log_overlaps(work, job)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["the faces of speakers 1 and 2 overlap (first in frame 7): they are pasted in speaker order, "
                     "speaker 2 on top"]
