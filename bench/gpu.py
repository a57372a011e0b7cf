"""Speed and memory of the denoise core (issue 6): VAE encode → 20 DDIM steps with CFG → VAE decode → paste-back.

    python bench/gpu.py                      # real LatentSync 1.6 architecture, random weights, CUDA, fp16
    python bench/gpu.py --tiny --device cpu  # tiny config on the CPU (CI keeps the script alive this way)

No checkpoint is needed: the UNet is built from configs/unet/latentsync-1.6.json and the VAE from
configs/vae/config.json with random weights, so the FLOPs and memory are those of the real models. Each mode
prints ONE JSON line: device, dtype, settings, frames/s, peak allocated / reserved GB and seconds per stage.
Modes: ``reference`` (reference-equal settings: no DeepCache, one window per UNet batch, 16-frame VAE slices),
``deepcache`` (top tier + DeepCache interval 3), ``tier8gb`` (the plan latentsync.runtime picks for an 8 GB card,
with the CUDA memory fraction capped to what that card would give). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from latentsync import runtime
from latentsync.config import load_unet_config
from latentsync.denoise import DenoiseContext, denoise_windows
from latentsync.face import latent_mask, load_mask, restore_face
from latentsync.models.unet3d import UNet3DConditionModel
from latentsync.models.vae import load_vae_config
from latentsync.scheduler import make_scheduler

GIB = 1024 ** 3
TINY_UNET = {"block_out_channels": [32, 64, 64, 64], "cross_attention_dim": 384}
TINY_VAE = {"block_out_channels": [32, 32, 32, 32], "norm_num_groups": 8, "layers_per_block": 1}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class _Timed(torch.nn.Module):
    """Wraps the VAE so that encode/decode time is attributed to its stage (synchronised on CUDA)."""

    def __init__(self, vae, clock):
        super().__init__()
        self.vae, self.clock = vae, clock
        self.config, self.device, self.dtype = vae.config, vae.device, vae.dtype

    def encode(self, x):
        with self.clock("vae_encode"):
            return self.vae.encode(x)

    def decode(self, z):
        with self.clock("vae_decode"):
            return self.vae.decode(z)


class Clock:
    def __init__(self, device):
        self.device, self.seconds = device, {}

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, name):
        clock = self

        class _Span:
            def __enter__(self):
                clock.sync()
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                clock.sync()
                clock.seconds[name] = clock.seconds.get(name, 0.0) + time.perf_counter() - self.t0

        return _Span()


def build_models(tiny: bool, device, dtype, resolution=None):
    from diffusers import AutoencoderKL

    unet_cfg = {**load_unet_config("1.6"), **(TINY_UNET if tiny else {})}
    if resolution:
        unet_cfg["resolution"] = resolution
    vae_cfg = {k: v for k, v in load_vae_config().items() if not k.startswith("_")}
    vae_cfg.update(TINY_VAE if tiny else {})
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet3DConditionModel(unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
    for p in unet.parameters():  # keep random activations in range: small weights
        p.data.mul_(0.5)
    unet = unet.to(dtype).eval().requires_grad_(False)
    vae = vae.to(dtype).eval().requires_grad_(False)
    return unet, vae, int(unet_cfg.get("resolution", 512))


def run_mode(name, unet, vae, res, args, device, dtype, plan):
    clock = Clock(device)
    h = res // 8
    mask = torch.from_numpy(load_mask(res)).to(device)
    mask_lat = torch.from_numpy(np.ascontiguousarray(latent_mask(load_mask(res)))).to(device, dtype)
    scheduler = make_scheduler()
    scheduler.set_timesteps(args.steps, device=device)
    gen = torch.Generator("cpu").manual_seed(1247)
    noise = torch.randn((1, 4, 1, h, h), generator=gen).to(device)
    ctx = DenoiseContext(unet=unet, vae=_Timed(vae, clock), scheduler=scheduler, mask=mask[None],
                         mask_latent=mask_lat[None, None, None], initial_noise=noise, generator=gen,
                         guidance=args.guidance, deepcache=3 if name == "deepcache" else 0, vae_slice=plan.vae_slice,
                         cfg_serial=plan.cfg_serial, on_step=lambda windows: None)
    frames = np.full((1080, 1920, 3), 90, np.uint8)
    matrix = np.array([[1.0, 0.0, -700.0], [0.0, 1.0, -200.0]], np.float32)  # face crop near the frame centre
    faces = torch.rand(args.windows, 16, 3, res, res, generator=gen).mul(2).sub(1).to(device, dtype)
    audio = torch.randn(args.windows, 16, 50, 384, generator=gen).to(device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    total_frames = 0
    with runtime.memory_fraction_scope(plan.memory_fraction, device), torch.inference_mode():
        for rep in range(2):  # first pass warms up kernels and allocator; the second is measured
            clock.seconds.clear()
            t0 = time.perf_counter()
            for w0 in range(0, args.windows, plan.window_batch):
                with clock("window"):
                    out = denoise_windows(ctx, faces[w0:w0 + plan.window_batch], audio[w0:w0 + plan.window_batch])
                with clock("paste_back"):
                    out = out.cpu()
                    for k in range(out.shape[0]):
                        restore_face(frames, out[k], matrix)
            clock.sync()
            wall = time.perf_counter() - t0
            total_frames = args.windows * 16
    stages = {k: round(v, 4) for k, v in clock.seconds.items()}
    stages["unet_and_scheduler"] = round(stages.pop("window") - stages.get("vae_encode", 0) - stages.get("vae_decode", 0), 4)
    result = {
        "mode": name, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).replace("torch.", ""), "tiny": args.tiny, "resolution": res,
        "settings": {"steps": args.steps, "guidance": args.guidance, "windows": args.windows, "frames_per_window": 16,
                     "window_batch": plan.window_batch, "vae_slice": plan.vae_slice,
                     "memory_fraction": plan.memory_fraction, "deepcache": name == "deepcache", "tier": plan.tier,
                     "cfg_serial": plan.cfg_serial},
        "frames_per_s": round(total_frames / wall, 3), "wall_s": round(wall, 3), "stages_s": stages,
    }
    if device.type == "cuda":
        result["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / GIB, 3)
        result["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / GIB, 3)
        torch.cuda.empty_cache()
    return result


def plan_for_mode(name, device):
    if name == "reference":
        return runtime.MemoryPlan(window_batch=1, vae_slice=16, memory_fraction=None, tier="reference", batch=16)
    if device.type != "cuda":
        return runtime.plan_for(0, 0, device.type)
    total = torch.cuda.get_device_properties(device).total_memory
    if name == "tier8gb":
        plan = runtime.plan_for(8 * GIB, 8 * GIB, "cuda")
        # simulate the 8 GB card on the big one: the same absolute cap the fraction would give there
        return dataclasses.replace(plan, memory_fraction=min(1.0, 8 * GIB * plan.memory_fraction / total))
    return runtime.plan_for(total, torch.cuda.mem_get_info(device)[0], "cuda")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny UNet/VAE widths (CPU smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="default: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--modes", default="reference,deepcache,tier8gb")
    parser.add_argument("--resolution", type=int, default=None, help="face size (default 512; --tiny: 128)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    unet, vae, res = build_models(args.tiny, device, dtype, args.resolution or (128 if args.tiny else None))
    for name in args.modes.split(","):
        print(json.dumps(run_mode(name, unet, vae, res, args, device, dtype, plan_for_mode(name, device))), flush=True)


if __name__ == "__main__":
    main()
