"""Paste-back quality on a synthetic "generated" face (prints a table, never asserts).

    python bench/quality.py [--resolution 512] [--shift-L 5 --shift-a 8 --shift-b 8] [--blur 1.2]
                            [--jaw 14] [--images DIR] [--sharpen 3]

The frame is the astronaut sample (tools/make_sample.py) at 720p, the face found by the real detector. The
"generated" face is the original aligned face with a VAE-like error: shifted in CIE Lab (ΔL, Δa, Δb), then
Gaussian-blurred; it is composited with the original through the mouth mask exactly as the pipeline does
(decoded · (1 − mask) + face · mask) and pasted back with every blend × colour match. A second case also
drops the generated jaw by --jaw px (aligned-face pixels), so the content on the region's lower edge changes
as in real output (ΔE region then includes that real change, not only colour).

Figures (frame pixels, Lab with L in 0..100):
* seam (mouth edge): mean |∇(out − original)| (Lab, both axes) on the pixels within 1 px of the regenerated
  region's edge — a hard colour step there is the visible U; a smooth correction scores ~0.
* seam (crop edge): the same on the reference's feather band around the crop (the "box").
* ΔE border: ΔE76 between the mean Lab of the output's band just inside the region's edge and of the ring
  just outside it (6 px each), on the cheek/nose rows of the aligned face (skin, both sides). The original
  frame's own value is printed as the floor.
* ΔE region: ΔE76 between the mean Lab of the output and of the original over the whole region (colour fidelity).
* ms/frame: paste_face wall time with a precomputed plan (best of 3; depends on the machine's load).
With --images DIR: mouth close-ups for the README (reference vs feather + colour match; with and without the
sharpening stand-in restorer from tools/make_tiny_restorer.py) and a --preview close-up, each < 150 KB.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from latentsync.face import FaceAligner, FaceDetector, load_mask, plan_restore
from latentsync.face.blend import PasteOptions, paste_face, region_weight
from tools.make_sample import make_frames

SKIN_ROWS = (0.37, 0.62)  # aligned-face rows (share of R) holding cheeks and nose sides on both sides of the U
SKIN_COLS = (0.15, 0.85)
BAND = 6


def lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)


def vae_like(face: np.ndarray, shift: tuple[float, float, float], blur: float) -> np.ndarray:
    """uint8 (R, R, 3) face → the same face shifted in Lab and blurred (float32 in [0, 255])."""
    shifted = lab(face) + np.array(shift, np.float32)
    rgb = np.clip(cv2.cvtColor(shifted, cv2.COLOR_Lab2RGB), 0, 1) * 255
    return cv2.GaussianBlur(rgb, (0, 0), blur) if blur > 0 else rgb


def drop_jaw(image: np.ndarray, pixels: float) -> np.ndarray:
    """The face's lower part moved down smoothly by up to ``pixels`` (a mouth opening wider than in the
    original): content on the region's lower edge changes, as in real output."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy = np.clip((yy - 0.62 * size) / (0.2 * size), 0, 1) * pixels
    return cv2.remap(image, xx, yy - dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def to_model_face(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) / 255 * 2 - 1).transpose(2, 0, 1)


