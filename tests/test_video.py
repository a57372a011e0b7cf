"""PyAV video IO: probe, chunked decode, audio read, and the one-pass H.264 + AAC writer."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from latentsync import video as V
from latentsync.errors import InputError


def _frames(n, h, w):
    """Smooth moving gradients (H.264 4:2:0 keeps them within a few levels)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        r = 128 + 100 * np.sin((x + 3 * i) / 17)
        g = 128 + 100 * np.cos((y - 2 * i) / 13)
        b = np.full_like(x, 40 + 4 * i)
        out.append(np.stack([r, g, b], -1).round().astype(np.uint8))
    return np.stack(out)


def _tone(seconds, sr, channels=2):
    t = np.arange(int(round(seconds * sr))) / sr
    return np.stack([0.3 * np.sin(2 * np.pi * (440 + 220 * c) * t) for c in range(channels)]).astype(np.float32)


@pytest.mark.parametrize("fps,size,sr,channels", [(30, (64, 48), 44100, 2), (24, (66, 50), 48000, 1),
                                                  (Fraction(30000, 1001), (64, 48), 16000, 1)])
def test_roundtrip(tmp_path, fps, size, sr, channels):
    w, h = size
    n = 40
    frames = _frames(n, h, w)
    audio = _tone(n / float(fps), sr, channels)
    out = tmp_path / "out.mp4"
    with V.VideoWriter(out, fps, w, h, audio=(audio, sr)) as writer:
        for i in range(0, n, 16):  # written in chunks, as the pipeline streams them
            writer.write(frames[i:i + 16])
    info = V.probe(out)
    assert (info.n_frames, info.width, info.height, info.has_audio) == (n, w, h, True)
    assert info.rate == Fraction(fps) and info.fps == pytest.approx(float(fps))
    assert info.duration == pytest.approx(n / float(fps), abs=1e-3)
    assert (info.audio_sample_rate, info.audio_channels) == (sr, channels)
    chunks = list(V.iter_frames(out, chunk=16))
    assert [c.shape[0] for c in chunks] == [16, 16, 8] and chunks[0].dtype == np.uint8
    got = np.concatenate(chunks).astype(np.int16)
    assert got.shape == frames.shape
    err = np.abs(got - frames)
    assert err.mean() < 2.0 and np.percentile(err, 99) <= 8
    assert np.abs((got - frames).mean()) < 0.5  # no colour bias (BT.709 both ways, accurate rounding)
    samples, rate = V.read_audio(out)
    assert rate == sr and samples.dtype == np.float32 and samples.shape[0] == channels
    assert abs(samples.shape[1] - audio.shape[1]) <= 0.002 * sr  # AAC: within 2 ms of the input length
    m = min(samples.shape[1], audio.shape[1]) - 2048
    corr = np.corrcoef(samples[0, 1024:m], audio[0, 1024:m])[0, 1]  # same waveform, not shifted
    assert corr > 0.98
    assert not list(tmp_path.glob(".*partial*"))  # temporary file renamed away


def test_odd_size_is_padded_and_flat_colour_exact(tmp_path):
    frames = np.zeros((5, 33, 45, 3), np.uint8)
    frames[...] = (200, 30, 90)
    out = tmp_path / "odd.mp4"
    with V.VideoWriter(out, 25, 45, 33) as writer:
        writer.write(frames)
    info = V.probe(out)
    assert (info.width, info.height, info.n_frames, info.has_audio) == (46, 34, 5, False)
    assert V.read_audio(out) is None
    got = np.concatenate(list(V.iter_frames(out)))
    assert got.shape == (5, 34, 46, 3)
    assert np.abs(got.astype(int) - (200, 30, 90)).max() <= 2  # BT.709 tags: colours come back


def test_writer_errors_leave_no_file(tmp_path):
    out = tmp_path / "x.mp4"
    with pytest.raises(InputError, match="uint8 frames"):
        with V.VideoWriter(out, 25, 32, 32) as writer:
            writer.write(np.zeros((2, 32, 30, 3), np.uint8))
    with pytest.raises(RuntimeError):
        with V.VideoWriter(out, 25, 32, 32) as writer:
            writer.write(np.zeros((2, 32, 32, 3), np.uint8))
            raise RuntimeError("cancelled")
    with pytest.raises(InputError, match="No frames"):
        with V.VideoWriter(out, 25, 32, 32):
            pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="does not exist"):
        V.VideoWriter(tmp_path / "no" / "x.mp4", 25, 32, 32).__enter__()
    with pytest.raises(InputError, match="Invalid frame rate"):
        V.VideoWriter(out, 0, 32, 32)
    with pytest.raises(InputError, match="channels"):
        V.VideoWriter(out, 25, 32, 32, audio=(np.zeros((2, 3, 4), np.float32), 16000))


def test_bad_inputs_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        V.probe(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="not found"):
        next(V.iter_frames(tmp_path / "missing.mp4"))
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    for fn in (V.probe, lambda p: next(V.iter_frames(p)), V.read_audio):
        with pytest.raises(InputError, match="not a readable video"):
            fn(text)
    with pytest.raises(InputError, match="folder"):
        V.probe(tmp_path)
    wav = tmp_path / "speech.wav"  # audio only: no video stream
    import av

    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        f = av.AudioFrame.from_ndarray((_tone(0.2, 16000, 1) * 32767).astype(np.int16), format="s16", layout="mono")
        f.sample_rate = 16000
        c.mux(s.encode(f))
        c.mux(s.encode(None))
    with pytest.raises(InputError, match="no video stream"):
        V.probe(wav)
    with pytest.raises(InputError, match="no video stream"):
        next(V.iter_frames(wav))
    samples, sr = V.read_audio(wav)  # audio of any media file is still readable
    assert sr == 16000 and samples.shape == (1, 3200)


def test_display_rotation_is_applied_like_players():
    img = np.arange(2 * 3).reshape(2, 3, 1)  # 2 rows, 3 columns
    assert V.upright(img, 0) is img
    assert V.upright(img, -90)[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]  # clockwise (portrait phone clips)
    assert V.upright(img, 90)[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]  # counterclockwise
    assert V.upright(img, 180)[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]
    assert V.upright(img, -180).tolist() == V.upright(img, 180).tolist()


def test_probe_counts_frames_without_a_stored_count(tmp_path):
    out = tmp_path / "clip.mkv"  # matroska stores no frame count
    with V.VideoWriter(out, 24, 32, 32) as writer:
        writer.write(_frames(7, 32, 32))
    info = V.probe(out)
    assert (info.n_frames, info.fps, info.width, info.height) == (7, 24.0, 32, 32)
    assert sum(len(c) for c in V.iter_frames(out, chunk=3)) == 7
