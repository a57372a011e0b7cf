"""Audio: any waveform -> 16 kHz mono, log-mel, Whisper features (reference / stitched), per-frame chunks."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from latentsync import audio as A
from latentsync.errors import InputError
from latentsync.models.whisper import load_whisper_encoder


@pytest.fixture(scope="module")
def encoder(parity_dir):
    return load_whisper_encoder(parity_dir / "whisper" / "tiny_small.pt")


@pytest.fixture(scope="module")
def speech(parity_dir) -> np.ndarray:
    with wave.open(str(parity_dir / "whisper" / "speech.wav")) as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return A.to_mono_16k(raw, 16000)


def _dominant_hz(x: np.ndarray, rate: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


# ------------------------------------------------------------------------------------------- to_mono_16k


def test_int16_16k_is_exact(speech, parity_dir):
    with wave.open(str(parity_dir / "whisper" / "speech.wav")) as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    assert speech.dtype == np.float32 and speech.shape == raw.shape
    assert np.array_equal(speech, raw.astype(np.float32) / 32768.0)


def test_resample_44k_stereo_int16_float_and_comfy():
    sr, secs = 44100, 1.5
    t = np.arange(int(sr * secs)) / sr
    sine = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    stereo_f = np.stack([sine, sine]).astype(np.float32)  # [C, T]
    stereo_i = (stereo_f * 32767).astype(np.int16)
    comfy = torch.from_numpy(stereo_f)[None]  # ComfyUI AUDIO waveform [1, C, T]
    outs = [A.to_mono_16k(stereo_i, sr), A.to_mono_16k(stereo_f.astype(np.float64), sr),
            A.to_mono_16k(comfy, sr), A.to_mono_16k(stereo_i.T.copy(), sr)]  # (T, C) layout too
    for out in outs:
        assert out.dtype == np.float32 and out.ndim == 1
        assert abs(len(out) - 24000) <= 1
        assert abs(_dominant_hz(out) - 440.0) < 1.0
        assert abs(np.abs(out[1000:-1000]).max() - 0.5) < 0.01  # amplitude kept
    ref = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(len(outs[2])) / 16000)
    assert np.abs(outs[2][500:-500] - ref[500:-500]).max() < 1e-3  # phase-true, no delay
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-4)


def test_int_scaling_and_downmix():
    assert np.allclose(A.to_mono_16k(np.array([0, 128, 255], np.uint8), 16000), [-1.0, 0.0, 127 / 128])
    assert np.allclose(A.to_mono_16k(np.array([-2**31, 2**30], np.int32), 16000), [-1.0, 0.5])
    lr = np.array([[0.2, 0.4], [0.6, 0.0]], np.float32)
    assert np.allclose(A.to_mono_16k(lr, 16000), [0.4, 0.2])
    assert np.array_equal(A.to_mono_16k(np.zeros(16000, np.float32), 16000), np.zeros(16000))  # silence ok


@pytest.mark.parametrize("samples, rate, message", [
    (np.zeros(0, np.float32), 16000, "empty"),
    (np.zeros((2, 0), np.int16), 44100, "empty"),
    (np.array([0.1, np.nan, 0.2], np.float32), 16000, "NaN or infinite"),
    (torch.tensor([[0.1, float("inf")]]), 16000, "NaN or infinite"),
    (np.array(["a", "b"]), 16000, "integers or floats"),
    (np.zeros((1, 1, 2, 100)), 16000, "shape"),
    (np.zeros((2, 2, 100)), 16000, "batch of 2"),
    (np.zeros(100), 0, "not plausible"),
    (np.zeros(100), 44100.5, "whole number"),
    (np.zeros(100), "44100", "must be a number"),
    (np.zeros(100), float("nan"), "whole number"),
])
def test_input_errors(samples, rate, message):
    with pytest.raises(InputError, match=message):
        A.to_mono_16k(samples, rate)


def test_audio_clip_keeps_original():
    stereo = (np.random.default_rng(0).normal(0, 0.1, (2, 44100))).astype(np.float32)
    clip = A.AudioClip.from_comfy({"waveform": torch.from_numpy(stereo)[None], "sample_rate": 44100})
    assert clip.sample_rate == 44100 and clip.n_channels == 2 and clip.duration == pytest.approx(1.0)
    longer, shorter = clip.fit(1.5), clip.fit(0.25)
    assert longer.samples.shape == (2, 66150) and np.array_equal(longer.samples[:, :44100], stereo)
    assert not longer.samples[:, 44100:].any()
    assert shorter.samples.shape == (2, 11025) and np.array_equal(shorter.samples, stereo[:, :11025])
    assert len(clip.mono_16k()) == 16000
    for bad in ({"waveform": torch.zeros(1, 1, 10)}, [1, 2], None):
        with pytest.raises(InputError, match="AUDIO"):
            A.AudioClip.from_comfy(bad)


# ------------------------------------------------------------------------------------------- log-mel / features


def test_log_mel_shape_and_silence():
    m = A.log_mel(np.zeros(16000, np.float32))
    assert m.shape == (80, 100) and m.dtype == torch.float32
    assert torch.allclose(m, torch.full_like(m, -1.5))  # log10(1e-10) = -10 -> (-10 + 4) / 4
    assert torch.equal(A.log_mel(torch.zeros(16000)), m)
    with pytest.raises(InputError, match="too short"):
        A.log_mel(np.zeros(100, np.float32))


def test_log_mel_blocks_equal_whole(speech):
    x = speech[:16000 * 5]
    torch.testing.assert_close(A.log_mel(x, block_frames=137), A.log_mel(x), atol=1e-5, rtol=0)


def test_short_clip_modes_identical_and_batching(encoder, speech):
    x = speech[:16000 * 12 + 123]
    ref = A.audio_features(encoder, x, mode="reference")
    assert ref.shape == (len(x) // 320, 5, 64)
    assert torch.equal(A.audio_features(encoder, x), ref)  # <= 30 s: one window in both modes
    with pytest.raises(ValueError, match="mode"):
        A.audio_features(encoder, x, mode="fast")


def test_stitched_is_continuous_at_30s_and_60s(encoder, speech):
    x = np.concatenate([speech, speech])  # 68 s of real speech
    ref = A.audio_features(encoder, x, mode="reference")
    st = A.audio_features(encoder, x, batch=3)
    assert ref.shape == st.shape == (len(x) // 320, 5, 64)
    # rows 1275..2224 (25.5 s .. 44.5 s) are the centre of the window starting at 20 s, run alone here
    alone = encoder.hidden_states(A.log_mel(x)[None, :, 2000:5000])[0]
    torch.testing.assert_close(st[1275:2225], alone[275:1225], atol=1e-5, rtol=1e-5)
    # before the first stitch (25 s minus the half cross-fade) both modes are the same window: identical
    assert torch.equal(st[:1225], ref[:1225])
    seams = [1500, 3000]  # rows at 30 s and 60 s

    def step(f):  # largest change between consecutive 20 ms rows
        return (f[1:] - f[:-1]).abs().amax(dim=(1, 2))

    for name, f in (("reference", ref), ("stitched", st)):
        s = step(f)
        near = torch.zeros_like(s, dtype=torch.bool)
        for r in seams + [1250, 2250]:  # + the stitched cuts (windows at 0, 20, 40 s cut at 25 s and 45 s)
            near[r - 100:r + 100] = True
        typical = s[~near].quantile(0.99).item()
        at_seam = max(s[r - 1].item() for r in seams)
        if name == "reference":
            assert at_seam > 1.6 * typical  # the glitch: a jump twice the usual row-to-row change
        else:
            assert s[near].max().item() < 1.15 * typical, (s[near].max().item(), typical)
            assert at_seam < typical


# ------------------------------------------------------------------------------------------- frame chunks


def test_chunk_rows_reference_rule_at_25fps():
    n_rows = 1701
    n = n_rows // 2 + 2
    rows = A.chunk_rows(n, 25, n_rows)
    i, k = np.arange(n)[:, None], np.arange(10)[None]
    assert np.array_equal(rows, np.clip(2 * i - 4 + k, 0, n_rows - 1))
    assert np.array_equal(A.chunk_rows(5, 29.97, 10_000)[:, 4], np.round(np.arange(5) * 50 / 29.97))


def test_frame_chunks_layout_and_clamp():
    t, layers, c = 30, 5, 3
    feats = torch.arange(t * layers * c, dtype=torch.float32).reshape(t, layers, c)
    ch = A.frame_chunks(feats, 20, 25)  # more frames than the audio covers
    assert ch.shape == (20, 50, 3)
    for i in (0, 7, 19):
        rows = np.clip(2 * i - 4 + np.arange(10), 0, t - 1)
        for k in range(10):
            for layer in range(layers):
                assert torch.equal(ch[i, k * layers + layer], feats[rows[k], layer])  # layer index fastest
    assert torch.equal(ch[19], feats[t - 1].repeat(10, 1))
    assert A.frame_chunks(feats, 0, 25).shape == (0, 50, 3)
    with pytest.raises(InputError, match="Frame rate"):
        A.frame_chunks(feats, 3, 0)


@pytest.mark.parametrize("fps", [24, 30, 60])
def test_click_lands_in_its_frames_chunk_centre(encoder, fps):
    # clicks exactly at some frames' timestamps; the encoder's first hidden state (conv stem, positional
    # embedding removed) peaks at the click's row, which must be row 4 (the centre) of that frame's chunk
    frames = [k for k in range(fps // 2, 5 * fps) if abs(50 * k / fps - round(50 * k / fps)) <= 0.2][::3][:5]
    x = np.random.default_rng(1).normal(0, 1e-4, 6 * 16000).astype(np.float32)
    for k in frames:
        x[int(round(k / fps * 16000))] += 0.9
    f = A.audio_features(encoder, x)
    stem = f[:, 0] - encoder.encoder.embed_positions.weight[:f.shape[0]]
    score = (stem - stem.median(dim=0).values).abs().amax(-1)
    peaks = sorted(torch.topk(score, len(frames)).indices.tolist())
    chunks = A.frame_chunks(f, 6 * fps, fps)
    rows = A.chunk_rows(6 * fps, fps, f.shape[0])
    for k, peak in zip(frames, peaks):
        assert peak == round(50 * k / fps)
        assert rows[k][4] == peak
        assert torch.equal(chunks[k, 4 * 5], f[peak, 0])


@pytest.mark.parametrize("n_mel", [401, 3000, 3001, 5000, 5001, 6806, 12345])
def test_stitch_plan_covers_every_row_once(n_mel):
    for mode in ("reference", "stitched"):
        total = np.zeros(n_mel // 2 + 1500)
        for start, weight in A._plan(n_mel, 3000, mode):
            assert start % 2 == 0 and start < n_mel
            total[start // 2:start // 2 + 1500] += weight
        np.testing.assert_allclose(total[:n_mel // 2], 1.0, atol=1e-6)
        assert not total[n_mel // 2:].any()


@pytest.mark.parametrize("n_samples", [480_200, 480_319, 960_170])
def test_reference_mode_last_window_of_one_mel_frame(encoder, n_samples):
    """A clip whose last 30 s window holds a single mel frame adds no row (T = n // 320), as the reference."""
    x = np.resize(np.sin(np.arange(4000, dtype=np.float32) * 0.05) * 0.3, n_samples).astype(np.float32)
    feats = A.audio_features(encoder, x, mode="reference", batch=8)
    assert feats.shape[0] == n_samples // 320
    assert torch.isfinite(feats).all()
