"""End-to-end lip-sync with the tiny random models on astronaut clips with speech: length rules per fps,
pass-through of faceless frames and of everything outside the face, determinism, CFG batching, streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from latentsync import timeline as tl
from latentsync.errors import CancelledError
from latentsync.inputs import FrameSource
from latentsync.settings import LipSyncSettings
from pipeline_support import UNetCalls, changed_box, clip, pipeline_for, speech

FAST = LipSyncSettings(steps=1, guidance=1.0, seed=3)
LANDMARKER_DIR = Path(__file__).parent / "fixtures" / "models"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _face_box(frame):
    from latentsync.face import FaceDetector

    det = FaceDetector(model_dir=LANDMARKER_DIR).detect(frame)  # the Tasks backend reads its model from there
    assert det is not None
    return det.box


def _assert_only_face_changed(out, src, box):
    """Pixels outside a region around the face (twice the face box each way) are bit-identical."""
    got = changed_box(out, src)
    assert got is not None, "the face region was not regenerated"
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    assert got[0] >= x0 - w and got[1] >= y0 - h and got[2] <= x1 + w and got[3] <= y1 + h, (got, box)


# every fps x audio shorter / equal / longer than a 6-frame video (11 frames: ping-pong into a second forward pass)
CASES = [(fps, n) for fps in (24, 25, 30, 60) for n in (4, 6, 11)]


@pytest.mark.parametrize("fps,n_audio_frames", CASES)
def test_audio_mode_length_fps_and_audio(pipe, fps, n_audio_frames):
    frames = clip(6, fps)
    sr = 44100
    samples = np.random.default_rng(fps).uniform(-0.3, 0.3, (2, int(round(n_audio_frames / fps * sr))))
    res = pipe(frames, fps, (samples.astype(np.float32), sr), FAST)
    assert res.fps == fps
    assert res.frames.shape == (n_audio_frames, 360, 640, 3) and res.frames.dtype == np.uint8
    audio, rate = res.audio
    assert rate == sr and audio.shape == (2, round(n_audio_frames / fps * sr))
    np.testing.assert_array_equal(audio, samples.astype(np.float32)[:, :audio.shape[1]])  # the ORIGINAL audio
    assert res.has_face.all()
    # each output frame shows its source frame (ping-pong without repeated ends) outside the face
    box = _face_box(frames[0])
    for j, src in enumerate(tl.source_indices(n_audio_frames, 6)):
        _assert_only_face_changed(res.frames[j], frames[src], box)


@pytest.mark.parametrize("seconds", [0.12, 0.5])
def test_video_mode_keeps_the_video_length_and_fits_the_audio(pipe, seconds):
    frames = clip(7, 30)
    samples, sr = speech(seconds, 22050)
    res = pipe(frames, 30, (samples, sr), LipSyncSettings(steps=1, guidance=1.0, length_mode="video"))
    assert res.frames.shape[0] == 7
    audio, rate = res.audio
    assert rate == 22050 and audio.shape == (1, round(7 / 30 * 22050))
    n = min(audio.shape[1], samples.size)
    np.testing.assert_array_equal(audio[0, :n], samples[:n])
    assert not audio[0, n:].any()  # padded with silence when the audio is shorter


def test_faceless_frames_pass_through_bit_identical_float_images(pipe):
    frames = clip(8, 25, faceless=(2, 3, 7))
    images = torch.from_numpy(frames).float() / 255.0  # ComfyUI IMAGE
    with UNetCalls(pipe.models.unet) as calls:
        res = pipe(images, 25, speech(8 / 25), FAST)
    out = res.frames
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == images.shape
    assert res.has_face.tolist() == [True, True, False, False, True, True, True, False]
    for j in (2, 3, 7):
        assert torch.equal(out[j], images[j])
    # one window over the 5 face frames (contiguous over the faceless gap)
    assert [s[2] for s in calls.shapes] == [5]
    box = _face_box(frames[0])
    for j in (0, 1, 4, 5, 6):
        face_out = (out[j].numpy() * 255).round().astype(np.uint8)
        _assert_only_face_changed(face_out, frames[j], box)
        untouched = face_out == frames[j]
        assert torch.equal(out[j][untouched], images[j][untouched])  # exact input floats where unchanged


def test_seed_determinism_cfg_batches_and_progress(pipe):
    frames = clip(5, 25)
    audio = speech(5 / 25)
    progress = []
    settings = LipSyncSettings(steps=2, guidance=1.5, seed=11)
    with UNetCalls(pipe.models.unet) as cfg_calls:
        a = pipe(frames, 25, audio, settings, progress=lambda d, t, i: progress.append((d, t))).frames
    b = pipe(frames, 25, audio, settings).frames
    c = pipe(frames, 25, audio, LipSyncSettings(steps=2, guidance=1.5, seed=12)).frames
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)
    assert [s[0] for s in cfg_calls.shapes] == [2, 2]  # [zero audio | audio] in one batch per step
    assert progress == [(1, 2), (2, 2)]
    with UNetCalls(pipe.models.unet) as calls:
        pipe(frames, 25, audio, LipSyncSettings(steps=2, guidance=1.0, seed=11))
    assert [s[0] for s in calls.shapes] == [1, 1]  # lips_expression 1.0: ONE UNet batch per step


def test_streaming_equals_in_memory_and_reopened_ping_pong(pipe):
    frames = clip(5, 25)
    audio = speech(12 / 25)
    whole = pipe(frames, 25, audio, FAST).frames
    chunks = [frames[i:i + 2] for i in range(0, 5, 2)]
    job = pipe.pipeline.prepare(audio, 25, FAST)  # a one-shot source of unknown length
    streamed = np.concatenate(list(pipe.pipeline.stream(FrameSource.from_chunks(iter(chunks)), job)))
    np.testing.assert_array_equal(streamed, whole)
    opened = []
    array_source = FrameSource.from_array(frames, chunk=2)

    def open_at(start):
        opened.append(start)
        return array_source.open(start)

    tiny_cache = LipSyncSettings(steps=1, guidance=1.0, seed=3, cache_mb=0)  # force re-reading the source
    job = pipe.pipeline.prepare(audio, 25, tiny_cache, n_frames=5)
    reread = np.concatenate(list(pipe.pipeline.stream(FrameSource(open_at, 5), job)))
    np.testing.assert_array_equal(reread, whole)
    assert len(opened) > 1


def test_cancel_raises_cancelled_error(pipe):
    with pytest.raises(CancelledError):
        pipe(clip(3, 25), 25, speech(0.12), FAST, cancel=lambda: True)


def test_deepcache_and_window_batch(pipe):
    frames = clip(4, 25)
    with UNetCalls(pipe.models.unet) as calls:
        out = pipe(frames, 25, speech(18 / 25), LipSyncSettings(steps=1, guidance=1.0, window_batch=2, vae_slice=3))
    assert out.frames.shape[0] == 18
    assert [s[2] for s in calls.shapes] == [16, 2]  # windows of 16 (+ the rest); unequal ones are not batched
    audio = speech(2 / 25)
    with UNetCalls(pipe.models.unet) as calls:
        cached = pipe(frames[:2], 25, audio, LipSyncSettings(steps=4, guidance=1.0, deepcache=True)).frames
    assert cached.shape == (2, 360, 640, 3) and len(calls.shapes) == 4
    full = pipe(frames[:2], 25, audio, LipSyncSettings(steps=4, guidance=1.0)).frames
    assert np.any(cached != full)  # steps 1 and 2 reused the cached deep features


def test_real_face_resolution_512(tiny_models):
    """The tiny set at its own 1.6 config (512 px faces, 64x64 latents): 2 frames, 1 step."""
    pipe512 = pipeline_for(str(tiny_models))
    assert pipe512.models.resolution == 512
    frames = clip(2, 25)
    with UNetCalls(pipe512.models.unet) as calls:
        res = pipe512(frames, 25, speech(2 / 25), FAST)
    assert calls.shapes == [(1, 13, 2, 64, 64)]
    assert res.frames.shape == frames.shape and res.has_face.all()
    _assert_only_face_changed(res.frames[0], frames[0], _face_box(frames[0]))


def test_tasks_backend_finds_its_model_in_the_models_folder(tiny_models, tmp_path):
    """mediapipe without the legacy API: the Tasks landmarker is read from the weights' folder (no download)."""
    from pipeline_support import small_model_dir
    from latentsync.checkpoints import find_models
    from latentsync.models import load_models
    from pipeline_support import TinyRunner

    folder = small_model_dir(tiny_models, tmp_path / "models")
    assert (folder / "face_landmarker.task").is_file()  # linked from the tiny set (tests/conftest.py)
    tasks_pipe = TinyRunner(load_models(find_models("1.6", folder), "cpu", torch.float32))
    assert tasks_pipe.models.model_dir == folder
    frames = clip(4, 25)
    res = tasks_pipe(frames, 25, speech(4 / 25), LipSyncSettings(steps=1, guidance=1.0, face_backend="tasks"))
    assert res.has_face.all() and res.frames.shape == frames.shape
    assert changed_box(res.frames[0], frames[0]) is not None  # the face was regenerated
