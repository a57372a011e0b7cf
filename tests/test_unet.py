"""UNet3D: parity with the reference, official key layouts, strict loading, formats, dtypes, DeepCache."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentsync.config import build_unet, load_unet, load_unet_config
from latentsync.errors import CheckpointMismatchError, InputError, MissingWeightsError
from latentsync.models.loading import load_strict, read_state_dict
from latentsync.models.unet3d import DeepCacheState, UNet3DConditionModel
from tools.parity_checks import unet as unet_check


@pytest.fixture(scope="module")
def unet_dir(parity_dir):
    return parity_dir / "unet"


@pytest.fixture(scope="module")
def fixture_config(unet_dir):
    return json.loads((unet_dir / "config.json").read_text())


@pytest.fixture(scope="module")
def tiny_config(fixture_config):
    return {**fixture_config, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1}


@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    torch.manual_seed(0)
    model = UNet3DConditionModel(tiny_config).eval()
    with torch.no_grad():  # make the zero/one-initialised tensors matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.fixture(scope="module")
def case(unet_dir):
    return load_file(str(unet_dir / "case.safetensors"))


def _inputs(batch, frames, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 13, frames, h, w, generator=g), torch.randn(batch * frames, 50, 384, generator=g)


def test_parity_checker_passes(unet_dir):
    result = unet_check.check(unet_dir)
    assert result["ok"] is True, result
    assert result["max_abs_err"] <= 1e-4 and result["mean_abs_err"] <= 1e-5
    assert result["shape"] == [2, 4, 16, 8, 8]
    assert result["keys_512_ok"] and result["keys_256_ok"]


@pytest.mark.parametrize("version,keys_file,resolution", [("1.6", "unet_keys_512.json", 512),
                                                           ("1.5", "unet_keys_256.json", 256)])
def test_shipped_configs_have_the_official_key_layout(unet_dir, version, keys_file, resolution):
    config = load_unet_config(version)
    assert config["resolution"] == resolution and config["version"] == version
    assert config["block_out_channels"] == [320, 640, 1280, 1280]
    reference = json.loads((unet_dir / keys_file).read_text())
    model = build_unet(config)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == reference and list(ours) == list(reference)  # same keys, shapes and order
    assert len(ours) == 1246
    assert sum(v.numel() for v in model.state_dict().values()) == 1_267_944_644
    assert all(p.is_meta for p in model.parameters())  # nothing allocated


def test_load_unet_config_accepts_names_and_paths(tmp_path):
    assert load_unet_config("latentsync-1.5")["resolution"] == 256
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({**load_unet_config("1.6"), "block_out_channels": [32, 64, 64, 64]}))
    assert load_unet_config(path)["block_out_channels"] == [32, 64, 64, 64]
    with pytest.raises(InputError, match="1.6, 1.5"):
        load_unet_config("2.0")


def _strict_error(config, state_dict) -> str:
    with pytest.raises(CheckpointMismatchError) as info:
        load_strict(build_unet(config), state_dict, what="my_unet.pt", config_name="tiny")
    message = str(info.value)
    assert "my_unet.pt does not match config 'tiny'" in message
    return message


def test_strict_load_missing_key(tiny_model, tiny_config):
    sd = dict(tiny_model.state_dict())
    del sd["conv_out.bias"]
    message = _strict_error(tiny_config, sd)
    assert "1 missing keys" in message and "conv_out.bias" in message
    assert "unexpected" not in message and "wrong shape" not in message


def test_strict_load_unexpected_key(tiny_model, tiny_config):
    sd = {**tiny_model.state_dict(), "extra.weight": torch.zeros(3)}
    message = _strict_error(tiny_config, sd)
    assert "1 unexpected keys" in message and "extra.weight" in message and "missing" not in message


def test_strict_load_wrong_shape(tiny_model, tiny_config):
    sd = {**tiny_model.state_dict(), "conv_in.weight": torch.zeros(32, 9, 3, 3)}
    message = _strict_error(tiny_config, sd)
    assert "1 keys with the wrong shape" in message
    assert "conv_in.weight: expected [32, 13, 3, 3], got [32, 9, 3, 3]" in message


def test_strict_load_lists_only_the_first_few(tiny_model, tiny_config):
    sd = {k: v for k, v in tiny_model.state_dict().items() if not k.startswith("up_blocks.")}
    message = _strict_error(tiny_config, sd)
    n_missing = sum(k.startswith("up_blocks.") for k in tiny_model.state_dict())
    assert f"{n_missing} missing keys" in message and f"... and {n_missing - 5} more" in message
    assert len(re.findall(r"^    up_blocks\.", message, flags=re.M)) == 5


def test_wrong_config_pair_names_checkpoint_and_config(unet_dir):
    # the 32/64-channel fixture checkpoint against the real 1.6 config (320/640/1280 channels)
    with pytest.raises(CheckpointMismatchError) as info:
        load_unet(unet_dir / "latentsync_unet.pt", "1.6")
    message = str(info.value)
    assert message.startswith("latentsync_unet.pt does not match config 'latentsync-1.6'")
    assert "conv_in.weight: expected [320, 13, 3, 3], got [32, 13, 3, 3]" in message
    assert "down_blocks.2.resnets.0.conv_shortcut.weight" in message  # absent in the narrow checkpoint


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")


def test_checkpoint_formats_load_identically(unet_dir, fixture_config, tmp_path):
    official = read_state_dict(unet_dir / "latentsync_unet.pt")
    assert len(official) == 1244
    bare, safe = tmp_path / "bare" / "latentsync_unet.ckpt", tmp_path / "safe" / "latentsync_unet.safetensors"
    for path in (bare, safe):
        path.parent.mkdir()
        (path.parent / "unet_config.json").write_text(json.dumps(fixture_config))  # sidecar config
    torch.save(dict(official), bare)
    save_file({k: v.contiguous().clone() for k, v in official.items()}, str(safe))  # no shared storages
    reference = load_unet(unet_dir / "latentsync_unet.pt", fixture_config)
    for path in (bare, safe):
        model = load_unet(path, "1.6")  # the sidecar wins over the shipped config
        for (name, a), (_, b) in zip(reference.state_dict().items(), model.state_dict().items()):
            assert torch.equal(a, b), name
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_legacy_pickle_and_unsafe_pickle(tmp_path):
    state = {"a.weight": torch.arange(6.0).view(2, 3)[:, 1:]}  # a non-contiguous view
    legacy = tmp_path / "legacy.pt"
    torch.save({"state_dict": state}, legacy, _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    assert torch.equal(read_state_dict(legacy)["a.weight"], state["a.weight"])
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": state, "obj": InputError("x")}, unsafe)  # not loadable with weights_only=True
    with pytest.raises(CheckpointMismatchError, match="weights_only=True"):
        read_state_dict(unsafe)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "weird.pt"
    torch.save({"state_dict": {"a": 1}}, path)
    with pytest.raises(CheckpointMismatchError, match="does not hold a state dict"):
        read_state_dict(path)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 0.01), (torch.bfloat16, 0.06)])
def test_half_precision_forward_close_to_fp32(unet_dir, fixture_config, case, dtype, tol):
    model = load_unet(unet_dir / "latentsync_unet.pt", fixture_config, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    sample, ehs = case["sample"][:1, :, :4], case["encoder_hidden_states"][:4]
    reference = load_unet(unet_dir / "latentsync_unet.pt", fixture_config)
    with torch.inference_mode():
        expected = reference(sample, case["timestep"], ehs)
        out = model(sample.to(dtype), case["timestep"], ehs.to(dtype))
    assert out.dtype == dtype and out.shape == (1, 4, 4, 8, 8)
    err = (out.float() - expected).abs()
    assert torch.isfinite(out).all() and err.max().item() < tol, err.max().item()
    assert err.mean().item() < tol / 5


@pytest.mark.parametrize("h,w", [(6, 10), (9, 7)])
def test_non_square_latents_and_batch_independence(tiny_model, h, w):
    model = copy.deepcopy(tiny_model).double()  # float64: an exact property, free of float32 rounding
    sample, ehs = (t.double() for t in _inputs(2, 3, h, w))
    timestep = torch.tensor([951, 301])
    with torch.inference_mode():
        both = model(sample, timestep, ehs)
        first = model(sample[:1], timestep[:1], ehs[:3])
        second = model(sample[1:], 301, ehs[3:])
    assert both.shape == (2, 4, 3, h, w) and both.dtype == torch.float64
    torch.testing.assert_close(both[:1], first, atol=1e-10, rtol=0)
    torch.testing.assert_close(both[1:], second, atol=1e-10, rtol=0)
    assert (first - second).abs().max() > 1e-3  # different inputs really differ


def test_too_many_frames_is_a_clear_error(tiny_model):
    sample, ehs = _inputs(1, 25, 4, 4)
    with pytest.raises(InputError, match="at most 24 frames"), torch.inference_mode():
        tiny_model(sample, 1, ehs)


def test_deepcache_interval_1_equals_full_forward(tiny_model):
    cache = DeepCacheState(interval=1)
    for step, t in enumerate((951, 901)):
        sample, ehs = _inputs(1, 3, 8, 8, seed=step)
        with torch.inference_mode():
            full = tiny_model(sample, t, ehs)
            cached = tiny_model(sample, t, ehs, cache=cache, step_index=step)
        assert cache.last_was_full
        assert torch.equal(full, cached)


def test_deepcache_cheap_steps_reuse_deep_features(tiny_model):
    cache = DeepCacheState(interval=3)
    sample, ehs = _inputs(1, 3, 8, 8, seed=1)
    other, _ = _inputs(1, 3, 8, 8, seed=2)
    with torch.inference_mode():
        full = tiny_model(sample, 951, ehs, cache=cache, step_index=0)
        same = tiny_model(sample, 951, ehs, cache=cache, step_index=1)  # cheap, same inputs → same output
        assert not cache.last_was_full
        torch.testing.assert_close(same, full, atol=1e-6, rtol=0)
        cheap = tiny_model(other, 901, ehs, cache=cache, step_index=2)
        assert not cache.last_was_full
        exact = tiny_model(other, 901, ehs)
        assert (cheap - exact).abs().max() > 1e-4  # an approximation, not the full pass
        tiny_model(other, 851, ehs, cache=cache, step_index=3)
        assert cache.last_was_full  # every interval-th step is full
        bigger, ehs2 = _inputs(2, 3, 8, 8)
        tiny_model(bigger, 801, ehs2, cache=cache, step_index=4)
        assert cache.last_was_full  # a new batch shape never reuses stale features


def test_tiny_model_set_loads_through_the_real_path(tiny_models):
    """tools/make_tiny_models.py output: the sidecar unet_config.json is picked up by load_unet."""
    model = load_unet(tiny_models / "latentsync_unet.pt", "1.6", dtype=torch.float32)
    config = json.loads((tiny_models / "unet_config.json").read_text())
    assert model.config["block_out_channels"] == config["block_out_channels"] != [320, 640, 1280, 1280]
    sample, ehs = _inputs(1, 2, 8, 8)
    ehs = ehs[..., : config["cross_attention_dim"]]
    with torch.inference_mode():
        out = model(sample, 951, ehs)
    assert out.shape == (1, 4, 2, 8, 8) and torch.isfinite(out).all()
