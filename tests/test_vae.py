"""VAE loading (diffusers folder, single LDM / diffusers file), strictness, and the sliced encode/decode helpers."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from latentsync.errors import CheckpointMismatchError, MissingWeightsError
from latentsync.models import vae as V

TINY = dict(block_out_channels=[8, 16, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, norm_num_groups=8, latent_channels=4,
            sample_size=32)


def diffusers_to_ldm_vae(state_dict, n_blocks: int = 4) -> dict:
    """A diffusers AutoencoderKL state dict in the original LDM layout (attention weights as 1x1 convs), the form
    of single-file VAEs such as vae-ft-mse-840000-ema-pruned.safetensors."""
    out = {}
    for key, value in state_dict.items():
        name = V.ldm_vae_key(key, n_blocks)
        if ".mid.attn_1." in name and name.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[name] = value
    return out


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    from diffusers import AutoencoderKL

    d = tmp_path_factory.mktemp("vae")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoencoderKL(**TINY).eval()
    model.save_pretrained(str(d / "vae"))
    ldm = diffusers_to_ldm_vae(model.state_dict())
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(d / "vae-ft-mse-tiny.safetensors"))
    torch.save({"state_dict": {"first_stage_model." + k: v for k, v in ldm.items()},
                "global_step": 1}, d / "sd-full.ckpt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "diffusers-format.safetensors"))
    return d, model


def test_shipped_config_is_sd_vae_ft_mse():
    cfg = V.load_vae_config()
    assert cfg["block_out_channels"] == [128, 256, 512, 512] and cfg["latent_channels"] == 4
    assert cfg["scaling_factor"] == V.VAE_SCALING == 0.18215 and V.VAE_SHIFT == 0
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    with init_empty_weights():
        sd = AutoencoderKL.from_config({k: v for k, v in cfg.items() if not k.startswith("_")}).state_dict()
    assert len(sd) == 248 and sum(v.numel() for v in sd.values()) == 83_653_863
    # every diffusers key has a distinct LDM name in the layout of vae-ft-mse-840000-ema-pruned
    ldm = {V.ldm_vae_key(k) for k in sd}
    assert len(ldm) == 248
    assert {"encoder.down.0.block.0.norm1.weight", "decoder.mid.attn_1.q.weight", "decoder.up.3.block.2.conv2.bias",
            "encoder.down.1.block.0.nin_shortcut.weight", "decoder.up.1.upsample.conv.weight", "encoder.norm_out.weight", "post_quant_conv.weight"} <= ldm


def test_folder_and_single_files_give_identical_outputs(tiny_vae):
    d, model = tiny_vae
    cfg = d / "vae" / "config.json"
    loaded = [V.load_vae(d / "vae"), V.load_vae(d / "vae-ft-mse-tiny.safetensors", config=cfg),
              V.load_vae(d / "sd-full.ckpt", config=cfg), V.load_vae(d / "diffusers-format.safetensors", config=cfg)]
    x = torch.rand(3, 3, 32, 48, generator=torch.Generator().manual_seed(3)) * 2 - 1
    lat = [V.encode(m, x, torch.Generator().manual_seed(7)) for m in loaded]
    dec = [V.decode(m, lat[0]) for m in loaded]
    for a, b in zip(lat[1:], dec[1:]):
        assert torch.equal(a, lat[0]) and torch.equal(b, dec[0])
    # the same numbers as diffusers' own sampling: (latent_dist.sample(generator) - 0) * 0.18215
    with torch.no_grad():
        ref = model.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(7)) * 0.18215
        ref_dec = model.decode(lat[0] / 0.18215).sample
    assert torch.equal(lat[0], ref) and torch.equal(dec[0], ref_dec)
    assert lat[0].shape == (3, 4, 4, 6) and dec[0].shape == (3, 3, 32, 48)
    assert not loaded[0].training and loaded[0].dtype == torch.float32


def test_slicing_does_not_change_results(tiny_vae):
    d, _ = tiny_vae
    vae = V.load_vae(d / "vae")
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    full = V.encode(vae, x, torch.Generator().manual_seed(2))
    sliced = V.encode(vae, x, torch.Generator().manual_seed(2), slice_size=2)
    assert torch.allclose(full, sliced, atol=1e-5)
    assert not torch.equal(full, V.encode(vae, x, torch.Generator().manual_seed(3)))  # the sample is random
    assert torch.allclose(V.decode(vae, full), V.decode(vae, full, slice_size=2), atol=1e-5)


def test_dtype_and_missing_key_never_random(tiny_vae, tmp_path):
    d, _ = tiny_vae
    half = V.load_vae(d / "vae", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    ldm = diffusers_to_ldm_vae(V.load_vae(d / "vae").state_dict())
    del ldm["decoder.mid.attn_1.q.weight"]
    ldm["decoder.mid.attn_1.extra.weight"] = torch.zeros(2)
    ldm["decoder.unknown.weight"] = torch.zeros(2)
    ldm["encoder.conv_in.bias"] = torch.zeros(5)
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointMismatchError) as e:
        V.load_vae(tmp_path / "broken.safetensors", config=d / "vae" / "config.json")
    msg = str(e.value)
    assert "broken.safetensors" in msg
    assert "1 missing keys (in the model, not in the checkpoint):\n    decoder.mid_block.attentions.0.to_q.weight" in msg
    assert "decoder.unknown.weight" in msg and "attentions.0.extra.weight" in msg and "2 unexpected keys" in msg
    assert "1 keys with the wrong shape:\n    encoder.conv_in.bias: expected [8], got [5]" in msg


def test_real_config_against_tiny_file_is_a_mismatch(tiny_vae):
    d, _ = tiny_vae
    with pytest.raises(CheckpointMismatchError, match="keys with the wrong shape"):
        V.load_vae(d / "vae-ft-mse-tiny.safetensors")  # our shipped full-size config


def test_missing_paths(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        V.load_vae(tmp_path / "nope.safetensors")
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(MissingWeightsError, match="incomplete"):
        V.load_vae(tmp_path / "vae")
    with pytest.raises(ValueError):
        V.encode(None, torch.zeros(3, 8, 8))


def test_full_size_ldm_layout_converts_exactly():
    """The real sd-vae-ft-mse in LDM names (as in vae-ft-mse-840000-ema-pruned, here on the meta device) converts
    to exactly our model's keys and shapes; training leftovers of .ckpt files are ignored."""
    cfg = {k: v for k, v in V.load_vae_config().items() if not k.startswith("_")}
    model = V._build_empty(cfg)
    sd = model.state_dict()
    ldm = diffusers_to_ldm_vae(sd)
    assert ldm["decoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    ldm["model_ema.decay"] = torch.empty(())
    converted, unplaced = V.to_diffusers_vae_state_dict({"first_stage_model." + k: v for k, v in ldm.items()}, cfg)
    assert unplaced == [] and set(converted) == set(sd)
    assert all(converted[k].shape == sd[k].shape for k in sd)
