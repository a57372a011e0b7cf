"""VRAM-tier memory limiter of the ComfyUI nodes: ComfyUI's own view of the device's memory, fed into the one
memory policy every front end uses (``latentsync.runtime``: VRAM tier → windows per UNet batch, frames per VAE
slice, CUDA memory fraction applied only while the job runs; out of memory → one retry a tier lower; networks
torn down after the job unless kept loaded; memory logged at load, per window and after cleanup).

What is ComfyUI's here and nowhere else:

* memory: total / free memory of the device as ComfyUI's model management reports it (so its loaded models
  count); before our networks load, ComfyUI unloads its own models until they fit (``free_memory``).
* device and dtype for ``auto``: ComfyUI's device (``--cpu``, ``--directml``, ...) and its UNet dtype choice
  (``--force-fp32``, ``--force-fp16``, ``--fp16-unet``, ``--bf16-unet``, ``--fp32-unet``; fp16 on most GPUs,
  fp32 on the CPU). The three networks share one dtype and one device, so the VAE and text-encoder flags
  (``--fp32-vae``, ``--cpu-vae``, ``--fp16-text-enc`` ...) are not applied to them separately (a warning says so).
* ``--lowvram`` / ``--novram``: ComfyUI's own partial loading streams weights through ``comfy.ops`` layers, which
  LatentSync's networks (plain torch layers) do not have; they are always loaded whole, and the plan is capped at
  the lowest GPU tier instead (smallest UNet / VAE batches, guidance halves one after the other).
* kept networks (``keep_loaded``) take part in ComfyUI's model management: while kept they are one entry of
  ``comfy.model_management.current_loaded_models`` (a ``ModelPatcher`` for an empty stand-in module of their size
  on their device, registered with ``load_models_gpu`` at every job), so ComfyUI counts them and unloads them
  like its own models: ``POST /free {"unload_models": true}``, another model needing the memory, an OOM,
  ``--disable-smart-memory`` after each prompt. Its unload detaches the patcher, whose ON_DETACH callback
  releases the handle's networks (``handle.release()``); the next job loads them again. A job's own networks
  are never unloaded while it runs. Networks that are not kept are never registered: they are loaded for the
  job and torn down after it, as before.
* its interrupt exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import weakref

import comfy.model_management as mm
import comfy.model_patcher
import torch
from comfy.patcher_extension import CallbacksMP

from .latentsync.runtime import TIERS, Host, MemoryPlan, ModelHandle

log = logging.getLogger("latentsync.memory")

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
SEPARATE_FLAGS = ("fp16_vae", "bf16_vae", "fp32_vae", "cpu_vae", "fp8_e4m3fn_text_enc", "fp8_e5m2_text_enc",
                  "fp16_text_enc", "bf16_text_enc", "fp32_text_enc")


# ------------------------------------------------------------------------------------------ memory, device, dtype
def comfy_device(device: torch.device) -> torch.device:
    """``device`` as ComfyUI names it: a bare ``cuda`` becomes ``cuda:N`` (its current device), so that it matches
    the devices ComfyUI's model management compares with ``==``."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def comfy_memory(device: torch.device) -> tuple[int, int]:
    """(total, free) bytes of ``device`` as ComfyUI's model management sees them."""
    return int(mm.get_total_memory(device)), int(mm.get_free_memory(device))


def comfy_dtype(device: torch.device) -> torch.dtype:
    """The dtype ComfyUI would run a diffusion model in on ``device`` (its flags included): ``auto``."""
    dtype = mm.unet_dtype(device, supported_dtypes=list(DTYPES))
    fallback = torch.float32 if device.type == "cpu" else torch.float16
    if dtype not in DTYPES:
        log.warning("LatentSync cannot run in %s (a ComfyUI flag asks for it); using %s", dtype, fallback)
        dtype = fallback
    separate = [f"--{name.replace('_', '-')}" for name in SEPARATE_FLAGS if getattr(mm.args, name, False)]
    if separate:
        log.warning("LatentSync runs its UNet, VAE and audio encoder in one dtype on one device (%s on %s): %s "
                    "not applied separately", dtype, device, ", ".join(separate))
    return dtype


def vram_state_plan(plan: MemoryPlan) -> MemoryPlan:
    """``--lowvram`` / ``--novram`` (ComfyUI's LOW_VRAM / NO_VRAM state): the lowest GPU tier."""
    if mm.vram_state not in (mm.VRAMState.LOW_VRAM, mm.VRAMState.NO_VRAM) or plan.device_type in ("cpu", "mps"):
        return plan
    lowest, lower = plan, plan.lower()
    while lowest.tier != TIERS[-1][0] and lower is not None:
        lowest, lower = lower, lower.lower()
    if lowest is plan:
        return plan
    return dataclasses.replace(lowest, reason=f"{plan.reason}; ComfyUI {mm.vram_state.name} → tier {lowest.tier}")


