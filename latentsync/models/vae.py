"""The LatentSync VAE: diffusers ``AutoencoderKL`` (stabilityai/sd-vae-ft-mse), loaded strictly.

Accepted weights:
- a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or ``.bin``);
- one ``.safetensors`` / ``.ckpt`` / ``.pt`` / ``.bin`` file, either in the original LDM key format (for example
  ``vae-ft-mse-840000-ema-pruned.safetensors`` from ComfyUI's ``models/vae``; keys may carry a
  ``first_stage_model.`` or ``vae.`` prefix, as inside a full Stable Diffusion checkpoint) or in diffusers format.
  Single files use the config we ship (``configs/vae/config.json``) unless a config is given.

Every parameter of the model must come from the file (no random fallback): missing, unexpected or wrong-shape keys
raise :class:`~latentsync.errors.CheckpointMismatchError`. Nothing is ever fetched from the network.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Mapping

import torch

from ..errors import MissingWeightsError
from .loading import check_state_dict, read_state_dict

logger = logging.getLogger(__name__)

VAE_SCALING = 0.18215
VAE_SHIFT = 0.0
VAE_CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "vae" / "config.json"
DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                          "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")
_LDM_PREFIXES = ("first_stage_model.", "vae.")
_IGNORED_PREFIXES = ("loss.", "model_ema.")  # training leftovers in some .ckpt files; never model weights
_VAE_ROOTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def load_vae_config(path: str | Path | None = None) -> dict:
    """The AutoencoderKL config (ours by default)."""
    with open(path or VAE_CONFIG_PATH, encoding="utf-8") as f:
        return json.load(f)


def ldm_vae_key(key: str, n_blocks: int = 4) -> str:
    """The original LDM name of a diffusers AutoencoderKL key (inverse of diffusers' converter; used for tests
    and for naming unexpected keys)."""
    simple = {"conv_norm_out.": "norm_out."}
    for a, b in simple.items():
        key = re.sub(rf"^(encoder|decoder)\.{re.escape(a)}", rf"\1.{b}", key)
    m = re.match(r"^encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.*)$", key)
    if m:
        i, kind, j, rest = m.groups()
        if kind == "resnets":
            return f"encoder.down.{i}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        return f"encoder.down.{i}.downsample.{rest}"
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)$", key)
    if m:
        i, kind, j, rest = m.groups()
        b = n_blocks - 1 - int(i)
        if kind == "resnets":
            return f"decoder.up.{b}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        return f"decoder.up.{b}.upsample.{rest}"
    m = re.match(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)$", key)
    if m:
        part, j, rest = m.groups()
        return f"{part}.mid.block_{int(j) + 1}.{rest}"
    m = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.*)$", key)
    if m:
        part, rest = m.groups()
        rest = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}.get(
            rest.rsplit(".", 1)[0], rest.rsplit(".", 1)[0]) + "." + rest.rsplit(".", 1)[1]
        return f"{part}.mid.attn_1.{rest}"
    return key


def _is_ldm(keys) -> bool:
    return any(".mid.block_1." in k or ".down.0.block." in k or ".mid.attn_1." in k for k in keys)


def _fix_deprecated_attention(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old diffusers files name the VAE attention query/key/value/proj_attn."""
    ren = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}
    out = {}
    for k, v in sd.items():
        if ".mid_block.attentions." in k:
            for a, b in ren.items():
                k = k.replace(a, b)
        out[k] = v
    return out


