"""Face alignment: three points → similarity transform to the reference template → crop → R×R face.

Behaviour (facts from the parity README, affine/): template points (17, 20), (58, 20), (37.5, 40) scaled by
r = R/256·2.8; crop of int(75 r) × int(100 r) (w × h); points rounded (halves to even) before the float32
similarity fit (Umeyama-style: centre, divide by the sample std of all six centred coordinates, SVD);
a per-video smoothing bias on the translation; bilinear warp (pixel centres map exactly, outside = 127)
truncated to uint8; OpenCV Lanczos-4 resize to R×R.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import torch

from ..errors import InputError

log = logging.getLogger(__name__)

TEMPLATE_256 = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])  # left brow, right brow, nose (x, y)
FILL_VALUE = 127.0
SMOOTH_KEEP = 0.2  # b_k = 0.2 b_(k-1) + 0.8 d_k


def crop_ratio(resolution: int) -> float:
    return resolution / 256 * 2.8


def crop_size(resolution: int) -> tuple[int, int]:
    """(width, height) of the un-resized crop: (420, 560) at 512, (210, 280) at 256."""
    ratio = crop_ratio(resolution)
    return int(75 * ratio), int(100 * ratio)


def template_points(resolution: int) -> np.ndarray:
    """Template points in crop pixels, float64 (3, 2)."""
    return TEMPLATE_256 * crop_ratio(resolution)


def similarity_transform(points: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float32 similarity fit points → template. Returns (M (2, 3) float32, nose bias d (2,) float32) where
    d = normalised template nose − normalised detected nose (the smoothing input).

    Computed with torch float32 on the CPU in the reference's order of operations (mean, sample std over all
    six centred coordinates, SVD of the normalised cross-covariance, T = c_t − s·(R·c_d)), so that large
    translations (small faces far from the origin) round like the reference's."""
    src = torch.as_tensor(np.asarray(points, dtype=np.float32))
    dst = torch.as_tensor(np.asarray(template, dtype=np.float32))
    c_src, c_dst = src.mean(dim=0), dst.mean(dim=0)
    src_c, dst_c = src - c_src, dst - c_dst
    s_src, s_dst = torch.std(src_c), torch.std(dst_c)
    if not bool(torch.isfinite(s_src)) or float(s_src) <= 0:
        raise InputError("alignment points are degenerate (all equal)")
    src_n, dst_n = src_c / s_src, dst_c / s_dst
    u, _, v = torch.svd(src_n.T @ dst_n)
    rot = v @ u.T
    if float(torch.det(rot)) < 0:
        v = v.clone()
        v[:, -1] = -v[:, -1]
        rot = v @ u.T
    scale = s_dst / s_src
    trans = c_dst.reshape(2, 1) - scale * (rot @ c_src.reshape(2, 1))
    matrix = torch.cat([scale * rot, trans], dim=1)
    bias = dst_n[2] - src_n[2]
    return matrix.numpy().astype(np.float32), bias.numpy().astype(np.float32)


