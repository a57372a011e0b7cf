"""Write a complete random-weight LatentSync model set, in the official formats and the layout find_models searches.

    python tools/make_tiny_models.py DIR [--version 1.6|1.5] [--seed N]

Layout (1.6)::

    DIR/latentsync_unet.pt      {"global_step": 0, "state_dict": ...}  official UNet key names, narrow channels
    DIR/unet_config.json        the shipped config with narrow widths (same structure, real resolution)
    DIR/whisper/tiny.pt         {"dims": ..., "model_state_dict": ...}  OpenAI names, small dims, float16
    DIR/vae/                    diffusers AutoencoderKL folder (4 blocks → 8x down-sampling, 4 latent channels)

For 1.5 the UNet and its config go to ``DIR/latentsync-1.5/`` (whisper/ and vae/ stay at the root), exactly where
find_models looks. Weights are deterministic for a seed and scaled like a default initialisation, so the
pipeline's outputs stay finite. These models compute nothing meaningful: they exist for tests and for trying the
pack without the real multi-GB weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch


TINY_UNET = {"block_out_channels": [32, 64, 64, 64]}
TINY_WHISPER_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2, "n_audio_layer": 4,
                     "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 64, "n_text_head": 2, "n_text_layer": 1}
TINY_VAE = {"block_out_channels": [8, 16, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 1, "norm_num_groups": 8,
            "latent_channels": 4, "in_channels": 3, "out_channels": 3, "act_fn": "silu", "sample_size": 256,
            "scaling_factor": 0.18215}


def _random_like(name: str, shape, gen: torch.Generator) -> torch.Tensor:
    """Default-init-like values: weights N(0, 1/fan_in), norm scales 1 + N(0, 0.02), biases N(0, 0.02)."""
    shape = tuple(shape)
    if len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    noise = torch.randn(shape, generator=gen) * 0.02
    return noise + 1.0 if name.endswith("weight") else noise


def tiny_unet_config(version: str, audio_dim: int) -> dict:
    from latentsync.config import load_unet_config

    cfg = {k: v for k, v in load_unet_config(version).items() if not k.startswith("_")}
    cfg.update(TINY_UNET, cross_attention_dim=audio_dim, name=f"tiny-latentsync-{version}")
    return cfg


def make_unet(config: dict, gen: torch.Generator) -> dict:
    from latentsync.config import build_unet

    model = build_unet(config)
    state = {}
    for name, t in model.state_dict().items():  # parameters are on the meta device; buffers (pe tables) are real
        state[name] = _random_like(name, t.shape, gen) if t.is_meta else t.detach().clone().float()
    return state


def _sinusoids(length: int, channels: int) -> torch.Tensor:
    inc = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def _whisper_block(prefix: str, s: int, cross: bool) -> dict:
    shapes = {}
    for attn in ("attn", "cross_attn") if cross else ("attn",):
        for p in ("query", "value", "out"):
            shapes[f"{prefix}.{attn}.{p}.weight"], shapes[f"{prefix}.{attn}.{p}.bias"] = (s, s), (s,)
        shapes[f"{prefix}.{attn}.key.weight"] = (s, s)
        shapes[f"{prefix}.{attn}_ln.weight"], shapes[f"{prefix}.{attn}_ln.bias"] = (s,), (s,)
    shapes.update({f"{prefix}.mlp.0.weight": (4 * s, s), f"{prefix}.mlp.0.bias": (4 * s,),
                   f"{prefix}.mlp.2.weight": (s, 4 * s), f"{prefix}.mlp.2.bias": (s,),
                   f"{prefix}.mlp_ln.weight": (s,), f"{prefix}.mlp_ln.bias": (s,)})
    return shapes


def make_whisper(dims: dict, gen: torch.Generator) -> dict:
    """An OpenAI-format Whisper state dict (encoder + decoder), float16 like OpenAI's published files."""
    s, t = dims["n_audio_state"], dims["n_text_state"]
    state = {"encoder.positional_embedding": _sinusoids(dims["n_audio_ctx"], s)}
    shapes = {"encoder.conv1.weight": (s, dims["n_mels"], 3), "encoder.conv1.bias": (s,),
              "encoder.conv2.weight": (s, s, 3), "encoder.conv2.bias": (s,)}
    for i in range(dims["n_audio_layer"]):
        shapes.update(_whisper_block(f"encoder.blocks.{i}", s, cross=False))
    shapes.update({"encoder.ln_post.weight": (s,), "encoder.ln_post.bias": (s,),
                   "decoder.token_embedding.weight": (dims["n_vocab"], t),
                   "decoder.positional_embedding": (dims["n_text_ctx"], t)})
    for i in range(dims["n_text_layer"]):
        shapes.update(_whisper_block(f"decoder.blocks.{i}", t, cross=True))
    shapes.update({"decoder.ln.weight": (t,), "decoder.ln.bias": (t,)})
    for name, shape in shapes.items():
        state[name] = _random_like(name, shape, gen)
    return {k: v.to(torch.float16) for k, v in state.items()}


def make_vae(dest: Path, seed: int) -> None:
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):  # default init, seeded, without touching the caller's RNG
        torch.manual_seed(seed)
        vae = AutoencoderKL(**{k: v for k, v in TINY_VAE.items()})
    vae.save_pretrained(str(dest), safe_serialization=True)


def make_tiny_models(dest, version: str = "1.6", seed: int = 0) -> Path:
    """Write the tiny model set for ``version`` into ``dest``; returns ``dest``."""
    from latentsync.checkpoints import UNET_CONFIG_NAME, version_subdir

    dest = Path(dest)
    udir = dest / version_subdir(version) if version_subdir(version) else dest
    udir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    dims = dict(TINY_WHISPER_DIMS)
    config = tiny_unet_config(version, dims["n_audio_state"])
    torch.save({"global_step": 0, "state_dict": make_unet(config, gen)}, udir / "latentsync_unet.pt")
    (udir / UNET_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (dest / "whisper").mkdir(exist_ok=True)
    torch.save({"dims": dims, "model_state_dict": make_whisper(dims, gen)}, dest / "whisper" / "tiny.pt")
    make_vae(dest / "vae", seed)
    (dest / "TINY_MODELS.txt").write_text(
        f"Random-weight LatentSync {version} models (seed {seed}) written by tools/make_tiny_models.py.\n"
        "For tests and trying the pack only: they do not lip-sync.\n", encoding="utf-8")
    return dest


def small_model_dir(tiny_dir: Path, dest: Path | None = None, resolution: int = 64) -> Path:
    """``dest`` = the tiny set (symlinked files) with the UNet config's face resolution changed (e.g. 64 px faces
    to keep CPU time low; the weights are the same). The default ``dest`` sits next to ``tiny_dir``."""
    dest = Path(dest) if dest is not None else Path(tiny_dir).parent / f"{Path(tiny_dir).name}-r{resolution}"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("latentsync_unet.pt", "whisper", "vae", "face_landmarker.task"):  # the last one when present
        link = dest / name
        if not link.exists() and (Path(tiny_dir) / name).exists():
            os.symlink(Path(tiny_dir).resolve() / name, link)
    config = json.loads((Path(tiny_dir) / "unet_config.json").read_text())
    config["resolution"] = resolution
    (dest / "unet_config.json").write_text(json.dumps(config))
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="output folder (created)")
    ap.add_argument("--version", choices=("1.6", "1.5"), default="1.6")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = make_tiny_models(args.dir, args.version, args.seed)
    print(f"tiny LatentSync {args.version} models written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