def to_diffusers_vae_state_dict(sd: Mapping[str, torch.Tensor], config: dict
                                ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Accept LDM (optionally prefixed) or diffusers keys; return (diffusers state dict, source keys that the
    LDM conversion could not place — these are unexpected keys)."""
    keys = list(sd)
    prefix = next((p for p in _LDM_PREFIXES if any(k.startswith(p) for k in keys)), "")
    if prefix:  # e.g. a whole SD checkpoint: keep only its VAE part
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    ignored = [k for k in sd if k.startswith(_IGNORED_PREFIXES)]
    if ignored:
        logger.debug("VAE: ignoring %d training keys (%s ...)", len(ignored), ignored[0])
    sd = {k: v for k, v in sd.items() if not k.startswith(_IGNORED_PREFIXES)}
    if not _is_ldm(sd):
        return _fix_deprecated_attention(dict(sd)), []
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    n = len(config["down_block_types"])
    converted = convert_ldm_vae_checkpoint(dict(sd), config)
    consumed = {ldm_vae_key(k, n) for k in converted}
    # the diffusers converter silently skips keys it does not know: we report them
    return converted, sorted(k for k in sd if k not in consumed)


def _build_empty(config: dict):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    with init_empty_weights():
        return AutoencoderKL.from_config(config)


def load_vae_state_dict(vae, state_dict: Mapping[str, torch.Tensor], source: str, dtype: torch.dtype,
                        unplaced: list[str] = ()) -> None:
    """Strictly assign ``state_dict`` (diffusers keys) to ``vae`` (built on the meta device); ``unplaced`` are
    source keys already known to be unexpected."""
    check_state_dict(vae, state_dict, extra_unexpected=unplaced, header=(
        f"The VAE checkpoint {source} does not match the VAE config (AutoencoderKL, sd-vae-ft-mse layout; "
        "key names in diffusers form unless they come from an LDM file):"), footer=(
        "LatentSync needs the sd-vae-ft-mse VAE (stabilityai/sd-vae-ft-mse or "
        "vae-ft-mse-840000-ema-pruned.safetensors); `python -m latentsync download` fetches it."))
    sd = {k: v.to(dtype=dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    vae.load_state_dict(sd, strict=True, assign=True)


def load_vae(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             config: dict | str | Path | None = None):
    """Load the VAE from a diffusers folder or a single file (LDM or diffusers keys). Returns an eval-mode
    ``diffusers.AutoencoderKL`` on ``device`` in ``dtype``. Raises MissingWeightsError / CheckpointMismatchError."""
    path = Path(path)
    if path.is_dir():
        cfg_file = path / "config.json"
        weights = next((path / n for n in DIFFUSERS_WEIGHT_NAMES if (path / n).is_file()), None)
        if weights is None or (config is None and not cfg_file.is_file()):
            raise MissingWeightsError(
                f"VAE folder {path} is incomplete: it needs config.json and one of {', '.join(DIFFUSERS_WEIGHT_NAMES)}."
                " `python -m latentsync download` fetches stabilityai/sd-vae-ft-mse.")
        cfg = config if isinstance(config, dict) else load_vae_config(config or cfg_file)
    elif path.is_file():
        weights = path
        cfg = config if isinstance(config, dict) else load_vae_config(config)
    else:
        raise MissingWeightsError(f"VAE weights not found: {path} does not exist.")
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    state_dict, unplaced = to_diffusers_vae_state_dict(read_state_dict(weights), cfg)
    vae = _build_empty(cfg)
    load_vae_state_dict(vae, state_dict, str(weights), dtype, unplaced)
    logger.info("Loaded VAE from %s", weights)
    return vae.to(device).eval().requires_grad_(False)


def _slices(n: int, size: int | None):
    size = n if not size or size <= 0 else int(size)
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def posterior_noise(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Standard normal noise for a posterior sample: drawn in float32 on the generator's device (the CPU for our
    seeded generators), then moved and cast — so the draw, and the generator's state after it, do not depend on
    the models' device or dtype."""
    draw_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(shape, generator=generator, device=draw_device, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


@torch.inference_mode()
def encode(vae, images: torch.Tensor, generator: torch.Generator | None = None,
           slice_size: int | None = None) -> torch.Tensor:
    """Images (N,3,H,W) in [-1,1] → latents (N,4,H/8,W/8) = (sample of the latent distribution − 0) × 0.18215.

    The Gaussian noise for all N images is drawn at once (shape (N,4,h,w)), like diffusers'
    ``latent_dist.sample(generator)`` on the whole batch, so the result does not depend on ``slice_size``.
    """
    if images.ndim != 4:
        raise ValueError(f"encode expects images (N,3,H,W), got shape {tuple(images.shape)}")
    images = images.to(device=vae.device, dtype=vae.dtype)
    means, stds = [], []
    for a, b in _slices(images.shape[0], slice_size):
        dist = vae.encode(images[a:b]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    noise = posterior_noise(mean.shape, generator, mean.device, mean.dtype)
    return (mean + std * noise - VAE_SHIFT) * VAE_SCALING


def tiles_help(vae, latents: torch.Tensor) -> bool:
    """True when ``latents`` (…, h, w) are larger than one decoder tile of ``vae`` (diffusers' own rule for
    ``enable_tiling``): only then does a tiled decode differ from, and use less memory than, a plain one."""
    tile = getattr(vae, "tile_latent_min_size", None)
    return tile is not None and (latents.shape[-1] > tile or latents.shape[-2] > tile)


def decode_slice(vae, latents: torch.Tensor, tiled: bool = False) -> torch.Tensor:
    """One ``vae.decode`` call on already scaled latents; with ``tiled`` and latents larger than a tile, diffusers'
    ``tiled_decode`` (overlapping tiles of the VAE's own tile size, blended; the model is not changed)."""
    if tiled and tiles_help(vae, latents):
        return vae.tiled_decode(latents).sample
    return vae.decode(latents).sample


@torch.inference_mode()
def decode(vae, latents: torch.Tensor, slice_size: int | None = None, tiled: bool = False) -> torch.Tensor:
    """Latents (N,4,h,w) → images (N,3,8h,8w) in about [-1,1] (not clamped), decoded ``slice_size`` at a time.

    ``tiled``: decode each slice in spatial tiles when the latents are larger than one tile (``decode_slice``):
    less memory, pixels slightly different near the tile seams; latents no larger than a tile decode as without."""
    if latents.ndim != 4:
        raise ValueError(f"decode expects latents (N,4,h,w), got shape {tuple(latents.shape)}")
    latents = latents.to(device=vae.device, dtype=vae.dtype) / VAE_SCALING + VAE_SHIFT
    return torch.cat([decode_slice(vae, latents[a:b], tiled) for a, b in _slices(latents.shape[0], slice_size)])
