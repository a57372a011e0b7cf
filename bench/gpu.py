"""Speed and memory of the denoise core (issues 6 and 10): VAE encode → 20 DDIM steps with CFG → VAE decode → paste-back.

    python bench/gpu.py                      # real LatentSync 1.6 architecture, random weights, CUDA, fp16
    python bench/gpu.py --tiny --device cpu  # tiny config on the CPU (CI keeps the script alive this way)
    python bench/gpu.py --modes reference,ours --compile --cuda-graphs      # ours vs the reference, one process
    python bench/gpu.py --modes reference,ours,ours+channels_last,ours+cuda_graphs,ours+compile+cuda_graphs

No checkpoint is needed: the UNet is built from configs/unet/latentsync-1.6.json and the VAE from
configs/vae/config.json with random weights, so the FLOPs and memory are those of the real models. Each mode
prints ONE JSON line: device, dtype, settings, GPU levers, frames/s, peak allocated / reserved GB, seconds per
stage, the first (warm-up: compile, graph capture, cuDNN timing) pass, and the largest difference of its output
from the reference's. Modes (all share steps, guidance, windows, dtype, resolution and the random inputs):
``reference`` (the reference's math and settings: eager, no DeepCache, one window per UNet batch, 16-frame VAE
slices; never accelerated), ``ours`` (the plan latentsync.runtime picks for this device: window batch, VAE slice,
memory fraction; same math), ``deepcache`` (that plan + DeepCache interval 3), ``tier8gb`` (the plan for an 8 GB
card, with the CUDA memory fraction capped to what that card would give). ``MODE+lever+...`` adds GPU levers
(compile, channels_last, cudnn_benchmark, cuda_graphs, vae_tiling) to one mode; the lever flags add them to every
mode but ``reference``. A mode whose levers cannot run (e.g. cuda_graphs with DeepCache) prints a ``skipped`` line.
With ``reference`` among the modes a last ``summary`` line gives each mode's speed-up and memory against it.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from types import SimpleNamespace

import numpy as np
import torch

from latentsync import runtime
from latentsync.accel import Accel, accel_from_args, accelerated, add_accel_arguments, conv_input_formats
from latentsync.config import load_unet_config
from latentsync.denoise import DenoiseContext, denoise_windows
from latentsync.errors import InputError
from latentsync.face import latent_mask, load_mask, restore_face
from latentsync.models import LatentSyncModels
from latentsync.models.unet3d import UNet3DConditionModel
from latentsync.models.vae import decode, decode_slice, load_vae_config
from latentsync.scheduler import make_scheduler

GIB = 1024 ** 3
TINY_UNET = {"block_out_channels": [32, 64, 64, 64], "cross_attention_dim": 384}
TINY_VAE = {"block_out_channels": [32, 32, 32, 32], "norm_num_groups": 8, "layers_per_block": 1}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
BASE_MODES = ("reference", "ours", "deepcache", "tier8gb")
LEVERS = ("compile", "channels_last", "cudnn_benchmark", "cuda_graphs", "vae_tiling")


class _Timed(torch.nn.Module):
    """Wraps the VAE so that encode/decode time is attributed to its stage (synchronised on CUDA); ``tiled``
    decodes through latentsync.models.vae.decode_slice's tiling."""

    def __init__(self, vae, clock, tiled=False):
        super().__init__()
        self.vae, self.clock, self.tiled = vae, clock, tiled
        self.config, self.device, self.dtype = vae.config, vae.device, vae.dtype

    def encode(self, x):
        with self.clock("vae_encode"):
            return self.vae.encode(x)

    def decode(self, z):
        with self.clock("vae_decode"):
            return SimpleNamespace(sample=decode_slice(self.vae, z, self.tiled))


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


def parse_mode(spec: str, base_accel: Accel, compile_cache_dir: str | None) -> tuple[str, Accel]:
    """``ours+compile+cuda_graphs`` → ("ours", the flags' levers plus these); ``reference`` is never accelerated."""
    name, *levers = spec.split("+")
    unknown = [x for x in levers if x not in LEVERS]
    if name not in BASE_MODES or unknown:
        raise SystemExit(f"unknown mode {spec!r}: MODE[+lever...] with MODE in {BASE_MODES}, levers in {LEVERS}")
    if name == "reference":
        if levers:
            raise SystemExit("the reference mode runs the reference's math as it is: no levers")
        return name, Accel()
    accel = dataclasses.replace(base_accel, **{lever: True for lever in levers})
    return name, dataclasses.replace(accel, compile_cache_dir=compile_cache_dir) if accel.compile else accel


def _inputs(args, res, device, dtype):
    h = res // 8
    gen = torch.Generator("cpu").manual_seed(1247)
    noise = torch.randn((1, 4, 1, h, h), generator=gen).to(device)
    faces = torch.rand(args.windows, 16, 3, res, res, generator=gen).mul(2).sub(1).to(device, dtype)
    audio = torch.randn(args.windows, 16, 50, 384, generator=gen).to(device, dtype)
    return gen, noise, faces, audio


def _conv_formats(models, run, faces, audio, res, dtype):
    """Eager UNet call and one-frame VAE decode under the scope, counting channels-last convolution inputs."""
    h = res // 8
    sample = torch.randn(2, 13, 16, h, h, device=faces.device, dtype=dtype)
    with conv_input_formats(models.unet) as unet_formats:
        models.unet(sample, torch.tensor(500, device=faces.device), audio[:1].reshape(16, 50, -1).repeat(2, 1, 1))
    with conv_input_formats(models.vae) as vae_formats:
        decode(run.vae, torch.randn(1, 4, h, h, device=faces.device, dtype=dtype))
    return {"unet": [unet_formats["channels_last"], sum(unet_formats.values())],
            "vae_decode": [vae_formats["channels_last"], sum(vae_formats.values())]}


