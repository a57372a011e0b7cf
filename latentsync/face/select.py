"""Which face: the reference's acceptance filter and the user's choice among accepted faces.

Reference facts: a face is accepted when its integer box has width ≥ 50 px, height ≥ 80 px,
0.2 ≤ w/h ≤ 1.5 and detector score ≥ 0.5; among accepted faces the largest (w·h) wins. We also offer
``leftmost``, ``rightmost``, ``center`` (box centre nearest the frame centre) and ``index:N`` (N-th accepted face
counted left to right from 0, by box centre). ``left``/``right``/``centre``/``middle`` are accepted aliases.
"""

from __future__ import annotations

import re
from typing import Sequence

from ..errors import InputError

MIN_WIDTH, MIN_HEIGHT = 50, 80
MIN_RATIO, MAX_RATIO = 0.2, 1.5
MIN_SCORE = 0.5
CHOICES = ("largest", "leftmost", "rightmost", "center", "index:N")
ALIASES = {"left": "leftmost", "right": "rightmost", "centre": "center", "middle": "center", "biggest": "largest"}


def acceptable(box, score: float, min_score: float = MIN_SCORE, min_size=(MIN_WIDTH, MIN_HEIGHT)) -> bool:
    """The reference's filter; ``min_size`` = (min width, min height) in px replaces its 50 x 80."""
    x0, y0, x1, y1 = (int(v) for v in box)  # the reference casts the box to int first
    w, h = x1 - x0, y1 - y0
    if w < min_size[0] or h < min_size[1]:
        return False
    if w / h > MAX_RATIO or w / h < MIN_RATIO:
        return False
    return score >= min_score


def parse_choice(choice) -> tuple[str, int]:
    """'largest' | 'leftmost' | 'rightmost' | 'center' | 'index:N' (also 'index N', or an int N) → (kind, N)."""
    if isinstance(choice, tuple) and len(choice) == 2:  # already parsed
        return str(choice[0]), int(choice[1])
    if isinstance(choice, int) and not isinstance(choice, bool):
        if choice < 0:
            raise InputError(f"face index must be ≥ 0, got {choice}")
        return "index", choice
    text = str(choice).strip().lower()
    text = ALIASES.get(text, text)
    if text in ("largest", "leftmost", "rightmost", "center"):
        return text, 0
    match = re.fullmatch(r"index\s*[:= ]?\s*(\d+)", text) or re.fullmatch(r"(\d+)", text)
    if match:
        return "index", int(match.group(1))
    raise InputError(f"unknown face choice {choice!r}; use one of {', '.join(CHOICES)}")


def _centre_x(box) -> float:
    return (box[0] + box[2]) / 2


def _area(box) -> float:
    return (int(box[2]) - int(box[0])) * (int(box[3]) - int(box[1]))


def left_to_right(boxes: Sequence) -> list[int]:
    return sorted(range(len(boxes)), key=lambda i: _centre_x(boxes[i]))


def choose(boxes: Sequence, choice, frame_wh: tuple[int, int] | None = None) -> int | None:
    """Index (into ``boxes``) of the chosen face among already-accepted boxes, or None. ``center`` needs
    ``frame_wh`` = (width, height); without it the middle of the boxes' span is used."""
    kind, n = parse_choice(choice)
    if not boxes:
        return None
    order = left_to_right(boxes)
    if kind == "largest":
        best, best_area = None, 0.0
        for i in range(len(boxes)):  # first strictly larger wins, like the reference
            if _area(boxes[i]) > best_area:
                best, best_area = i, _area(boxes[i])
        return best
    if kind == "leftmost":
        return order[0]
    if kind == "rightmost":
        return order[-1]
    if kind == "center":
        if frame_wh is None:
            cx = (min(b[0] for b in boxes) + max(b[2] for b in boxes)) / 2
            cy = (min(b[1] for b in boxes) + max(b[3] for b in boxes)) / 2
        else:
            cx, cy = frame_wh[0] / 2, frame_wh[1] / 2
        return min(range(len(boxes)), key=lambda i: (_centre_x(boxes[i]) - cx) ** 2
                   + ((boxes[i][1] + boxes[i][3]) / 2 - cy) ** 2)
    return order[n] if n < len(order) else None
