"""Face identity over time: ``FaceTracker`` follows every acceptable face through a clip and gives each a stable
integer id; speaker face selectors (``left``, ``right``, ``index:N``, ``id:K``) name faces by those ids.

Ids: the faces of the first frame that has faces are numbered 0, 1, ... from left to right (by box centre);
faces seen later get the next numbers (several at once: left to right). A face keeps its id

* from frame to frame by tracking (landmarks again on a crop around its previous box, as FaceDetector does);
* on a full search (the first frames, every ``redetect_every`` frames, whenever tracking loses a face, and on
  every frame while a lost face may still come back) when its centre moved less than ``MATCH_DISTANCE`` face
  heights and its height changed by less than ``SIZE_RATIO``;
* after an occlusion or a short exit (up to ``memory_s`` seconds, 2 by default) when it comes back within
  ``RETURN_DISTANCE`` face heights of where it was lost, or when it is the only unmatched face of a size
  similar to the only lost face of that size.

A face gone for longer is forgotten; when it comes back it gets a new id.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import InputError
from .detection_settings import DetectionSettings, format_ranges
from .detector import Detection, FaceFinder, box_overlap

log = logging.getLogger(__name__)

MATCH_DISTANCE = 0.6  # face heights a face may move between two consecutive frames
RETURN_DISTANCE = 1.5  # face heights from where it was lost a returning face may reappear
SIZE_RATIO = 1.5  # most a face's height may change between two sightings
SPEAKER_SELECTORS = ("left", "right", "index:N", "id:K")


@dataclass
class _Track:
    last: Detection
    seen: int  # index of the last frame with this face


def _centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _height(box) -> float:
    return max(box[3] - box[1], 1e-6)


def _similar_size(a, b) -> bool:
    return max(_height(a), _height(b)) / min(_height(a), _height(b)) <= SIZE_RATIO


def _match(tracks: dict[int, _Track], faces: dict[int, Detection], max_distance: float) -> list[tuple[int, int]]:
    """Greedy nearest pairs (track id, face key): centre distance < ``max_distance`` × the track's face
    height, similar size."""
    pairs = []
    for tid, track in tracks.items():
        (tx, ty), height = _centre(track.last.box), _height(track.last.box)
        for key, face in faces.items():
            fx, fy = _centre(face.box)
            distance = np.hypot(fx - tx, fy - ty) / height
            if distance < max_distance and _similar_size(track.last.box, face.box):
                pairs.append((distance, tid, key))
    out, used_tracks, used_faces = [], set(), set()
    for _, tid, key in sorted(pairs):
        if tid not in used_tracks and key not in used_faces:
            out.append((tid, key))
            used_tracks.add(tid), used_faces.add(key)
    return out


class FaceTracker:
    """Every acceptable face of each frame, by stable id. Feed the frames of one clip in order to ``update``;
    ``reset`` between clips; ``close`` (or a ``with`` block) frees the backend.

    backend, model_dir, allow_download, max_faces: as FaceDetector. settings: DetectionSettings (which faces
    count, re-search interval). fps and memory_s: how long (seconds) a face that disappeared keeps its id.
    """

    def __init__(self, backend: str = "auto", model_dir=None, *, allow_download: bool = False, max_faces: int = 4,
                 settings: DetectionSettings | None = None, fps: float = 25.0, memory_s: float = 2.0):
        if not (isinstance(fps, (int, float)) and fps > 0):
            raise InputError(f"fps must be a number > 0, got {fps!r}")
        if not (isinstance(memory_s, (int, float)) and memory_s >= 0):
            raise InputError(f"memory_s must be a number of seconds ≥ 0, got {memory_s!r}")
        self.memory = int(round(memory_s * fps))  # frames a lost face keeps its id
        self._finder = FaceFinder(backend, model_dir, allow_download=allow_download, max_faces=max_faces,
                                  settings=settings)
        self.settings = self._finder.settings
        self.backend = self._finder.name
        self._warned = False
        self.reset()

    def reset(self) -> None:
        self._tracks: dict[int, _Track] = {}
        self._index = 0
        self._since_search = 0
        self._next_id = 0

    def update(self, frame: np.ndarray) -> dict[int, Detection]:
        """{id: Detection} for the next frame (uint8 HxWx3 RGB), ids ascending; {} when it has no face. A
        backend failure is logged and gives {}; InputError for a bad frame or settings that do not fit it."""
        self._finder.check(frame)
        index = self._index
        self._index += 1
        self._tracks = {k: t for k, t in self._tracks.items() if index - 1 - t.seen <= self.memory}
        active = {k: t for k, t in self._tracks.items() if t.seen == index - 1}
        lost = {k: t for k, t in self._tracks.items() if t.seen < index - 1}
        try:
            found = None
            if active and not lost and self._since_search < self.settings.redetect_every:
                found = self._follow(frame, active)
            if found is None:
                found = self._search(frame, active, lost)
                self._since_search = 0
            else:
                self._since_search += 1
        except InputError:
            raise
        except Exception as exc:  # a landmark backend crash must not kill a long job
            if not self._warned:
                log.warning("face landmark backend %s failed (%s: %s); treating the frame as faceless",
                            self.backend, type(exc).__name__, exc)
                self._warned = True
            found = {}
        for tid, detection in found.items():
            self._tracks[tid] = _Track(detection, index)
        return dict(sorted(found.items()))

    def close(self) -> None:
        self._finder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ internals
    def _follow(self, frame: np.ndarray, active: dict[int, _Track]) -> dict[int, Detection] | None:
        """Every active face tracked on its crop, or None when one is lost or two merged (search instead)."""
        out = {}
        for tid, track in active.items():
            detection = self._finder.track(frame, track.last)
            if detection is None:
                return None
            out[tid] = detection
        if any(box_overlap(a.box, b.box) >= 0.5 for a, b in combinations(out.values(), 2)):
            return None
        return out

    def _search(self, frame: np.ndarray, active: dict[int, _Track], lost: dict[int, _Track]) -> dict[int, Detection]:
        faces = dict(enumerate(self._finder.refine(frame, raw) for raw in self._finder.search(frame)))
        out: dict[int, Detection] = {}

        def assign(pairs):
            for tid, key in pairs:
                out[tid] = faces.pop(key)

        assign(_match(active, faces, MATCH_DISTANCE))
        for tid, track in active.items():  # the search can miss a face tracking still holds
            if tid in out:
                continue
            detection = self._finder.track(frame, track.last)
            if detection is not None and all(box_overlap(detection.box, d.box) < 0.5 for d in out.values()):
                out[tid] = detection
                for key in [k for k, f in faces.items() if box_overlap(f.box, detection.box) >= 0.5]:
                    del faces[key]
        assign(_match(lost, faces, RETURN_DISTANCE))
        waiting = {tid: t for tid, t in lost.items() if tid not in out}
        for tid, track in waiting.items():  # the only unmatched face of a similar size
            similar = [k for k, f in faces.items() if _similar_size(track.last.box, f.box)]
            if len(similar) == 1 and sum(_similar_size(t.last.box, faces[similar[0]].box)
                                         for t in waiting.values()) == 1:
                assign([(tid, similar[0])])
        for key in sorted(faces, key=lambda k: _centre(faces[k].box)[0]):  # new faces, left to right
            out[self._next_id] = faces[key]
            self._next_id += 1
        return out


def parse_speaker(selector) -> tuple[str, int]:
    """'left' | 'right' | 'index:N' | 'id:K' (also 'index N', 'id=K'; 'leftmost'/'rightmost') → (kind, n)."""
    text = str(selector).strip().lower()
    if text in ("left", "leftmost"):
        return "left", 0
    if text in ("right", "rightmost"):
        return "right", 0
    match = re.fullmatch(r"(index|id)\s*[:= ]\s*(\d+)", text)
    if match:
        return match.group(1), int(match.group(2))
    raise InputError(f"unknown speaker face {selector!r}; use left, right, index:N (the N-th face from the left, "
                     f"from 0, in the first frame with faces) or id:K (a face id as shown in the preview)")


@dataclass
class FaceTracks:
    """Tracked faces of a clip: ``faces[i]`` = {id: Detection} of frame i; ``speaker_ids`` = the face id of
    each speaker selector given to ``track_faces``, in order."""

    faces: list[dict[int, Detection]]
    speaker_ids: tuple[int, ...] = field(default=())

    def first_frame(self) -> int | None:
        """Index of the first frame with a face, or None."""
        return next((i for i, found in enumerate(self.faces) if found), None)

    def first_ids(self) -> list[int]:
        """Ids of the faces of the first frame with faces, left to right."""
        first = self.first_frame()
        if first is None:
            return []
        found = self.faces[first]
        return sorted(found, key=lambda k: _centre(found[k].box)[0])

    def ids(self) -> list[int]:
        """Every id that appears in the clip, ascending."""
        return sorted(set().union(*self.faces)) if self.faces else []

    def frames_without(self, face_id: int) -> list[int]:
        return [i for i, found in enumerate(self.faces) if face_id not in found]

    def resolve(self, selectors: Sequence) -> tuple[int, ...]:
        """The face id of each speaker selector (see ``parse_speaker``). InputError for unknown syntax, a face
        that is not there, or two speakers on the same face."""
        parsed = [parse_speaker(s) for s in selectors]
        first, ordered, known = self.first_frame(), self.first_ids(), self.ids()
        ids = []
        for selector, (kind, n) in zip(selectors, parsed):
            if kind != "id" and first is None:
                raise InputError(f"no face was found in any of the {len(self.faces)} frames, so speaker face "
                                 f"{selector!r} has no face to follow")
            if kind == "left":
                ids.append(ordered[0])
            elif kind == "right":
                ids.append(ordered[-1])
            elif kind == "index":
                if n >= len(ordered):
                    raise InputError(f"speaker face {selector!r}: the first frame with faces (frame {first}) has "
                                     f"{len(ordered)} face(s), so use index:0 to index:{len(ordered) - 1}")
                ids.append(ordered[n])
            else:
                if n not in known:
                    shown = ", ".join(map(str, known)) or "none (no face was found)"
                    raise InputError(f"speaker face {selector!r}: face id {n} never appears in the clip; "
                                     f"the ids that appear are: {shown}")
                ids.append(n)
        for (i, a), (j, b) in combinations(enumerate(ids), 2):
            if a == b:
                raise InputError(f"speaker faces {selectors[i]!r} and {selectors[j]!r} both resolve to face id "
                                 f"{a} (the first frame with faces, frame {first}, has {len(ordered)} face(s); ids "
                                 f"in the clip: {', '.join(map(str, known))}); give each speaker a different face")
        return tuple(ids)


def track_faces(frames: Iterable[np.ndarray], tracker: FaceTracker, speakers: Sequence = (), *,
                keep_landmarks: bool = False, on_frame: Callable[[int], None] | None = None) -> FaceTracks:
    """Run ``tracker`` (reset first) over ``frames`` (uint8 HxWx3, in order) and resolve the speaker
    selectors (their syntax is checked before the first frame). Landmarks are dropped unless
    ``keep_landmarks`` (points and boxes are what alignment needs; the mesh costs ~4 KB per face and frame).
    ``on_frame(i)`` is called after frame i (for progress; it may raise to cancel)."""
    for selector in speakers:
        parse_speaker(selector)
    tracker.reset()
    faces = []
    for i, frame in enumerate(frames):
        found = tracker.update(frame)
        if not keep_landmarks:
            for detection in found.values():
                detection.landmarks = None
        faces.append(found)
        if on_frame is not None:
            on_frame(i)
    tracks = FaceTracks(faces)
    tracks.speaker_ids = tracks.resolve(speakers)
    for selector, face_id in zip(speakers, tracks.speaker_ids):
        missing = tracks.frames_without(face_id)
        if missing:
            log.info("speaker face %r (id %d) is not seen in %d of %d frames: %s", selector, face_id,
                     len(missing), len(faces), format_ranges(missing))
    return tracks
