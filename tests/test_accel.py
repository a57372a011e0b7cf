"""The GPU levers of latentsync.accel: each one on gives the same output as off (within float tolerance, or
exactly where the math is the same), every global they touch is restored, impossible combinations are refused.
CPU tests use tiny random models; the ``cuda`` tests at the end run only where a GPU is (bench/gpu_check.sh)."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from latentsync.accel import (Accel, Accelerated, CompileCache, CompiledUNet, CudaGraphUNet, accelerated, channels_last_scope,
                              conv_input_formats, cudnn_benchmark_scope)
from latentsync.config import load_unet_config
from latentsync.denoise import DenoiseContext, denoise_windows
from latentsync.errors import InputError
from latentsync.face import latent_mask, load_mask
from latentsync.models import LatentSyncModels
from latentsync.models.unet3d import UNet3DConditionModel
from latentsync.models.vae import decode
from latentsync.scheduler import make_scheduler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RES, FRAMES, AUDIO_DIM = 32, 4, 16
UNET_CFG = {**load_unet_config("1.6"), "resolution": RES, "block_out_channels": [32, 32], "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"], "cross_attention_dim": AUDIO_DIM,
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"], "motion_module_resolutions": [1, 2]}
VAE_CFG = {"block_out_channels": [8, 16, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4,
           "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 1, "norm_num_groups": 8,
           "latent_channels": 4, "sample_size": 32}  # 32 px tiles: 4x4-latent decoder tiles


@pytest.fixture(scope="module")
def models():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    unet = UNet3DConditionModel(UNET_CFG).eval().requires_grad_(False)
    vae = AutoencoderKL(**VAE_CFG).eval().requires_grad_(False)
    return LatentSyncModels(unet, vae, None, dict(UNET_CFG), device=torch.device("cpu"), dtype=torch.float32)


def _inputs(batch=1, seed=1):
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 13, FRAMES, RES // 8, RES // 8, generator=gen)
    audio = torch.randn(batch * FRAMES, 50, AUDIO_DIM, generator=gen)
    return sample, torch.tensor(701), audio


def _denoise(models, run, *, windows=2, window_batch=2, guidance=1.5, cfg_serial=False, steps=3):
    """The real denoise loop on ``run`` (an ``Accelerated``): same seeds whatever the levers."""
    gen = torch.Generator().manual_seed(1247)
    scheduler = make_scheduler()
    scheduler.set_timesteps(steps)
    mask = load_mask(RES)
    ctx = DenoiseContext(
        unet=run.unet, vae=run.vae, scheduler=scheduler, mask=torch.from_numpy(mask)[None],
        mask_latent=torch.from_numpy(np.ascontiguousarray(latent_mask(mask)))[None, None, None],
        initial_noise=torch.randn((1, 4, 1, RES // 8, RES // 8), generator=gen), generator=gen, guidance=guidance,
        deepcache=0, vae_slice=FRAMES, cfg_serial=cfg_serial, on_step=lambda n: None)
    faces = torch.rand(windows, FRAMES, 3, RES, RES, generator=gen) * 2 - 1
    audio = torch.randn(windows, FRAMES, 50, AUDIO_DIM, generator=gen)
    with torch.inference_mode():
        return torch.cat([denoise_windows(ctx, faces[w:w + window_batch], audio[w:w + window_batch])
                          for w in range(0, windows, window_batch)])


# ------------------------------------------------------------------------------------------ settings
def test_defaults_are_off_and_leave_the_models_untouched(models):
    accel = Accel()
    assert not accel.enabled and accel.describe() == "off"
    with accelerated(models, accel) as run:
        assert run.unet is models.unet and run.vae is models.vae and run.vae_tiling is False


@pytest.mark.parametrize("kwargs, message", [
    ({"compile_backend": "xla"}, "compile_backend must be one of"),
    ({"compile": True, "compile_mode": "reduce-overhead"}, "compile_mode must be one of"),
    ({"compile_cache_dir": "/tmp/x"}, "compile_cache_dir is only used with compile=True"),
    ({"channels_last": 1}, "channels_last must be true or false"),
])
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        Accel(**kwargs)


def test_impossible_combinations_are_refused(models):
    with pytest.raises(InputError, match="cuda_graphs needs a CUDA GPU, but this job runs on cpu"):
        with accelerated(models, Accel(cuda_graphs=True)):
            pass
    with pytest.raises(InputError, match="compile cannot be combined with DeepCache"):
        Accel(compile=True).check("cpu", deepcache=True)
    with pytest.raises(InputError, match="cuda_graphs cannot be combined with DeepCache"):
        Accel(cuda_graphs=True).check("cuda", deepcache=True)
    Accel(cuda_graphs=True, compile=True, channels_last=True).check("cuda")  # fine on a GPU
    Accel(channels_last=True, cudnn_benchmark=True, vae_tiling=True).check("cpu", deepcache=True)


# ------------------------------------------------------------------------------------------ cuDNN benchmark
def test_cudnn_benchmark_is_scoped_and_restored_once(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with cudnn_benchmark_scope(torch.device("cuda")):  # sets the flag only: runs without a GPU
        assert torch.backends.cudnn.benchmark is True
        with cudnn_benchmark_scope(torch.device("cuda")):
            assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.benchmark is True  # the outer job still runs
    assert torch.backends.cudnn.benchmark is False
    with cudnn_benchmark_scope(torch.device("cpu")):  # no effect off CUDA: left as it was
        assert torch.backends.cudnn.benchmark is False
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    with pytest.raises(RuntimeError), cudnn_benchmark_scope(torch.device("cuda")):
        raise RuntimeError("job failed")
    assert torch.backends.cudnn.benchmark is True


# ------------------------------------------------------------------------------------------ channels-last
def test_channels_last_same_output_restored_and_where_it_reaches_the_convolutions(models):
    sample, t, audio = _inputs()
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    params = {name: p for name, p in models.unet.named_parameters()}
    with torch.inference_mode():
        expected, expected_images = models.unet(sample, t, audio), decode(models.vae, latents)
        with channels_last_scope(models.unet, models.vae):
            conv = models.unet.conv_in.weight
            assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
            with conv_input_formats(models.unet) as unet_formats:
                got = models.unet(sample, t, audio)
            with conv_input_formats(models.vae) as vae_formats:
                images = decode(models.vae, latents)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(images, expected_images, rtol=0, atol=1e-5)
    # the VAE decoder's activations stay NHWC from conv to conv (all but post_quant_conv and conv_in, fed by
    # the NCHW latents); in the UNet, video_group_norm hands NCHW back before nearly every convolution
    assert vae_formats == {"channels_last": 25, "other": 2}, vae_formats
    assert unet_formats["channels_last"] >= 1 and unet_formats["other"] > unet_formats["channels_last"], unet_formats
    assert all(p.is_contiguous() for m in (models.unet, models.vae) for p in m.parameters())
    assert all(params[name] is p for name, p in models.unet.named_parameters())  # same Parameter objects


# ------------------------------------------------------------------------------------------ CUDA graphs (logic)
def _cpu_capture(fn, inputs, pool):
    """Stands in for capture_cuda_graph on the CPU: replay recomputes from the input buffers INTO the output
    buffer, as a graph does, so stale buffers or an output aliased across calls would show."""
    first = fn(*inputs)
    output = torch.empty_like(first)

    def replay():
        output.copy_(fn(*inputs))

    return replay, output, first


def test_graph_runner_replays_per_shape_and_matches_eager(models):
    with accelerated(models, Accel()) as run:
        expected = _denoise(models, run, windows=3, window_batch=2, cfg_serial=True)
    graphs = CudaGraphUNet(models.unet, torch.device("cpu"), capture=_cpu_capture)
    got = _denoise(models, Accelerated(graphs, models.vae), windows=3, window_batch=2, cfg_serial=True)
    assert graphs.captured == 2  # 2 windows per call, then the last window alone
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the two CFG halves per step stay apart
    with pytest.raises(InputError, match="cannot run DeepCache steps"):
        graphs(*_inputs(), cache=object())
    graphs.release()
    assert graphs.captured == 0


# ------------------------------------------------------------------------------------------ torch.compile
def test_compile_cache_folder_comes_from_the_settings_or_the_models_folder(models, tmp_path):
    with accelerated(models, Accel(compile=True, compile_backend="eager")) as run:
        assert isinstance(run.unet, CompiledUNet) and run.unet.cache is None  # no folder known: torch's own
    with_dir = copy.copy(models)
    with_dir.model_dir = tmp_path / "models"
    with accelerated(with_dir, Accel(compile=True, compile_backend="eager")) as run:
        assert run.unet.cache.folder == tmp_path / "models" / "compile_cache"
    with accelerated(with_dir, Accel(compile=True, compile_cache_dir=str(tmp_path / "mine"))) as run:
        assert run.unet.cache.folder == tmp_path / "mine"


def test_compile_cache_files_are_written_and_loaded_once(tmp_path, monkeypatch, caplog):
    loaded = []
    monkeypatch.setattr(torch.compiler, "save_cache_artifacts", lambda: (b"kernels", None))
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", loaded.append)
    cache = CompileCache(tmp_path / "cache", torch.device("cpu"))
    path = cache.save((2, 13, 16, 64, 64))
    assert path.parent == tmp_path / "cache" and path.name.endswith("-2x13x16x64x64.bin")
    assert path.read_bytes() == b"kernels" and cache.files() == [path]
    other = tmp_path / "cache" / f"{cache.prefix}-1x13x16x64x64.bin"  # e.g. written by an earlier process
    other.write_bytes(b"older kernels")
    broken = tmp_path / "cache" / f"{cache.prefix}-9.bin"
    broken.write_bytes(b"?")
    monkeypatch.setattr(torch.compiler, "load_cache_artifacts",
                        lambda data: loaded.append(data) if data != b"?" else (_ for _ in ()).throw(ValueError("bad")))
    with caplog.at_level(logging.WARNING, logger="latentsync.accel"):
        CompileCache(tmp_path / "cache", torch.device("cpu")).load()
        CompileCache(tmp_path / "cache", torch.device("cpu")).load()  # once per process
    assert loaded == [b"older kernels"]  # its own file counts as loaded; the broken one only warns
    assert "ignoring the compile cache" in caplog.text


@pytest.mark.slow  # dynamo traces the tiny UNet (~10-30 s on a busy 2-core CI box); inductor would take minutes
def test_compile_matches_eager_compiles_once_per_shape_and_says_so(models, caplog):
    from torch._dynamo.utils import counters

    env = dict(os.environ)
    with accelerated(models, Accel()) as run:
        expected = _denoise(models, run, windows=3, window_batch=2)
    graphs_before = counters["stats"]["unique_graphs"]
    with caplog.at_level(logging.INFO, logger="latentsync.accel"):
        with accelerated(models, Accel(compile=True, compile_backend="eager")) as run:
            got = _denoise(models, run, windows=3, window_batch=2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert counters["stats"]["unique_graphs"] - graphs_before == 2  # batch 2 and batch 1: not once per step
    assert caplog.text.count("compiling the UNet for input") == 2
    assert "the first window takes longer" in caplog.text and "torch's temporary cache only" in caplog.text
    with caplog.at_level(logging.INFO, logger="latentsync.accel"):
        caplog.clear()
        with accelerated(models, Accel(compile=True, compile_backend="eager")) as run:  # a second job
            _denoise(models, run, windows=2, window_batch=2)
    assert "compiling" not in caplog.text and counters["stats"]["unique_graphs"] - graphs_before == 2
    assert dict(os.environ) == env


_TOY_COMPILE = """
import sys, torch
from pathlib import Path
from torch._dynamo.utils import counters
from latentsync.accel import CompiledUNet, CompileCache

