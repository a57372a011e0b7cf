"""Paste-back of a generated face into its frame, computed only inside the face's region.

Behaviour (facts from the parity README, affine/ "Restore facts"): face (3, R, R) in [−1, 1] → bicubic
antialiased resize to the crop size → inverse warp into the frame (bilinear, fill 127) → clamp(x/2+0.5)·255;
an all-ones crop warped the same way (zero fill), eroded 2×2; w_edge = int(sqrt(area)) // 20; eroded again
with a 2·w_edge square, Gaussian-blurred (size 2·w_edge+1, sigma 0.3·((size−1)/2−1)+0.8, reflect) → soft mask;
out = soft·(eroded·face) + (1−soft)·frame, truncated to uint8.

Everything is computed on a region of interest: the warped crop's bounding box plus a margin wider than the
erosion + blur reach, so the result equals a full-frame computation while pixels outside it are untouched
(bit-identical to the input). A ``RestorePlan`` (which depends only on M and the frame size) can be
prepared once per frame, e.g. during alignment, and reused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError
from .align import FILL_VALUE, bilinear_warp, crop_size, source_box


@dataclass(frozen=True)
class RestorePlan:
    """Precomputed paste-back geometry for one frame: the box of pixels the feather mask touches, the sampling
    map (box pixels → crop pixels) and, on the box, soft·eroded and 1 − soft (float32 (h, w))."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame; empty when the face misses the frame
    warp: np.ndarray  # float64 (2, 3) box pixels → crop pixels
    crop_wh: tuple[int, int]
    soft_eroded: np.ndarray | None  # soft · eroded
    keep: np.ndarray | None  # 1 − soft

    @property
    def slices(self) -> tuple[slice, slice]:
        x0, y0, x1, y1 = self.box
        return slice(y0, y1), slice(x0, x1)


def _margin(matrix: np.ndarray, crop_wh: tuple[int, int]) -> int:
    # w_edge ≤ sqrt(area)/20 ≤ sqrt(crop area in frame pixels)/20; erosion (≤ w_edge) + blur (w_edge) + 2×2 + 1
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2].astype(np.float64))))) or 1.0
    bound = math.sqrt(crop_wh[0] * crop_wh[1]) / scale / 20
    return int(2 * bound) + 6


def _empty(crop_wh) -> RestorePlan:
    return RestorePlan((0, 0, 0, 0), np.zeros((2, 3)), crop_wh, None, None)


