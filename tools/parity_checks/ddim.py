"""Parity check of our DDIM scheduler (configs/scheduler_config.json via latentsync.scheduler.make_scheduler)
against a ddim/ fixture folder: timesteps for every stored step count, alphas_cumprod, and one eta-0 step at
t_first and t_last."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from latentsync.scheduler import load_scheduler_config, make_scheduler

STEP_MAX = 1e-6


def _steps_for(t: int, table: dict) -> int:
    for n, ts in table.items():
        if t in ts:
            return int(n)
    raise ValueError(f"timestep {t} is in none of the stored schedules {list(table)}")


def check(folder) -> dict:
    folder = Path(folder)
    info = json.loads((folder / "timesteps.json").read_text())
    tensors = load_file(str(folder / "ddim_step.safetensors"))
    ours_cfg = {k: v for k, v in load_scheduler_config().items() if not k.startswith("_")}
    ref_cfg = {k: v for k, v in load_scheduler_config(folder / "scheduler_config.json").items()
               if not k.startswith("_")}
    config_equal = ours_cfg == ref_cfg

    timesteps_ok = {}
    for n, expected in info["timesteps"].items():
        sched = make_scheduler()
        sched.set_timesteps(int(n))
        timesteps_ok[n] = sched.timesteps.tolist() == list(expected)

    sched = make_scheduler()
    alphas_err = (sched.alphas_cumprod - tensors["alphas_cumprod"]).abs().max().item()
    extras_ok = (float(sched.init_noise_sigma) == float(info["init_noise_sigma"])
                 and abs(float(sched.final_alpha_cumprod) - float(info["final_alpha_cumprod"])) <= 1e-7)

    errs = {}
    for key, t in (("prev_sample_t_first", info["t_first"]), ("prev_sample_t_last", info["t_last"])):
        sched = make_scheduler()
        sched.set_timesteps(_steps_for(int(t), info["timesteps"]))
        out = sched.step(tensors["model_output"], int(t), tensors["sample"], eta=0.0).prev_sample
        errs[key] = (out - tensors[key]).abs()
    max_err = max(e.max().item() for e in errs.values())
    mean_err = torch.cat([e.flatten() for e in errs.values()]).mean().item()
    ok = config_equal and all(timesteps_ok.values()) and extras_ok and alphas_err <= 1e-7 and max_err <= STEP_MAX
    return {"ok": bool(ok), "max_abs_err": max_err, "mean_abs_err": mean_err, "timesteps_exact": timesteps_ok,
            "config_equal": config_equal, "alphas_cumprod_max_abs_err": alphas_err,
            "t_first": info["t_first"], "t_last": info["t_last"]}
