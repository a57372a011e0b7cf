"""UNet parity: our UNet3DConditionModel, built from the fixture's config.json and strictly loaded from its
latentsync_unet.pt, must reproduce ``expected`` of case.safetensors (max abs <= 1e-4, mean abs <= 1e-5).
Also checks that the models built from our shipped configs (1.6 → unet_keys_512.json, 1.5 →
unet_keys_256.json) have exactly the real checkpoints' keys and shapes, when those files are present.
Nothing here assumes this fixture set's widths, heads, frame counts or latent sizes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from latentsync.config import build_unet, load_unet_config
from latentsync.models.loading import load_strict, read_state_dict

MAX_ABS, MEAN_ABS = 1e-4, 1e-5
KEY_FILES = {"512": ("unet_keys_512.json", "1.6"), "256": ("unet_keys_256.json", "1.5")}


def forward_case(fixture_dir: Path) -> dict:
    config = json.loads((fixture_dir / "config.json").read_text(encoding="utf-8"))
    model = build_unet(config)
    load_strict(model, read_state_dict(fixture_dir / "latentsync_unet.pt"), what="latentsync_unet.pt",
                config_name="fixture config.json")
    model.eval().float()
    case = load_file(str(fixture_dir / "case.safetensors"))
    with torch.inference_mode():
        out = model(case["sample"], case["timestep"], case["encoder_hidden_states"])
    expected = case["expected"]
    if out.shape != expected.shape:
        return {"ok": False, "error": f"output shape {tuple(out.shape)} != expected {tuple(expected.shape)}"}
    err = (out.double() - expected.double()).abs()
    max_abs, mean_abs = err.max().item(), err.mean().item()
    return {"max_abs_err": max_abs, "mean_abs_err": mean_abs, "ok": max_abs <= MAX_ABS and mean_abs <= MEAN_ABS,
            "shape": list(expected.shape)}


def key_layout(keys_file: Path, version: str) -> dict:
    """Compare our model built from the shipped config of ``version`` (meta device) with a key→shape file."""
    reference = json.loads(keys_file.read_text(encoding="utf-8"))
    ours = {k: list(v.shape) for k, v in build_unet(load_unet_config(version)).state_dict().items()}
    missing = [k for k in reference if k not in ours]
    extra = [k for k in ours if k not in reference]
    wrong = [k for k in reference if k in ours and list(reference[k]) != ours[k]]
    return {"ok": not (missing or extra or wrong), "order_ok": list(ours) == list(reference),
            "missing": missing[:5], "unexpected": extra[:5], "wrong_shape": wrong[:5], "n_keys": len(ours)}


def check(fixture_dir) -> dict:
    fixture_dir = Path(fixture_dir)
    result = forward_case(fixture_dir)
    ok = bool(result["ok"])
    for res, (name, version) in KEY_FILES.items():
        path = fixture_dir / name
        if not path.is_file():
            continue
        layout = key_layout(path, version)
        result[f"keys_{res}_ok"] = layout["ok"]
        result[f"keys_{res}_order_ok"] = layout["order_ok"]
        if not layout["ok"]:
            result[f"keys_{res}_diff"] = {k: layout[k] for k in ("missing", "unexpected", "wrong_shape")}
        ok = ok and layout["ok"]
    result["ok"] = ok
    return result
