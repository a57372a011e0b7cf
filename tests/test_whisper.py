"""Whisper encoder: parity with the reference fixture, OpenAI .pt vs Hugging Face folder, strict loading errors."""

from __future__ import annotations

import torch
import pytest

from latentsync.errors import CheckpointMismatchError, MissingWeightsError
from latentsync.models.whisper import (encoder_state_to_openai, load_whisper_encoder, openai_to_hf_key,
                                       whisper_config_from_dims)


@pytest.fixture(scope="module")
def ckpt_path(parity_dir):
    return parity_dir / "whisper" / "tiny_small.pt"


@pytest.fixture(scope="module")
def encoder(ckpt_path):
    return load_whisper_encoder(ckpt_path)


@pytest.fixture(scope="module")
def mel():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 80, 3000, generator=g) * 0.5


@pytest.fixture(scope="module")
def states(encoder, mel):
    return encoder.hidden_states(mel)


def _openai_ckpt(ckpt_path) -> dict:
    ckpt = torch.load(ckpt_path, weights_only=True)
    return {"dims": dict(ckpt["dims"]),
            "model_state_dict": {k: v.contiguous().clone() for k, v in ckpt["model_state_dict"].items()}}


def test_parity_fixture(parity_dir):
    from tools.parity_checks import whisper as check_whisper

    res = check_whisper.check(parity_dir / "whisper")
    assert res["ok"], res
    assert res["max_abs_err"] <= 1e-4 and res["mel_max_abs_err"] <= 5e-4
    assert res["chunk_index_equal"] and res["stored_chunks_bitwise"]
    assert res["n_chunks"] == res["n_chunks_rule_T//2+2"]


def test_dims_read_from_file(encoder):
    assert encoder.dim == 64 and encoder.n_layers == 4 and encoder.n_ctx == 1500 and encoder.n_mels == 80
    assert encoder.encoder.layers[0].self_attn.num_heads == 2
    assert encoder.dtype == torch.float32


def test_hidden_states_shape_and_no_ln_post(encoder, mel, states):
    h = states
    assert h.shape == (1, 1500, 5, 64)
    assert torch.isfinite(h).all()
    # transformers' own forward returns ln_post(last block): ours must be the last block WITHOUT it
    with torch.inference_mode():
        last = encoder.encoder(mel).last_hidden_state
    assert not torch.allclose(last, h[:, :, -1], atol=1e-2)
    with torch.inference_mode():
        torch.testing.assert_close(encoder.encoder.layer_norm(h[:, :, -1]), last, atol=1e-5, rtol=1e-5)
    # state 0 = conv stem + positional embedding (standard sinusoids in the fixture)
    pos = encoder.encoder.embed_positions.weight
    assert torch.allclose(pos[0, :32], torch.zeros(32)) and torch.allclose(pos[0, 32:], torch.ones(32))
    with pytest.raises(ValueError, match="3000"):
        encoder.hidden_states(mel[:, :, :2999])


def test_fp16_checkpoint_is_cast(tmp_path, ckpt_path, states, mel):
    ckpt = _openai_ckpt(ckpt_path)
    ckpt["model_state_dict"] = {k: v.half() for k, v in ckpt["model_state_dict"].items()}
    torch.save(ckpt, tmp_path / "tiny.pt")
    enc16 = load_whisper_encoder(tmp_path)  # a folder holding tiny.pt works too
    assert enc16.dtype == torch.float32
    diff = (enc16.hidden_states(mel) - states).abs().max().item()
    assert 0 < diff < 0.05


def test_hf_folder_matches_openai_pt(tmp_path, ckpt_path, encoder, mel, states):
    from transformers import WhisperForConditionalGeneration, WhisperModel

    ckpt = _openai_ckpt(ckpt_path)
    config = whisper_config_from_dims({**ckpt["dims"], "n_vocab": 64})  # the decoder is irrelevant here
    enc_state = {openai_to_hf_key(k[len("encoder."):]): v for k, v in ckpt["model_state_dict"].items()
                 if k.startswith("encoder.")}
    for cls, name in ((WhisperForConditionalGeneration, "hf_cg"), (WhisperModel, "hf_model")):
        model = cls(config)
        target = model.model.encoder if cls is WhisperForConditionalGeneration else model.encoder
        target.load_state_dict(enc_state, strict=True)
        model.save_pretrained(tmp_path / name)
        hf = load_whisper_encoder(tmp_path / name)
        assert hf.dim == encoder.dim and hf.n_layers == encoder.n_layers
        assert torch.equal(hf.hidden_states(mel), states), name
    # the mapping round-trips: our encoder written back under OpenAI names equals the file's encoder keys
    back = encoder_state_to_openai(encoder.encoder)
    orig = {k: v for k, v in ckpt["model_state_dict"].items() if k.startswith("encoder.")}
    assert set(back) == set(orig) and all(torch.equal(back[k], orig[k]) for k in orig)


