"""UNet configs we ship (``configs/unet/latentsync-1.6.json``, ``latentsync-1.5.json``) and the UNet builder.

A config is the reference's ``model`` block (configs/unet/stage2_512.yaml for 1.6, stage2.yaml for 1.5) plus
``"version"`` and ``"resolution"`` (512 / 256 px). The two model blocks are identical; only the resolution
differs.

Config discovery in :func:`load_unet`: a ``unet_config.json`` sitting next to the checkpoint overrides the
config asked for (this is how tiny test models written by tools/make_tiny_models.py describe their narrow
widths); otherwise the shipped config of the requested version is used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from accelerate import init_empty_weights

from .errors import InputError
from .settings import VERSIONS

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "unet"
SIDECAR_NAME = "unet_config.json"


def load_unet_config(version: str | Path = "1.6") -> dict:
    """The UNet config dict for ``"1.6"`` / ``"1.5"`` (also ``"latentsync-1.6"``), or read from a .json path.
    Always contains ``"resolution"`` and ``"version"`` when known."""
    text = str(version)
    name = text[len("latentsync-"):] if text.startswith("latentsync-") else text
    if name in VERSIONS:
        path = CONFIG_DIR / f"latentsync-{name}.json"
    else:
        path = Path(text)
        if path.suffix.lower() != ".json" or not path.is_file():
            raise InputError(f"unknown LatentSync version or config file {text!r}; versions: {', '.join(VERSIONS)}")
    with open(path, encoding="utf-8") as fh:
        config = json.load(fh)
    config.setdefault("_source", str(path))
    return config


def config_name(config: dict) -> str:
    """A short name for messages: 'latentsync-1.6', or the config file name."""
    if config.get("name"):
        return str(config["name"])
    source = config.get("_source")
    if source:
        return Path(source).stem
    return f"latentsync-{config['version']}" if config.get("version") else "custom"


def build_unet(config: dict | str | Path):
    """The UNet3DConditionModel for ``config`` (a dict, or a version / .json path for :func:`load_unet_config`)
    with every parameter on the meta device (no memory used; the small ``pos_encoder.pe`` buffers are real)."""
    from .models.unet3d import UNet3DConditionModel

    if not isinstance(config, dict):
        config = load_unet_config(config)
    with init_empty_weights(include_buffers=False):
        return UNet3DConditionModel(config)


def resolve_unet_config(checkpoint_path: str | Path, config: dict | str | Path) -> dict:
    """The sidecar ``unet_config.json`` next to the checkpoint if present, else ``config`` (dict, version or
    path)."""
    sidecar = Path(checkpoint_path).with_name(SIDECAR_NAME)
    if sidecar.is_file():
        logger.info("using UNet config %s next to the checkpoint", sidecar)
        return load_unet_config(sidecar)
    return dict(config) if isinstance(config, dict) else load_unet_config(config)


def load_unet(checkpoint_path: str | Path, config: dict | str | Path = "1.6", device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32):
    """Build the UNet on the meta device, strictly load ``checkpoint_path`` (official ``{"state_dict"}`` .pt,
    bare state dict, or .safetensors) cast to ``dtype`` on ``device``; returns the model in eval mode with
    gradients off. Raises MissingWeightsError / CheckpointMismatchError with readable messages."""
    from .models.loading import cast_state_dict, load_strict, read_state_dict

    checkpoint_path = Path(checkpoint_path)
    cfg = resolve_unet_config(checkpoint_path, config)
    model = build_unet(cfg)
    state_dict = cast_state_dict(read_state_dict(checkpoint_path), device, dtype)
    load_strict(model, state_dict, what=checkpoint_path.name, config_name=config_name(cfg))
    del state_dict
    model.to(device=device, dtype=dtype)  # buffers created at build time (none persistent are left) follow
    model.eval().requires_grad_(False)
    logger.info("loaded UNet %s (%s) on %s as %s", checkpoint_path.name, config_name(cfg), device, dtype)
    return model
