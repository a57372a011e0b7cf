"""Whole-pipeline parity against an ``e2e/`` fixture folder: our own ``LipSyncPipeline.prepare`` / ``stream`` —
the code path the CLI and the nodes run — in reference-semantics mode (``LipSyncSettings(reference=True)``:
the reference's frame count, chunk rows, features from the unfitted audio and 30 s windows, loop), with the
face detector replaced by the fixture's landmark points (``GivenFaces``) and its tiny models.

Everything is read from the folder: frames, points, speech, models and their configs, seed, steps, guidance,
resolution and fps (case.json). Pass: inside ``restore_window`` mean abs ≤ 0.15 levels and at most 0.5 % of the
values off by more than 2 levels; outside it identical to the input frames. The stored intermediates (alignment
matrices, audio rows) are compared too, to locate a difference."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.numpy import load_file

from latentsync.checkpoints import ModelPaths
from latentsync.face.mask import MASK_PATH
from latentsync.inputs import FrameSource, parse_audio
from latentsync.models import load_models
from latentsync.pipeline import LipSyncPipeline
from latentsync.scheduler import load_scheduler_config
from latentsync.settings import LipSyncSettings
from latentsync.speakers import GivenFaces

MEAN_ABS, FRACTION_OVER_2 = 0.15, 0.005


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def run_ours(folder: Path, case: dict) -> tuple[np.ndarray, np.ndarray]:
    """(our output frames, the input frames) for the fixture."""
    frames = np.stack([_rgb(p) for p in sorted((folder / "video").glob("frame_*.png"))])
    points = load_file(str(folder / "points.safetensors"))["points"]
    config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    config["resolution"] = int(case["resolution"])
    paths = ModelPaths(unet=folder / "unet" / "latentsync_unet.pt", whisper=folder / "whisper" / "tiny.pt",
                       vae=folder / "vae")
    models = load_models(paths, "cpu", torch.float32, unet_config=config)
    settings = LipSyncSettings(steps=int(case["num_inference_steps"]), guidance=float(case["guidance_scale"]),
                               seed=int(case["seed"]), reference=True, window_batch=1)
    pipe = LipSyncPipeline(models)
    job = pipe.prepare(parse_audio(folder / "speech.wav"), float(case["fps"]), settings, n_frames=len(frames),
                       faces=GivenFaces(points))
    out = np.concatenate(list(pipe.stream(FrameSource.from_array(frames), job)))
    return out, frames


def check(folder) -> dict:
    folder = Path(folder)
    case = json.loads((folder / "case.json").read_text(encoding="utf-8"))
    same_data = {"mask": (folder / "mask.png").read_bytes() == MASK_PATH.read_bytes(),
                 "scheduler": json.loads((folder / "scheduler_config.json").read_text()) == load_scheduler_config()}
    if not all(same_data.values()):
        return {"ok": False, "error": f"the fixture's data files differ from ours: {same_data}"}
    expected = load_file(str(folder / "expected.safetensors"))["frames_out"]
    ours, inputs = run_ours(folder, case)
    if ours.shape != expected.shape:
        return {"ok": False, "error": f"{ours.shape[0]} frames of {ours.shape[1:]} != expected {expected.shape}"}
    y0, y1, x0, x1 = case["restore_window"]
    inside = np.zeros(expected.shape[1:3], bool)
    inside[y0:y1, x0:x1] = True
    diff = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
    diff_in = diff[:, inside]
    outside_same = bool(np.array_equal(ours[:, ~inside], inputs[:len(ours)][:, ~inside]))
    mean_abs = float(diff_in.mean())
    over_2 = float((diff_in > 2).mean())
    return {"frames": int(len(ours)), "mean_abs_inside": round(mean_abs, 4), "max_abs_inside": int(diff_in.max()),
            "fraction_over_2_levels": round(over_2, 6), "outside_identical": outside_same,
            "ok": mean_abs <= MEAN_ABS and over_2 <= FRACTION_OVER_2 and outside_same}
