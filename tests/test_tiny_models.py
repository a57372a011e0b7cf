"""tools/make_tiny_models.py: official formats, the layout find_models searches, loading through the real loaders."""

from __future__ import annotations

import json

import pytest
import torch

from latentsync.checkpoints import find_models
from tools.make_tiny_models import make_tiny_models, make_unet, tiny_unet_config


def test_layout_and_official_formats(tiny_models, parity_dir):
    paths = find_models("1.6", models_dir=tiny_models)
    assert paths.unet == tiny_models / "latentsync_unet.pt" and paths.whisper == tiny_models / "whisper" / "tiny.pt"
    assert paths.vae == tiny_models / "vae" and paths.unet_config == tiny_models / "unet_config.json"
    cfg = json.loads(paths.unet_config.read_text())
    assert cfg["resolution"] == 512 and cfg["version"] == "1.6" and cfg["block_out_channels"] == [32, 64, 64, 64]
    unet = torch.load(paths.unet, map_location="cpu", weights_only=True)
    assert set(unet) == {"global_step", "state_dict"} and unet["global_step"] == 0
    # same key names as the official layout (the parity UNet has the same narrow widths)
    ref = torch.load(parity_dir / "unet" / "latentsync_unet.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert list(unet["state_dict"]) == list(ref)
    assert unet["state_dict"]["conv_in.weight"].shape == ref["conv_in.weight"].shape == (32, 13, 3, 3)
    whisper = torch.load(paths.whisper, map_location="cpu", weights_only=True)
    ref = torch.load(parity_dir / "whisper" / "tiny_small.pt", map_location="cpu", weights_only=True)
    assert whisper["dims"] == ref["dims"]  # the parity set uses the same small dims
    assert {k: tuple(v.shape) for k, v in whisper["model_state_dict"].items()} == \
        {k: tuple(v.shape) for k, v in ref["model_state_dict"].items()}
    assert whisper["model_state_dict"]["encoder.conv1.weight"].dtype == torch.float16  # as OpenAI ships it
    vae_cfg = json.loads((paths.vae / "config.json").read_text())
    assert vae_cfg["_class_name"] == "AutoencoderKL" and len(vae_cfg["block_out_channels"]) == 4
    assert vae_cfg["latent_channels"] == 4 and vae_cfg["scaling_factor"] == 0.18215


def test_loads_through_the_real_loaders(tiny_models):
    from latentsync.models import load_models
    from latentsync.models.vae import decode, encode

    models = load_models(find_models("1.6", models_dir=tiny_models))
    assert models.resolution == 512 and models.audio_encoder.dim == 64
    with torch.inference_mode():
        feats = models.audio_encoder.hidden_states(torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0)))
        assert feats.shape == (1, 1500, 5, 64) and torch.isfinite(feats).all()
        sample = torch.randn(2, 13, 2, 8, 8, generator=torch.Generator().manual_seed(1))
        out = models.unet(sample, torch.tensor(951), encoder_hidden_states=feats[0, :40].reshape(4, 50, 64) * 0.1)
        out = getattr(out, "sample", out)
        assert out.shape == (2, 4, 2, 8, 8) and torch.isfinite(out).all() and 0.05 < out.std() < 10
    img = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(2)) * 2 - 1
    lat = encode(models.vae, img, torch.Generator().manual_seed(3))
    assert lat.shape == (2, 4, 8, 12) and torch.isfinite(lat).all()  # real 8x down-sampling, 4 channels
    dec = decode(models.vae, lat)
    assert dec.shape == img.shape and torch.isfinite(dec).all() and dec.abs().max() < 100


def test_deterministic_and_version_15(tmp_path, tiny_models):
    a = make_tiny_models(tmp_path / "a", "1.5", seed=0)
    b = make_tiny_models(tmp_path / "b", "1.5", seed=0)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert [p.relative_to(b) for p in sorted(b.rglob("*")) if p.is_file()] == files
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    cfg = tiny_unet_config("1.5", 64)
    w0, w1 = make_unet(cfg, torch.Generator().manual_seed(0)), make_unet(cfg, torch.Generator().manual_seed(1))
    assert not torch.equal(w0["conv_in.weight"], w1["conv_in.weight"])
    assert torch.equal(w0["down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0"
                          ".pos_encoder.pe"], w1["down_blocks.0.motion_modules.0.temporal_transformer."
                                                 "transformer_blocks.0.attention_blocks.0.pos_encoder.pe"])
    paths = find_models("1.5", models_dir=a)
    assert paths.unet == a / "latentsync-1.5" / "latentsync_unet.pt" and paths.vae == a / "vae"
    assert json.loads(paths.unet_config.read_text())["resolution"] == 256
    # 1.5 and 1.6 weights of one seed are the same numbers; only the config's resolution differs
    assert (a / "whisper" / "tiny.pt").read_bytes() == (tiny_models / "whisper" / "tiny.pt").read_bytes()
    with pytest.raises(Exception):
        find_models("1.6", models_dir=a, search_dirs=())  # a 1.5-only folder has no 1.6 UNet
