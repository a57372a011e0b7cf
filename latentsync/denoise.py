"""Step 5 of the pipeline for a batch of 16-frame windows: VAE encode → DDIM with classifier-free guidance
(optionally DeepCache) → VAE decode → composite with the original face outside the mouth mask.

Facts followed (reference LatentSync 1.6, see tests/fixtures/parity/README.md "Pipeline facts" and "e2e/"):
* UNet input = [noisy latents (4) | mask (1) | masked-face latents (4) | reference-face latents (4)];
* masked and reference latents are SAMPLES of the VAE posterior x 0.18215, drawn in that order per window
  (``replay_window_draws`` makes exactly these draws without encoding, for windows that are skipped);
* every frame of every window starts from the same initial noise (1, 4, 1, h, w);
* guidance > 1: batch [zero audio | audio], noise = uncond + g · (audio − uncond); guidance = 1: one batch;
* decoded x (1 − mask) + face x mask, in [−1, 1], not clamped.
The scheduler math runs in float32; the networks in the models' dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import CancelledError
from .models.vae import decode, encode, posterior_noise


@dataclass
class DenoiseContext:
    """One speaker's per-job constants: models, scheduler, masks, initial noise, its seeded generator, hooks."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    mask: torch.Tensor  # (1, R, R) float32 on the device, 1 keep / 0 regenerate
    mask_latent: torch.Tensor  # (1, 1, 1, h, w) models' dtype on the device
    initial_noise: torch.Tensor  # (1, 4, 1, h, w) float32 on the device (the one shared initial noise)
    generator: torch.Generator  # CPU generator: the initial noise, then each window's two posterior draws
    guidance: float
    deepcache: int  # 0 = off, else the cache interval
    vae_slice: int
    cfg_serial: bool  # run the unconditional and audio halves one after the other (same math, half the memory)
    on_step: Callable[[int], None]  # after each denoising step, with the number of windows advanced
    vae_tiling: bool = False  # decode in overlapping tiles (latentsync.accel)


def faces_to_tensor(faces: list[np.ndarray], device, dtype) -> torch.Tensor:
    """Aligned faces uint8 (R, R, 3) → (F, 3, R, R) in [−1, 1] ((x/255 − 0.5)/0.5, as the reference)."""
    pixels = torch.from_numpy(np.stack(faces)).to(device).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return ((pixels - 0.5) / 0.5).to(dtype)


def replay_window_draws(ctx: DenoiseContext, n_frames: int) -> None:
    """Advance the generator exactly as denoising a window of ``n_frames`` frames would (its two posterior draws),
    so that the windows after a skipped one get the same random numbers as in a full run."""
    latent_shape = (n_frames, *ctx.initial_noise.shape[1:2], *ctx.initial_noise.shape[3:])
    posterior_noise(latent_shape, ctx.generator, torch.device("cpu"), torch.float32)
    posterior_noise(latent_shape, ctx.generator, torch.device("cpu"), torch.float32)


def _encode_window(ctx: DenoiseContext, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, 3, R, R) → masked-face latents and reference latents, each (1, 4, F, h, w)."""
    masked_faces = faces * ctx.mask.to(faces.dtype)
    masked_image_latents = encode(ctx.vae, masked_faces, ctx.generator, ctx.vae_slice)
    ref_latents = encode(ctx.vae, faces, ctx.generator, ctx.vae_slice)
    return masked_image_latents.permute(1, 0, 2, 3)[None], ref_latents.permute(1, 0, 2, 3)[None]


def _predict_noise(ctx: DenoiseContext, latent_model_input, t, audio_embeds, cache, step_index) -> torch.Tensor:
    if cache is None:
        out = ctx.unet(latent_model_input, t, encoder_hidden_states=audio_embeds)
    else:
        out = ctx.unet(latent_model_input, t, encoder_hidden_states=audio_embeds, cache=cache, step_index=step_index)
    return out.sample if hasattr(out, "sample") else out


def denoise_windows(ctx: DenoiseContext, faces: torch.Tensor, audio_embeds: torch.Tensor,
                    cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """Generate the mouths of ``B`` windows of ``F`` frames.

    faces: (B, F, 3, R, R) in [−1, 1]; audio_embeds: (B, F, 50, C); both on the device in the models' dtype.
    Returns faces (B*F, 3, R, R) float32 in [−1, 1] on the device."""
    n_windows, n_frames = int(faces.shape[0]), int(faces.shape[1])
    dtype = faces.dtype
    do_cfg = ctx.guidance > 1.0
    copies = 2 if do_cfg else 1

    # masked-image and reference latents, window by window (the random draws follow the window order)
    masked_image_latents, ref_latents = zip(*(_encode_window(ctx, faces[b]) for b in range(n_windows)))
    condition = torch.cat([
        ctx.mask_latent.expand(n_windows * copies, 1, n_frames, -1, -1),
        torch.cat(list(masked_image_latents) * copies).to(dtype),
        torch.cat(list(ref_latents) * copies).to(dtype),
    ], dim=1)
    audio_embeds = audio_embeds.reshape(n_windows * n_frames, *audio_embeds.shape[2:]).to(dtype)
    if do_cfg:  # the unconditional half first, with all-zero audio
        audio_embeds = torch.cat([torch.zeros_like(audio_embeds), audio_embeds])

    latents = ctx.initial_noise.expand(n_windows, -1, n_frames, -1, -1) * float(ctx.scheduler.init_noise_sigma)
    unet_calls = 2 if do_cfg and ctx.cfg_serial else 1  # per step
    caches = [None] * unet_calls
    if ctx.deepcache:
        from .models.unet3d import DeepCacheState

        caches = [DeepCacheState(interval=ctx.deepcache) for _ in range(unet_calls)]  # one per UNet batch
    for step_index, t in enumerate(ctx.scheduler.timesteps):
        if cancel is not None and cancel():
            raise CancelledError("Lip-sync was cancelled.")
        latent_model_input = torch.cat([latents] * copies)
        latent_model_input = ctx.scheduler.scale_model_input(latent_model_input, t)
        latent_model_input = torch.cat([latent_model_input.to(dtype), condition], dim=1)
        noise_pred = torch.cat([
            _predict_noise(ctx, part, t, part_audio, cache, step_index).float()
            for part, part_audio, cache in zip(latent_model_input.chunk(unet_calls),
                                               audio_embeds.chunk(unet_calls), caches)])
        if do_cfg:
            noise_pred_uncond, noise_pred_audio = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + ctx.guidance * (noise_pred_audio - noise_pred_uncond)
        latents = ctx.scheduler.step(noise_pred, t, latents).prev_sample.float()
        ctx.on_step(n_windows)

    latents = latents.permute(0, 2, 1, 3, 4).reshape(n_windows * n_frames, latents.shape[1], *latents.shape[3:])
    decoded = decode(ctx.vae, latents, ctx.vae_slice, tiled=ctx.vae_tiling).float()
    faces = faces.reshape(n_windows * n_frames, *faces.shape[2:]).float()
    return decoded * (1.0 - ctx.mask) + faces * ctx.mask
