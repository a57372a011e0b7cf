"""Length rules and the bounded-buffer played-frame reader (pure functions, no models)."""

import numpy as np
import pytest

from latentsync import timeline as tl
from latentsync.errors import InputError


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30, 50, 60])
@pytest.mark.parametrize("seconds", [0.5, 3.0, 7.3])
def test_audio_mode_frame_count_follows_the_audio(fps, seconds):
    sr = 44100
    t = tl.make_timeline(int(seconds * sr), sr, fps, n_video=40, length_mode="audio")
    assert t.n_out == round(seconds * fps)
    assert t.audio_samples == round(t.n_out / fps * sr)
    assert abs(t.audio_samples / sr - t.n_out / fps) <= 0.5 / sr + 1e-9
    assert t.fps == float(fps)


def test_audio_mode_at_least_one_frame_and_video_mode_uses_the_video():
    assert tl.make_timeline(10, 16000, 25, n_video=7).n_out == 1
    t = tl.make_timeline(16000 * 9, 16000, 30, n_video=45, length_mode="video")
    assert (t.n_out, t.audio_samples) == (45, 24000)


def test_bad_timeline_inputs_are_input_errors():
    for fps in (0, -1, float("nan"), "x"):
        with pytest.raises(InputError):
            tl.make_timeline(16000, 16000, fps, 10)
    with pytest.raises(InputError):
        tl.make_timeline(16000, 16000, 25, 0, "video")
    with pytest.raises(InputError):
        tl.make_timeline(16000, 16000, 25, 10, "stretch")


def test_ping_pong_does_not_repeat_the_end_frames():
    assert tl.source_indices(12, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert tl.source_indices(5, 2).tolist() == [0, 1, 0, 1, 0]
    assert tl.source_indices(4, 1).tolist() == [0, 0, 0, 0]
    assert tl.source_indices(3, 10).tolist() == [0, 1, 2]


def test_fit_audio_trims_and_pads_with_silence():
    x = np.ones((2, 10), np.float32)
    assert tl.fit_audio(x, 4).shape == (2, 4)
    y = tl.fit_audio(x, 13)
    assert y.shape == (2, 13) and y[:, 10:].sum() == 0 and y[:, :10].sum() == 20


def _video(n, h=8):
    return np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, h, h, 3), np.uint8)


def _chunks(video, size=3):
    return [video[i:i + size] for i in range(0, len(video), size)]


@pytest.mark.parametrize("n_video,n_out", [(5, 3), (5, 5), (5, 14), (1, 4), (2, 7)])
def test_played_frames_one_shot_iterator(n_video, n_out):
    video = _video(n_video)
    got = list(tl.played_frames(iter(_chunks(video)), n_out))
    want = tl.source_indices(n_out, n_video).tolist()
    assert [i for i, _ in got] == want
    assert [int(f[0, 0, 0]) for _, f in got] == want


def test_played_frames_reopens_a_callable_source_with_a_small_buffer():
    video = _video(9)
    opened = []

    def source():
        opened.append(1)
        return iter(_chunks(video, 2))

    frame_bytes = video[0].nbytes
    got = list(tl.played_frames(source, 30, n_frames=9, cache_bytes=3 * frame_bytes))
    want = tl.source_indices(30, 9).tolist()
    assert [i for i, _ in got] == want
    assert [int(f[0, 0, 0]) for _, f in got] == want
    assert len(opened) > 2  # backward passes were read block by block from re-opened sources


def test_played_frames_stops_reading_early_and_rejects_empty_sources():
    read = []

    def gen():
        for c in _chunks(_video(50), 4):
            read.append(len(c))
            yield c

    assert len(list(tl.played_frames(gen(), 6))) == 6
    assert sum(read) <= 8
    with pytest.raises(InputError):
        list(tl.played_frames(iter([]), 5))
