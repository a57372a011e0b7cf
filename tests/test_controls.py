"""Artist controls through the whole pipeline (issue 12): each is opt-in (defaults give today's frames), and each
does what it says — blend / colour match at paste-back, a restoration model on the mouth, face search controls,
still mouths in silence, previews — with clear errors for bad values before any frame is processed."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from latentsync.api import lipsync_frames
from latentsync.errors import InputError
from latentsync.settings import LipSyncSettings
from pipeline_support import ROOT, UNetCalls, changed_box, clip, speech

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = LipSyncSettings(steps=1, guidance=1.0, seed=4)


@pytest.fixture(scope="module")
def frames():
    return clip(16, 25)


@pytest.fixture(scope="module")
def reference(pipe, frames):
    return lipsync_frames(frames, 25, speech(16 / 25), BASE, models=pipe.models).frames


def test_explicit_defaults_give_the_reference_frames(pipe, frames, reference):
    explicit = replace(BASE, blend="reference", color_match="off", min_face_height=80, face_confidence=0.5,
                       redetect_every=50, silence="sync", restore_strength=1.0)
    np.testing.assert_array_equal(lipsync_frames(frames, 25, speech(16 / 25), explicit, models=pipe.models).frames,
                                  reference)


@pytest.mark.parametrize("blend, color_match", [("feather", "off"), ("poisson", "off"), ("reference", "mean_std")])
def test_blend_and_colour_match_change_only_the_face_area(pipe, frames, reference, blend, color_match):
    settings = replace(BASE, blend=blend, color_match=color_match, feather_px=8)
    out = lipsync_frames(frames, 25, speech(16 / 25), settings, models=pipe.models).frames
    assert np.any(out != reference)
    ref_box, box = changed_box(reference[0], frames[0]), changed_box(out[0], frames[0])
    assert box is not None and box[0] >= ref_box[0] - 12 and box[2] <= ref_box[2] + 12  # still the face area


def test_a_restoration_model_changes_only_the_mouth_and_strength_zero_is_off(pipe, frames, reference, tmp_path):
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_restorer.py"), str(tmp_path)], check=True,
                   capture_output=True)
    model = tmp_path / "sharpen_1x.pth"
    restored = lipsync_frames(frames, 25, speech(16 / 25), BASE, models=pipe.models, restore_model=model).frames
    assert np.any(restored != reference)
    assert changed_box(restored[3], frames[3]) is not None
    off = lipsync_frames(frames, 25, speech(16 / 25), replace(BASE, restore_strength=0.0), models=pipe.models,
                         restore_model=model).frames
    np.testing.assert_array_equal(off, reference)
    with pytest.raises(InputError, match="restoration model file not found"):
        lipsync_frames(frames, 25, speech(16 / 25), BASE, models=pipe.models, restore_model=tmp_path / "no.pth")


def test_search_controls_decide_which_faces_count(pipe, frames):
    too_big = replace(BASE, min_face_height=0.95)  # a face must fill 95 % of the frame height: none does
    with UNetCalls(pipe.models.unet) as calls:
        res = lipsync_frames(frames[:4], 25, speech(4 / 25), too_big, models=pipe.models)
    assert not res.has_face.any() and calls.shapes == [] and res.faceless == "no face in 4 of 4 frames: 0–3"
    np.testing.assert_array_equal(res.frames, frames[:4])
    elsewhere = replace(BASE, face_region=(0, 0, 100, 100))  # a corner without the face
    assert not lipsync_frames(frames[:2], 25, speech(2 / 25), elsewhere, models=pipe.models).has_face.any()
    mask = np.zeros((360, 640), np.float32)
    mask[:, 200:500] = 1.0  # a ComfyUI-style MASK around the face
    inside = replace(BASE, face_region=mask)
    assert lipsync_frames(frames[:2], 25, speech(2 / 25), inside, models=pipe.models).has_face.all()
    with pytest.raises(InputError, match="outside the 640x360 frame"):
        lipsync_frames(frames[:2], 25, speech(2 / 25), replace(BASE, face_region=(0, 0, 700, 100)),
                       models=pipe.models)


def test_silence_keep_leaves_the_face_still_where_the_audio_is_silent(pipe):
    frames = clip(40, 25)
    talk = speech(16 / 25)[0]
    audio = np.concatenate([talk, np.zeros(int(24 / 25 * 16000), np.float32)]), 16000  # 0.64 s speech, then silence
    keep = lipsync_frames(frames, 25, audio, replace(BASE, silence="keep"), models=pipe.models).frames
    sync = lipsync_frames(frames, 25, audio, BASE, models=pipe.models).frames
    changed = np.any(keep != frames, axis=(1, 2, 3))
    assert changed[:14].all() and not changed[22:].any()  # speech synced; deep in the pause the original face
    assert np.any(sync[22:] != frames[22:])  # the reference keeps moving the mouth through the pause
    from latentsync.silence import silence_weights

    weights = silence_weights(audio[0], 25, 40)
    fade = np.nonzero((weights > 0) & (weights < 1))[0]
    assert len(fade) >= 2  # the mouth settles into the original face over a few frames, not in one jump
    for j in fade:
        blend = frames[j] + weights[j] * (sync[j].astype(np.float32) - frames[j])
        assert np.abs(keep[j] - blend).max() <= 1.0, j


def test_preview_images_come_back_with_the_frames(pipe, frames):
    res = lipsync_frames(frames[:4], 25, speech(4 / 25), BASE, models=pipe.models, preview=True)
    assert res.preview.dtype == np.uint8 and res.preview.shape[0] == 4 and max(res.preview.shape[1:3]) <= 384
    assert res.faceless == ""


@pytest.mark.parametrize("bad, message", [({"blend": "smudge"}, "unknown blend 'smudge'"),
                                          ({"color_match": "lut"}, "unknown color_match 'lut'"),
                                          ({"feather_px": -1}, "feather_px must be a number of frame pixels >= 0"),
                                          ({"face_region": (10, 10, 5, 20)}, "is empty"),
                                          ({"silence": "mute"}, "silence must be one of"),
                                          ({"restore_strength": 2}, "restore_strength must be 0..1")])
def test_bad_control_values_are_clear_errors(bad, message):
    with pytest.raises(InputError, match=message):
        LipSyncSettings(**bad)
