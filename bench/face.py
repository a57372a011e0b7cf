"""Face-stage throughput: detect+align and paste-back frames/s at 720p and 1080p (prints, never asserts).

    python bench/face.py [--frames 60] [--backend auto] [--threads N]

The clip is scikit-image's astronaut photo moving and slowly turning on the canvas (face box ≈ 22 % of the frame
height, a typical talking-head framing). "detect+align" = FaceDetector.detect + FaceAligner.align (the first
frame pays the full search, the rest track); "paste-back" = restore_face (plan + warp + blend), and with a
plan computed during alignment ("paste-back with precomputed plan").
Wall-clock fps depend on what else runs on the machine; "cpu-time" fps = frames / CPU seconds of this process
(all threads), i.e. what one otherwise idle core sustains — on a shared machine the fairer figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np



def make_clip(width: int, height: int, n: int) -> list[np.ndarray]:
    from skimage import data

    photo = data.astronaut()
    scale = height / 720 * 1.5
    frames = []
    for k in range(n):
        angle = 4 * np.sin(k / 9)
        cx = width / 2 + 40 * np.sin(k / 7) * height / 720
        cy = height * 0.4 + 15 * np.cos(k / 5) * height / 720
        matrix = cv2.getRotationMatrix2D((224, 117), angle, scale)
        matrix[:, 2] += (cx - 224, cy - 117)
        frames.append(cv2.warpAffine(photo, matrix, (width, height), borderValue=(52, 64, 80)))
    return frames


def bench(width: int, height: int, args) -> None:
    import torch

    from latentsync.face import FaceAligner, FaceDetector, plan_restore, restore, restore_face

    frames = make_clip(width, height, args.frames)
    detector = FaceDetector(backend=args.backend, model_dir=args.model_dir)
    aligner = FaceAligner(args.resolution)
    t0, c0 = time.perf_counter(), time.process_time()
    aligned = []
    for frame in frames:
        det = detector.detect(frame)
        aligned.append(None if det is None else aligner.align(frame, det.points))
    t_align, c_align = time.perf_counter() - t0, time.process_time() - c0
    detector.close()
    found = sum(a is not None for a in aligned)

    faces = []
    for item in aligned:
        face = torch.from_numpy(item[0]).permute(2, 0, 1).float() / 127.5 - 1 if item else None
        faces.append(face)
    t0, c0 = time.perf_counter(), time.process_time()
    for frame, item, face in zip(frames, aligned, faces):
        if item is not None:
            restore_face(frame, face, item[1])
    t_restore, c_restore = time.perf_counter() - t0, time.process_time() - c0
    plans = [plan_restore(item[1], frame.shape[:2], args.resolution) if item else None
             for frame, item in zip(frames, aligned)]
    t0, c0 = time.perf_counter(), time.process_time()
    for frame, plan, face in zip(frames, plans, faces):
        if plan is not None:
            restore(frame, face, plan)
    t_paste, c_paste = time.perf_counter() - t0, time.process_time() - c0
    n, m = len(frames), max(found, 1)
    print(f"{height}p ({width}x{height}), R={args.resolution}, backend={args.backend}, faces {found}/{n}: "
          f"detect+align {n / t_align:.1f} fps (cpu-time {n / c_align:.1f}) | "
          f"paste-back {m / t_restore:.1f} fps (cpu-time {m / c_restore:.1f}) | "
          f"paste-back with precomputed plan {m / t_paste:.1f} fps (cpu-time {m / c_paste:.1f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model-dir", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/models"))
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0, help="torch and OpenCV threads (0: leave their defaults)")
    args = parser.parse_args()
    if args.threads:  # a benchmark knob only; the library never changes thread settings
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    for width, height in ((1280, 720), (1920, 1080)):
        bench(width, height, args)


if __name__ == "__main__":
    main()
