"""Opt-in paste-back blends and colour matching on top of the reference paste-back (``restore``).

The face handed to paste-back is the VAE's output inside the mouth region composited with the original aligned
face outside it. The reference pastes that whole crop, so the rest of the face is resampled twice (soft) and the
two visible artefacts are the hard U-shaped edge of the mouth region and the feathered box of the crop; a VAE
colour/brightness shift makes both stand out.

``paste_face`` works on the reference plan's box, in frame pixels:

* ``blend="reference"`` — the reference blend (bit-identical to ``restore`` when colour matching is off).
* ``blend="feather"`` — only the regenerated region (1 − mask) is pasted; its opacity ramps from 0 at
  ``GROW_PX`` outside the region's edge to 1 at ``feather_px − GROW_PX`` inside it (smoothstep of the signed
  distance to the edge), so every other pixel keeps the original frame's value.
* ``blend="poisson"`` — the region's core (from ``POISSON_INSET_PX`` inside its edge, so the composite's own
  hard step is not part of the guidance field) through ``cv2.seamlessClone``: gradient-domain, the region's
  colours are pulled to the frame's along its edge, which also removes a smooth colour shift; then the same
  ramp.

Colour match (applied to the regenerated pixels before blending; weight = the generated share 1 − mask):
outside the region the face equals the original, so generated and original skin can only be compared inside it.
Statistics are taken on a band along the inside of the region's edge (cheek, jaw and philtrum skin; the mouth
lies deeper), the generated face against the original frame at the same pixels, in CIE Lab, leaving out the
pixels whose generated-vs-original difference is far off the median difference (content that changed, e.g. a
moved jaw line):
``mean`` shifts the Lab mean (a brightness/colour offset, the VAE's typical error); ``mean_std`` also scales
each channel by the standard-deviation ratio (Reinhard transfer; ratio clamped to 0.5..2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from ..errors import InputError
from .align import bilinear_warp
from .mask import load_mask
from .restore import RestorePlan, check_frame, composite, plan_restore, restore, warp_face

BLENDS = ("reference", "feather", "poisson")
COLOR_MATCHES = ("off", "mean", "mean_std")
GROW_PX = 2.0  # the pasted region reaches this far (frame pixels) beyond the regenerated region's edge
BAND_SHARE = 0.03  # colour-statistics band width, as a share of the crop's size in the frame
MIN_BAND_PIXELS = 16
STD_RATIO_LIMITS = (0.5, 2.0)
OUTLIER_FACTOR, OUTLIER_FLOOR = 3.0, 2.0  # band pixels whose difference is off the median one by more than
# 3 × the median such distance + 2 Lab units are left out of the statistics
POISSON_PAD = 4
POISSON_INSET_PX = 2.0  # the cloned core starts this far inside the region's half-generated edge


@dataclass(frozen=True)
class PasteOptions:
    """How a generated face goes back into its frame. Defaults = the reference paste-back.

    blend: "reference" | "feather" | "poisson"; feather_px: width of the soft edge in frame pixels (feather
    and poisson only; 0 = hard edge); color_match: "off" | "mean" | "mean_std" (see the module doc)."""

    blend: str = "reference"
    feather_px: float = 12.0
    color_match: str = "off"

    def __post_init__(self):
        object.__setattr__(self, "blend", _choice(self.blend, BLENDS, "blend"))
        object.__setattr__(self, "color_match", _choice(self.color_match, COLOR_MATCHES, "color_match"))
        try:
            feather = float(self.feather_px)
        except (TypeError, ValueError):
            raise InputError(f"feather_px must be a number of frame pixels >= 0, got {self.feather_px!r}") from None
        if not math.isfinite(feather) or feather < 0:
            raise InputError(f"feather_px must be a number of frame pixels >= 0, got {self.feather_px!r}")
        object.__setattr__(self, "feather_px", feather)

    @property
    def is_reference(self) -> bool:
        """True when these options give exactly the reference paste-back."""
        return self.blend == "reference" and self.color_match == "off"


def _choice(value, choices: tuple[str, ...], name: str) -> str:
    key = value.strip().lower().replace("-", "_") if isinstance(value, str) else None
    if key not in choices:
        raise InputError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")
    return key


def paste_face(frame: np.ndarray, face, matrix: np.ndarray, options: PasteOptions | None = None,
               plan: RestorePlan | None = None) -> np.ndarray:
    """Paste ``face`` ((3, R, R) float in [−1, 1], tensor or array) into a new copy of ``frame`` (uint8 HxWx3)
    through ``matrix`` (float32 (2, 3), frame → crop). ``plan`` (from ``plan_restore``) may be passed when
    already computed. With default options this is exactly ``restore(frame, face, plan)``."""
    options = options or PasteOptions()
    resolution = int(face.shape[-1])
    if plan is None:
        plan = plan_restore(matrix, frame.shape[:2], resolution)
    if options.is_reference:
        return restore(frame, face, plan)
    check_frame(frame)
    out = frame.copy()
    if plan.keep is None:
        return out
    rows, cols = plan.slices
    original = frame[rows, cols]
    generated = warp_face(face, plan)  # (3, h, w) float32 in [0, 255]
    weight = region_weight(plan, resolution)
    if options.color_match != "off":
        generated = match_colors(generated, original, weight, options.color_match, _band_px(plan))
    if options.blend == "reference":
        out[rows, cols] = composite(original, generated, plan)
        return out
    alpha = feather_alpha(weight, options.feather_px)
    pasted = generated.transpose(1, 2, 0)
    if options.blend == "poisson":
        # the guidance must not contain the composite's own step at the region's edge: clone only the core
        core = _signed_distance(weight >= 0.5) >= POISSON_INSET_PX
        pasted = poisson_clone(_to_uint8(pasted), original, core).astype(np.float32)
    a = alpha[:, :, None]
    out[rows, cols] = _to_uint8(a * pasted + (np.float32(1.0) - a) * original.astype(np.float32))
    return out


@lru_cache(maxsize=4)
def _crop_region(resolution: int, crop_wh: tuple[int, int]) -> np.ndarray:
    """1 − mask resized to the crop size (float32 (h, w), read-only)."""
    region = cv2.resize(np.float32(1.0) - load_mask(resolution), crop_wh, interpolation=cv2.INTER_LINEAR)
    region = np.clip(region, 0.0, 1.0)
    region.setflags(write=False)
    return region


def region_weight(plan: RestorePlan, resolution: int) -> np.ndarray:
    """Share of generated pixels on ``plan.box``: the mask's regenerate region (1 − mask) warped into the frame
    like the face (bilinear, 0 outside the crop). float32 (h, w) in [0, 1]."""
    height, width = plan.keep.shape
    crop = _crop_region(int(resolution), plan.crop_wh)
    return np.clip(bilinear_warp(crop[None], plan.warp, (width, height), 0.0, planar=True)[0], 0.0, 1.0)


def _signed_distance(inside: np.ndarray) -> np.ndarray:
    """Distance (pixels) to the edge of the boolean region: positive inside, negative outside; the image border
    is not an edge (a region cut by the frame does not fade there)."""
    inside_u8 = inside.astype(np.uint8)
    if not inside_u8.any():
        return np.full(inside.shape, -np.inf, np.float32)
    d_in = cv2.distanceTransform(inside_u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d_out = cv2.distanceTransform(1 - inside_u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.where(inside, d_in - 0.5, 0.5 - d_out).astype(np.float32)


def feather_alpha(weight: np.ndarray, feather_px: float) -> np.ndarray:
    """Paste opacity (float32 (h, w) in [0, 1]) for the region where ``weight`` > 0: 0 from ``GROW_PX`` outside
    its edge outward, rising (smoothstep) to 1 at ``feather_px − GROW_PX`` inside it."""
    distance = _signed_distance(weight > 1e-3) + np.float32(GROW_PX)
    if feather_px <= 0:
        return (distance >= 0).astype(np.float32)
    t = np.clip(distance / np.float32(feather_px), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _band_px(plan: RestorePlan) -> float:
    scale = math.sqrt(abs(float(np.linalg.det(plan.warp[:, :2])))) or 1.0  # crop pixels per frame pixel
    return max(3.0, BAND_SHARE * math.sqrt(plan.crop_wh[0] * plan.crop_wh[1]) / scale)


def _to_lab(rgb_255: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb_255, dtype=np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2Lab)


def match_colors(generated: np.ndarray, original: np.ndarray, weight: np.ndarray, mode: str,
                 band_px: float) -> np.ndarray:
    """Colour-matched ``generated`` (float32 (3, h, w) in [0, 255]) towards ``original`` (uint8 (h, w, 3)): the
    Lab transform measured on the band of width ``band_px`` inside the region's edge, applied with the
    generated share ``weight``. Returned unchanged when the band has fewer than 16 pixels."""
    inside = weight >= 0.5
    depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    band = inside & (depth <= band_px)
    if int(band.sum()) < MIN_BAND_PIXELS:
        return generated
    gen_hwc = generated.transpose(1, 2, 0)
    gen_lab = _to_lab(gen_hwc)
    src, ref = gen_lab[band].astype(np.float64), _to_lab(original[band][None])[0].astype(np.float64)
    # where the content changed (the jaw moved, the lips reach the edge) generated and original differ by far
    # more than the colour shift: leave out the band pixels whose difference is far off the median difference
    difference = ref - src
    spread = np.linalg.norm(difference - np.median(difference, axis=0), axis=1)
    kept = spread <= OUTLIER_FACTOR * np.median(spread) + OUTLIER_FLOOR
    src, ref = src[kept], ref[kept]
    shift = ref.mean(axis=0) - src.mean(axis=0)
    if mode == "mean_std":
        src_std, ref_std = src.std(axis=0), ref.std(axis=0)
        ratio = np.where(src_std > 1e-3, ref_std / np.maximum(src_std, 1e-3), 1.0)
        ratio = np.clip(ratio, *STD_RATIO_LIMITS)
        matched = (gen_lab - src.mean(axis=0).astype(np.float32)) * ratio.astype(np.float32) + \
            ref.mean(axis=0).astype(np.float32)
    else:
        matched = gen_lab + shift.astype(np.float32)
    matched_rgb = np.clip(cv2.cvtColor(matched.astype(np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0) * np.float32(255)
    w = weight[:, :, None]
    return (gen_hwc + w * (matched_rgb - gen_hwc)).transpose(2, 0, 1)


def poisson_clone(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``source`` (uint8 (h, w, 3)) cloned into ``target`` (same shape) over the boolean ``region`` with
    ``cv2.seamlessClone`` (normal clone); the images are reflect-padded so the region never touches their
    border. Pixels outside ``region`` are ``target``'s."""
    if not region.any():
        return target.copy()
    pad = POISSON_PAD
    src = cv2.copyMakeBorder(source, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    dst = cv2.copyMakeBorder(target, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    mask = np.zeros(dst.shape[:2], np.uint8)
    mask[pad:-pad, pad:-pad][region] = 255
    x, y, w, h = cv2.boundingRect(mask)
    cloned = cv2.seamlessClone(src, dst, mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)[pad:-pad, pad:-pad]
    return np.where(region[:, :, None], cloned, target)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
