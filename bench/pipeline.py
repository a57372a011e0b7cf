"""Streaming pipeline on the CPU with the tiny random models: frames/s and peak RSS for a 10 s and a 60 s 720p
clip (prints one JSON line per clip and a summary line; never asserts).

    python bench/pipeline.py [--models-dir DIR] [--resolution 64] [--steps 2] [--guidance 1.0]
                             [--seconds 10 60] [--fps 25] [--threads N] [--encode]

Each clip runs in its own process (peak RSS = that process's ru_maxrss): frames are generated chunk by chunk
(astronaut, tools/make_sample.py), lip-synced through ``LipSyncPipeline.stream`` and dropped (``--encode``:
written to a temporary H.264 file with the audio, as the CLI does). The summary compares the peak RSS of the
longest clip with the shortest: streaming keeps it flat (the issue asks for ≤ 10 % growth from 10 s to 60 s).
Without ``--models-dir`` a tiny set is written to a temporary folder (tools/make_tiny_models.py). The tiny set's
face resolution is overridden (default 64 px) to keep CPU time low; the memory behaviour does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def one(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)  # this benchmark process only
    from latentsync.checkpoints import find_models
    from latentsync.models import load_models
    from latentsync.pipeline import LipSyncPipeline, LipSyncSettings
    from tools.make_sample import iter_frames, make_speech

    models = load_models(find_models("1.6", args.models_dir), "cpu", torch.float32)
    pipe = LipSyncPipeline(models)
    n = int(round(args.one * args.fps))
    sr = 44100
    audio = (make_speech(args.one, sr)[None].repeat(2, axis=0), sr)  # stereo 44.1 kHz, like a real file
    settings = LipSyncSettings(steps=args.steps, guidance=args.guidance, seed=1)
    rss_before = _peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    frames_out = 0
    source = lambda: iter_frames(n, args.fps, 1280, 720)  # noqa: E731 - re-openable source
    stream = pipe.stream(source, args.fps, audio, settings, n_frames=n)
    if args.encode:
        from latentsync.video import VideoWriter

        job = pipe.prepare(audio, args.fps, settings, n_frames=n)
        with tempfile.TemporaryDirectory() as tmp, \
                VideoWriter(Path(tmp) / "out.mp4", args.fps, 1280, 720, audio=job.output_audio()) as w:
            for chunk in pipe.stream(source, args.fps, None, settings, n_frames=n, job=job):
                w.write(chunk)
                frames_out += len(chunk)
    else:
        for chunk in stream:
            frames_out += len(chunk)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"clip_s": args.one, "frames": frames_out, "size": "1280x720", "fps_in": args.fps,
            "resolution": models.resolution, "steps": args.steps, "guidance": args.guidance,
            "threads": torch.get_num_threads(), "encode": bool(args.encode), "wall_s": round(wall, 2),
            "fps": round(frames_out / wall, 2), "cpu_fps": round(frames_out / max(cpu, 1e-9), 2),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_after_load_mb": round(rss_before, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", default=None)
    p.add_argument("--resolution", type=int, default=64, help="face resolution override for the tiny set")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--seconds", type=float, nargs="+", default=[10, 60])
    p.add_argument("--fps", type=float, default=25)
    p.add_argument("--threads", type=int, default=0, help="torch threads in the benchmark process (0 = default)")
    p.add_argument("--encode", action="store_true", help="also encode to a temporary H.264 file")
    p.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args)), flush=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(args.models_dir) if args.models_dir else Path(tmp) / "tiny"
        if not args.models_dir:
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_models.py"), str(tiny)], check=True,
                           capture_output=True)
        from pipeline_support import small_model_dir

        models = small_model_dir(tiny, Path(tmp) / f"tiny{args.resolution}", args.resolution)
        results = []
        for seconds in args.seconds:
            cmd = [sys.executable, __file__, "--one", str(seconds), "--models-dir", str(models), "--steps",
                   str(args.steps), "--guidance", str(args.guidance), "--fps", str(args.fps), "--threads",
                   str(args.threads)] + (["--encode"] if args.encode else [])
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-3000:], file=sys.stderr)
                return r.returncode
            results.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    lo, hi = results[0], results[-1]
    growth = (hi["peak_rss_mb"] - lo["peak_rss_mb"]) / lo["peak_rss_mb"] * 100
    print(json.dumps({"summary": True, "peak_rss_mb": {str(r["clip_s"]): r["peak_rss_mb"] for r in results},
                      "rss_growth_pct": round(growth, 2), "within_10pct": abs(growth) <= 10.0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
