"""The three LatentSync networks as one object: ``load_models(paths, device, dtype) -> LatentSyncModels``.

Submodules (``unet3d``, ``loading``, ``vae``, ``whisper``) are imported lazily so that importing one of them
does not pull in the others.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class LatentSyncModels:
    """UNet (3-D, 13 input channels), VAE (diffusers AutoencoderKL), Whisper feature encoder, and their config."""

    unet: Any
    vae: Any
    audio_encoder: Any
    config: dict = field(default_factory=dict)
    version: str = "1.6"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    model_dir: Path | None = None  # the weights' root folder; also where face_landmarker.task is looked for
    allow_download: bool = True  # face_landmarker.task may be fetched into model_dir when missing

    @property
    def resolution(self) -> int:
        """Face crop size in pixels (512 for 1.6, 256 for 1.5, or the tiny models' own value)."""
        return int(self.config.get("resolution", 512))

    def to(self, device=None, dtype=None) -> "LatentSyncModels":
        """Move (and/or cast) every network; returns self."""
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        self.unet.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        self.audio_encoder.to(device=device, dtype=dtype)
        self.device, self.dtype = device, dtype
        return self

    def nbytes(self) -> int:
        """Bytes the networks' parameters and buffers take."""
        nets = [self.unet, self.vae, getattr(self.audio_encoder, "encoder", self.audio_encoder)]
        return sum(t.numel() * t.element_size() for net in nets if net is not None
                   for t in [*net.parameters(), *net.buffers()])

    def release(self) -> None:
        """Drop the networks so their memory can be freed (the object is unusable afterwards)."""
        self.unet = self.vae = self.audio_encoder = None
        gc.collect()
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()


def weights_bytes(paths, dtype: torch.dtype) -> int:
    """Bytes the networks of ``paths`` will take on the device (file sizes scaled to ``dtype``; the files hold
    float32 or float16 weights, so this is an upper bound for half precision)."""
    total = 0
    for path in (Path(paths.unet), Path(paths.whisper), Path(paths.vae)):
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path] if path.is_file() else []
        total += sum(f.stat().st_size for f in files)
    return int(total * torch.finfo(dtype).bits / 32)


def load_models(paths, device="cpu", dtype=torch.float32, unet_config: dict | None = None) -> LatentSyncModels:
    """Load the UNet, VAE and Whisper encoder named by ``paths`` (a ``checkpoints.ModelPaths``) in eval mode.
    ``unet_config``: the UNet's config (with ``resolution``) when it is neither shipped nor next to the file."""
    from ..config import load_unet, resolve_unet_config
    from .vae import load_vae
    from .whisper import load_whisper_encoder

    device = torch.device(device)
    # a unet_config.json next to the UNet checkpoint (e.g. tiny test models) wins over the shipped config
    config = resolve_unet_config(paths.unet, unet_config or str(paths.version))
    log.info("loading LatentSync %s models on %s (%s)", paths.version, device, dtype)
    unet = load_unet(paths.unet, config, device=device, dtype=dtype)
    vae = load_vae(paths.vae, device, dtype)
    encoder = load_whisper_encoder(paths.whisper, device=device, dtype=dtype)
    return LatentSyncModels(unet, vae, encoder, dict(config), str(paths.version), device, dtype, paths.root)
