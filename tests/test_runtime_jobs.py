"""One memory-managed job (latentsync.runtime.run_job) without real networks: model lifetime, teardown, the
host's interrupt, the OOM retry, device/dtype vocabulary — and the same plan for the CLI and the nodes."""

from __future__ import annotations

import contextlib
import dataclasses
import types

import pytest
import torch

from latentsync import runtime
from latentsync.errors import CancelledError, InputError, LatentSyncError, MissingWeightsError
from latentsync.runtime import GIB, Host, ModelHandle, run_job


class FakeModels:
    device = torch.device("cpu")

    def __init__(self):
        self.released = False

    def nbytes(self):
        return 10

    def release(self):
        self.released = True


class Interrupted(Exception):
    pass


@pytest.fixture
def fake(monkeypatch, tmp_path):
    loaded = []
    weights = tmp_path / "latentsync_unet.pt"
    weights.write_bytes(b"x" * 1000)
    paths = types.SimpleNamespace(unet=weights, whisper=weights, vae=weights, version="1.6")

    def load_models(paths, device, dtype):
        calls["dtypes"].append(dtype)
        loaded.append(FakeModels())
        return loaded[-1]

    monkeypatch.setattr("latentsync.models.load_models", load_models)
    monkeypatch.setattr(ModelHandle, "paths", lambda self, host: paths)
    calls = {"free": [], "interrupt_checks": 0, "dtypes": []}

    def on_cancel():
        calls["interrupt_checks"] += 1
        raise Interrupted()

    host = Host(free_memory=lambda need, dev: calls["free"].append(need), on_cancel=on_cancel)
    return types.SimpleNamespace(loaded=loaded, host=host, calls=calls)


def test_models_are_torn_down_after_each_job(fake):
    handle = ModelHandle("1.6", "cpu", "fp32")
    assert run_job(handle, lambda models, plan: plan.tier, fake.host) == "cpu"
    run_job(handle, lambda models, plan: None, fake.host)
    assert len(fake.loaded) == 2 and all(m.released for m in fake.loaded)
    assert not handle.loaded
    assert fake.calls["free"] == [3000, 3000]  # the host is asked to make room before each load


def test_keep_loaded_reuses_the_models(fake):
    handle = ModelHandle("1.6", "cpu", "fp16", keep_loaded=True)
    first = run_job(handle, lambda models, plan: models, fake.host)
    second = run_job(handle, lambda models, plan: models, fake.host)
    assert first is second and not first.released and handle.loaded
    assert fake.calls["free"] == [1500]  # fp16: half the fp32 files
    handle.release()
    assert first.released and not handle.loaded


def test_host_hooks_choose_the_dtype_cap_the_plan_and_wrap_the_work(fake):
    """default_dtype answers "auto"; limit_plan caps the tier plan before the user's overrides; use_models wraps
    the work once the networks are loaded, before they are torn down."""
    events = []

    @contextlib.contextmanager
    def use_models(handle):
        events.append(("use", handle.loaded))
        yield
        events.append(("done", handle.loaded))

    host = dataclasses.replace(fake.host, default_dtype=lambda device: torch.bfloat16, use_models=use_models,
                               limit_plan=lambda plan: dataclasses.replace(plan, vae_slice=1, reason="capped"))
    handle = ModelHandle("1.6", "cpu", "auto")
    plan = run_job(handle, lambda models, plan: events.append(("work", handle.loaded)) or plan, host)
    assert events == [("use", True), ("work", True), ("done", True)] and not handle.loaded
    assert (plan.vae_slice, plan.reason, fake.calls["dtypes"]) == (1, "capped", [torch.bfloat16])
    assert run_job(handle, lambda models, plan: plan, host, vae_slice=3).vae_slice == 3  # the user's value wins
    run_job(ModelHandle("1.6", "cpu", "fp16"), lambda models, plan: None, host)
    assert fake.calls["dtypes"][-1] == torch.float16  # an explicit dtype is not the host's to choose


