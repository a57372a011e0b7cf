"""VRAM-tier memory limiter of the ComfyUI nodes: ComfyUI's own view of the device's memory, fed into the one
memory policy every front end uses (``latentsync.runtime``: VRAM tier → windows per UNet batch, frames per VAE
slice, CUDA memory fraction applied only while the job runs; out of memory → one retry a tier lower; networks
torn down after the job unless kept loaded; memory logged at load, per window and after cleanup).

What is ComfyUI's here and nowhere else: the total / free memory of the device as ComfyUI's model management
reports it (so other loaded models count), asking ComfyUI to free memory before our networks load, ComfyUI's
device choice, and its interrupt exception.
"""

from __future__ import annotations

import logging

import torch

from .latentsync.runtime import Host, MemoryPlan

log = logging.getLogger("latentsync.memory")


def comfy_memory(device: torch.device) -> tuple[int, int]:
    """(total, free) bytes of ``device`` as ComfyUI's model management sees them."""
    import comfy.model_management as mm

    return int(mm.get_total_memory(device)), int(mm.get_free_memory(device))


def make_room(need: int, device: torch.device) -> None:
    """Ask ComfyUI to unload its own models until ``need`` bytes are free on ``device``."""
    import comfy.model_management as mm

    mm.free_memory(need, device)


def log_plan(plan: MemoryPlan) -> None:
    log.info("LatentSync memory plan: %s (%s)", plan.describe(), plan.reason)


def limited_host(**host_fields) -> Host:
    """The library's Host with ComfyUI's memory view, device and interrupt (plus the caller's other fields)."""
    import comfy.model_management as mm

    return Host(memory=comfy_memory, free_memory=make_room, default_device=mm.get_torch_device,
                on_cancel=mm.throw_exception_if_processing_interrupted, on_plan=log_plan, **host_fields)
