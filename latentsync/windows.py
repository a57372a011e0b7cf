"""The work items that travel through the pipeline's stages, and how face frames are grouped into windows.

* ``FrameWork``: one output frame — its original pixels, one ``FaceSlot`` per speaker (None where that
  speaker's face is not found), and finally the output pixels.
* ``Window``: up to 16 consecutive face frames of one speaker, denoised together (the motion modules see
  them as one clip). ``replay`` windows are not denoised: only their random draws are made (windows before a
  segment's start, or windows whose faces all keep the original frame), so later windows draw the same
  numbers as in a full run.
* ``WindowBuilder``: closes a window at 16 face frames, or when the speaker's face has been missing for 16
  frames in a row (so frames waiting for a window stay bounded), or at the end.
* ``Batch``: what the faces stage hands on — frames in display order and groups of windows to denoise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputError
from .face import Detection

WINDOW = 16  # frames per denoising window (the reference's num_frames; the motion modules allow <= 24)


@dataclass
class FaceSlot:
    """One speaker's face in one frame."""

    speaker: int
    detection: Detection
    matrix: np.ndarray  # (2, 3) float32 frame → crop
    face: np.ndarray | None = None  # aligned uint8 (R, R, 3) until it is encoded
    weight: float = 1.0  # 1 = the generated face, 0 = the original face, between = a cross-fade
    generated: torch.Tensor | None = None  # (3, R, R) float32 in [-1, 1] on the CPU once decoded
    done: bool = False  # its window has been processed (denoised, or replayed)


@dataclass
class FrameWork:
    index: int  # output frame number
    source: int  # source frame number
    frame: np.ndarray | None  # original uint8 (H, W, 3); None for frames before a segment's start
    slots: list[FaceSlot | None] = field(default_factory=list)
    out: np.ndarray | None = None

    def release_pixels(self) -> None:
        """Drop the frame's pixels and generated faces (kept: indices, detections, matrices, weights)."""
        self.frame = self.out = None
        for slot in self.slots:
            if slot is not None:
                slot.face = slot.generated = None

    @property
    def complete(self) -> bool:
        return all(slot is None or slot.done for slot in self.slots)

    @property
    def has_face(self) -> bool:
        return any(slot is not None for slot in self.slots)


@dataclass
class Window:
    speaker: int
    frames: list[FrameWork]
    replay: bool = False

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def slots(self) -> list[FaceSlot]:
        return [f.slots[self.speaker] for f in self.frames]


@dataclass
class Batch:
    frames: list[FrameWork]  # new frames, display order (never frames before a segment's start)
    groups: list[list[Window]]  # windows to process, in order; a group is denoised as one UNet batch


class WindowBuilder:
    """Collects one speaker's face frames into windows (see the module docstring)."""

    def __init__(self, speaker: int, window: int = WINDOW):
        self.speaker, self.window = speaker, window
        self.frames: list[FrameWork] = []
        self.gap = 0

    def add(self, work: FrameWork) -> Window | None:
        """The frame has this speaker's face; returns the window it completes, if any."""
        self.frames.append(work)
        self.gap = 0
        return self._close() if len(self.frames) == self.window else None

    def miss(self) -> Window | None:
        """The frame lacks this speaker's face; returns the open window once the gap reaches a window's length."""
        self.gap += 1
        return self._close() if self.frames and self.gap >= self.window else None

    def finish(self) -> Window | None:
        return self._close() if self.frames else None

    def _close(self) -> Window:
        frames, self.frames = self.frames, []
        before_start = [f.frame is None for f in frames]
        if any(before_start) and not all(before_start):
            raise InputError(f"A segment must start on a window boundary; frame {frames[0].index + sum(before_start)} "
                             f"is inside the window that starts at frame {frames[0].index}.")
        replay = all(before_start) or all(f.slots[self.speaker].weight == 0.0 for f in frames)
        return Window(self.speaker, frames, replay=replay)


def group_windows(windows: list[Window]) -> list[list[Window]]:
    """Consecutive windows of the same speaker, length and kind (denoised or replayed) form one UNet batch."""
    groups: list[list[Window]] = []
    for w in windows:
        last = groups[-1][-1] if groups else None
        if last is not None and (last.speaker, len(last), last.replay) == (w.speaker, len(w), w.replay):
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups
