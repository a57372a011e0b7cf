"""The pack's memory limiter against the vendored ComfyUI's model management, in this process (CPU mode, fake
networks): kept networks are one entry of ComfyUI's loaded models and are unloaded by it like its own (unload all,
eviction when memory is needed), never while a job uses them; networks that are not kept never enter its list;
``auto`` device / dtype and the VRAM state follow ComfyUI's choices and flags."""

from __future__ import annotations

import logging
import types

import pytest
import torch

GIB = 1024 ** 3


class FakeModels:
    device = torch.device("cpu")

    def __init__(self, dtype):
        self.dtype, self.released = dtype, False

    def nbytes(self):
        return 1000

    def release(self):
        self.released = True


@pytest.fixture
def comfy(comfy_pack, monkeypatch, tmp_path):
    import comfy.model_management as mm
    import latentsync_pack.latentsync.models as models_module

    runtime, limiter = comfy_pack.latentsync.runtime, comfy_pack.memory_limiter
    weights = tmp_path / "latentsync_unet.pt"
    weights.write_bytes(b"x" * 1000)
    paths = types.SimpleNamespace(unet=weights, whisper=weights, vae=weights, version="1.6")
    loaded = []

    def load_models(paths, device, dtype):
        loaded.append(FakeModels(dtype))
        return loaded[-1]

    monkeypatch.setattr(models_module, "load_models", load_models)
    monkeypatch.setattr(runtime.ModelHandle, "paths", lambda self, host: paths)
    mm.unload_all_models()
    yield types.SimpleNamespace(mm=mm, runtime=runtime, limiter=limiter, loaded=loaded)
    mm.unload_all_models()


def _entry(mm, patcher):
    entries = [m for m in mm.current_loaded_models if m.model is patcher]
    assert len(entries) <= 1
    return entries[0] if entries else None


def _free_memory(free: int):
    """A stand-in for ``comfy.model_management.get_free_memory`` that always reports ``free`` bytes."""
    return lambda dev=None, torch_free_too=False: (free, free) if torch_free_too else free


def _other_comfy_model(mm):
    import comfy.model_patcher

    other = comfy.model_patcher.ModelPatcher(torch.nn.Linear(4, 4), load_device=torch.device("cpu"),
                                             offload_device=torch.device("cpu"))
    mm.load_models_gpu([other])
    return other


def test_kept_networks_are_comfys_loaded_model_until_it_unloads_them(comfy):
    mm, runtime = comfy.mm, comfy.runtime
    handle = runtime.ModelHandle("1.6", "auto", "auto", keep_loaded=True)
    registered = []

    def work(models, plan):
        registered.append(_entry(mm, handle.host_record.patcher) is not None)
        return models

    first = runtime.run_job(handle, work, comfy.limiter.limited_host())
    second = runtime.run_job(handle, work, comfy.limiter.limited_host())  # a fresh host per job, as the nodes do
    assert first is second and len(comfy.loaded) == 1 and handle.loaded and registered == [True, True]
    patcher = handle.host_record.patcher
    entry = _entry(mm, patcher)  # re-seated at the second job, not listed twice
    assert (entry.device, entry.model_memory(), entry.model_loaded_memory()) == (torch.device("cpu"), 1000, 1000)
    assert type(patcher.model).__name__ == "LatentSyncNetworks" and not list(patcher.model.parameters())

    mm.unload_all_models()  # what POST /free {"unload_models": true} runs
    assert not handle.loaded and first.released and _entry(mm, patcher) is None

    third = runtime.run_job(handle, work, comfy.limiter.limited_host())
    assert third is not first and len(comfy.loaded) == 2 and handle.loaded and _entry(mm, patcher) is not None


def test_comfy_evicts_kept_networks_when_another_model_needs_the_memory(comfy, monkeypatch, caplog):
    mm, runtime = comfy.mm, comfy.runtime
    handle = runtime.ModelHandle("1.6", "cpu", "auto", keep_loaded=True)
    models = runtime.run_job(handle, lambda models, plan: models, comfy.limiter.limited_host())
    other = _other_comfy_model(mm)
    monkeypatch.setattr(mm, "get_free_memory", _free_memory(500))
    # 300 more bytes are needed than are free: less than the kept 1000, which ComfyUI would normally offload
    # piecemeal; LatentSync's networks are unloaded whole instead
    with caplog.at_level(logging.INFO):
        mm.free_memory(800, torch.device("cpu"), keep_loaded=[_entry(mm, other)])
    assert "Unloaded partially" not in caplog.text and "unloaded by ComfyUI's model management" in caplog.text
    assert models.released and not handle.loaded and _entry(mm, handle.host_record.patcher) is None
    assert _entry(mm, other) is not None


