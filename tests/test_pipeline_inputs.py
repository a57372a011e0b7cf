"""Bad input gives one clear LatentSyncError (before any model work); the allowed odd inputs work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentsync.errors import InputError, LatentSyncError
from latentsync.inputs import frames_to_uint8, parse_audio
from latentsync.inputs import FrameSource
from latentsync.settings import LipSyncSettings
from pipeline_support import UNetCalls, clip, speech

FAST = LipSyncSettings(steps=1, guidance=1.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frames():
    return clip(3, 25)


BAD_AUDIO = {
    "zero-length audio": (np.zeros(0, np.float32), 16000),
    "NaN in audio": (np.array([0.1, np.nan] * 800, np.float32), 16000),
    "Inf in audio": (np.array([0.1, np.inf] * 800, np.float32), 16000),
    "AUDIO dict without waveform": {"wave": torch.zeros(1, 1, 1600), "sample_rate": 16000},
    "AUDIO dict with garbage waveform": {"waveform": "not audio", "sample_rate": 16000},
    "AUDIO dict with a bad rate": {"waveform": torch.zeros(1, 1, 1600), "sample_rate": -44100},
    "AUDIO dict with a batch of two": {"waveform": torch.zeros(2, 1, 1600), "sample_rate": 16000},
    "audio of rank 4": (np.zeros((1, 1, 1, 1600), np.float32), 16000),
    "not audio at all": "speech.wav",
}


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_is_one_input_error(pipe, case):
    with UNetCalls(pipe.models.unet) as calls, pytest.raises(InputError) as err:
        pipe(_frames(), 25, BAD_AUDIO[case], FAST)
    assert len(str(err.value)) > 15 and "Traceback" not in str(err.value)
    assert calls.shapes == []


def _frames_case(name):
    f = _frames()
    return {
        "0-frame video": np.zeros((0, 360, 640, 3), np.uint8),
        "float images above 1": f.astype(np.float32),  # 0..255 floats
        "float images below 0": f.astype(np.float32) / 255 - 0.5,
        "NaN images": np.full((2, 360, 640, 3), np.nan, np.float32),
        "frames smaller than 64 px": np.zeros((2, 48, 80, 3), np.uint8),
        "two channels": np.zeros((2, 360, 640, 2), np.uint8),
        "int64 frames": f.astype(np.int64),
        "not an array": "video.mp4",
    }[name]


@pytest.mark.parametrize("case", ["0-frame video", "float images above 1", "float images below 0", "NaN images",
                                  "frames smaller than 64 px", "two channels", "int64 frames", "not an array"])
def test_bad_frames_are_one_input_error(pipe, case):
    with UNetCalls(pipe.models.unet) as calls, pytest.raises(InputError) as err:
        pipe(_frames_case(case), 25, speech(0.2), FAST)
    assert len(str(err.value)) > 15
    assert calls.shapes == []


def test_bad_settings_and_fps_are_input_errors(pipe):
    for kwargs in ({"steps": 0}, {"guidance": 0.5}, {"length_mode": "loop"}, {"version": "2.0"},
                   {"window_batch": -1}, {"vae_slice": 1.5}, {"face": "tallest"}):
        with pytest.raises(InputError):
            LipSyncSettings(**kwargs)
    for fps in (0, -25, float("nan")):
        with pytest.raises(InputError):
            pipe(_frames(), fps, speech(0.2), FAST)


def test_frames_in_a_stream_must_keep_their_size(pipe):
    chunks = [clip(2, 25), np.zeros((2, 200, 300, 3), np.uint8)]
    with pytest.raises(InputError, match="same size"):
        job = pipe.pipeline.prepare(speech(0.16), 25, FAST)
        list(pipe.pipeline.stream(FrameSource.from_chunks(iter(chunks)), job))


def test_grayscale_and_rgba_are_converted():
    rgb = clip(2, 25)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:3], 1), 7, np.uint8)], axis=3)
    np.testing.assert_array_equal(frames_to_uint8(rgba), rgb)
    gray = rgb[..., 1]
    np.testing.assert_array_equal(frames_to_uint8(gray), np.repeat(gray[..., None], 3, axis=3))
    np.testing.assert_array_equal(frames_to_uint8(gray[..., None].astype(np.float32) / 255), frames_to_uint8(gray))


def test_audio_forms_are_equivalent():
    x = (np.sin(np.arange(4000) / 5) * 0.5).astype(np.float32)
    first = parse_audio((x, 16000))
    a, sr = first.samples, first.sample_rate
    b = parse_audio({"waveform": torch.from_numpy(x)[None, None], "sample_rate": 16000}).samples
    c = parse_audio(((x * 32767).astype(np.int16), 16000)).samples
    assert sr == 16000 and a.shape == b.shape == c.shape == (1, 4000)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-4)


def test_one_rgba_frame_with_silent_audio_is_allowed(pipe):
    frame = clip(1, 25)
    rgba = np.concatenate([frame, np.full((1, 360, 640, 1), 255, np.uint8)], axis=3)
    res = pipe(rgba, 25, (np.zeros((2, 9600), np.float32), 48000), FAST)  # 0.2 s of silence, stereo
    assert res.frames.shape == (5, 360, 640, 3)  # the single frame repeats for the audio's length
    assert res.has_face.all()
    assert res.audio[0].shape == (2, 9600) and not res.audio[0].any()
    assert isinstance(InputError("x"), LatentSyncError)


def test_no_face_anywhere_passes_the_video_through_and_strict_mode_raises(pipe):
    from latentsync.errors import NoFaceError

    frames = clip(3, 25, faceless=(0, 1, 2))
    with UNetCalls(pipe.models.unet) as calls:
        res = pipe(frames, 25, speech(3 / 25), FAST)
    np.testing.assert_array_equal(res.frames, frames)
    assert not res.has_face.any() and calls.shapes == []
    with pytest.raises(NoFaceError):
        pipe(frames, 25, speech(3 / 25), LipSyncSettings(steps=1, guidance=1.0, strict_faces=True))
