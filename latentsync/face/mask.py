"""The reference's fixed mouth mask (``mask.png``, Apache-2.0, see NOTICE.txt next to it).

``load_mask(R)`` gives the mask at resolution R as the reference loader does: PNG → RGB → OpenCV Lanczos-4
resize to R×R on uint8 → /255; we keep channel 0 (the three channels are equal). 1 = keep, 0 = regenerate.
``latent_mask`` is the UNet's mask channel: nearest-neighbour down-sampling by 8 (torch's default nearest
picks source index floor(i·8), i.e. the top-left pixel of each 8×8 block).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

MASK_PATH = Path(__file__).with_name("mask.png")
LATENT_FACTOR = 8


@lru_cache(maxsize=8)
def _load_mask_cached(resolution: int) -> np.ndarray:
    image = cv2.imread(str(MASK_PATH), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"the mouth mask {MASK_PATH} is missing from the package")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    mask = (image[:, :, 0].astype(np.float64) / 255.0).astype(np.float32)
    mask.setflags(write=False)
    return mask


def load_mask(resolution: int) -> np.ndarray:
    """Mouth mask at ``resolution``: float32 (R, R), values k/255; 1 keep, 0 regenerate (a fresh copy)."""
    resolution = int(resolution)
    if resolution < LATENT_FACTOR or resolution % LATENT_FACTOR:
        raise InputError(f"face resolution must be a positive multiple of {LATENT_FACTOR}, got {resolution}")
    return _load_mask_cached(resolution).copy()


def latent_mask(mask):
    """The UNet's mask channel: ``mask[..., ::8, ::8]`` for an ndarray or torch tensor of shape (..., R, R)."""
    height, width = mask.shape[-2:]
    if height % LATENT_FACTOR or width % LATENT_FACTOR:
        raise InputError(f"mask size must be a multiple of {LATENT_FACTOR}, got {height}x{width}")
    return mask[..., ::LATENT_FACTOR, ::LATENT_FACTOR]
