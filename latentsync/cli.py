"""Command line: lip-sync a video file to an audio file (or to its own sound track).

    python -m latentsync --video in.mp4 --audio in.wav -o out.mp4 [--steps 20] [--guidance 1.5] [--seed 1247]
        [--version 1.6|1.5] [--deepcache] [--face largest] [--device auto] [--dtype auto] [--models-dir DIR]
        [--download] [--length-mode audio|video]
    python -m latentsync download [--version 1.6] [--models-dir DIR]
    python -m latentsync status [--version 1.6] [--models-dir DIR]     (exit code 2 when weights are missing)

Streaming: frames are decoded chunk by chunk, lip-synced window by window and encoded once (H.264, CRF 18) with
the original audio muxed (trimmed/padded to the output length). Every user error (missing weights, unreadable
file, bad audio...) prints one message and exits with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .errors import CancelledError, LatentSyncError

log = logging.getLogger(__name__)
EXIT_USER_ERROR = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", default="1.6", choices=["1.6", "1.5"], help="LatentSync model version")
    p.add_argument("--models-dir", default=None, help="folder with the weights (default: the pack's checkpoints/)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m latentsync", description="LatentSync 1.6 lip-sync.")
    p.add_argument("--video", required=True, help="input video (any fps; faces are found per frame)")
    p.add_argument("--audio", default=None, help="speech to lip-sync to (default: the video's own audio track)")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4, .mov or .mkv)")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
    p.add_argument("--guidance", type=float, default=1.5, help="lips expression / CFG scale (1.0 = off; 1.5)")
    p.add_argument("--seed", type=int, default=1247, help="random seed (same seed → same output)")
    p.add_argument("--deepcache", action="store_true", help="DeepCache (interval 3): faster, slightly different")
    p.add_argument("--face", default="largest", help="face to sync: largest | leftmost | rightmost | index:N")
    p.add_argument("--length-mode", default="audio", choices=["audio", "video"],
                   help="audio: output as long as the audio (video ping-pongs or is cut); video: as long as the video")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"],
                   help="auto = float16 on GPU, float32 on CPU")
    p.add_argument("--window-batch", type=int, default=1, help="16-frame windows denoised together")
    p.add_argument("--vae-slice", type=int, default=16, help="frames per VAE encode/decode slice")
    p.add_argument("--download", action="store_true", help="download missing weights first")
    _common(p)
    return p


def _sub_parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m latentsync {name}",
                                description={"download": "Download the weights.",
                                             "status": "Show which weights are found."}[name])
    _common(p)
    return p


def _device_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise LatentSyncError(f"--device {device!r} is not a device (use auto, cpu, cuda, cuda:N or mps).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LatentSyncError(f"--device {device}: CUDA is not available on this machine; use --device cpu.")
    if dtype == "auto":
        return dev, (torch.float16 if dev.type in ("cuda", "mps") else torch.float32)
    return dev, getattr(torch, dtype)


def _find_weights(args):
    from .checkpoints import download_models, find_models
    from .errors import MissingWeightsError

    try:
        return find_models(args.version, models_dir=args.models_dir)
    except MissingWeightsError:
        if not args.download:
            raise
    return download_models(args.version, dest=args.models_dir)


def run(args) -> str:
    # weights first: without them stop at once, before any decoding
    paths = _find_weights(args)
    from .pipeline import LipSyncPipeline, LipSyncSettings  # noqa: I001 - heavy imports only after the check
    from .video import VideoWriter, iter_frames, probe, read_audio

    settings = LipSyncSettings(version=args.version, steps=args.steps, guidance=args.guidance, seed=args.seed,
                               face=args.face, length_mode=args.length_mode, deepcache=args.deepcache,
                               window_batch=args.window_batch, vae_slice=args.vae_slice)
    out = Path(args.output)
    if not out.parent.is_dir():
        raise LatentSyncError(f"The output folder does not exist: {out.parent}")
    if args.audio is not None and not Path(args.audio).is_file():
        raise LatentSyncError(f"Audio file not found: {args.audio}")
    from .face.select import parse_choice

    parse_choice(args.face)  # a wrong --face fails now, not after loading the models
    info = probe(args.video)
    audio = read_audio(args.audio or args.video)
    if audio is None:
        src = args.audio or args.video
        raise LatentSyncError(f"{src} has no audio track; pass the speech with --audio FILE.")
    if out.resolve() == Path(args.video).resolve():
        raise LatentSyncError("The output must not overwrite the input video.")
    device, dtype = _device_dtype(args.device, args.dtype)
    from .models import load_models

    t0 = time.monotonic()
    pipe = LipSyncPipeline(load_models(paths, device, dtype))
    job = pipe.prepare(audio, info.fps, settings, n_frames=info.n_frames)
    last = [0.0]

    def progress(done, total, _info):
        now = time.monotonic()
        if now - last[0] > 1.0 or done == total:
            last[0] = now
            print(f"\rdenoising {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    frames = 0
    with VideoWriter(out, info.rate, info.width, info.height, audio=job.output_audio()) as writer:
        for chunk in pipe.stream(lambda: iter_frames(args.video), info.fps, None, settings, progress,
                                 n_frames=info.n_frames, job=job):
            writer.write(chunk)
            frames += len(chunk)
    seconds = frames / info.fps
    return (f"wrote {out} ({frames} frames, {info.width}x{info.height} at {info.fps:g} fps, {seconds:.2f} s, "
            f"in {time.monotonic() - t0:.1f} s)")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sub = argv[0] if argv and argv[0] in ("download", "status", "run") else None
    if sub == "run":
        argv, sub = argv[1:], None
    args = (_sub_parser(sub) if sub else build_parser()).parse_args(argv[1:] if sub else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if sub == "status":
            from .checkpoints import model_status

            from .checkpoints import find_models
            from .errors import MissingWeightsError

            print(model_status(args.version, models_dir=args.models_dir))
            try:
                find_models(args.version, models_dir=args.models_dir)
            except MissingWeightsError:
                return EXIT_USER_ERROR  # scripts can test for the weights
            return 0
        if sub == "download":
            from .checkpoints import download_models

            paths = download_models(args.version, dest=args.models_dir)
            print(f"LatentSync {paths.version} weights ready: unet={paths.unet} whisper={paths.whisper} vae={paths.vae}")
            return 0
        print(run(args))
        return 0
    except CancelledError as e:
        print(f"cancelled: {e}", file=sys.stderr)
        return 130
    except LatentSyncError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
