"""Optional mouth-detail restoration: an image-to-image model (GFPGAN, CodeFormer, Real-ESRGAN, ... anything
spandrel loads as an ``ImageModelDescriptor``, i.e. ComfyUI's UPSCALE_MODEL value) run on the generated faces
before paste-back, blended in only inside the regenerated region.

    restorer = FaceRestorer.from_file("GFPGANv1.4.pth", strength=0.7)   # or FaceRestorer(descriptor, ...)
    with restorer:                                     # gives the model back as found (device, dtype) at exit
        faces = restorer(faces, mask)                  # (N, 3, R, R) in [-1, 1], mask (R, R) 1 keep / 0 regenerate

Per batch: [-1, 1] → [0, 1] in the model's dtype on the faces' device; the model (spandrel pads to its size
requirements); a scale-s output is resized back to R (area average); then
out = face + strength · weight · (restored − face), where weight is 1 − mask feathered inward (0 on and outside
the region's edge, smoothstep to 1 at ``feather`` crop pixels inside), so pixels outside the region are the
input's bit for bit and strength 0 returns the input itself. A half-precision run that yields non-finite values
is redone in float32 (and float32 is kept).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FEATHER_SHARE = 1 / 32  # inward feather of the blend weight, as a share of R (16 px at 512)


def _spandrel():
    try:
        import spandrel
    except ImportError as exc:  # ComfyUI ships it; a plain install needs `pip install spandrel`
        raise InputError("face restoration needs the spandrel package (pip install spandrel)") from exc
    return spandrel


def describe(model) -> str:
    """'<architecture> (<purpose>, <scale>x, <in>→<out> channels)' for a spandrel descriptor."""
    arch = getattr(getattr(model, "architecture", None), "name", type(model).__name__)
    return (f"{arch} ({getattr(model, 'purpose', '?')}, {getattr(model, 'scale', '?')}x, "
            f"{getattr(model, 'input_channels', '?')}→{getattr(model, 'output_channels', '?')} channels)")


def check_model(model, source: str = "the restoration model") -> None:
    """InputError unless ``model`` is a spandrel ImageModelDescriptor taking and giving 3 channels."""
    spandrel = _spandrel()
    if isinstance(model, spandrel.MaskedImageModelDescriptor):
        raise InputError(f"{source} is {describe(model)}: a model that fills a masked area (image + mask → "
                         "image); face restoration needs an image-to-image model (e.g. GFPGAN, CodeFormer, "
                         "Real-ESRGAN)")
    if not isinstance(model, spandrel.ImageModelDescriptor):
        raise InputError(f"{source} must be a spandrel ImageModelDescriptor (ComfyUI's UPSCALE_MODEL), got "
                         f"{type(model).__name__}")
    if model.input_channels != 3 or model.output_channels != 3:
        raise InputError(f"{source} is {describe(model)}; face restoration needs a model that takes and gives "
                         "3 channels (RGB)")


def load_model(path) -> object:
    """Load a restoration model file with spandrel's ModelLoader (on the CPU, eval mode) and check it."""
    spandrel = _spandrel()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"restoration model file not found: {path}")
    try:
        model = spandrel.ModelLoader().load_from_file(path)
    except Exception as exc:  # noqa: BLE001 - spandrel/torch raise many kinds; the user needs the reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no details"
        raise InputError(f"cannot load the restoration model {path}: spandrel says {type(exc).__name__}: "
                         f"{reason}") from exc
    check_model(model, f"the restoration model {path}")
    return model.eval()


def restoration_weight(mask, feather_px: float) -> np.ndarray:
    """Blend weight (float32 (R, R)): the regenerate region (mask < 0.5) feathered inward by ``feather_px``."""
    mask = mask.detach().float().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask, np.float32)
    region = (mask.reshape(mask.shape[-2:]) < 0.5).astype(np.uint8)
    depth = cv2.distanceTransform(region, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) - 0.5
    t = np.clip(depth / max(float(feather_px), 1e-6), 0.0, 1.0) * region
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


