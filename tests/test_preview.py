"""Preview drawing: geometry of the drawn mouth region, face and no-face marks, contact sheet, the writer."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from latentsync.errors import InputError
from latentsync.face import FaceAligner
from latentsync.preview import BOX_COLOUR, MOUTH_COLOUR, NO_FACE_COLOUR, FaceReport, PreviewWriter, \
    contact_sheet, draw_preview, mouth_outline

POINTS = np.array([[600, 300], [680, 302], [641, 345]], np.float32)


def report(resolution=256, label="face 0 · 0.93") -> FaceReport:
    matrix = FaceAligner(resolution).matrix(POINTS)
    detection = SimpleNamespace(box=(580.0, 270.0, 700.0, 420.0), points=POINTS)
    return FaceReport.from_detection(detection, matrix, resolution, label)


def colour_pixels(image: np.ndarray, colour, tolerance: int = 40) -> np.ndarray:
    return np.abs(image.astype(int) - np.array(colour)).max(axis=2) <= tolerance


def test_mouth_outline_maps_the_mask_region_into_the_frame():
    # a pure scale + shift: frame = (crop − t) / s, crop = (R pixel + 0.5) · crop/R − 0.5
    s, tx, ty = 0.5, -100.0, -40.0
    matrix = np.array([[s, 0, tx], [0, s, ty]], np.float32)
    (outline,) = mouth_outline(matrix, 256)
    sx, sy = 210 / 256, 280 / 256
    rows, cols = (95, 242), (9, 247)  # the 256 px mask's regenerate area (see test_face_geometry)

    def frame(v, scale, t):
        return ((v + 0.5) * scale - 0.5 - t) / s

    np.testing.assert_allclose(outline.min(axis=0), [frame(cols[0], sx, tx), frame(rows[0], sy, ty)], atol=0.01)
    np.testing.assert_allclose(outline.max(axis=0), [frame(cols[1], sx, tx), frame(rows[1], sy, ty)], atol=0.01)


def test_preview_draws_box_points_region_and_label():
    frame = np.full((720, 1280, 3), 128, np.uint8)
    face = report()
    image = draw_preview(frame, [face], max_side=512, title="frame 3")
    assert image.shape == (288, 512, 3) and image.dtype == np.uint8
    scale = 512 / 1280
    magenta = colour_pixels(image, MOUTH_COLOUR)
    ys, xs = np.nonzero(magenta)
    expected = np.concatenate(mouth_outline(face.matrix, face.resolution)) * scale
    assert abs(xs.min() - expected[:, 0].min()) <= 2 and abs(xs.max() - expected[:, 0].max()) <= 2
    assert abs(ys.min() - expected[:, 1].min()) <= 2 and abs(ys.max() - expected[:, 1].max()) <= 2
    green = colour_pixels(image, BOX_COLOUR)
    x0, y0, x1, y1 = (np.array(face.box) * scale).round().astype(int)
    assert green[y0 - 1:y0 + 2, x0 + 5:x1 - 5].any(axis=0).all()  # the box's top edge
    assert green[:y0 - 2].any()  # the label above the box
    for x, y in (POINTS * scale).round().astype(int):
        assert not (image[y, x] == 128).all()  # a point marker
    assert not colour_pixels(image, NO_FACE_COLOUR).any()


def test_frame_without_face_is_marked():
    frame = np.full((480, 640, 3), 128, np.uint8)
    image = draw_preview(frame, [], max_side=800)
    assert image.shape == frame.shape  # never enlarged
    red = colour_pixels(image, NO_FACE_COLOUR, 10)
    assert red[0].all() and red[-1].all() and red[:, 0].all() and red[:, -1].all()
    assert red[20:80, 200:440].sum() > 100  # "no face" across the top


def test_labels_are_ascii_and_inputs_are_checked():
    frame = np.full((200, 300, 3), 100, np.uint8)
    draw_preview(frame, [report(label="Gesicht → ½ · ok")], max_side=300)  # drawn with stand-ins, no error
    with pytest.raises(InputError, match="a preview needs an HxWx3 uint8 RGB frame, got float32"):
        draw_preview(frame.astype(np.float32), [])
    with pytest.raises(InputError, match="max_side must be at least 16 px"):
        draw_preview(frame, [], max_side=8)


def test_contact_sheet_layout():
    images = [np.full((10 + k, 20, 3), 40 * k, np.uint8) for k in range(5)]
    sheet = contact_sheet(images, columns=2, gap=3)
    cell_h, cell_w = 14, 20
    assert sheet.shape == (3 * cell_h + 4 * 3, 2 * cell_w + 3 * 3, 3)
    y = 3 + (cell_h - 10) // 2
    assert (sheet[y:y + 10, 3:23] == 0).all()
    y, x = 3 + (cell_h + 3) + (cell_h - 13) // 2, 3 + cell_w + 3
    assert (sheet[y:y + 13, x:x + 20] == 120).all()  # image 3 (13 px high): second row, second column
    assert (sheet[-5, -5] == (24, 24, 24)).all()  # the empty sixth cell
    with pytest.raises(InputError, match="at least one image"):
        contact_sheet([])


def test_writer_samples_frames_marks_face_changes_and_writes_a_sheet(tmp_path):
    frame = np.full((90, 160, 3), 90, np.uint8)
    face = report()
    has_face = [True] * 7 + [False] * 3 + [True] * 10  # the face is lost at 7 and back at 10
    with PreviewWriter(tmp_path / "preview", every=5, max_images=5, max_side=128) as writer:
        written = [writer.add(i, frame, [face] if f else []) for i, f in enumerate(has_face)]
    names = [p.name for p in written if p is not None]
    assert names == ["frame_000000.png", "frame_000005.png", "frame_000007.png", "frame_000010.png",
                     "frame_000015.png"]
    sheet = cv2.imread(str(tmp_path / "preview" / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 72 and sheet.shape[1] > 5 * 128
    preview = cv2.imread(str(tmp_path / "preview" / "frame_000007.png"))
    assert preview.shape == (72, 128, 3)
    assert writer.close() is None  # closing twice is harmless
    for bad in ({"every": 0}, {"max_images": 0}):
        with pytest.raises(InputError, match=f"preview {next(iter(bad))} must be >= 1"):
            PreviewWriter(tmp_path / "x", **bad)
