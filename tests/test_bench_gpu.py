"""bench/gpu.py stays alive: its --tiny CPU run prints one well-formed JSON line per mode, then the summary against
the reference (the GPU levers that run on a CPU give the reference's output; cuda_graphs is refused there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_gpu_bench_tiny_cpu_prints_json_per_mode_and_the_summary(repo_root):
    cmd = [sys.executable, str(repo_root / "bench" / "gpu.py"), "--tiny", "--device", "cpu", "--windows", "2",
           "--steps", "1", "--resolution", "64", "--modes", "reference,ours+channels_last+vae_tiling,ours+cuda_graphs"]
    env = {**os.environ, "PYTHONPATH": str(repo_root)}  # this checkout's library, whatever is installed
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=repo_root, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["mode"] for r in lines] == ["reference", "ours+channels_last+vae_tiling", "ours+cuda_graphs", "summary"]
    reference, ours, graphs, summary = lines
    for r in (reference, ours):
        assert r["device"] == "cpu" and r["dtype"] == "float32" and r["resolution"] == 64
        assert r["frames_per_s"] > 0 and r["settings"]["windows"] == 2 and r["settings"]["steps"] == 1
        assert {"vae_encode", "vae_decode", "unet_and_scheduler", "paste_back"} <= set(r["stages_s"])
    assert reference["accel"] == "off" and reference["settings"]["window_batch"] == 1
    assert reference["settings"]["vae_slice"] == 16 and reference["settings"]["deepcache"] is False
    assert ours["accel"] == "channels-last, vae-tiling" and ours["max_abs_diff_vs_reference"] < 1e-4
    cl_unet, convs_unet = ours["channels_last_conv_inputs"]["unet"]
    assert 0 < cl_unet < convs_unet
    assert graphs == {"mode": "ours+cuda_graphs",
                      "skipped": "cuda_graphs needs a CUDA GPU, but this job runs on cpu: turn cuda_graphs off."}
    entry = summary["vs_reference"]["ours+channels_last+vae_tiling"]
    assert summary["reference_frames_per_s"] == reference["frames_per_s"] and entry["max_abs_diff"] < 1e-4
    assert entry["speedup"] == round(ours["frames_per_s"] / reference["frames_per_s"], 3)
    assert list(summary["vs_reference"]) == ["ours+channels_last+vae_tiling"]