class FaceRestorer:
    """Runs an image-to-image model on generated faces inside the regenerated region (see the module doc).

    model: a spandrel ImageModelDescriptor (3 → 3 channels, any scale); strength: 0..1 (0 = unchanged);
    dtype: "auto" (fp16 on a GPU when the model supports it, else bf16 when supported, else fp32; fp32 on the
    CPU) or "fp16" / "bf16" / "fp32"; batch_size: faces per model call; feather: inward feather in crop pixels
    (default R/32)."""

    def __init__(self, model, strength: float = 1.0, *, dtype: str = "auto", batch_size: int = 4,
                 feather: float | None = None, source: str = "the restoration model"):
        check_model(model, source)
        self.model = model
        self.source = source
        self.strength = _strength(strength)
        if dtype not in ("auto", *DTYPES):
            raise InputError(f"unknown restoration dtype {dtype!r}: choose one of auto, {', '.join(DTYPES)}")
        self.dtype = dtype
        if int(batch_size) < 1:
            raise InputError(f"restoration batch_size must be >= 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.feather = feather
        self._home = (model.device, model.dtype)  # where the caller keeps the model; ``release`` goes back there
        self._weights: dict[tuple, torch.Tensor] = {}

    @classmethod
    def from_file(cls, path, strength: float = 1.0, **kwargs) -> "FaceRestorer":
        """A restorer for the model file ``path`` (.pth, .pt, .ckpt, .safetensors; CLI ``--restore-model``)."""
        return cls(load_model(path), strength, source=f"the restoration model {Path(path)}", **kwargs)

    def __enter__(self) -> "FaceRestorer":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Move the model back to the device and dtype it had when given (ComfyUI shares the object)."""
        self.model.model.to(device=self._home[0], dtype=self._home[1])

    def _run_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype != "auto":
            wanted = DTYPES[self.dtype]
            if (wanted is torch.float16 and not self.model.supports_half) or \
                    (wanted is torch.bfloat16 and not self.model.supports_bfloat16):
                raise InputError(f"{self.source} ({describe(self.model)}) does not support {self.dtype}; "
                                 "use fp32 or auto")
            return wanted
        if device.type != "cuda":
            return torch.float32
        if self.model.supports_half:
            return torch.float16
        return torch.bfloat16 if self.model.supports_bfloat16 else torch.float32

    def _weight(self, resolution: int, mask, device: torch.device) -> torch.Tensor:
        mask = mask.detach().float().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask, np.float32)
        mask = mask.reshape(mask.shape[-2:])
        if mask.shape != (resolution, resolution):
            raise InputError(f"the mask is {mask.shape[0]}x{mask.shape[1]} but the faces are {resolution}x{resolution}")
        key = (str(device), hash(mask.tobytes()))
        if key not in self._weights:
            self._weights.clear()
            feather = self.feather if self.feather is not None else resolution * FEATHER_SHARE
            self._weights[key] = torch.from_numpy(restoration_weight(mask, feather)).to(device)[None, None]
        return self._weights[key]

    @torch.inference_mode()
    def _restore(self, batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(n, 3, R, R) float32 in [-1, 1] → model output resized to R, float32 in [-1, 1]."""
        self.model.model.to(device=batch.device, dtype=dtype)
        image = ((batch + 1) * 0.5).clamp_(0, 1).to(dtype)
        restored = self.model(image).float()
        size = batch.shape[-1]
        if restored.shape[-2:] != batch.shape[-2:]:
            restored = F.interpolate(restored, size=(size, size), mode="area")  # = the inverse of nearest upscaling
        return restored * 2 - 1

    @torch.inference_mode()
    def __call__(self, faces: torch.Tensor, mask, strength: float | None = None) -> torch.Tensor:
        """Restored copy of ``faces`` (N, 3, R, R) in [-1, 1] (same device and dtype); ``mask`` (R, R) 1 keep /
        0 regenerate (ndarray or tensor); ``strength`` overrides the restorer's. Strength 0 returns ``faces``."""
        strength = self.strength if strength is None else _strength(strength)
        if faces.ndim != 4 or faces.shape[1] != 3 or faces.shape[-1] != faces.shape[-2]:
            raise InputError(f"expected generated faces (N, 3, R, R), got {tuple(faces.shape)}")
        if strength == 0 or faces.shape[0] == 0:
            return faces
        weight = self._weight(int(faces.shape[-1]), mask, faces.device)
        dtype = self._run_dtype(faces.device)
        out = torch.empty_like(faces)
        for start in range(0, faces.shape[0], self.batch_size):
            batch = faces[start:start + self.batch_size].float()
            restored = self._restore(batch, dtype)
            if dtype != torch.float32 and not bool(torch.isfinite(restored).all()):
                log.warning("%s gave non-finite values in %s; running it in fp32 from now on", self.source, dtype)
                self.dtype, dtype = "fp32", torch.float32
                restored = self._restore(batch, dtype)
            blended = batch + (strength * weight) * (restored - batch)
            out[start:start + self.batch_size] = torch.where(weight > 0, blended, batch).to(faces.dtype)
        return out


def _strength(value) -> float:
    try:
        strength = float(value)
    except (TypeError, ValueError):
        raise InputError(f"restore_strength must be a number from 0 to 1, got {value!r}") from None
    if not math.isfinite(strength) or not 0 <= strength <= 1:
        raise InputError(f"restore_strength must be a number from 0 to 1, got {value!r}")
    return strength
