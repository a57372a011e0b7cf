"""VRAM-tier memory limiter: the LatentSync v1.6 "memory fix" made real and testable.

1. `plan_for(total, free, device_type, override)` — a pure function from the device's memory to a `MemoryPlan`
   (windows per UNet batch, frames per VAE slice, CUDA memory fraction). Tiers by total VRAM, as the v1.6 fix:
   > 20 GiB → batch 8, > 8 GiB → 4, else 2; fraction 0.75 at ≥ 16 GiB, else 0.70. "batch" is the VAE slice
   (frames per encode/decode call); UNet windows per batch are batch // 4 (at least 1), because one 16-frame
   window with guidance is already the reference's whole ~18 GB budget at 512 px.
2. `memory_fraction_scope(fraction)` — applies `torch.cuda.set_per_process_memory_fraction` only while a job
   runs and restores the previous value afterwards (also on error / interrupt).
3. `log_memory_usage(stage)` — logs allocated / reserved / free and warns above a threshold (18 GB default).
4. `teardown(models)` — drops the UNet, VAE and audio encoder, collects garbage and empties the CUDA cache.
5. `run_with_oom_retry(job, plan)` — CUDA OOM: free, drop one tier, retry once; a second OOM is a clear error.

Framework-free: ComfyUI's model_management is passed in as callables, so this module is unit-testable alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
from typing import Any, Callable, Iterator, Mapping, TypeVar

if __package__:  # inside ComfyUI the pack is a package; in tests this module is imported top-level
    from .latentsync.errors import LatentSyncError
else:  # pragma: no cover - depends on how the module was imported
    from latentsync.errors import LatentSyncError

log = logging.getLogger("latentsync.memory")

GIB = 1024 ** 3
T = TypeVar("T")

# (total VRAM must exceed this many GiB, batch); checked top to bottom.
TIERS: tuple[tuple[str, float, int], ...] = (("high", 20.0, 8), ("medium", 8.0, 4), ("low", 0.0, 2))
FRACTION_HIGH, FRACTION_LOW, FRACTION_SPLIT_GIB = 0.75, 0.70, 16.0
CPU_VAE_SLICE = 4
WARN_THRESHOLD_GB = 18.0


class OutOfMemoryError(LatentSyncError, MemoryError):
    """The job ran out of GPU memory even after dropping to a smaller batch."""


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """How much work one job does at once, and how much of the GPU it may take."""

    window_batch: int  # 16-frame windows per UNet batch
    vae_slice: int  # frames per VAE encode/decode call
    memory_fraction: float | None  # CUDA per-process fraction while the job runs; None = leave untouched
    tier: str  # high | medium | low | cpu | mps | override
    batch: int  # the tier's batch size (the v1.6 fix's number)
    device_type: str = "cuda"
    total_vram_bytes: int = 0
    free_vram_bytes: int = 0
    reason: str = ""

    @property
    def cfg_serial(self) -> bool:
        """Lowest GPU tier: run the two classifier-free-guidance halves one after the other (same math, half the
        UNet activation memory)."""
        return self.device_type != "cpu" and self.batch <= TIERS[-1][2]

    def lower(self) -> "MemoryPlan | None":
        """The next smaller plan (one tier down), or None when already at the smallest batch."""
        if self.batch <= 1:
            return None
        smaller = [b for _, _, b in TIERS if b < self.batch]
        batch = max(smaller) if smaller else max(1, self.batch // 2)
        return dataclasses.replace(self, batch=batch, vae_slice=min(self.vae_slice, batch),
                                   window_batch=_windows_for(batch), tier=_tier_name(batch, self.tier),
                                   reason=f"{self.reason}; dropped one tier".lstrip("; "))


def _windows_for(batch: int) -> int:
    return max(1, batch // 4)


def _tier_name(batch: int, fallback: str) -> str:
    for name, _, b in TIERS:
        if b == batch:
            return name
    return fallback


def plan_for(total_vram_bytes: int, free_vram_bytes: int, device_type: str,
             override: int | Mapping[str, Any] | None = None) -> MemoryPlan:
    """Pure: the memory plan for a device with this much total / free memory.

    `device_type` is "cuda" (also "xpu"/"npu": treated like CUDA without a fraction), "cpu" or "mps".
    `override` is a batch size (int > 0) or a mapping with any of window_batch / vae_slice / memory_fraction;
    0 / None / {} means automatic.
    """
    total, free = int(max(0, total_vram_bytes)), int(max(0, free_vram_bytes))
    dev = (device_type or "cpu").split(":")[0].lower()
    if dev == "cpu":
        plan = MemoryPlan(window_batch=1, vae_slice=CPU_VAE_SLICE, memory_fraction=None, tier="cpu",
                          batch=CPU_VAE_SLICE, device_type="cpu", total_vram_bytes=total,
                          free_vram_bytes=free, reason="cpu: no VRAM tiers")
    else:
        gib = total / GIB
        tier, batch = next((name, b) for name, limit, b in TIERS if gib > limit)
        reason = f"{gib:.1f} GiB total → tier {tier}"
        if total and free < total * 0.5 and batch > TIERS[-1][2]:
            # another process holds most of the card: behave like the next tier down
            tier, batch = next((name, b) for name, _, b in TIERS if b < batch)
            reason += f"; only {free / GIB:.1f} GiB free → tier {tier}"
        fraction: float | None = FRACTION_HIGH if gib >= FRACTION_SPLIT_GIB else FRACTION_LOW
        if dev == "mps":  # unified memory: the CUDA fraction does not apply, keep one window at a time
            tier, fraction = "mps", None
        elif dev != "cuda":
            fraction = None
        plan = MemoryPlan(window_batch=1 if dev == "mps" else _windows_for(batch), vae_slice=batch,
                          memory_fraction=fraction, tier=tier, batch=batch, device_type=dev,
                          total_vram_bytes=total, free_vram_bytes=free, reason=reason)
    return _apply_override(plan, override)


def _apply_override(plan: MemoryPlan, override: int | Mapping[str, Any] | None) -> MemoryPlan:
    if not override:
        return plan
    if isinstance(override, bool) or not isinstance(override, (int, Mapping)):
        raise LatentSyncError(f"Memory override must be a batch size or a mapping, got {override!r}.")
    if isinstance(override, int):
        if override < 0:
            raise LatentSyncError(f"Batch size override must be positive, got {override}.")
        return dataclasses.replace(plan, batch=override, vae_slice=override, window_batch=_windows_for(override),
                                   tier="override", reason=f"{plan.reason}; user batch {override}")
    unknown = set(override) - {"window_batch", "vae_slice", "memory_fraction"}
    if unknown:
        raise LatentSyncError(f"Unknown memory override keys: {sorted(unknown)}.")
    changes = {k: v for k, v in override.items() if v is not None}
    for key in ("window_batch", "vae_slice"):
        if key in changes and (not isinstance(changes[key], int) or changes[key] < 1):
            raise LatentSyncError(f"Memory override {key} must be an integer ≥ 1, got {changes[key]!r}.")
    frac = changes.get("memory_fraction")
    if frac is not None and not 0.0 < float(frac) <= 1.0:
        raise LatentSyncError(f"Memory fraction must be in (0, 1], got {frac!r}.")
    if plan.device_type != "cuda":
        changes.pop("memory_fraction", None)
    batch = changes.get("vae_slice", plan.batch)
    return dataclasses.replace(plan, **changes, batch=batch, tier="override",
                               reason=f"{plan.reason}; user override {dict(override)}")


def _cuda(cuda: Any = None) -> Any:
    if cuda is not None:
        return cuda
    import torch

    return torch.cuda


@contextlib.contextmanager
def memory_fraction_scope(fraction: float | None, device: Any = None, cuda: Any = None) -> Iterator[None]:
    """Limit this process to `fraction` of the GPU while the block runs; restore the previous value after."""
    cuda = _cuda(cuda)
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
        log.debug("CUDA memory fraction restored to %.2f", previous)


def log_memory_usage(stage: str, threshold_gb: float = WARN_THRESHOLD_GB, device: Any = None,
                     cuda: Any = None) -> dict[str, float] | None:
    """Log allocated / reserved / free GPU memory (GB) at `stage`; warn when reserved exceeds `threshold_gb`."""
    cuda = _cuda(cuda)
    if not cuda.is_available():
        log.debug("memory [%s]: no CUDA device", stage)
        return None
    allocated = cuda.memory_allocated(device) / 1e9
    reserved = cuda.memory_reserved(device) / 1e9
    free, total = cuda.mem_get_info(device)
    stats = {"allocated_gb": allocated, "reserved_gb": reserved, "free_gb": free / 1e9, "total_gb": total / 1e9}
    log.info("memory [%s]: allocated %.2f GB, reserved %.2f GB, free %.2f GB of %.2f GB",
             stage, allocated, reserved, stats["free_gb"], stats["total_gb"])
    if reserved > threshold_gb:
        log.warning("memory [%s]: %.2f GB reserved is above the %.1f GB threshold", stage, reserved, threshold_gb)
    return stats


def empty_cache(cuda: Any = None) -> None:
    """Collect garbage and return cached CUDA blocks to the driver."""
    gc.collect()
    cuda = _cuda(cuda)
    if cuda.is_available():
        cuda.empty_cache()


MODEL_PARTS = ("unet", "vae", "whisper", "audio_encoder", "encoder")


def teardown(models: Any, keep_loaded: bool = False, cuda: Any = None) -> bool:
    """Unless `keep_loaded`, delete the UNet, VAE and audio encoder held by `models`; gc; empty the CUDA cache.

    Returns True when something was torn down. `models` may be any object or dict holding those parts.
    """
    if keep_loaded or models is None:
        return False
    removed = [name for name in MODEL_PARTS if _part(models, name) is not None]
    release = getattr(models, "release", None)
    if callable(release):  # latentsync.models.LatentSyncModels drops its own networks
        release()
        removed = [n for n in removed if _part(models, n) is None]
        models = None
    for name in MODEL_PARTS if models is not None else ():
        if isinstance(models, dict):
            models.pop(name, None)
        elif getattr(models, name, None) is not None:
            try:
                setattr(models, name, None)
            except (AttributeError, dataclasses.FrozenInstanceError):
                removed.remove(name)
    empty_cache(cuda)
    log.info("models torn down: %s", ", ".join(removed) or "nothing held")
    return True


def _part(models: Any, name: str) -> Any:
    return models.get(name) if isinstance(models, dict) else getattr(models, name, None)


def is_oom(exc: BaseException) -> bool:
    """True for CUDA / MPS out-of-memory errors (not for host MemoryError of our own)."""
    if isinstance(exc, OutOfMemoryError):
        return False
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_oom_retry(job: Callable[[MemoryPlan], T], plan: MemoryPlan,
                       free: Callable[[], None] | None = None, cuda: Any = None) -> T:
    """Run `job(plan)`; on out-of-memory free memory, drop one tier and run it once more from the start."""
    try:
        return job(plan)
    except Exception as exc:  # noqa: BLE001 - filtered by is_oom
        if not is_oom(exc):
            raise
        first = exc
    smaller = plan.lower()
    _free(free, cuda)
    if smaller is None:
        raise OutOfMemoryError(_oom_message(plan)) from first
    log.warning("out of GPU memory at window_batch=%d, vae_slice=%d; retrying once at window_batch=%d, "
                "vae_slice=%d", plan.window_batch, plan.vae_slice, smaller.window_batch, smaller.vae_slice)
    try:
        return job(smaller)
    except Exception as exc:  # noqa: BLE001
        if not is_oom(exc):
            raise
        _free(free, cuda)
        raise OutOfMemoryError(_oom_message(smaller)) from exc


def _free(free: Callable[[], None] | None, cuda: Any) -> None:
    if free is not None:
        free()
    empty_cache(cuda)


def _oom_message(plan: MemoryPlan) -> str:
    return (f"LatentSync ran out of GPU memory even with window_batch={plan.window_batch} and "
            f"vae_slice={plan.vae_slice}. Close other GPU programs or models, use dtype fp16, or run on a card "
            f"with more memory (LatentSync 1.6 needs about 18 GB at 512 px).")
