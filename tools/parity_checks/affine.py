"""Parity check of face alignment and paste-back against an ``affine/`` fixture folder.

Reads everything from the folder: frame size, background, photo window and its per-frame origins, the
points, and the resolution (from the aligned PNGs); runs our FaceAligner over the frames in order (one
smoothing state) and restore_face on the README's edited faces.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import load_file

from latentsync.face import FaceAligner, restore_face

TOL = {"aligned_max": 2, "aligned_mean": 0.05, "matrix_max": 1e-3, "restore_max": 2, "restore_mean": 0.05}


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def build_frames(folder: Path, data: dict) -> list[np.ndarray]:
    window = _read_rgb(folder / "photo_window.png")
    height, width = (int(v) for v in data["frame_size"])
    frames = []
    for ox, oy in data["frame_origins"].tolist():
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = data["background"].astype(np.uint8)
        # paste the window, clipped to the canvas
        y0, x0 = max(oy, 0), max(ox, 0)
        y1, x1 = min(oy + window.shape[0], height), min(ox + window.shape[1], width)
        if y1 > y0 and x1 > x0:
            frame[y0:y1, x0:x1] = window[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        frames.append(frame)
    return frames


def edited_face(aligned: np.ndarray) -> np.ndarray:
    x = aligned.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    half = x.shape[1] // 2
    x[:, half:] *= -1
    return x


def check(folder) -> dict:
    folder = Path(folder)
    data = load_file(str(folder / "affine.safetensors"))
    frames = build_frames(folder, data)
    n = len(frames)
    expected = [_read_rgb(folder / f"aligned_{k}.png") for k in range(n)]
    resolution = expected[0].shape[0]
    aligner = FaceAligner(resolution)
    a_max, a_sum, a_count, m_max = 0, 0.0, 0, 0.0
    faces, matrices = [], []
    for k, frame in enumerate(frames):
        face, matrix = aligner.align(frame, data["points"][k])
        diff = np.abs(face.astype(np.int16) - expected[k].astype(np.int16))
        a_max, a_sum, a_count = max(a_max, int(diff.max())), a_sum + float(diff.sum()), a_count + diff.size
        m_max = max(m_max, float(np.abs(matrix - data["matrices"][k]).max()))
        faces.append(face)
        matrices.append(matrix)
    a_mean = a_sum / a_count

    y0, y1, x0, x1 = (int(v) for v in data["restore_window"])
    r_max, r_sum, r_count, outside_equal = 0, 0.0, 0, True
    for k, frame in enumerate(frames):
        # the fixture's restore input is built from the REFERENCE aligned face and matrix
        out = restore_face(frame, edited_face(expected[k]), data["matrices"][k])
        diff = np.abs(out[y0:y1, x0:x1].astype(np.int16) - data["restored_crop"][k].astype(np.int16))
        r_max, r_sum, r_count = max(r_max, int(diff.max())), r_sum + float(diff.sum()), r_count + diff.size
        outside = out.copy()
        outside[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
        outside_equal &= bool(np.array_equal(outside, frame))
    r_mean = r_sum / r_count

    ok = (a_max <= TOL["aligned_max"] and a_mean <= TOL["aligned_mean"] and m_max <= TOL["matrix_max"]
          and r_max <= TOL["restore_max"] and r_mean <= TOL["restore_mean"] and outside_equal)
    return {
        "ok": bool(ok),
        "max_abs_err": float(a_max),
        "mean_abs_err": round(a_mean, 6),
        "matrix_max_abs_err": float(m_max),
        "restore_max_abs_err": float(r_max),
        "restore_mean_abs_err": round(r_mean, 6),
        "restore_outside_identical": outside_equal,
        "frames": n,
        "resolution": resolution,
    }
