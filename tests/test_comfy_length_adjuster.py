"""VideoLengthAdjuster arithmetic (length_adjuster.py): modes, fps-driven durations, no frame copies."""

from __future__ import annotations

import pytest
import torch

from latentsync import length_adjuster as la
from latentsync.errors import LatentSyncError

SR = 16000


def frames(n: int, h: int = 4, w: int = 4) -> torch.Tensor:
    """Frame i is filled with i / 1000 so the source index can be read back."""
    return (torch.arange(n, dtype=torch.float32) / 1000).view(n, 1, 1, 1).expand(n, h, w, 3).contiguous()


def audio(seconds: float, sr: int = SR, channels: int = 2) -> dict:
    t = int(round(seconds * sr))
    return {"waveform": torch.ones(1, channels, t), "sample_rate": sr}


def source_ids(out: torch.Tensor) -> list[int]:
    return [int(round(v * 1000)) for v in out[:, 0, 0, 0].tolist()]


def test_pingpong_indices_do_not_repeat_end_frames():
    assert la.pingpong_indices(12, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert la.pingpong_indices(3, 1).tolist() == [0, 0, 0]
    assert la.loop_indices(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("fps, expected", [(25.0, 37), (30.0, 44), (12.0, 18), (60.0, 89)])
def test_normal_cuts_frames_to_padded_audio_at_the_given_fps(fps, expected):
    imgs = frames(100)
    out, aud = la.adjust_length(imgs, audio(0.98), "normal", fps, 0.5)  # 1.48 s padded
    assert out.shape[0] == expected == round(1.48 * fps)
    assert out.data_ptr() == imgs.data_ptr()  # a view: no copy of the frames
    assert aud["waveform"].shape == (1, 2, round(expected / fps * SR))
    assert aud["sample_rate"] == SR
    # the original audio, then silence
    assert aud["waveform"][0, 0, :round(0.98 * SR)].eq(1).all()
    assert aud["waveform"][0, 0, round(0.98 * SR) + 1:].eq(0).all()


def test_normal_with_short_video_trims_the_audio_to_the_video():
    imgs = frames(20)
    out, aud = la.adjust_length(imgs, audio(2.0), "normal", 25.0, 0.5)
    assert out.shape[0] == 20 and out.data_ptr() == imgs.data_ptr()
    assert aud["waveform"].shape[-1] == round(20 / 25 * SR)


def test_pingpong_extends_short_video_forward_backward():
    out, aud = la.adjust_length(frames(5), audio(0.5), "pingpong", 10.0, 0.5)  # 1.0 s → 10 frames at 10 fps
    assert source_ids(out) == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1]
    assert aud["waveform"].shape[-1] == SR


def test_pingpong_with_long_video_pads_audio_to_the_video():
    out, aud = la.adjust_length(frames(50), audio(0.5), "pingpong", 25.0, 0.5)
    assert out.shape[0] == 50
    assert aud["waveform"].shape[-1] == 2 * SR  # 50 frames at 25 fps
    assert aud["waveform"][0, 0, SR // 2 + 1:].eq(0).all()


def test_loop_to_audio_repeats_from_the_start_and_cuts():
    out, _ = la.adjust_length(frames(4), audio(0.5), "loop_to_audio", 10.0, 0.5)
    assert source_ids(out) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    long, _ = la.adjust_length(frames(40), audio(0.5), "loop_to_audio", 10.0, 0.5)
    assert long.shape[0] == 10


def test_fps_changes_the_frame_count():
    a, _ = la.adjust_length(frames(10), audio(1.5), "pingpong", 24.0, 0.5)
    b, _ = la.adjust_length(frames(10), audio(1.5), "pingpong", 50.0, 0.5)
    assert (a.shape[0], b.shape[0]) == (48, 100)


def test_mono_and_unbatched_waveforms():
    out, aud = la.adjust_length(frames(10), {"waveform": torch.ones(8000), "sample_rate": SR}, "normal", 25.0, 0.1)
    assert out.shape[0] == 10 and aud["waveform"].shape == (1, 1, round(10 / 25 * SR))


@pytest.mark.parametrize("bad_audio", [None, {"waveform": torch.ones(1, 1, 10)}, {"waveform": [0.0], "sample_rate": 1}])
def test_bad_audio_is_a_clear_error(bad_audio):
    with pytest.raises(LatentSyncError) as info:
        la.adjust_length(frames(3), bad_audio, "normal", 25.0, 0.5)
    if bad_audio is None:
        assert "no audio stream" in str(info.value)


def test_bad_mode_and_fps():
    with pytest.raises(LatentSyncError):
        la.adjust_length(frames(3), audio(1), "sideways", 25.0, 0.5)
    with pytest.raises(LatentSyncError):
        la.adjust_length(frames(3), audio(1), "normal", 0.0, 0.5)
    with pytest.raises(LatentSyncError):
        la.adjust_length(torch.zeros(0, 4, 4, 3), audio(1), "normal", 25.0, 0.5)
