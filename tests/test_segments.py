"""One video split into segments on window boundaries (issue 14): every segment reproduces exactly what the
single-process run makes there (faces from one pass, warmed-up alignment smoothing, replayed random draws), so
the joined frames equal the single-process frames."""

from __future__ import annotations

import numpy as np
import pytest

from latentsync.api import lipsync_file
from latentsync.errors import InputError
from latentsync.segments import join_segments, plan_segments, run_segment, window_starts
from latentsync.settings import LipSyncSettings
from latentsync.speakers import GivenFaces
from latentsync.video import iter_frames
from tools.make_sample import write_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = LipSyncSettings(steps=2, guidance=1.5, seed=9)


def test_window_starts_follow_the_window_rules():
    face, none = object(), None
    # 20 face frames, 3 faceless, 20 faces: windows 0-15, then 16-19 + 23-34 (a short gap keeps a window open),
    # then 35-42; 20 faceless frames close nothing more (no window is open), so each of them may start a segment
    flags = [face] * 20 + [none] * 3 + [face] * 20 + [none] * 20
    faces = GivenFaces([[f] for f in flags])
    assert window_starts(faces, np.arange(len(flags))) == [0, 16, 35, *range(43, 63)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # 3.6 s at 25 fps = 90 frames, speech as long as the video
    return write_sample(tmp_path_factory.mktemp("segments"), seconds=3.6, fps=25, width=640, height=360)


def test_segments_joined_equal_the_single_process_run(pipe, clip, tmp_path):
    video, wav = clip
    whole = tmp_path / "whole.mp4"
    lipsync_file(video, wav, whole, SETTINGS, models=pipe.models)
    plan = plan_segments(video, wav, SETTINGS, segment_frames=32, model_dir=pipe.models.model_dir)
    starts = window_starts(plan.faces, np.arange(90))
    assert plan.n_out == 90 and len(plan) == 3 and plan.segments[-1][1] == 90
    assert all(a in starts and b - a >= 32 for a, b in plan.segments[:-1])
    parts = []
    for k in reversed(range(len(plan))):  # any order, any worker: each segment stands alone
        parts.insert(0, run_segment(video, wav, tmp_path / f"part{k}.mkv", SETTINGS, plan, k, models=pipe.models).output)
    joined = join_segments(video, wav, parts, tmp_path / "joined.mp4", plan)
    assert joined.frames == 90
    lossless = np.concatenate([np.concatenate(list(iter_frames(p))) for p in parts])
    frames = []  # the single-process frames as they go to the encoder
    lipsync_file(video, wav, tmp_path / "again.mp4", SETTINGS, models=pipe.models,
                 on_frame=lambda work: frames.append(work.out))
    np.testing.assert_array_equal(lossless, np.stack(frames))  # bit-identical frames
    decoded_joined = np.concatenate(list(iter_frames(joined.output)))
    decoded_whole = np.concatenate(list(iter_frames(whole)))
    assert np.array_equal(decoded_joined, decoded_whole)  # the same frames through the same encoder


def test_a_segment_must_start_on_a_window_boundary(pipe, clip, tmp_path):
    video, wav = clip
    plan = plan_segments(video, wav, SETTINGS, segment_frames=32, model_dir=pipe.models.model_dir)
    inside = next(j for j in range(1, 90) if j not in window_starts(plan.faces, np.arange(90)))
    plan.segments = [(0, inside), (inside, 90)]
    with pytest.raises(InputError, match="window boundary"):
        run_segment(video, wav, tmp_path / "bad.mkv", SETTINGS, plan, 1, models=pipe.models)