class Case:
    """One frame, its face, the synthetic generated face and the measuring masks on the paste box."""

    def __init__(self, args, jaw_px: float = 0.0):
        self.frame = make_frames(1)[0]
        with FaceDetector() as detector:
            detection = detector.detect(self.frame)
        if detection is None:
            raise SystemExit("the detector found no face in the sample frame")
        res = args.resolution
        self.detection = detection
        self.face, self.matrix = FaceAligner(res).align(self.frame, detection.points)
        mask = load_mask(res)[:, :, None]
        self.decoded = vae_like(self.face, (args.shift_L, args.shift_a, args.shift_b), args.blur)
        if jaw_px:
            self.decoded = drop_jaw(self.decoded, jaw_px)
        self.generated = to_model_face(self.decoded * (1 - mask) + self.face.astype(np.float32) * mask)
        self.plan = plan_restore(self.matrix, self.frame.shape[:2], res)
        self.rows, self.cols = self.plan.slices
        region = region_weight(self.plan, res) >= 0.5
        u8 = region.astype(np.uint8)
        d_in = cv2.distanceTransform(u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        d_out = cv2.distanceTransform(1 - u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        skin = self._skin_window(res)
        self.region = region
        self.edge = (region & (d_in <= 1.5)) | (~region & (d_out <= 1.5))
        self.inner = region & (d_in <= BAND) & skin
        self.outer = ~region & (d_out <= BAND) & skin
        soft = 1 - self.plan.keep
        self.crop_edge = (soft > 0.02) & (soft < 0.98)

    def _skin_window(self, res: int) -> np.ndarray:
        from latentsync.face.align import bilinear_warp

        window = np.zeros((res, res), np.float32)
        window[int(SKIN_ROWS[0] * res):int(SKIN_ROWS[1] * res), int(SKIN_COLS[0] * res):int(SKIN_COLS[1] * res)] = 1
        crop = cv2.resize(window, self.plan.crop_wh, interpolation=cv2.INTER_NEAREST)
        height, width = self.plan.keep.shape
        return bilinear_warp(crop[None], self.plan.warp, (width, height), 0.0, planar=True)[0] > 0.5

    def box(self, image: np.ndarray) -> np.ndarray:
        return image[self.rows, self.cols]


def measure(case: Case, out: np.ndarray) -> dict[str, float]:
    out_lab, orig_lab = lab(case.box(out)), lab(case.box(case.frame))
    diff = out_lab - orig_lab
    gy, gx = np.gradient(diff, axis=(0, 1))
    jump = np.sqrt((gx ** 2 + gy ** 2).sum(axis=2))

    def delta_e(a, b) -> float:
        return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)))

    return {
        "seam_mouth": float(jump[case.edge].mean()),
        "seam_crop": float(jump[case.crop_edge].mean()),
        "de_border": delta_e(out_lab[case.inner], out_lab[case.outer]),
        "de_region": delta_e(out_lab[case.region], orig_lab[case.region]),
    }


def table(case: Case) -> dict[str, dict[str, float]]:
    rows = {"original frame": measure(case, case.frame)}
    for blend in ("reference", "feather", "poisson"):
        for color in ("off", "mean", "mean_std"):
            options = PasteOptions(blend, 12.0, color)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                out = paste_face(case.frame, case.generated, case.matrix, options, case.plan)
                times.append(time.perf_counter() - start)
            rows[f"{blend} / {color}"] = {**measure(case, out), "ms": 1000 * min(times)}
    return rows


def print_table(rows: dict[str, dict[str, float]], args, jaw_px: float) -> None:
    print(f"\nsynthetic VAE error: ΔL {args.shift_L:+g}, Δa {args.shift_a:+g}, Δb {args.shift_b:+g}, "
          f"blur σ {args.blur:g} px at {args.resolution} px" + (f", jaw dropped {jaw_px:g} px" if jaw_px else "")
          + "; feather_px 12")
    print(f"| {'blend / colour match':<22} | seam mouth edge | seam crop edge | ΔE border | ΔE region | ms/frame |")
    print(f"|{'-' * 24}|----------------:|---------------:|----------:|----------:|---------:|")
    for name, m in rows.items():
        ms = f"{m['ms']:8.1f}" if "ms" in m else " " * 8
        print(f"| {name:<22} | {m['seam_mouth']:15.2f} | {m['seam_crop']:14.2f} | {m['de_border']:9.2f} "
              f"| {m['de_region']:9.2f} | {ms} |")
    ref = rows["reference / off"]["de_border"]
    for name in ("reference / mean", "reference / mean_std", "feather / mean", "feather / mean_std"):
        print(f"ΔE border {name} / reference off = {rows[name]['de_border'] / ref:.2f}")


