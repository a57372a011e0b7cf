"""Device, dtype and memory policy for every front end (CLI, ComfyUI nodes, cluster workers).

* ``resolve_device`` / ``resolve_dtype``: one vocabulary, ``auto | cpu | cuda[:N] | mps`` and
  ``auto | fp16 | bf16 | fp32`` (auto = fp16 on a GPU, fp32 on the CPU).
* ``plan_for`` (pure): total / free device memory → ``MemoryPlan`` — the VRAM tier table of LatentSync's 1.6
  "memory fix": > 20 GiB → batch 8, > 8 GiB → 4, else 2; CUDA memory fraction 0.75 at ≥ 16 GiB, else 0.70.
  "batch" is the VAE slice (frames per encode/decode call); UNet windows per batch = batch // 4 (at least 1),
  because one 16-frame window with guidance already takes the reference's ~18 GB at 512 px. The lowest GPU
  tier also runs the two guidance halves one after the other (same math, half the activation memory).
  ``MemoryPlan.with_overrides`` applies a user's window batch / VAE slice.
* ``memory_fraction_scope``: the plan's CUDA memory fraction only while a job runs (restored afterwards).
* ``run_with_oom_retry``: an out-of-memory error frees memory, drops one tier and runs the job once more.
* ``ModelHandle`` + ``run_job``: one memory-managed job — plan → scoped fraction → load the networks (unless
  kept loaded) → work (OOM: one retry a tier lower) → tear down unless kept → restore the fraction.

A ``Host`` is what a job needs from its surroundings (device memory, freeing other models, model folders, its
choice of device / dtype, its own cap on the plan, and a say over networks it may take back: ``use_models``
wraps the work and may later call ``handle.release()``); the CLI uses the default (torch.cuda), ComfyUI passes
one built on its model management (memory_limiter.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from .checkpoints import ModelPaths, ensure_models
from .errors import CancelledError, InputError, LatentSyncError
from .settings import DTYPES, check_version

log = logging.getLogger(__name__)

GIB = 1024 ** 3
T = TypeVar("T")

TIERS: tuple[tuple[str, float, int], ...] = (("high", 20.0, 8), ("medium", 8.0, 4), ("low", 0.0, 2))
FRACTION_HIGH, FRACTION_LOW, FRACTION_SPLIT_GIB = 0.75, 0.70, 16.0
CPU_VAE_SLICE = 4
WARN_THRESHOLD_GB = 18.0
_TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class OutOfMemoryError(LatentSyncError, MemoryError):
    """The job ran out of GPU memory even after dropping to a smaller plan."""


# ------------------------------------------------------------------------------------------ device and dtype
def resolve_device(name: str | torch.device | None = "auto",
                   default: Callable[[], torch.device] | None = None) -> torch.device:
    """``auto`` → ``default()`` (the host's device; CUDA when available, else the CPU); else a checked device."""
    if name is None or str(name) in ("", "auto"):
        if default is not None:
            return torch.device(default())
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"Unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Device {name!r} was chosen but this PyTorch has no CUDA GPU; choose auto or cpu.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"Device {name!r} was chosen but MPS is not available; choose auto or cpu.")
    return device


def resolve_dtype(name: str, device: torch.device,
                  default: Callable[[torch.device], torch.dtype] | None = None) -> torch.dtype:
    """``auto`` → ``default(device)`` (the host's choice), else fp16 on a GPU, fp32 on the CPU."""
    if name not in DTYPES:
        raise InputError(f"Unknown dtype {name!r}; use one of {', '.join(DTYPES)}.")
    if name != "auto":
        return _TORCH_DTYPES[name]
    if default is not None:
        return default(device)
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


# ------------------------------------------------------------------------------------------ memory plan
@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """How much work one job does at once, and how much of the GPU it may take."""

    window_batch: int  # 16-frame windows per UNet batch
    vae_slice: int  # frames per VAE encode/decode call
    memory_fraction: float | None  # CUDA per-process fraction while the job runs; None = leave untouched
    tier: str  # high | medium | low | cpu | mps
    batch: int  # the tier's batch size (the 1.6 fix's number)
    device_type: str = "cuda"
    total_vram_bytes: int = 0
    free_vram_bytes: int = 0
    reason: str = ""

    @property
    def cfg_serial(self) -> bool:
        """Lowest GPU tier: the two classifier-free-guidance halves run one after the other."""
        return self.device_type != "cpu" and self.batch <= TIERS[-1][2]

    def describe(self) -> str:
        fraction = "none" if self.memory_fraction is None else f"{self.memory_fraction:.2f}"
        return (f"tier {self.tier}: window_batch {self.window_batch}, vae_slice {self.vae_slice}, "
                f"fraction {fraction}")

    def with_overrides(self, window_batch: int = 0, vae_slice: int = 0) -> MemoryPlan:
        """The plan with a user's window batch / VAE slice (0 = keep the tier's)."""
        changes = {}
        if window_batch:
            changes["window_batch"] = int(window_batch)
        if vae_slice:
            changes["vae_slice"] = int(vae_slice)
        if not changes:
            return self
        return dataclasses.replace(self, **changes, reason=f"{self.reason}; user override {changes}")

    def lower(self) -> MemoryPlan | None:
        """The next smaller plan (one tier down), or None when already at the smallest batch."""
        if self.batch <= 1:
            return None
        smaller = [b for _, _, b in TIERS if b < self.batch]
        batch = max(smaller) if smaller else max(1, self.batch // 2)
        tier = next((name for name, _, b in TIERS if b == batch), self.tier)
        return dataclasses.replace(self, batch=batch, vae_slice=min(self.vae_slice, batch),
                                   window_batch=min(self.window_batch, _windows_for(batch)), tier=tier,
                                   reason=f"{self.reason}; dropped one tier".lstrip("; "))


def _windows_for(batch: int) -> int:
    return max(1, batch // 4)


def plan_for(total_vram_bytes: int, free_vram_bytes: int, device_type: str) -> MemoryPlan:
    """Pure: the memory plan for a device with this much total / free memory. ``device_type`` is "cuda" (also
    "cuda:N"; "xpu"/"npu" are treated like CUDA without a fraction), "cpu" or "mps"."""
    total, free = int(max(0, total_vram_bytes)), int(max(0, free_vram_bytes))
    dev = (device_type or "cpu").split(":")[0].lower()
    if dev == "cpu":
        return MemoryPlan(window_batch=1, vae_slice=CPU_VAE_SLICE, memory_fraction=None, tier="cpu",
                          batch=CPU_VAE_SLICE, device_type="cpu", total_vram_bytes=total, free_vram_bytes=free,
                          reason="cpu: no VRAM tiers")
    gib = total / GIB
    tier, batch = next((name, b) for name, limit, b in TIERS if gib > limit)
    reason = f"{gib:.1f} GiB total → tier {tier}"
    if total and free < total * 0.5 and batch > TIERS[-1][2]:  # another process holds most of the card
        tier, batch = next((name, b) for name, _, b in TIERS if b < batch)
        reason += f"; only {free / GIB:.1f} GiB free → tier {tier}"
    fraction: float | None = FRACTION_HIGH if gib >= FRACTION_SPLIT_GIB else FRACTION_LOW
    if dev == "mps":  # unified memory: the CUDA fraction does not apply; one window at a time
        tier, fraction = "mps", None
    elif dev != "cuda":
        fraction = None
    return MemoryPlan(window_batch=1 if dev == "mps" else _windows_for(batch), vae_slice=batch,
                      memory_fraction=fraction, tier=tier, batch=batch, device_type=dev, total_vram_bytes=total,
                      free_vram_bytes=free, reason=reason)


@contextlib.contextmanager
def memory_fraction_scope(fraction: float | None, device: Any = None, cuda: Any = torch.cuda) -> Iterator[None]:
    """Limit this process to ``fraction`` of the GPU while the block runs; restore the previous value after."""
    if fraction is None or not cuda.is_available():
        yield
        return
    getter = getattr(cuda, "get_per_process_memory_fraction", None)
    previous = float(getter(device)) if getter is not None else 1.0
    cuda.set_per_process_memory_fraction(float(fraction), device)
    log.info("CUDA memory fraction %.2f for this job (was %.2f)", fraction, previous)
    try:
        yield
    finally:
        cuda.set_per_process_memory_fraction(previous, device)


def log_memory_usage(stage: str, device: Any = None, threshold_gb: float = WARN_THRESHOLD_GB,
                     cuda: Any = torch.cuda) -> dict[str, float] | None:
    """Log allocated / reserved / free GPU memory (GB) at ``stage``; warn when reserved exceeds the threshold."""
    if not cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return None
    allocated, reserved = cuda.memory_allocated(device) / 1e9, cuda.memory_reserved(device) / 1e9
    free, total = cuda.mem_get_info(device)
    stats = {"allocated_gb": allocated, "reserved_gb": reserved, "free_gb": free / 1e9, "total_gb": total / 1e9}
    log.info("memory [%s]: allocated %.2f GB, reserved %.2f GB, free %.2f GB of %.2f GB",
             stage, allocated, reserved, stats["free_gb"], stats["total_gb"])
    if reserved > threshold_gb:
        log.warning("memory [%s]: %.2f GB reserved is above the %.1f GB threshold", stage, reserved, threshold_gb)
    return stats


def empty_cache(cuda: Any = torch.cuda) -> None:
    """Collect garbage and return cached CUDA blocks to the driver."""
    gc.collect()
    if cuda.is_available():
        cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    """True for CUDA / MPS out-of-memory errors (not for our own OutOfMemoryError or a host MemoryError)."""
    if isinstance(exc, OutOfMemoryError):
        return False
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_oom_retry(job: Callable[[MemoryPlan], T], plan: MemoryPlan,
                       free: Callable[[], None] = empty_cache) -> T:
    """Run ``job(plan)``; on out-of-memory free memory, drop one tier and run it once more from the start."""
    try:
        return job(plan)
    except Exception as exc:  # noqa: BLE001 - filtered by is_oom
        if not is_oom(exc):
            raise
        first = exc
    free()
    smaller = plan.lower()
    if smaller is None:
        raise OutOfMemoryError(_oom_message(plan)) from first
    log.warning("out of GPU memory with %s; retrying once with %s", plan.describe(), smaller.describe())
    try:
        return job(smaller)
    except Exception as exc:  # noqa: BLE001
        if not is_oom(exc):
            raise
        free()
        raise OutOfMemoryError(_oom_message(smaller)) from exc


def _oom_message(plan: MemoryPlan) -> str:
    return (f"LatentSync ran out of GPU memory even with window_batch={plan.window_batch} and "
            f"vae_slice={plan.vae_slice}. Close other GPU programs or models, use dtype fp16, or run on a card "
            f"with more memory (LatentSync 1.6 needs about 18 GB at 512 px).")


# ------------------------------------------------------------------------------------------ host and models
def cuda_memory(device: torch.device) -> tuple[int, int]:
    """(total, free) bytes of a CUDA device; (0, 0) elsewhere."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return 0, 0
    free, total = torch.cuda.mem_get_info(device)
    return int(total), int(free)


@dataclasses.dataclass
class Host:
    """What a job needs from its surroundings. Defaults: plain PyTorch (the CLI, cluster workers)."""

    memory: Callable[[torch.device], tuple[int, int]] = cuda_memory  # (total, free) bytes
    free_memory: Callable[[int, torch.device], None] = lambda need, device: None  # make room (other models)
    default_device: Callable[[], torch.device] | None = None  # None: CUDA when available, else the CPU
    models_dirs: Callable[[], list[str]] = list  # where LatentSync weights live, searched in order
    vae_dirs: Callable[[], list[str]] = list  # extra folders searched for a single-file VAE
    on_cancel: Callable[[], None] = lambda: None  # raise the host's own interrupt exception, if it has one
    download_progress: Callable[[int, int, dict], None] | None = None  # weights download progress
    on_plan: Callable[[MemoryPlan], None] = lambda plan: None  # show the memory plan (the CLI prints it)
    default_dtype: Callable[[torch.device], torch.dtype] | None = None  # "auto" dtype; None: resolve_dtype's
    limit_plan: Callable[[MemoryPlan], MemoryPlan] = lambda plan: plan  # the host's cap, before user overrides
    # wraps each job's work once the networks are loaded; the host may account for kept networks and later take
    # their memory back with handle.release() (never while the work runs)
    use_models: Callable[[ModelHandle], contextlib.AbstractContextManager] = \
        lambda handle: contextlib.nullcontext()

    def plan(self, device: torch.device, window_batch: int = 0, vae_slice: int = 0) -> MemoryPlan:
        """The memory plan for ``device`` (same tier table for every host, the host's cap), with the user's
        overrides."""
        total, free = self.memory(device) if device.type != "cpu" else (0, 0)
        return self.limit_plan(plan_for(total, free, str(device))).with_overrides(window_batch, vae_slice)


class ModelHandle:
    """Which LatentSync networks to run, where and how (``LATENTSYNC_MODEL`` in ComfyUI). The weights are found
    (and fetched when missing and ``download``) and loaded when a job starts; after the job they are torn down
    unless ``keep_loaded``."""

    def __init__(self, version: str = "1.6", device: str = "auto", dtype: str = "auto", *,
                 keep_loaded: bool = False, models_dir: str | os.PathLike | None = None, download: bool = True,
                 accel: Any = None):
        self.version = check_version(version)
        if dtype not in DTYPES:
            raise InputError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
        if str(device) not in ("", "auto"):
            resolve_device(device)  # a bad name fails when the handle is made
        self.device_name, self.dtype_name = str(device or "auto"), dtype
        self.keep_loaded, self.download = bool(keep_loaded), bool(download)
        self.models_dir = str(models_dir) if models_dir else None
        self.accel = accel  # GPU levers for the jobs that use these networks (latentsync.accel.Accel; None = off)
        self.models: Any = None  # latentsync.models.LatentSyncModels while loaded
        self.host_record: Any = None  # set and read by the host only (ComfyUI: the ModelPatcher it unloads)
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"LatentSyncModel(version={self.version}, device={self.device_name}, dtype={self.dtype_name}, "
                f"keep_loaded={self.keep_loaded}, loaded={self.loaded})")

    @property
    def loaded(self) -> bool:
        return self.models is not None

    def device(self, host: Host) -> torch.device:
        return resolve_device(self.device_name, host.default_device)

    def paths(self, host: Host) -> ModelPaths:
        dirs = [self.models_dir] if self.models_dir else list(host.models_dirs())
        return ensure_models(self.version, models_dir=dirs[0] if dirs else None, search_dirs=tuple(dirs[1:]),
                             vae_dirs=tuple(host.vae_dirs()), download=self.download,
                             progress=host.download_progress)

    def acquire(self, host: Host):
        """The loaded networks (loads them on first use, after asking the host to make room)."""
        from .models import load_models, weights_bytes

        if self.models is None:
            paths = self.paths(host)
            device = self.device(host)
            dtype = resolve_dtype(self.dtype_name, device, host.default_dtype)
            host.free_memory(weights_bytes(paths, dtype), device)
            self.models = load_models(paths, device, dtype)
            self.models.allow_download = self.download
            log_memory_usage("load", device)
        return self.models

    def release(self) -> None:
        """Drop the networks so their memory can be freed (also called by a host taking its memory back)."""
        models, self.models = self.models, None
        if models is not None:
            models.release()
            log.info("LatentSync models released")

    def finish(self) -> None:
        """After a job: tear the networks down unless ``keep_loaded``."""
        if not self.keep_loaded:
            self.release()
            empty_cache()


def run_job(handle: ModelHandle, work: Callable[[Any, MemoryPlan], T], host: Host | None = None,
            window_batch: int = 0, vae_slice: int = 0) -> T:
    """Run ``work(models, plan)`` as one memory-managed job (see the module docstring)."""
    host = host or Host()
    device = handle.device(host)
    plan = host.plan(device, window_batch, vae_slice)
    log.info("LatentSync on %s, %s (%s)", device, plan.describe(), plan.reason)
    host.on_plan(plan)
    fraction_device = device if device.type == "cuda" else None
    with handle.lock, memory_fraction_scope(plan.memory_fraction, fraction_device):
        try:
            models = handle.acquire(host)

            def free() -> None:
                host.free_memory(2 * models.nbytes(), device)
                empty_cache()

            with host.use_models(handle):
                result = run_with_oom_retry(lambda p: work(models, p), plan, free)
            log_memory_usage("after the job", fraction_device)
            return result
        except CancelledError:
            host.on_cancel()  # e.g. ComfyUI's own interrupt exception, so its UI shows "interrupted"
            raise
        finally:
            handle.finish()
            log_memory_usage("after cleanup", fraction_device)
