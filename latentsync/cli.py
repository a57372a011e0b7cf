"""Command line: lip-sync a video file to an audio file (or to its own sound track).

    python -m latentsync --video in.mp4 [--audio in.wav] -o out.mp4 [--steps 20] [--guidance 1.5] [--seed 1247]
        [--version 1.6|1.5] [--deepcache] [--face largest] [--length-mode audio|video] [--device auto]
        [--dtype auto|fp16|bf16|fp32] [--window-batch N] [--vae-slice N] [--models-dir DIR] [--no-download]
        [--blend reference|feather|poisson] [--feather-px PX] [--color-match off|mean|mean_std]
        [--restore-model FILE] [--restore-strength S] [--min-face PX] [--face-confidence C]
        [--face-region X0,Y0,X1,Y1] [--redetect-every N] [--silence sync|keep] [--silence-db DB] [--preview DIR]
        [--speaker FACE=AUDIO ...]                                           (dialogue: one per speaker)
    python -m latentsync download [--version 1.6] [--models-dir DIR]
    python -m latentsync status [--version 1.6] [--models-dir DIR]     (exit code 2 when weights are missing)
    python -m latentsync batch MANIFEST [--workers N] [--ray-address ADDR] [--segment-frames N] ...  (Ray)

The job runs through ``latentsync.api.lipsync_file`` under the same memory policy as the ComfyUI nodes (VRAM
tier → window batch / VAE slice / memory fraction, printed at the start; ``--window-batch`` / ``--vae-slice``
override it; out of memory → one retry a tier lower). Missing weights are downloaded first unless
``--no-download``. Every user error prints one message and exits with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from tqdm.auto import tqdm

from . import checkpoints
from .accel import accel_from_args, add_accel_arguments
from .api import Speaker, lipsync_file
from .errors import CancelledError, InputError, LatentSyncError, MissingWeightsError
from .runtime import Host, MemoryPlan, ModelHandle
from .settings import DTYPES, LENGTH_MODES, SILENCE_MODES, VERSIONS, LipSyncSettings

log = logging.getLogger(__name__)
EXIT_USER_ERROR = 2
SUBCOMMANDS = ("download", "status")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", default="1.6", choices=VERSIONS, help="LatentSync model version")
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
    p.add_argument("--face", default="largest", help="face to sync: largest | leftmost | rightmost | center | index:N")
    p.add_argument("--length-mode", default="audio", choices=LENGTH_MODES,
                   help="audio: output as long as the audio (video ping-pongs or is cut); video: as long as the video")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto = fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--window-batch", type=int, default=0, help="16-frame windows per UNet batch (default: VRAM tier)")
    p.add_argument("--vae-slice", type=int, default=0, help="frames per VAE encode/decode (default: VRAM tier)")
    p.add_argument("--no-download", action="store_true", help="never download missing weights")
    p.add_argument("--no-pipeline", action="store_true", help="run decode, faces, denoise and encode one after "
                                                               "another instead of overlapping them")
    look = p.add_argument_group("result controls (off by default: the reference's result)")
    look.add_argument("--blend", default="reference", help="paste-back: reference | feather | poisson")
    look.add_argument("--feather-px", type=float, default=12.0, help="soft edge of feather/poisson, frame pixels")
    look.add_argument("--color-match", default="off", help="match the mouth's colour to the skin: off | mean | mean_std")
    look.add_argument("--restore-model", default=None, help="face restoration model file (GFPGAN, RestoreFormer, "
                                                            "ESRGAN families, loaded with spandrel)")
    look.add_argument("--restore-strength", type=float, default=1.0, help="0..1, how much of the restored mouth")
    look.add_argument("--min-face", type=float, default=80.0,
                      help="smallest face height: pixels, or a fraction of the frame height below 1 (default 80)")
    look.add_argument("--face-confidence", type=float, default=0.5, help="face detection confidence 0..1")
    look.add_argument("--face-region", default=None, help="search faces only in X0,Y0,X1,Y1 (pixels)")
    look.add_argument("--redetect-every", type=int, default=50, help="frames between full face searches")
    look.add_argument("--silence", default="sync", choices=SILENCE_MODES,
                      help="keep: the original face where the audio is silent (cross-faded)")
    look.add_argument("--silence-db", type=float, default=-45.0, help="silence level in dBFS (default -45)")
    look.add_argument("--preview", default=None, help="write preview PNGs (face box, points, mouth region) and a "
                                                      "contact sheet into this folder")
    look.add_argument("--speaker", action="append", default=None, metavar="FACE=AUDIO",
                      help="dialogue: a face (left, right, index:N, id:K) and its audio file; repeat per speaker")
    add_accel_arguments(p)
    _common(p)
    return p


def _sub_parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m latentsync {name}",
                                description={"download": "Download the weights.",
                                             "status": "Show which weights are found."}[name])
    _common(p)
    return p


def _terminal_host() -> Host:
    """Plain PyTorch memory numbers; the plan printed; weight downloads show their own progress bars."""
    def on_plan(plan: MemoryPlan) -> None:
        print(f"memory plan: {plan.describe()} ({plan.reason})", file=sys.stderr)

    return Host(on_plan=on_plan)


def _region(text: str | None):
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--face-region needs four whole numbers X0,Y0,X1,Y1, got {text!r}.") from None


def _audio(args):
    """The speech: --audio (or the video's own sound), or the --speaker FACE=AUDIO pairs of a dialogue."""
    if not args.speaker:
        return args.audio
    if args.audio is not None:
        raise InputError("Give either --audio or --speaker FACE=AUDIO pairs, not both.")
    speakers = []
    for pair in args.speaker:
        face, sep, path = pair.partition("=")
        if not sep or not face or not path:
            raise InputError(f"--speaker needs FACE=AUDIO (e.g. left=a.wav), got {pair!r}.")
        speakers.append(Speaker(path, face))
    return speakers


def run(args) -> str:
    settings = LipSyncSettings(version=args.version, steps=args.steps, guidance=args.guidance, seed=args.seed,
                               face=args.face, length_mode=args.length_mode, deepcache=args.deepcache,
                               window_batch=args.window_batch, vae_slice=args.vae_slice,
                               pipelined=not args.no_pipeline, blend=args.blend, feather_px=args.feather_px,
                               color_match=args.color_match, restore_strength=args.restore_strength,
                               min_face_height=args.min_face, face_confidence=args.face_confidence,
                               face_region=_region(args.face_region), redetect_every=args.redetect_every,
                               silence=args.silence, silence_db=args.silence_db, accel=accel_from_args(args))
    models = ModelHandle(args.version, args.device, args.dtype, models_dir=args.models_dir,
                         download=not args.no_download)
    bars: list[tqdm] = []  # made at the first step, so errors before it print alone

    def progress(done: int, total: int, _info: dict) -> None:
        if not bars:
            bars.append(tqdm(desc="denoising", unit="step", file=sys.stderr))
        bars[0].total = total
        bars[0].update(done - bars[0].n)

    t0 = time.monotonic()
    try:
        result = lipsync_file(args.video, _audio(args), args.output, settings, models=models,
                              host=_terminal_host(), progress=progress, restore_model=args.restore_model,
                              preview=args.preview)
    finally:
        for bar in bars:
            bar.close()
    faceless = f"; {result.faceless}" if result.faceless else ""
    return (f"wrote {result.output} ({result.frames} frames, {result.width}x{result.height} at {result.fps:g} fps, "
            f"{result.seconds:.2f} s, in {time.monotonic() - t0:.1f} s{faceless})")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "batch":  # a manifest of jobs on Ray (optional extra: requirements-cluster.txt)
        from .cluster.cli import main as batch_main

        return batch_main(argv[1:])
    sub = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    args = (_sub_parser(sub) if sub else build_parser()).parse_args(argv[1:] if sub else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if sub == "status":
            print(checkpoints.model_status(args.version, models_dir=args.models_dir))
            try:
                checkpoints.find_models(args.version, models_dir=args.models_dir)
            except MissingWeightsError:
                return EXIT_USER_ERROR  # scripts can test for the weights
            return 0
        if sub == "download":
            paths = checkpoints.download_models(args.version, dest=args.models_dir)
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