def plan_restore(matrix: np.ndarray, frame_hw: tuple[int, int], resolution: int) -> RestorePlan:
    """Paste-back plan for a face aligned with ``matrix`` (frame → crop) at ``resolution`` in a frame of
    ``frame_hw`` = (height, width). Masks are computed on the warped crop's box plus a margin wider than the
    erosion and blur reach (so they equal a full-frame computation), then cut to where the feather is > 0."""
    crop_wh = crop_size(resolution)
    matrix = np.asarray(matrix, dtype=np.float32).reshape(2, 3)
    frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
    box = source_box(matrix, crop_wh, frame_hw, margin=_margin(matrix, crop_wh))
    if box is None:
        return _empty(crop_wh)
    x0, y0, x1, y1 = box
    warp = matrix.astype(np.float64)
    warp[:, 2] += warp[:, :2] @ np.array([x0, y0], dtype=np.float64)
    ones = np.ones((1, crop_wh[1], crop_wh[0]), np.float32)
    inv_mask = bilinear_warp(ones, warp, (x1 - x0, y1 - y0), 0.0, planar=True)[0]
    # 2×2 erosion over rows y−1..y, cols x−1..x (anchor at the kernel's bottom-right); borders never erode
    eroded = cv2.erode(inv_mask, np.ones((2, 2), np.uint8), anchor=(1, 1), borderType=cv2.BORDER_CONSTANT,
                       borderValue=float("inf"))
    area = float(eroded.sum(dtype=np.float64))
    w_edge = int(math.sqrt(area)) // 20
    if w_edge > 0:
        center = cv2.erode(eroded, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
        blur = 2 * w_edge + 1
        sigma = 0.3 * ((blur - 1) * 0.5 - 1) + 0.8
        soft = cv2.GaussianBlur(center, (blur, blur), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
    else:  # tiny face: the reference's empty kernel makes OpenCV use 3×3; a size-1 blur is the identity
        soft = cv2.erode(eroded, np.ones((3, 3), np.uint8))
    rows, cols = np.nonzero(soft.any(axis=1))[0], np.nonzero(soft.any(axis=0))[0]
    if rows.size == 0:
        return _empty(crop_wh)
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    soft, eroded = soft[r0:r1, c0:c1], eroded[r0:r1, c0:c1]
    warp[:, 2] += warp[:, :2] @ np.array([c0, r0], dtype=np.float64)
    return RestorePlan((x0 + int(c0), y0 + int(r0), x0 + int(c1), y0 + int(r1)), warp, crop_wh,
                       np.ascontiguousarray(soft * eroded), np.float32(1.0) - soft)


def _face_to_crop(face, crop_wh: tuple[int, int]) -> np.ndarray:
    """(3, R, R) float in [−1, 1] (tensor or array) → float32 (3, h, w) crop-size image (bicubic, antialias)."""
    import torch
    import torch.nn.functional as F

    tensor = face if isinstance(face, torch.Tensor) else torch.from_numpy(np.asarray(face))
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise InputError(f"expected a face tensor (3, R, R), got {tuple(tensor.shape)}")
    with torch.inference_mode():
        # resized where the face lives (a GPU does this for free), then only the crop comes to the host
        tensor = tensor.detach().to(dtype=torch.float32)
        resized = F.interpolate(tensor[None], size=(crop_wh[1], crop_wh[0]), mode="bicubic",
                                align_corners=False, antialias=True)[0]
        return resized.cpu().numpy()


def warp_face(face, plan: RestorePlan) -> np.ndarray:
    """The generated face as the reference pastes it, on ``plan.box``: float32 (3, h, w) in [0, 255] (bicubic
    resize to the crop, bilinear warp into the frame with fill 127, clamp(x/2 + 0.5) · 255). Needs a plan that
    touches the frame (``plan.keep`` is not None)."""
    crop = _face_to_crop(face, plan.crop_wh)
    height, width = plan.keep.shape
    warped = bilinear_warp(crop, plan.warp, (width, height), FILL_VALUE, planar=True)
    np.clip(warped * np.float32(0.5) + np.float32(0.5), 0.0, 1.0, out=warped)
    warped *= np.float32(255.0)
    return warped


def composite(region: np.ndarray, warped: np.ndarray, plan: RestorePlan) -> np.ndarray:
    """The reference's blend on ``plan.box``: soft·eroded·warped + (1 − soft)·region, truncated to uint8.
    ``region`` = the frame's box pixels (uint8 (h, w, 3)), ``warped`` float32 (3, h, w) → uint8 (h, w, 3)."""
    blended = plan.soft_eroded * warped + plan.keep * region.transpose(2, 0, 1).astype(np.float32)
    return blended.astype(np.uint8).transpose(1, 2, 0)


def check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        described = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise InputError(f"expected an HxWx3 uint8 RGB frame, got {described}")


def restore(frame: np.ndarray, face, plan: RestorePlan) -> np.ndarray:
    """Paste ``face`` ((3, R, R) float in [−1, 1]) into a copy of ``frame`` using a precomputed plan.
    Pixels outside ``plan.box`` (and inside it wherever the feather is 0) are copied unchanged."""
    check_frame(frame)
    out = frame.copy()
    if plan.keep is None:
        return out
    rows, cols = plan.slices
    out[rows, cols] = composite(frame[rows, cols], warp_face(face, plan), plan)
    return out


def restore_face(frame: np.ndarray, face, matrix: np.ndarray) -> np.ndarray:
    """Paste ``face`` ((3, R, R) float in [−1, 1], tensor or array) back into a new copy of ``frame`` (uint8
    HxWx3) through the alignment matrix ``matrix`` (float32 (2, 3), frame → crop)."""
    resolution = int(face.shape[-1])
    return restore(frame, face, plan_restore(matrix, frame.shape[:2], resolution))