@pytest.mark.parametrize("edit, expect", [
    ("drop", ["1 missing keys (in the model, not in the checkpoint):\n    encoder.blocks.0.attn.key.weight"]),
    ("extra", ["1 unexpected keys (in the checkpoint, not in the model):\n    encoder.blocks.0.attn.key.bias"]),
    ("shape", ["1 keys with the wrong shape:\n    encoder.conv1.weight: expected [64, 80, 3], got [64, 80, 5]"]),
    ("layers", ["4 unexpected keys", "missing", "layers=5"]),
])
def test_key_mismatch_is_readable(tmp_path, ckpt_path, edit, expect):
    ckpt = _openai_ckpt(ckpt_path)
    sd = ckpt["model_state_dict"]
    if edit == "drop":
        del sd["encoder.blocks.0.attn.key.weight"]
    elif edit == "extra":
        sd["encoder.blocks.0.attn.key.bias"] = torch.zeros(64)
    elif edit == "shape":
        sd["encoder.conv1.weight"] = torch.zeros(64, 80, 5)
    else:  # dims say 5 layers, the file has 4
        ckpt["dims"]["n_audio_layer"] = 5
        sd.update({k.replace("blocks.3.", "blocks.9."): v for k, v in sd.items() if "encoder.blocks.3.mlp." in k})
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_whisper_encoder(tmp_path / "bad.pt")
    for text in expect:
        assert text in str(info.value)


def test_decoder_keys_are_ignored(tmp_path, ckpt_path, states, mel):
    ckpt = _openai_ckpt(ckpt_path)
    ckpt["model_state_dict"] = {k: v for k, v in ckpt["model_state_dict"].items() if k.startswith("encoder.")}
    ckpt["model_state_dict"]["decoder.something.weird"] = torch.zeros(3)
    torch.save(ckpt, tmp_path / "enc_only.pt")
    assert torch.equal(load_whisper_encoder(tmp_path / "enc_only.pt").hidden_states(mel), states)


def test_bad_files(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        load_whisper_encoder(tmp_path / "nope.pt")
    with pytest.raises(MissingWeightsError, match="neither"):
        load_whisper_encoder(tmp_path)
    torch.save({"state_dict": {}}, tmp_path / "unet_like.pt")
    with pytest.raises(CheckpointMismatchError, match="not an OpenAI Whisper checkpoint"):
        load_whisper_encoder(tmp_path / "unet_like.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="garbage.pt could not be read as a PyTorch checkpoint"):
        load_whisper_encoder(tmp_path / "garbage.pt")
    (tmp_path / "hf").mkdir()
    whisper_config_from_dims({"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2,
                              "n_audio_layer": 4, "n_vocab": 100, "n_text_ctx": 8, "n_text_state": 64,
                              "n_text_head": 2, "n_text_layer": 1}).save_pretrained(tmp_path / "hf")
    with pytest.raises(MissingWeightsError, match="model.safetensors"):
        load_whisper_encoder(tmp_path / "hf")


def test_checker_reads_shapes_from_files(tmp_path, parity_dir):
    """Another fixture set of the same format (width 96, 3 heads, 12.5 s of audio): the checker hard-codes
    nothing. Expected values here come from our own code, so this checks generality, not numerics."""
    import wave

    import numpy as np
    from safetensors.torch import save_file
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from latentsync import audio as A
    from tools.parity_checks import whisper as check_whisper

    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 96, "n_audio_head": 3, "n_audio_layer": 4,
            "n_vocab": 64, "n_text_ctx": 8, "n_text_state": 96, "n_text_head": 3, "n_text_layer": 1}
    torch.manual_seed(7)
    state = encoder_state_to_openai(WhisperEncoder(whisper_config_from_dims(dims)))
    torch.save({"dims": dims, "model_state_dict": state}, tmp_path / "tiny_other.pt")
    with wave.open(str(parity_dir / "whisper" / "speech.wav")) as w:
        raw = w.readframes(16000 * 12 + 8000)
    with wave.open(str(tmp_path / "clip.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(raw)
    x = A.to_mono_16k(np.frombuffer(raw, np.int16), 16000)
    feats = A.audio_features(load_whisper_encoder(tmp_path / "tiny_other.pt"), x, mode="reference")
    t = feats.shape[0]
    n = t // 2 + 2
    index = np.clip(2 * np.arange(n)[:, None] - 4 + np.arange(10)[None], 0, t - 1)
    frames = torch.tensor([0, 1, 150, n - 1])
    cols = torch.arange(0, 40)
    save_file({"whole_features": feats, "chunk_index": torch.from_numpy(index), "chunk_frames": frames,
               "chunks": feats[torch.from_numpy(index)[frames].reshape(-1)].reshape(len(frames), 50, 96),
               "mel_cols": cols, "mel": A.log_mel(x)[:, cols].contiguous()}, str(tmp_path / "features.safetensors"))
    res = check_whisper.check(tmp_path)
    assert res["ok"], res
    assert res["features_shape"] == [t, 5, 96] and res["n_chunks"] == n == 314