class Toy(torch.nn.Module):
    config = {"name": "toy"}

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states=None):
        return torch.nn.functional.silu(self.conv(sample)) * timestep + encoder_hidden_states.mean()

torch.manual_seed(0)
net = Toy().eval()
x, t, e = torch.randn(2, 4, 8, 8), torch.tensor(3.0), torch.randn(2, 5)
unet = CompiledUNet(net, "inductor", "default", CompileCache(Path(sys.argv[1]), torch.device("cpu")))
with torch.inference_mode():
    assert (unet(x, t, e) - net(x, t, e)).abs().max() < 1e-5
print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
"""


@pytest.mark.slow  # two inductor compiles of a one-conv model (C++ on the CPU): ~15 s each
@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor on the CPU needs a C++ compiler")
def test_compiled_kernels_come_back_from_our_cache_folder_in_a_new_process(tmp_path, repo_root):
    script = tmp_path / "toy.py"
    script.write_text(_TOY_COMPILE)
    folder = tmp_path / "compile_cache"

    def run(torch_cache: str) -> list[int]:  # each process with its own empty torch cache: only ours is shared
        env = {**os.environ, "PYTHONPATH": str(repo_root), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / torch_cache)}
        out = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, env=env,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return [int(n) for n in out.stdout.split()]

    assert run("torch_cache_1") == [0, 1]  # compiled, then saved
    assert [p.name.endswith("-2x4x8x8.bin") for p in folder.iterdir()] == [True]
    assert run("torch_cache_2") == [1, 0]  # found in the file we saved


# ------------------------------------------------------------------------------------------ VAE tiling
def test_tiled_decode_is_diffusers_tiling_and_plain_when_one_tile_is_enough(models):
    gen = torch.Generator().manual_seed(3)
    big = torch.randn(3, 4, 8, 8, generator=gen)  # 3x3 tiles of 4 latents, overlapping by 1
    small = torch.randn(3, 4, 4, 4, generator=gen)  # one tile
    vae = models.vae
    tiled = decode(vae, big, 2, tiled=True)
    reference = copy.deepcopy(vae)
    reference.enable_tiling()
    torch.testing.assert_close(tiled, decode(reference, big, 3), rtol=0, atol=1e-5)  # diffusers' own tiling
    torch.testing.assert_close(tiled, decode(vae, big, None, tiled=True), rtol=0, atol=1e-5)  # slices independent
    plain = decode(vae, big, 2)
    assert tiled.shape == plain.shape == (3, 3, 64, 64)
    assert (tiled - plain).abs().max() > 1e-2  # really tiled: an approximation (per-tile norms, blended seams)
    assert vae.use_tiling is False  # the shared model is not switched
    torch.testing.assert_close(decode(vae, small, 2, tiled=True), decode(vae, small, 2), rtol=0, atol=0)


def test_all_cpu_levers_together_match_and_restore_everything(models):
    flag, env = torch.backends.cudnn.benchmark, dict(os.environ)
    with accelerated(models, Accel()) as run:
        expected = _denoise(models, run)
    accel = Accel(channels_last=True, cudnn_benchmark=True, vae_tiling=True)
    with accelerated(models, accel) as run:
        assert run.vae_tiling is True and models.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        got = _denoise(models, run)  # 4x4 latents are one VAE tile: tiling changes nothing here
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert torch.backends.cudnn.benchmark == flag and dict(os.environ) == env
    assert all(p.is_contiguous() for m in (models.unet, models.vae) for p in m.parameters())


# ------------------------------------------------------------------------------------------ on a GPU only
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh)")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graphs_and_channels_last_match_eager_on_the_gpu(models, dtype):
    gpu = copy.copy(models)
    gpu.unet, gpu.vae = copy.deepcopy(models.unet).to("cuda", dtype), copy.deepcopy(models.vae).to("cuda", dtype)
    gpu.device, gpu.dtype = torch.device("cuda"), dtype
    sample, t, audio = (x.to("cuda", dtype if x.is_floating_point() else x.dtype) for x in _inputs(batch=2))
    flag = torch.backends.cudnn.benchmark
    with torch.inference_mode():
        expected = gpu.unet(sample, t, audio)
        accel = Accel(cuda_graphs=True, channels_last=True, cudnn_benchmark=True)
        with accelerated(gpu, accel) as run:
            first = run.unet(sample, t, audio)  # warm-up + capture
            again = run.unet(sample, t + 0, audio)  # replay
            single = run.unet(sample[:1], t, audio[:FRAMES])  # warm-up + capture of a second graph (shared pool)
            after = run.unet(sample * 0.5, t - 300, audio)  # the first graph again, new inputs
            single_again = run.unet(sample[:1], t, audio[:FRAMES])
            assert run.unet.captured == 2 and torch.backends.cudnn.benchmark
        expected_single = gpu.unet(sample[:1], t, audio[:FRAMES])
        expected_after = gpu.unet(sample * 0.5, t - 300, audio)
    tol = 3e-3 if dtype == torch.float32 else 3e-2  # TF32 convolutions (cuDNN default) and fp16; NHWC kernels
    for got, want in ((first, expected), (again, expected), (single, expected_single), (after, expected_after),
                      (single_again, expected_single)):
        torch.testing.assert_close(got, want, rtol=0, atol=tol)
    assert torch.backends.cudnn.benchmark == flag
