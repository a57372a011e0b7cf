"""The DDIM scheduler of LatentSync: diffusers ``DDIMScheduler`` with the reference's configuration
(configs/scheduler_config.json: scaled-linear betas 0.00085..0.012, 1000 steps, "leading" spacing with
steps_offset 1, set_alpha_to_one false, epsilon prediction, no clipping)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "scheduler_config.json"


def load_scheduler_config(path=None) -> dict:
    with open(path or CONFIG_PATH, encoding="utf-8") as f:
        return json.load(f)


def make_scheduler(config_path=None):
    """A fresh ``diffusers.DDIMScheduler`` (it is stateful: one per job) from the shipped config or ``config_path``."""
    from diffusers import DDIMScheduler

    config = {k: v for k, v in load_scheduler_config(config_path).items() if not k.startswith("_")}
    # "skip_prk_steps" belongs to PNDM; DDIMScheduler ignores it (kept in the file as shipped by the reference)
    config.pop("skip_prk_steps", None)
    return DDIMScheduler.from_config(config)


__all__ = ["make_scheduler", "load_scheduler_config", "CONFIG_PATH"]
