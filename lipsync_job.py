"""What the nodes do between ComfyUI and the library: the LATENTSYNC_MODEL handle and one lip-sync job.

ComfyUI specifics (model folders, model_management, ProgressBar, interrupt) are passed in as a small `Host`
object by nodes.py, so everything here can be exercised without a running ComfyUI.

One job: pick a memory plan (memory_limiter) → apply its CUDA memory fraction for the job only → ask the host
to free memory → load the models (unless the handle keeps them loaded) → run the pipeline (OOM: one retry a tier
lower) → tear the models down unless keep-loaded → restore the fraction. Interrupt: the pipeline's cancel hook
asks the host, and the host's own exception (ComfyUI's InterruptProcessingException) ends the job.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Callable, Iterator

import torch

if __package__:  # inside ComfyUI the pack is a package; in tests these modules are imported top-level
    from . import memory_limiter as ml
    from .latentsync.errors import CancelledError, LatentSyncError
else:  # pragma: no cover - depends on how the module was imported
    import memory_limiter as ml
    from latentsync.errors import CancelledError, LatentSyncError

log = logging.getLogger("latentsync.comfy")

VERSIONS = ("1.6", "1.5")
DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclasses.dataclass
class Host:
    """The few things a job needs from its host (ComfyUI, or a test)."""

    models_dirs: Callable[[], list[str]] = lambda: []  # where LatentSync weights live, in search order
    vae_dirs: Callable[[], list[str]] = lambda: []  # extra folders searched for the VAE
    default_device: Callable[[], torch.device] = lambda: torch.device("cpu")
    memory: Callable[[torch.device], tuple[int, int]] = lambda d: (0, 0)  # (total, free) bytes
    free_memory: Callable[[int, torch.device], None] = lambda need, dev: None
    progress: Callable[[int, int], None] = lambda done, total: None
    interrupted: Callable[[], bool] = lambda: False
    raise_if_interrupted: Callable[[], None] = lambda: None  # the host's own interrupt exception


def lib(name: str) -> Any:
    """A library module (`checkpoints`, `pipeline`, `models`, `video`, `timeline`), imported on first use."""
    import importlib

    return importlib.import_module(f"{__package__}.latentsync.{name}" if __package__ else f"latentsync.{name}")


def resolve_device(name: str, host: Host) -> torch.device:
    if not name or name == "auto":
        return torch.device(host.default_device())
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LatentSyncError(f"Unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LatentSyncError(f"Device {name!r} was chosen but this PyTorch has no CUDA GPU; choose auto or cpu.")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise LatentSyncError(f"Device {name!r} was chosen but MPS is not available; choose auto or cpu.")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name not in DTYPES:
        raise LatentSyncError(f"Unknown dtype {name!r}; use one of {list(DTYPES)}.")
    if DTYPES[name] is not None:
        return DTYPES[name]
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


class ModelHandle:
    """LATENTSYNC_MODEL: where the weights are and how to run them; the networks are loaded on first use and
    torn down after each job unless `keep_loaded`."""

    def __init__(self, paths: Any, device: torch.device, dtype: torch.dtype, keep_loaded: bool = False):
        self.paths, self.device, self.dtype, self.keep_loaded = paths, device, dtype, keep_loaded
        self.version = str(getattr(paths, "version", "1.6"))
        self._models: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"LatentSyncModel(version={self.version}, device={self.device}, dtype={self.dtype}, "
                f"keep_loaded={self.keep_loaded}, loaded={self.loaded})")

    @property
    def loaded(self) -> bool:
        return self._models is not None

    def estimate_bytes(self) -> int:
        """Bytes the networks will take on the device (checkpoint sizes scaled to the dtype)."""
        import os

        total = 0
        for part in ("unet", "whisper", "vae"):
            path = getattr(self.paths, part, None)
            if path is None:
                continue
            path = str(path)
            if os.path.isdir(path):
                total += sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
            elif os.path.isfile(path):
                total += os.path.getsize(path)
        scale = torch.finfo(self.dtype).bits / 32
        return int(total * scale)

    def acquire(self, host: Host) -> Any:
        if self._models is None:
            host.free_memory(self.estimate_bytes(), self.device)
            self._models = lib("models").load_models(self.paths, self.device, self.dtype)
        return self._models

    def finish(self) -> None:
        """After a job: tear the networks down unless keep_loaded."""
        if not self.keep_loaded and self._models is not None:
            models, self._models = self._models, None
            ml.teardown(models)
            del models


def find_handle(version: str, dtype: str, device: str, keep_loaded: bool, host: Host,
                models_dir: str = "") -> ModelHandle:
    """Locate the weights (MissingWeightsError names every folder searched) and build a handle."""
    if version not in VERSIONS:
        raise LatentSyncError(f"Unknown LatentSync version {version!r}; use one of {VERSIONS}.")
    dirs = [models_dir] if models_dir else host.models_dirs()
    paths = lib("checkpoints").find_models(version, models_dir=dirs[0] if dirs else None, search_dirs=tuple(dirs[1:]),
                                    vae_dirs=tuple(host.vae_dirs()))
    dev = resolve_device(device, host)
    return ModelHandle(paths, dev, resolve_dtype(dtype, dev), keep_loaded)


def plan_job(handle: ModelHandle, host: Host, override: int = 0) -> ml.MemoryPlan:
    total, free = host.memory(handle.device) if handle.device.type != "cpu" else (0, 0)
    return ml.plan_for(total, free, handle.device.type, override or None)


def run_job(handle: ModelHandle, host: Host, work: Callable[[Any, ml.MemoryPlan], Any],
            override: int = 0) -> Any:
    """Run `work(models, plan)` as one memory-managed job (see the module docstring)."""
    plan = plan_job(handle, host, override)
    log.info("LatentSync job on %s (%s), plan: tier %s, window_batch %d, vae_slice %d, fraction %s",
             handle.device, handle.dtype, plan.tier, plan.window_batch, plan.vae_slice, plan.memory_fraction)
    fraction_device = handle.device if handle.device.type == "cuda" else None
    with handle._lock, ml.memory_fraction_scope(plan.memory_fraction, fraction_device):
        try:
            models = handle.acquire(host)
            ml.log_memory_usage("load", device=fraction_device)

            def attempt(p: ml.MemoryPlan) -> Any:
                return work(models, p)

            def free() -> None:
                host.free_memory(handle.estimate_bytes() * 2, handle.device)

            result = ml.run_with_oom_retry(attempt, plan, free=free)
            ml.log_memory_usage("after decode", device=fraction_device)
            return result
        except CancelledError:
            host.raise_if_interrupted()  # ComfyUI's own interrupt exception, so the UI shows "interrupted"
            raise
        finally:
            handle.finish()
            ml.log_memory_usage("after cleanup", device=fraction_device)


def progress_hook(host: Host, device: torch.device | None = None) -> Callable[..., None]:
    """The pipeline's progress(done, total, info) → the host's progress bar (whole job); on CUDA the memory
    use is logged once per new window."""
    seen: set = set()

    def progress(done: int, total: int, info: Any = None) -> None:
        window = info.get("window") if isinstance(info, dict) else None
        if device is not None and device.type == "cuda" and window is not None and window not in seen:
            seen.add(window)
            ml.log_memory_usage(f"window {window}", device=device)
        host.progress(int(done), max(1, int(total)))

    return progress


def tensor_chunks(images: torch.Tensor, chunk: int = 16) -> Callable[[], Iterator[torch.Tensor]]:
    """A re-openable source of views into the IMAGE batch (no copies)."""
    def open_source() -> Iterator[torch.Tensor]:
        for start in range(0, images.shape[0], chunk):
            yield images[start:start + chunk]

    return open_source