def test_a_host_can_take_kept_networks_back_between_jobs(fake):
    """What ComfyUI's model management does when it needs the memory: release() from outside; the next job
    loads the networks again."""
    used = []

    @contextlib.contextmanager
    def use_models(handle):
        used.append(handle)
        yield

    host = dataclasses.replace(fake.host, use_models=use_models)
    handle = ModelHandle("1.6", "cpu", "fp32", keep_loaded=True)
    first = run_job(handle, lambda models, plan: models, host)
    used[-1].release()
    assert first.released and not handle.loaded
    second = run_job(handle, lambda models, plan: models, host)
    assert second is not first and not second.released and handle.loaded and len(fake.loaded) == 2


def test_cancel_becomes_the_hosts_interrupt_and_still_tears_down(fake):
    def work(models, plan):
        raise CancelledError("Lip-sync was cancelled.")

    with pytest.raises(Interrupted):
        run_job(ModelHandle(device="cpu"), work, fake.host)
    assert fake.calls["interrupt_checks"] == 1 and fake.loaded[0].released


def test_errors_tear_down_too(fake):
    def work(models, plan):
        raise LatentSyncError("bad frames")

    with pytest.raises(LatentSyncError, match="bad frames"):
        run_job(ModelHandle(device="cpu"), work, fake.host)
    assert fake.loaded[0].released


def test_out_of_memory_retries_once_with_a_smaller_plan(fake):
    plans = []

    def work(models, plan):
        plans.append(plan)
        if len(plans) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "ok"

    assert run_job(ModelHandle(device="cpu"), work, fake.host) == "ok"
    assert [p.vae_slice for p in plans] == [4, 2]
    assert len(fake.loaded) == 1  # the retry reuses the loaded models


def test_user_overrides_reach_the_plan(fake):
    plan = run_job(ModelHandle(device="cpu"), lambda models, plan: plan, fake.host, window_batch=3, vae_slice=7)
    assert (plan.window_batch, plan.vae_slice) == (3, 7)


def test_device_and_dtype_choices():
    assert runtime.resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert runtime.resolve_device("auto", lambda: torch.device("cpu")) == torch.device("cpu")
    assert runtime.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert runtime.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert runtime.resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(InputError, match="auto, fp16, bf16, fp32"):
        runtime.resolve_dtype("float16", torch.device("cpu"))  # one vocabulary for the CLI and the nodes
    with pytest.raises(InputError):
        runtime.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            runtime.resolve_device("cuda")
    for bad in ({"version": "2.0"}, {"dtype": "fp8"}, {"device": "quantum"}):
        with pytest.raises(InputError):
            ModelHandle(**bad)


def test_missing_weights_name_the_hosts_folders(tmp_path):
    host = Host(models_dirs=lambda: [str(tmp_path)])
    with pytest.raises(MissingWeightsError) as info:
        ModelHandle("1.5", "cpu", download=False).paths(host)
    assert str(tmp_path) in str(info.value)


def test_handle_uses_the_host_folders(tiny_models):
    paths = ModelHandle("1.6", "cpu", "fp32", download=False).paths(Host(models_dirs=lambda: [str(tiny_models)]))
    assert paths.unet.parent == tiny_models


def test_cli_and_nodes_get_the_same_plan_from_the_same_function(monkeypatch, comfy_pack):
    """For the same (mocked) GPU memory, the CLI's host (torch.cuda) and the nodes' host (ComfyUI's model
    management, through memory_limiter) reach the same plan through the same function, runtime.plan_for."""
    total, free = 12 * GIB, 11 * GIB
    device = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (free, total))
    import comfy.model_management as mm

    monkeypatch.setattr(mm, "get_total_memory", lambda d=None, torch_total_too=False: total)
    monkeypatch.setattr(mm, "get_free_memory", lambda d=None, torch_free_too=False: free)
    seen = []
    for module in (runtime, comfy_pack.latentsync.runtime):  # the library, and its copy inside the pack
        real = module.plan_for
        monkeypatch.setattr(module, "plan_for", lambda *a, _real=real: seen.append(a) or _real(*a))
    cli_plan = runtime.Host().plan(device)
    node_plan = comfy_pack.nodes.comfy_host().plan(device)
    assert seen == [(total, free, "cuda:0"), (total, free, "cuda:0")]
    assert cli_plan.describe() == node_plan.describe() == "tier medium: window_batch 1, vae_slice 4, fraction 0.70"
    assert comfy_pack.latentsync.runtime.__file__ == runtime.__file__  # one source of the tier table
