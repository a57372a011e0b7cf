"""Parity check of the mouth mask against a ``mask/`` fixture folder (every ``mask_R`` / ``mask_latent_r``
stored there; resolutions read from the key names and shapes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from latentsync.face import latent_mask, load_mask


def check(folder) -> dict:
    data = load_file(str(Path(folder) / "masks.safetensors"))
    worst, total, count, latent_exact, checked = 0.0, 0.0, 0, True, []
    for key, stored in sorted(data.items()):
        if not key.startswith("mask_") or key.startswith("mask_latent_"):
            continue
        resolution = int(stored.shape[-1])
        ours = load_mask(resolution)
        diff = np.abs(ours.astype(np.float64) - stored.reshape(ours.shape).astype(np.float64))
        worst, total, count = max(worst, float(diff.max())), total + float(diff.sum()), count + diff.size
        checked.append(resolution)
        latent_key = f"mask_latent_{resolution // 8}"
        if latent_key in data:
            latent_exact &= bool(np.array_equal(latent_mask(ours), data[latent_key].reshape(latent_mask(ours).shape)))
    ok = bool(checked) and worst <= 1 / 255 + 1e-7 and latent_exact
    return {"ok": ok, "max_abs_err": worst, "mean_abs_err": total / max(count, 1),
            "latent_exact": latent_exact, "resolutions": checked}
