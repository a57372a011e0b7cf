"""bench/gpu.py stays alive: its --tiny CPU run prints one well-formed JSON line per mode."""

from __future__ import annotations

import json
import subprocess
import sys


def test_gpu_bench_tiny_cpu_prints_json_per_mode(repo_root):
    cmd = [sys.executable, str(repo_root / "bench" / "gpu.py"), "--tiny", "--device", "cpu", "--windows", "2",
           "--steps", "1", "--resolution", "64", "--modes", "reference,deepcache"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=repo_root)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r["mode"] for r in lines] == ["reference", "deepcache"]
    for r in lines:
        assert r["device"] == "cpu" and r["dtype"] == "float32" and r["resolution"] == 64
        assert r["frames_per_s"] > 0 and r["settings"]["windows"] == 2 and r["settings"]["steps"] == 1
        assert {"vae_encode", "vae_decode", "unet_and_scheduler", "paste_back"} <= set(r["stages_s"])
    assert lines[1]["settings"]["deepcache"] is True