def source_box(matrix: np.ndarray, size_wh: tuple[int, int], frame_hw: tuple[int, int], margin: int):
    """Integer box (x0, y0, x1, y1), clipped to the frame, of the frame pixels the crop of ``size_wh`` sees
    through ``matrix`` (frame → crop), grown by ``margin``. None when it misses the frame entirely."""
    w, h = size_wh
    inv = cv2.invertAffineTransform(matrix.astype(np.float64))
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64)
    mapped = corners @ inv.T
    x0 = max(int(np.floor(mapped[:, 0].min())) - margin, 0)
    y0 = max(int(np.floor(mapped[:, 1].min())) - margin, 0)
    x1 = min(int(np.ceil(mapped[:, 0].max())) + margin + 1, frame_hw[1])
    y1 = min(int(np.ceil(mapped[:, 1].max())) + margin + 1, frame_hw[0])
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def bilinear_warp(src: np.ndarray, dst_to_src: np.ndarray, size_wh: tuple[int, int], fill: float, *,
                  planar: bool = False) -> np.ndarray:
    """Exact bilinear resampling of an image (HxWxC, or CxHxW when ``planar``; any real dtype):
    out(x, y) = src(dst_to_src · (x, y, 1)), pixel centres mapping exactly, taps outside ``src`` reading
    ``fill``. Returns float32 CxHxW. OpenCV's warpAffine quantises sub-pixel positions to 1/32 px, which misses
    the reference by up to 3 levels; torch's grid_sample (align_corners=True) on a ``fill``-padded planar copy
    with border clamping reproduces the reference's fill semantics."""
    import torch
    import torch.nn.functional as F

    w, h = size_wh
    chw = src if planar else src.transpose(2, 0, 1)
    channels, src_h, src_w = chw.shape
    padded = np.full((1, channels, src_h + 2, src_w + 2), fill, np.float32)
    padded[0, :, 1:-1, 1:-1] = chw  # one pass: cast + layout
    a = np.asarray(dst_to_src, dtype=np.float64)
    # source position in the padded image (+1), normalised to [-1, 1] over its pixel centres
    sx, sy = 2.0 / (src_w + 1), 2.0 / (src_h + 1)
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)[:, None]
    grid = np.empty((1, h, w, 2), np.float32)
    for axis, norm in ((0, sx), (1, sy)):
        grid[0, :, :, axis] = (np.float32(a[axis, 0] * norm) * xs + np.float32(a[axis, 1] * norm) * ys
                               + np.float32((a[axis, 2] + 1) * norm - 1))
    with torch.inference_mode():
        out = F.grid_sample(torch.from_numpy(padded), torch.from_numpy(grid), mode="bilinear",
                            padding_mode="border", align_corners=True)
        return out[0].numpy()


def warp_crop(frame: np.ndarray, matrix: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear warp of ``frame`` through ``matrix`` (frame → crop) to a uint8 HxWx3 crop, fill 127, truncation.
    Only the frame region the crop sees is converted to float (2 px margin keeps the bilinear taps exact)."""
    w, h = size_wh
    box = source_box(matrix, size_wh, frame.shape[:2], margin=2)
    if box is None:
        return np.full((h, w, 3), int(FILL_VALUE), dtype=np.uint8)
    x0, y0, x1, y1 = box
    dst_to_src = cv2.invertAffineTransform(matrix.astype(np.float64))
    dst_to_src[:, 2] -= (x0, y0)
    planes = bilinear_warp(frame[y0:y1, x0:x1], dst_to_src, (w, h), FILL_VALUE).astype(np.uint8)
    return cv2.merge(list(planes))


class FaceAligner:
    """Aligns one video's faces; holds the reference's smoothing state (call ``reset`` between videos or
    after a gap with no face — a new segment then starts like a new video)."""

    def __init__(self, resolution: int = 512):
        resolution = int(resolution)
        if resolution <= 0 or resolution % 8:
            raise InputError(f"face resolution must be a positive multiple of 8, got {resolution}")
        self.resolution = resolution
        self.crop_size = crop_size(resolution)
        self.template = template_points(resolution)
        self._bias: np.ndarray | None = None

    def reset(self) -> None:
        self._bias = None

    def matrix(self, points: np.ndarray) -> np.ndarray:
        """Smoothed frame → crop matrix (float32 (2, 3)) for the next frame's points; advances the state."""
        pts = np.round(np.asarray(points, dtype=np.float64).reshape(3, 2))
        matrix, bias = similarity_transform(pts, self.template)
        if self._bias is not None:
            bias = (self._bias * np.float32(SMOOTH_KEEP) + bias * np.float32(1 - SMOOTH_KEEP)).astype(np.float32)
        self._bias = bias
        matrix[:, 2] += bias
        return matrix

    def align(self, frame: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(face uint8 (R, R, 3), M float32 (2, 3) frame → crop)."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"expected an HxWx3 uint8 RGB frame, got {frame.dtype} {frame.shape}")
        matrix = self.matrix(points)
        crop = warp_crop(frame, matrix, self.crop_size)
        face = cv2.resize(crop, (self.resolution, self.resolution), interpolation=cv2.INTER_LANCZOS4)
        return face, matrix
