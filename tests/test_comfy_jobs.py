"""lipsync_job (the nodes' job glue) without ComfyUI: model handle lifetime, teardown, interrupt, OOM retry."""

from __future__ import annotations

import types

import pytest
import torch

import lipsync_job as jobs
from latentsync.errors import CancelledError, LatentSyncError, MissingWeightsError


class FakeModels:
    def __init__(self):
        self.unet, self.vae, self.audio_encoder = object(), object(), object()
        self.released = False

    def release(self):
        self.unet = self.vae = self.audio_encoder = None
        self.released = True


class Interrupted(Exception):
    pass


@pytest.fixture
def fake(monkeypatch, tmp_path):
    loaded = []
    real_lib = jobs.lib

    def load_models(paths, device, dtype):
        loaded.append(FakeModels())
        return loaded[-1]

    def lib(name):
        return types.SimpleNamespace(load_models=load_models) if name == "models" else real_lib(name)

    monkeypatch.setattr(jobs, "lib", lib)
    weights = tmp_path / "latentsync_unet.pt"
    weights.write_bytes(b"x" * 1000)
    paths = types.SimpleNamespace(unet=weights, whisper=None, vae=None, version="1.6")
    calls = {"free": [], "interrupt_checks": 0}

    def raise_if_interrupted():
        calls["interrupt_checks"] += 1
        raise Interrupted()

    host = jobs.Host(free_memory=lambda need, dev: calls["free"].append(need),
                     raise_if_interrupted=raise_if_interrupted)
    return types.SimpleNamespace(loaded=loaded, paths=paths, host=host, calls=calls)


def test_models_are_torn_down_after_each_job(fake):
    handle = jobs.ModelHandle(fake.paths, torch.device("cpu"), torch.float32, keep_loaded=False)
    assert jobs.run_job(handle, fake.host, lambda models, plan: (models, plan.tier))[1] == "cpu"
    jobs.run_job(handle, fake.host, lambda models, plan: None)
    assert len(fake.loaded) == 2 and all(m.released for m in fake.loaded)
    assert not handle.loaded
    assert fake.calls["free"] == [1000, 1000]  # ComfyUI is asked to free room before each load


def test_keep_loaded_reuses_the_models(fake):
    handle = jobs.ModelHandle(fake.paths, torch.device("cpu"), torch.float16, keep_loaded=True)
    first = jobs.run_job(handle, fake.host, lambda models, plan: models)
    second = jobs.run_job(handle, fake.host, lambda models, plan: models)
    assert first is second and not first.released and handle.loaded
    assert fake.calls["free"] == [500]  # fp16: half the fp32 checkpoint


def test_cancel_becomes_the_hosts_interrupt_and_still_tears_down(fake):
    handle = jobs.ModelHandle(fake.paths, torch.device("cpu"), torch.float32)

    def work(models, plan):
        raise CancelledError("Lip-sync was cancelled.")

    with pytest.raises(Interrupted):
        jobs.run_job(handle, fake.host, work)
    assert fake.calls["interrupt_checks"] == 1 and fake.loaded[0].released


def test_errors_tear_down_too(fake):
    handle = jobs.ModelHandle(fake.paths, torch.device("cpu"), torch.float32)
    with pytest.raises(LatentSyncError, match="bad frames"):
        jobs.run_job(handle, fake.host, lambda m, p: (_ for _ in ()).throw(LatentSyncError("bad frames")))
    assert fake.loaded[0].released


def test_out_of_memory_retries_once_with_a_smaller_plan(fake):
    handle = jobs.ModelHandle(fake.paths, torch.device("cpu"), torch.float32)
    plans = []

    def work(models, plan):
        plans.append(plan)
        if len(plans) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "ok"

    assert jobs.run_job(handle, fake.host, work) == "ok"
    assert [p.vae_slice for p in plans] == [4, 2]
    assert len(fake.loaded) == 1  # the retry reuses the loaded models


def test_progress_hook_reports_whole_job_fraction():
    seen = []
    hook = jobs.progress_hook(jobs.Host(progress=lambda d, t: seen.append((d, t))))
    hook(3, 8, {"window": 1})
    hook(0, 0, {})
    assert seen == [(3, 8), (0, 1)]


def test_tensor_chunks_are_views_and_reopenable():
    images = torch.rand(37, 8, 8, 3)
    source = jobs.tensor_chunks(images, chunk=16)
    for _ in range(2):
        chunks = list(source())
        assert [c.shape[0] for c in chunks] == [16, 16, 5]
        assert all(c.data_ptr() == images[i * 16].data_ptr() for i, c in enumerate(chunks))


def test_device_and_dtype_choices():
    host = jobs.Host()
    assert jobs.resolve_device("auto", host) == torch.device("cpu")
    assert jobs.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert jobs.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert jobs.resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(LatentSyncError):
        jobs.resolve_dtype("fp8", torch.device("cpu"))
    with pytest.raises(LatentSyncError):
        jobs.resolve_device("tpu", host)
    if not torch.cuda.is_available():
        with pytest.raises(LatentSyncError, match="no CUDA"):
            jobs.resolve_device("cuda", host)


def test_find_handle_names_the_missing_weights(tmp_path):
    host = jobs.Host(models_dirs=lambda: [str(tmp_path)])
    with pytest.raises(MissingWeightsError) as info:
        jobs.find_handle("1.5", "auto", "cpu", False, host)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(LatentSyncError):
        jobs.find_handle("2.0", "auto", "cpu", False, host)


def test_find_handle_uses_the_host_folders(tiny_models):
    host = jobs.Host(models_dirs=lambda: [str(tiny_models)])
    handle = jobs.find_handle("1.6", "fp32", "cpu", True, host)
    assert handle.paths.unet.parent == tiny_models and handle.keep_loaded and handle.dtype == torch.float32
    assert handle.estimate_bytes() > 0