def log_plan(plan: MemoryPlan) -> None:
    log.info("LatentSync memory plan: %s (%s)", plan.describe(), plan.reason)


# ------------------------------------------------------------------------------------------ kept networks
class LatentSyncNetworks(torch.nn.Module):
    """Stands for one handle's kept networks in ComfyUI's model list. It holds no weights: they stay where
    LatentSync loaded them (they cannot run partly offloaded), ComfyUI only learns their size and device."""


class WholeModelPatcher(comfy.model_patcher.ModelPatcher):
    """A patcher ComfyUI can only unload whole: nothing is offloaded piecemeal, so ``free_memory`` falls through
    to ``detach`` (the unload) whenever it needs any of this model's memory."""

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
        return 0


def _unloaded_by_comfy(handle_ref: weakref.ref, patcher, unpatch_all: bool) -> None:
    """ON_DETACH callback: ComfyUI unloaded the stand-in → release the handle's networks. ``unpatch_all`` False
    is ComfyUI re-seating the same model (``load_models_gpu``) or the patcher being collected: no unload."""
    handle = handle_ref()
    if not unpatch_all or handle is None or not handle.loaded:
        return
    if handle.host_record is not None and handle.host_record.in_use:
        log.warning("ComfyUI asked to unload LatentSync models that a job is using; they stay loaded")
        return
    log.info("LatentSync models unloaded by ComfyUI's model management")
    handle.release()


class KeptRecord:
    """ComfyUI's record of one handle's kept networks (``handle.host_record``): its patcher, its device, and
    whether a job is using the networks right now."""

    def __init__(self, handle: ModelHandle, device: torch.device):
        self.device = device
        self.patcher = WholeModelPatcher(LatentSyncNetworks(), load_device=device, offload_device=device)
        # a weak reference only: no cycle, so the record dies with the handle (and ComfyUI forgets it then)
        self.patcher.add_callback(CallbacksMP.ON_DETACH, functools.partial(_unloaded_by_comfy, weakref.ref(handle)))
        self.in_use = False

    def register(self, nbytes: int) -> None:
        """(Re)enter ComfyUI's loaded models as ``nbytes`` already in place on the device (nothing is moved)."""
        self.patcher.size = int(nbytes)
        self.patcher.model.model_loaded_weight_memory = int(nbytes)
        mm.load_models_gpu([self.patcher], force_full_load=True)

    def entries(self) -> list:
        return [loaded for loaded in mm.current_loaded_models if loaded.model is self.patcher]


class ComfyModels:
    """One job's side of ComfyUI's model management: make room before a load (never by unloading the networks
    this job uses), and register kept networks while the job uses them."""

    def __init__(self):
        self.held: list[KeptRecord] = []

    def make_room(self, need: int, device: torch.device) -> None:
        """Ask ComfyUI to unload models until ``need`` bytes are free on ``device``."""
        keep = [entry for record in self.held for entry in record.entries()]
        mm.free_memory(need, comfy_device(device), keep_loaded=keep)

    @contextlib.contextmanager
    def use(self, handle: ModelHandle):
        """While a job works: its kept networks are registered with ComfyUI (and shielded from its unloads)."""
        if not (handle.keep_loaded and handle.loaded):
            yield
            return
        device = comfy_device(handle.models.device)
        record = handle.host_record
        if record is None or record.device != device:
            record = handle.host_record = KeptRecord(handle, device)
        record.in_use = True
        self.held.append(record)
        try:
            nbytes = handle.models.nbytes()
            record.register(nbytes)
            log.info("LatentSync models kept loaded in ComfyUI's model management (%.1f MB on %s)",
                     nbytes / 2 ** 20, device)
            yield
        finally:
            self.held.remove(record)
            record.in_use = False


def limited_host(**host_fields) -> Host:
    """The library's Host with ComfyUI's memory view, device, dtype, VRAM state, model management and interrupt
    (plus the caller's other fields)."""
    models = ComfyModels()
    return Host(memory=comfy_memory, free_memory=models.make_room, default_device=mm.get_torch_device,
                default_dtype=comfy_dtype, limit_plan=vram_state_plan, use_models=models.use,
                on_cancel=mm.throw_exception_if_processing_interrupted, on_plan=log_plan, **host_fields)