def test_a_jobs_own_networks_are_never_unloaded_under_it(comfy, caplog):
    mm, runtime = comfy.mm, comfy.runtime
    handle = runtime.ModelHandle("1.6", "cpu", "auto", keep_loaded=True)
    host = comfy.limiter.limited_host()
    other = _other_comfy_model(mm)

    def work(models, plan):
        host.free_memory(10 ** 30, torch.device("cpu"))  # the job making room (e.g. its OOM retry)
        assert _entry(mm, other) is None and _entry(mm, handle.host_record.patcher) is not None
        mm.unload_all_models()  # even ComfyUI unloading everything leaves the running job's networks alone
        return models

    with caplog.at_level(logging.WARNING, logger="latentsync.memory"):
        models = runtime.run_job(handle, work, host)
    assert handle.loaded and not models.released
    assert "a job is using; they stay loaded" in caplog.text
    runtime.run_job(handle, lambda models, plan: None, comfy.limiter.limited_host())  # registered again
    assert len(comfy.loaded) == 1 and _entry(mm, handle.host_record.patcher) is not None


def test_networks_that_are_not_kept_never_enter_comfys_list(comfy):
    mm, runtime = comfy.mm, comfy.runtime
    handle = runtime.ModelHandle("1.6", "cpu", "auto")
    before = list(mm.loaded_models())
    during = runtime.run_job(handle, lambda models, plan: list(mm.loaded_models()), comfy.limiter.limited_host())
    assert during == before == mm.loaded_models() and handle.host_record is None
    assert not handle.loaded and comfy.loaded[0].released  # torn down after the job, as before


def test_auto_dtype_and_device_follow_comfy(comfy, monkeypatch, caplog):
    mm, runtime, limiter = comfy.mm, comfy.runtime, comfy.limiter
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert limiter.limited_host().default_device() == mm.get_torch_device() == cpu  # --cpu
    assert limiter.comfy_dtype(cpu) == torch.float32
    for flag, dtype in (("fp16_unet", torch.float16), ("bf16_unet", torch.bfloat16), ("fp32_unet", torch.float32)):
        with monkeypatch.context() as m:
            m.setattr(mm.args, flag, True)
            assert limiter.comfy_dtype(cpu) == dtype, flag
            handle = runtime.ModelHandle("1.6", "cpu", "auto")
            runtime.run_job(handle, lambda models, plan: None, limiter.limited_host())
            assert comfy.loaded[-1].dtype == dtype  # the loader's "auto" is ComfyUI's choice
            runtime.run_job(runtime.ModelHandle("1.6", "cpu", "fp16"), lambda models, plan: None,
                            limiter.limited_host())
            assert comfy.loaded[-1].dtype == torch.float16  # an explicit dtype wins
    with monkeypatch.context() as m:  # no CUDA here: the flags decide before the card is looked at
        m.setattr(mm, "FORCE_FP32", True)
        assert limiter.comfy_dtype(gpu) == torch.float32  # --force-fp32
    with monkeypatch.context() as m:
        m.setattr(mm.args, "force_fp16", True)
        assert limiter.comfy_dtype(gpu) == torch.float16 and limiter.comfy_dtype(cpu) == torch.float32
    with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="latentsync.memory"):
        m.setattr(mm.args, "fp8_e4m3fn_unet", True)
        m.setattr(mm.args, "fp32_vae", True)
        assert limiter.comfy_dtype(cpu) == torch.float32
    assert "cannot run in torch.float8_e4m3fn" in caplog.text and "--fp32-vae not applied separately" in caplog.text
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert limiter.comfy_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert limiter.comfy_device(torch.device("cuda", 0)) == gpu and limiter.comfy_device(cpu) == cpu


@pytest.mark.parametrize("state", ["LOW_VRAM", "NO_VRAM"])
def test_lowvram_and_novram_cap_the_plan_at_the_lowest_gpu_tier(comfy, monkeypatch, state):
    mm, limiter = comfy.mm, comfy.limiter
    monkeypatch.setattr(mm, "get_total_memory", lambda dev=None, torch_total_too=False: 24 * GIB)
    monkeypatch.setattr(mm, "get_free_memory", _free_memory(23 * GIB))
    gpu, host = torch.device("cuda", 0), limiter.limited_host()
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NORMAL_VRAM)
    assert host.plan(gpu).describe() == "tier high: window_batch 2, vae_slice 8, fraction 0.75"
    monkeypatch.setattr(mm, "vram_state", getattr(mm.VRAMState, state))
    plan = host.plan(gpu)
    assert plan.describe() == "tier low: window_batch 1, vae_slice 2, fraction 0.75" and plan.cfg_serial
    assert plan.reason == f"24.0 GiB total → tier high; ComfyUI {state} → tier low"
    assert host.plan(gpu, vae_slice=4).vae_slice == 4  # the user's own numbers still win
    assert host.plan(torch.device("cpu")).tier == "cpu"
