"""Step 5 of the pipeline for a batch of 16-frame windows: VAE encode → DDIM with classifier-free guidance
(optionally DeepCache) → VAE decode → composite with the original face outside the mouth mask.

Facts followed (reference LatentSync 1.6, see tests/fixtures/parity/README.md "Pipeline facts"):
* UNet input = [noisy latents (4) | mask (1) | masked-face latents (4) | reference-face latents (4)];
* masked and reference latents are SAMPLES of the VAE posterior ×0.18215 (drawn in that order per window);
* every frame of every window starts from the same initial noise (1, 4, 1, h, w);
* guidance > 1: batch [zero audio | audio], noise = u + g·(c − u); guidance = 1: one conditional batch;
* decoded × (1 − mask) + face × mask, in [−1, 1].
The scheduler math runs in float32; the networks in the models' dtype.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import CancelledError

log = logging.getLogger(__name__)


@dataclass
class WindowBatch:
    """Faces and audio of ``B`` windows with the same frame count ``F``."""

    faces: torch.Tensor  # (B, F, 3, R, R) float in [-1, 1] on the device (models' dtype)
    audio: torch.Tensor  # (B, F, 50, C) on the device (models' dtype)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.faces.shape[0]), int(self.faces.shape[1])


@dataclass
class DenoiseContext:
    """Per-job constants: models, scheduler, masks, initial noise, the seeded generator and the hooks."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    mask: torch.Tensor  # (1, R, R) float32 on the device, 1 keep / 0 regenerate
    mask_latent: torch.Tensor  # (1, 1, 1, h, w) models' dtype on the device
    noise: torch.Tensor  # (1, 4, 1, h, w) float32 on the device (the one shared initial noise)
    generator: torch.Generator
    guidance: float
    deepcache: int  # 0 = off, else the cache interval
    vae_slice: int
    step_hook: Callable[[int], None]  # called after each denoising step with the number of windows advanced
    cfg_serial: bool = False  # CFG: run the unconditional and audio halves one after the other (half the
    #                           activation memory, same math) instead of as one doubled batch


def faces_to_tensor(faces: list[np.ndarray], device, dtype) -> torch.Tensor:
    """Aligned faces uint8 (R, R, 3) → (F, 3, R, R) in [−1, 1] ((x/255 − 0.5)/0.5, as the reference)."""
    arr = torch.from_numpy(np.stack(faces)).to(device)
    x = arr.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return ((x - 0.5) / 0.5).to(dtype)


def _encode(ctx: DenoiseContext, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, 3, R, R) → masked-face latents and reference latents, each (1, 4, F, h, w)."""
    from .models.vae import encode

    masked = faces * ctx.mask.to(faces.dtype)
    masked_latents = encode(ctx.vae, masked, ctx.generator, ctx.vae_slice)
    ref_latents = encode(ctx.vae, faces, ctx.generator, ctx.vae_slice)
    return masked_latents.permute(1, 0, 2, 3)[None], ref_latents.permute(1, 0, 2, 3)[None]


def _unet(ctx: DenoiseContext, sample, t, audio, cache, step_index) -> torch.Tensor:
    if cache is None:
        out = ctx.unet(sample, t, encoder_hidden_states=audio)
    else:
        out = ctx.unet(sample, t, encoder_hidden_states=audio, cache=cache, step_index=step_index)
    return out.sample if hasattr(out, "sample") else out


def denoise_windows(ctx: DenoiseContext, batch: WindowBatch, cancel: Callable[[], bool] | None) -> torch.Tensor:
    """Generate the mouths of ``batch``: returns faces (B*F, 3, R, R) float32 in [−1, 1] on the device."""
    n_win, n_frames = batch.size
    dtype = ctx.unet.dtype if hasattr(ctx.unet, "dtype") else batch.faces.dtype
    masked, ref = zip(*(_encode(ctx, batch.faces[b]) for b in range(n_win)))
    cfg = ctx.guidance > 1.0
    copies = 2 if cfg else 1
    cond = torch.cat([
        ctx.mask_latent.expand(n_win * copies, 1, n_frames, -1, -1),
        torch.cat(list(masked) * copies).to(dtype),
        torch.cat(list(ref) * copies).to(dtype),
    ], dim=1)
    audio = batch.audio.reshape(n_win * n_frames, *batch.audio.shape[2:]).to(dtype)
    if cfg:
        audio = torch.cat([torch.zeros_like(audio), audio])
    latents = ctx.noise.expand(n_win, -1, n_frames, -1, -1) * float(ctx.scheduler.init_noise_sigma)
    parts = 2 if cfg and ctx.cfg_serial else 1  # UNet calls per step
    caches = [None] * parts
    if ctx.deepcache:
        from .models.unet3d import DeepCacheState

        caches = [DeepCacheState(interval=ctx.deepcache) for _ in range(parts)]  # one per UNet batch
    for i, t in enumerate(ctx.scheduler.timesteps):
        if cancel is not None and cancel():
            raise CancelledError("Lip-sync was cancelled.")
        x = torch.cat([latents] * copies) if cfg else latents
        x = ctx.scheduler.scale_model_input(x, t)
        sample = torch.cat([x.to(dtype), cond], dim=1)
        noise = torch.cat([_unet(ctx, s, t, a, c, i).float()
                           for s, a, c in zip(sample.chunk(parts), audio.chunk(parts), caches)])
        if cfg:
            uncond, audio_noise = noise.chunk(2)
            noise = uncond + ctx.guidance * (audio_noise - uncond)
        latents = ctx.scheduler.step(noise, t, latents).prev_sample.float()
        ctx.step_hook(n_win)
    from .models.vae import decode

    flat = latents.permute(0, 2, 1, 3, 4).reshape(n_win * n_frames, *latents.shape[1:2], *latents.shape[3:])
    decoded = decode(ctx.vae, flat, ctx.vae_slice).float()
    faces = batch.faces.reshape(n_win * n_frames, *batch.faces.shape[2:]).float()
    return decoded * (1.0 - ctx.mask) + faces * ctx.mask
