"""The streaming pipeline on the CPU with the tiny random models: frames/s and peak RSS, serial vs pipelined.

    python bench/pipeline.py [--seconds 10 60] [--denoise-delay SECONDS] [--modes serial,pipelined]
                             [--source file|generated] [--no-encode] [--models-dir DIR] [--resolution 64]
                             [--steps 2] [--guidance 1.0] [--fps 25] [--threads N]

Every (clip length, mode) runs in its own process (peak RSS = that process's ru_maxrss). By default it does the
command line's work on a 1280x720 astronaut clip: the clip is written once as an H.264 file (tools/make_sample.py),
then decoded chunk by chunk, lip-synced through ``LipSyncPipeline.stream`` and encoded to a temporary H.264 file
with the audio. ``--source generated`` makes the frames in memory instead of decoding them, ``--no-encode`` drops
the output instead of encoding it (with both: the pipeline alone, as this bench measured before the stages
overlapped). ``--denoise-delay S`` replaces the denoiser (VAE + UNet) by a sleep of S seconds per 16-frame window,
so the CPU is free as it is while a GPU works: the pipelined stream then overlaps decoding, face work, paste-back
and encoding with that wait. Each process prints one JSON line; for each clip length a summary line gives
``pipelined_speedup`` (serial wall / pipelined wall), the peak RSS ratio and whether both modes produced the same
frames (sha256 of every output frame, computed only when two modes are compared). A last line compares peak RSS
of the longest and the shortest clip (streaming keeps it flat). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from latentsync import pipeline as pipeline_module
from latentsync.checkpoints import find_models
from latentsync.inputs import FrameSource
from latentsync.models import load_models
from latentsync.pipeline import LipSyncPipeline
from latentsync.settings import LipSyncSettings
from latentsync.video import VideoWriter
from tools.make_sample import iter_frames, make_speech, write_sample
from tools.make_tiny_models import make_tiny_models, small_model_dir

WIDTH, HEIGHT = 1280, 720


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _sleeping_denoiser(delay: float):
    """Stands in for denoise_windows: waits ``delay`` s per window and gives the faces back unchanged."""
    def denoise(ctx, faces, audio_embeds, cancel=None):
        time.sleep(delay * faces.shape[0])
        for _ in ctx.scheduler.timesteps:
            ctx.on_step(faces.shape[0])
        return faces.reshape(-1, *faces.shape[2:]).float()
    return denoise


def one(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)  # this benchmark process only
    models = load_models(find_models("1.6", args.models_dir), "cpu", torch.float32)
    pipe = LipSyncPipeline(models)
    n = int(round(args.one * args.fps))
    sr = 44100
    audio = (make_speech(args.one, sr)[None].repeat(2, axis=0), sr)  # stereo 44.1 kHz, like a real file
    settings = LipSyncSettings(steps=args.steps, guidance=args.guidance, seed=1, pipelined=args.mode == "pipelined")
    job = pipe.prepare(audio, args.fps, settings, n_frames=n)
    digest, frames_out = hashlib.sha256() if args.hash else None, 0
    rss_before = _peak_rss_mb()
    patch = mock.patch.object(pipeline_module, "denoise_windows", _sleeping_denoiser(args.denoise_delay)) \
        if args.denoise_delay > 0 else contextlib.nullcontext()
    t0, c0 = time.perf_counter(), time.process_time()
    with patch, tempfile.TemporaryDirectory() as tmp:
        source = FrameSource.from_file(args.clip, n) if args.clip else \
            FrameSource.from_chunks(iter_frames(n, args.fps, WIDTH, HEIGHT), n)
        writer = VideoWriter(Path(tmp) / "out.mp4", args.fps, WIDTH, HEIGHT, audio=job.output_audio()) \
            if args.encode else None
        with writer or contextlib.nullcontext():
            for chunk in pipe.stream(source, job):
                if digest is not None:
                    digest.update(chunk.tobytes())
                frames_out += len(chunk)
                if writer is not None:
                    writer.write(chunk)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"clip_s": args.one, "mode": args.mode, "frames": frames_out, "size": f"{WIDTH}x{HEIGHT}",
            "fps_in": args.fps, "resolution": models.resolution, "steps": args.steps, "guidance": args.guidance,
            "denoise_delay_s": args.denoise_delay, "threads": torch.get_num_threads(), "encode": bool(args.encode),
            "wall_s": round(wall, 2), "fps": round(frames_out / wall, 2), "cpu_s": round(cpu, 2),
            "source": "file" if args.clip else "generated", "peak_rss_mb": round(_peak_rss_mb(), 1),
            "rss_after_load_mb": round(rss_before, 1), "frames_sha256": digest.hexdigest()[:16] if digest else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", default=None)
    p.add_argument("--resolution", type=int, default=64, help="face resolution override for the tiny set")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--seconds", type=float, nargs="+", default=[10, 60])
    p.add_argument("--fps", type=float, default=25)
    p.add_argument("--modes", default="serial,pipelined")
    p.add_argument("--denoise-delay", type=float, default=0.0, help="seconds per window instead of the denoiser")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the benchmark process (0 = default)")
    p.add_argument("--source", choices=("file", "generated"), default="file",
                   help="decode a 720p H.264 file (default) or make the frames in memory")
    p.add_argument("--no-encode", dest="encode", action="store_false", help="drop the output instead of encoding it")
    p.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="serial", help=argparse.SUPPRESS)
    p.add_argument("--clip", default=None, help=argparse.SUPPRESS)
    p.add_argument("--hash", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args)), flush=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(args.models_dir) if args.models_dir else make_tiny_models(Path(tmp) / "tiny")
        models = small_model_dir(tiny, Path(tmp) / f"tiny{args.resolution}", args.resolution)
        by_length, modes = {}, args.modes.split(",")
        for seconds in args.seconds:
            clip = []
            if args.source == "file":
                clip = ["--clip", str(write_sample(Path(tmp) / f"clip{seconds:g}", seconds, args.fps, WIDTH, HEIGHT)[0])]
            for mode in modes:
                cmd = [sys.executable, __file__, "--one", str(seconds), "--mode", mode, "--models-dir", str(models),
                       "--steps", str(args.steps), "--guidance", str(args.guidance), "--fps", str(args.fps),
                       "--threads", str(args.threads), "--denoise-delay", str(args.denoise_delay), *clip]
                cmd += ([] if args.encode else ["--no-encode"]) + (["--hash"] if len(modes) > 1 else [])
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stderr[-3000:], file=sys.stderr)
                    return r.returncode
                result = json.loads(r.stdout.strip().splitlines()[-1])
                by_length.setdefault(seconds, {})[mode] = result
                print(json.dumps(result), flush=True)
            runs = by_length[seconds]
            if {"serial", "pipelined"} <= set(runs):
                serial, piped = runs["serial"], runs["pipelined"]
                print(json.dumps({"clip_s": seconds, "serial_s": serial["wall_s"], "pipelined_s": piped["wall_s"],
                                  "pipelined_speedup": round(serial["wall_s"] / piped["wall_s"], 3),
                                  "fps": {"serial": serial["fps"], "pipelined": piped["fps"]},
                                  "peak_rss_mb": {"serial": serial["peak_rss_mb"], "pipelined": piped["peak_rss_mb"]},
                                  "peak_rss_ratio": round(piped["peak_rss_mb"] / serial["peak_rss_mb"], 3),
                                  "outputs_equal": serial["frames_sha256"] == piped["frames_sha256"]}), flush=True)
    for mode in args.modes.split(","):
        lo, hi = by_length[args.seconds[0]][mode], by_length[args.seconds[-1]][mode]
        growth = (hi["peak_rss_mb"] - lo["peak_rss_mb"]) / lo["peak_rss_mb"] * 100
        print(json.dumps({"summary": mode, "peak_rss_mb": {str(s): r[mode]["peak_rss_mb"] for s, r in by_length.items()},
                          "rss_growth_pct": round(growth, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