def run_mode(spec, name, accel, unet, vae, res, args, device, dtype, plan, outputs):
    clock = Clock(device)
    mask = torch.from_numpy(load_mask(res)).to(device)
    mask_lat = torch.from_numpy(np.ascontiguousarray(latent_mask(load_mask(res)))).to(device, dtype)
    scheduler = make_scheduler()
    scheduler.set_timesteps(args.steps, device=device)
    gen, noise, faces, audio = _inputs(args, res, device, dtype)
    deepcache = 3 if name == "deepcache" else 0
    models = LatentSyncModels(unet, vae, None, dict(unet.config), device=device, dtype=dtype)
    try:
        accel.check(device, deepcache=bool(deepcache))
    except InputError as e:
        return {"mode": spec, "skipped": str(e)}
    frames = np.full((1080, 1920, 3), 90, np.uint8)
    matrix = np.array([[1.0, 0.0, -700.0], [0.0, 1.0, -200.0]], np.float32)  # face crop near the frame centre
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    passes, kept = [], []
    with runtime.memory_fraction_scope(plan.memory_fraction, device), torch.inference_mode(), \
            accelerated(models, accel, deepcache=bool(deepcache)) as run:
        ctx = DenoiseContext(unet=run.unet, vae=_Timed(run.vae, clock, run.vae_tiling), scheduler=scheduler,
                             mask=mask[None], mask_latent=mask_lat[None, None, None], initial_noise=noise,
                             generator=gen, guidance=args.guidance, deepcache=deepcache, vae_slice=plan.vae_slice,
                             cfg_serial=plan.cfg_serial, on_step=lambda windows: None)
        for rep in range(2):  # the first pass warms up (compile, graph capture, cuDNN timing); the second is measured
            clock.seconds.clear()
            kept.clear()
            t0 = time.perf_counter()
            for w0 in range(0, args.windows, plan.window_batch):
                with clock("window"):
                    out = denoise_windows(ctx, faces[w0:w0 + plan.window_batch], audio[w0:w0 + plan.window_batch])
                with clock("paste_back"):
                    out = out.cpu()
                    kept.append(out)
                    for k in range(out.shape[0]):
                        restore_face(frames, out[k], matrix)
            clock.sync()
            passes.append(time.perf_counter() - t0)
        formats = _conv_formats(models, run, faces, audio, res, dtype) if accel.channels_last else None
    wall = passes[-1]
    total_frames = args.windows * 16
    stages = {k: round(v, 4) for k, v in clock.seconds.items()}
    stages["unet_and_scheduler"] = round(stages.pop("window") - stages.get("vae_encode", 0) - stages.get("vae_decode", 0), 4)
    result = {
        "mode": spec, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""), "tiny": args.tiny, "resolution": res,
        "settings": {"steps": args.steps, "guidance": args.guidance, "windows": args.windows, "frames_per_window": 16,
                     "window_batch": plan.window_batch, "vae_slice": plan.vae_slice,
                     "memory_fraction": plan.memory_fraction, "deepcache": name == "deepcache", "tier": plan.tier,
                     "cfg_serial": plan.cfg_serial},
        "accel": accel.describe(),
        "frames_per_s": round(total_frames / wall, 3), "wall_s": round(wall, 3), "first_pass_s": round(passes[0], 3),
        "stages_s": stages,
    }
    if formats is not None:
        result["channels_last_conv_inputs"] = formats
    outputs[spec] = torch.cat(kept)
    if "reference" in outputs and spec != "reference":
        result["max_abs_diff_vs_reference"] = max_abs_diff(outputs[spec], outputs["reference"])
    if device.type == "cuda":
        result["peak_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / GIB, 3)
        result["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / GIB, 3)
        torch.cuda.empty_cache()
    return result


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float((a.float() - b.float()).abs().max()), 5)


def summary(results, outputs):
    """Each mode against the reference: speed-up (frames/s ratio), peak memory ratio, largest output difference
    (faces in [-1, 1])."""
    ref = next((r for r in results if r["mode"] == "reference"), None)
    if ref is None or len(results) < 2:
        return None
    out = {"mode": "summary", "reference_frames_per_s": ref["frames_per_s"], "vs_reference": {}}
    for r in results:
        if r is ref or "skipped" in r:
            continue
        entry = {"speedup": round(r["frames_per_s"] / ref["frames_per_s"], 3),
                 "max_abs_diff": max_abs_diff(outputs[r["mode"]], outputs["reference"])}
        if "peak_allocated_gb" in r and ref.get("peak_allocated_gb"):
            entry["peak_allocated_ratio"] = round(r["peak_allocated_gb"] / ref["peak_allocated_gb"], 3)
        out["vs_reference"][r["mode"]] = entry
    return out


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
    parser.add_argument("--modes", default="reference,ours,deepcache,tier8gb",
                        help="comma-separated MODE[+lever...] (see the top of this file)")
    parser.add_argument("--resolution", type=int, default=None, help="face size (default 512; --tiny: 128)")
    add_accel_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # compile messages
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    levers = accel_from_args(argparse.Namespace(**{**vars(args), "compile_cache_dir": None}))
    modes = [(spec, *parse_mode(spec, levers, args.compile_cache_dir)) for spec in args.modes.split(",")]
    unet, vae, res = build_models(args.tiny, device, dtype, args.resolution or (128 if args.tiny else None))
    results, outputs = [], {}
    for spec, name, accel in modes:
        result = run_mode(spec, name, accel, unet, vae, res, args, device, dtype, plan_for_mode(name, device), outputs)
        results.append(result)
        print(json.dumps(result), flush=True)
    line = summary(results, outputs)
    if line is not None:
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
