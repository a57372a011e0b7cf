"""Length rules and the bounded-buffer played-frame reader (pure functions, no models)."""

import numpy as np
import pytest

from latentsync import timeline as tl
from latentsync.errors import InputError
from latentsync.inputs import FrameSource


@pytest.mark.parametrize("fps", [24, 25, 29.97, 30, 50, 60])
@pytest.mark.parametrize("seconds", [0.5, 3.0, 7.3])
def test_audio_mode_frame_count_follows_the_audio(fps, seconds):
    sr = 44100
    n_out = tl.output_frame_count(int(seconds * sr) / sr, fps, n_video=40, length_mode="audio")
    samples = tl.audio_sample_count(n_out, fps, sr)
    assert n_out == round(seconds * fps)
    assert samples == round(n_out / fps * sr)
    assert abs(samples / sr - n_out / fps) <= 0.5 / sr + 1e-9


def test_audio_mode_at_least_one_frame_and_video_mode_uses_the_video():
    assert tl.output_frame_count(10 / 16000, 25, n_video=7) == 1
    n_out = tl.output_frame_count(9.0, 30, n_video=45, length_mode="video")
    assert (n_out, tl.audio_sample_count(n_out, 30, 16000)) == (45, 24000)


def test_bad_timeline_inputs_are_input_errors():
    for fps in (0, -1, float("nan"), "x"):
        with pytest.raises(InputError):
            tl.output_frame_count(1.0, fps, 10)
    with pytest.raises(InputError):
        tl.output_frame_count(1.0, 25, 0, "video")
    with pytest.raises(InputError):
        tl.output_frame_count(1.0, 25, 10, "stretch")


def test_ping_pong_does_not_repeat_the_end_frames():
    assert tl.source_indices(12, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert tl.source_indices(5, 2).tolist() == [0, 1, 0, 1, 0]
    assert tl.source_indices(4, 1).tolist() == [0, 0, 0, 0]
    assert tl.source_indices(3, 10).tolist() == [0, 1, 2]


def test_reference_loop_repeats_the_end_frames():
    assert tl.source_indices(12, 4, "reference").tolist() == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3]
    assert tl.source_indices(3, 1, "reference").tolist() == [0, 0, 0]


@pytest.mark.parametrize("n_samples,fps,expected", [(12000, 25, 20), (544555, 25, 852), (16000, 30, 32),
                                                    (0, 25, 2), (320, 25, 2), (640, 25, 3)])
def test_reference_frame_count_is_the_references_chunk_count(n_samples, fps, expected):
    # the reference appends chunk i while int(i * 50 / fps) <= n_samples // 320, then one more
    assert tl.reference_frame_count(n_samples, fps) == expected


def test_fit_audio_trims_and_pads_with_silence():
    x = np.ones((2, 10), np.float32)
    assert tl.fit_audio(x, 4).shape == (2, 4)
    y = tl.fit_audio(x, 13)
    assert y.shape == (2, 13) and y[:, 10:].sum() == 0 and y[:, :10].sum() == 20


def _video(n, h=64):
    return np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, h, h, 3), np.uint8)


def _chunks(video, size=3):
    return [video[i:i + size] for i in range(0, len(video), size)]


@pytest.mark.parametrize("loop", tl.LOOPS)
@pytest.mark.parametrize("n_video,n_out", [(5, 3), (5, 5), (5, 14), (1, 4), (2, 7)])
def test_played_frames_one_shot_source(n_video, n_out, loop):
    video = _video(n_video)
    got = list(tl.played_frames(FrameSource.from_chunks(iter(_chunks(video))), n_out, loop=loop))
    want = tl.source_indices(n_out, n_video, loop).tolist()
    assert [j for j, _, _ in got] == list(range(n_out))
    assert [i for _, i, _ in got] == want
    assert [int(f[0, 0, 0]) for _, _, f in got] == want


@pytest.mark.parametrize("loop", tl.LOOPS)
def test_played_frames_reopens_a_source_with_a_small_buffer(loop):
    video = _video(9)
    opened = []
    array = FrameSource.from_array(video, chunk=2)

    def open_at(start):
        opened.append(start)
        return array.open(start)

    frame_bytes = video[0].nbytes
    got = list(tl.played_frames(FrameSource(open_at, 9), 30, loop=loop, cache_bytes=3 * frame_bytes))
    want = tl.source_indices(30, 9, loop).tolist()
    assert [i for _, i, _ in got] == want
    assert [int(f[0, 0, 0]) for _, _, f in got] == want
    assert len(opened) > 2 and max(opened) > 0  # backward passes were read block by block, each opened at its start


@pytest.mark.parametrize("n_video,n_out,start", [(20, 12, 5), (5, 14, 7), (9, 30, 16)])
def test_played_frames_from_a_start_frame(n_video, n_out, start):
    video = _video(n_video)
    got = list(tl.played_frames(FrameSource.from_array(video, chunk=4), n_out, start=start))
    want = tl.source_indices(n_out, n_video)[start:].tolist()
    assert [j for j, _, _ in got] == list(range(start, n_out))
    assert [int(f[0, 0, 0]) for _, _, f in got] == want


def test_played_frames_stops_reading_early_and_rejects_empty_sources():
    read = []

    def gen():
        for c in _chunks(_video(50), 4):
            read.append(len(c))
            yield c

    assert len(list(tl.played_frames(FrameSource.from_chunks(gen()), 6))) == 6
    assert sum(read) <= 8
    with pytest.raises(InputError):
        list(tl.played_frames(FrameSource.from_chunks(iter([])), 5))