def close_up(case: Case, image: np.ndarray, rows: tuple[float, float], cols: tuple[float, float],
             scale: float) -> np.ndarray:
    """The frame area under aligned-face rows/cols (shares of the crop) — e.g. the mouth — enlarged ``scale``×."""
    inverse = cv2.invertAffineTransform(case.matrix.astype(np.float64))
    width, height = case.plan.crop_wh
    corners = np.array([[c * width, r * height, 1] for r in rows for c in cols]) @ inverse.T
    (x0, y0), (x1, y1) = np.floor(corners.min(axis=0)).astype(int), np.ceil(corners.max(axis=0)).astype(int)
    crop = image[max(y0, 0):y1, max(x0, 0):x1]
    return cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)


def labelled(image: np.ndarray, text: str) -> np.ndarray:
    out = np.ascontiguousarray(image)
    cv2.putText(out, text, (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def save_png(path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


def write_images(case: Case, folder: Path, args) -> None:
    import tempfile

    import torch

    from latentsync.face.enhance import FaceRestorer
    from tools.make_tiny_restorer import write_sharpener

    folder.mkdir(parents=True, exist_ok=True)
    reference = paste_face(case.frame, case.generated, case.matrix, None, case.plan)
    improved = PasteOptions("feather", 12.0, "mean")
    better = paste_face(case.frame, case.generated, case.matrix, improved, case.plan)
    lower_face = ((0.32, 0.95), (0.05, 0.95), 2.0)
    pair = [labelled(close_up(case, reference, *lower_face), "reference"),
            labelled(close_up(case, better, *lower_face), "feather 12 px + colour match")]
    save_png(folder / "paste_reference_vs_feather.png", np.concatenate(pair, axis=1))

    with tempfile.TemporaryDirectory() as tmp:
        model_path = write_sharpener(Path(tmp) / "sharpen_1x.pth", amount=args.sharpen)
        restorer = FaceRestorer.from_file(model_path, strength=1.0)
    faces = torch.from_numpy(case.generated)[None]
    restored = restorer(faces, load_mask(args.resolution))[0]
    with_model = paste_face(case.frame, restored, case.matrix, improved, case.plan)
    mouth = ((0.5, 0.72), (0.25, 0.75), 3.0)
    pair = [labelled(close_up(case, better, *mouth), "no restoration"),
            labelled(close_up(case, with_model, *mouth), "restoration (stand-in)")]
    save_png(folder / "restore_without_vs_with.png", np.concatenate(pair, axis=1))

    from latentsync.preview import FaceReport, draw_preview

    label = f"face 0 - {case.detection.score:.2f}"
    face = FaceReport.from_detection(case.detection, case.matrix, args.resolution, label)
    preview = draw_preview(case.frame, [face], max_side=1280, title="frame 0")
    save_png(folder / "preview_face.png", close_up(case, preview, (-0.3, 1.1), (-0.7, 1.7), 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--shift-L", type=float, default=5.0)
    parser.add_argument("--shift-a", type=float, default=8.0)
    parser.add_argument("--shift-b", type=float, default=8.0)
    parser.add_argument("--blur", type=float, default=1.2, help="Gaussian sigma in aligned-face pixels")
    parser.add_argument("--jaw", type=float, default=14.0, help="second case: jaw dropped by this many px (0: none)")
    parser.add_argument("--images", type=Path, help="write README close-ups into this folder")
    parser.add_argument("--sharpen", type=float, default=3.0, help="amount of the stand-in restorer")
    args = parser.parse_args()
    case = Case(args)
    print_table(table(case), args, 0.0)
    if args.jaw:
        print_table(table(Case(args, args.jaw)), args, args.jaw)
    if args.images:
        write_images(case, args.images, args)


if __name__ == "__main__":
    main()
