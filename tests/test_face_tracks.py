"""Face ids over time (FaceTracker) and speaker face selectors: a synthetic two-person clip with both mediapipe
APIs, and the matching rules on scripted boxes (no landmark model in the loop)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from latentsync.errors import InputError
from latentsync.face import Detection, DetectionSettings, FaceTracker, FaceTracks, parse_speaker, track_faces
from latentsync.face.landmarks import RawFace
from tools.make_sample import dialogue_layout, make_dialogue_frames

pytest.importorskip("skimage.data")  # the clip's photo
MODELS = Path(__file__).parent / "fixtures" / "models"
N, HIDDEN = 24, (7, 17)  # the right person is covered on frames 7..16


@pytest.fixture(scope="module", params=[pytest.param("solutions", marks=pytest.mark.legacy_mediapipe), "tasks"])
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def dialogue(backend) -> FaceTracks:
    with FaceTracker(backend, model_dir=MODELS) as tracker:
        return track_faces(make_dialogue_frames(N, hidden=HIDDEN), tracker)


def _centre_x(detection: Detection) -> float:
    return (detection.box[0] + detection.box[2]) / 2


def _true_points(i: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo's by-eye points (left-brow, right-brow, nose; see test_face_detect) in frame i, per person."""
    size, ((lx, ly), (rx, ry)) = dialogue_layout(i, 25)
    points = (np.array([[201, 90], [250, 93], [224, 117]], np.float64) - (80, 0)) * size / 300  # in the photo
    mirrored = np.stack([size - 1 - points[:, 0], points[:, 1]], axis=1)[[1, 0, 2]]  # image-left brow first
    return points + (lx, ly), mirrored + (rx, ry)


def test_both_faces_on_every_visible_frame_and_ids_survive_the_gap(dialogue):
    hidden = set(range(*HIDDEN))
    assert [sorted(f) for f in dialogue.faces] == [[0] if i in hidden else [0, 1] for i in range(N)]
    for i, found in enumerate(dialogue.faces):  # id 0: the left person, id 1: the right one, before and after
        left, right = _true_points(i)
        assert np.abs(found[0].points - left).max() < 4 and found[0].landmarks is None, i
        assert 1 not in found or np.abs(found[1].points - right).max() < 4, i
    assert dialogue.first_frame() == 0 and dialogue.first_ids() == [0, 1] and dialogue.ids() == [0, 1]
    assert dialogue.frames_without(1) == list(range(*HIDDEN)) and dialogue.frames_without(0) == []
    assert not dialogue.faces[HIDDEN[1]][1].tracked  # found again by a search, given its old id


def test_selectors_resolve_to_ids(dialogue):
    assert dialogue.resolve(["left", "right"]) == (0, 1)
    assert dialogue.resolve(["index:1", "index:0"]) == (1, 0)
    assert dialogue.resolve(["id:1"]) == (1,)
    assert dialogue.resolve(["Right", "id = 0"]) == (1, 0)
    assert dialogue.resolve([]) == ()


@pytest.mark.parametrize("selectors,message", [
    (["left", "index:0"], "speaker faces 'left' and 'index:0' both resolve to face id 0 (the first frame with "
                          "faces, frame 0, has 2 face(s); ids in the clip: 0, 1); give each speaker a different face"),
    (["id:5"], "speaker face 'id:5': face id 5 never appears in the clip; the ids that appear are: 0, 1"),
    (["index:2"], "the first frame with faces (frame 0) has 2 face(s), so use index:0 to index:1"),
    (["left", "centre"], "unknown speaker face 'centre'; use left, right, index:N"),
    (["index:-1"], "unknown speaker face 'index:-1'"),
])
def test_selector_errors(dialogue, selectors, message):
    with pytest.raises(InputError) as info:
        dialogue.resolve(selectors)
    assert message in str(info.value)


def test_track_faces_resolves_speakers_and_logs_missing_frames(backend, caplog):
    frames = make_dialogue_frames(N, hidden=HIDDEN)
    with FaceTracker(backend, model_dir=MODELS) as tracker, pytest.raises(InputError, match="'bogus'"):
        track_faces(iter(()), tracker, ["left", "bogus"])  # syntax checked before any frame
    seen = []
    with FaceTracker(backend, model_dir=MODELS) as tracker, caplog.at_level(logging.INFO, "latentsync.face"):
        tracks = track_faces(frames, tracker, ["right", "left"], keep_landmarks=True, on_frame=seen.append)
    assert tracks.speaker_ids == (1, 0) and seen == list(range(N))
    assert tracks.faces[0][0].landmarks.shape[0] >= 468
    assert "speaker face 'right' (id 1) is not seen in 10 of 24 frames: 7–16" in caplog.text


def test_a_face_gone_longer_than_the_memory_gets_a_new_id(backend):
    # memory 5 frames; once it is forgotten, the face is found again at the next periodic search (every 4)
    with FaceTracker(backend, model_dir=MODELS, fps=25, memory_s=0.2,
                     settings=DetectionSettings(redetect_every=4)) as tracker:
        tracks = track_faces(make_dialogue_frames(N, hidden=HIDDEN), tracker)
    assert tracks.ids() == [0, 1, 2] and tracks.frames_without(1) == list(range(HIDDEN[0], N))
    back = tracks.frames_without(2)[-1] + 1
    assert HIDDEN[1] <= back <= HIDDEN[1] + 4 and tracks.frames_without(2) == list(range(back))
    assert tracks.resolve(["right"]) == (1,)  # selectors name faces of the first frame with faces


def test_ids_count_from_the_first_frame_with_faces(backend):
    # the left person is covered at first: the right one is the only face of the first frame → id 0
    with FaceTracker(backend, model_dir=MODELS, settings=DetectionSettings(redetect_every=3)) as tracker:
        tracks = track_faces(make_dialogue_frames(8, hidden=(0, 4), hidden_side="left"), tracker)
    assert [sorted(f) for f in tracks.faces] == [[0]] * 4 + [[0, 1]] * 4
    assert _centre_x(tracks.faces[0][0]) > 320 and _centre_x(tracks.faces[4][1]) < 320
    assert tracks.resolve(["left"]) == (0,) and tracks.resolve(["right", "id:1"]) == (0, 1)
    with pytest.raises(InputError, match="has 1 face"):
        tracks.resolve(["index:1"])
    with pytest.raises(InputError, match=r"'left' and 'right' both resolve to face id 0 \(the first frame with "
                                         r"faces, frame 0, has 1 face\(s\); ids in the clip: 0, 1\)"):
        tracks.resolve(["left", "right"])


def test_no_face_in_the_clip(backend):
    with FaceTracker(backend, model_dir=MODELS) as tracker:
        tracks = track_faces(np.zeros((3, 120, 160, 3), np.uint8), tracker)
    assert tracks.faces == [{}, {}, {}] and tracks.ids() == []
    with pytest.raises(InputError, match="no face was found in any of the 3 frames"):
        tracks.resolve(["left"])
    with pytest.raises(InputError, match="face id 0 never appears in the clip; the ids that appear are: none"):
        tracks.resolve(["id:0"])


def test_tracker_checks_settings_and_arguments():
    with pytest.raises(InputError, match="fps must be a number > 0"):
        FaceTracker(model_dir=MODELS, fps=0)
    with pytest.raises(InputError, match="memory_s must be"):
        FaceTracker(model_dir=MODELS, memory_s=-1)
    with FaceTracker(model_dir=MODELS, settings=DetectionSettings(region=(0, 0, 900, 100))) as tracker:
        with pytest.raises(InputError, match="reaches outside the 640x360 frame"):
            tracker.update(np.zeros((360, 640, 3), np.uint8))
    assert parse_speaker(" Index: 3 ") == ("index", 3) and parse_speaker("rightmost") == ("right", 0)


# ---------------------------------------------------------------- matching rules on scripted boxes
class ScriptedFinder:
    """Stands in for FaceFinder: frame i shows the boxes ``script[i]`` (x centre, height); tracking finds the
    box that overlaps the previous one, like the crop around it would."""

    def __init__(self, script):
        self.script, self.index, self.searched = script, -1, []

    def _boxes(self):
        return [(x - h * 0.4, 200 - h / 2, x + h * 0.4, 200 + h / 2) for x, h in self.script[self.index]]

    def check(self, frame):
        self.index += 1

    def search(self, frame):
        self.searched.append(self.index)
        return [RawFace(np.zeros((468, 2), np.float32), np.zeros((3, 2), np.float32), box, 0.9)
                for box in self._boxes()]

    def refine(self, frame, raw):
        return Detection.from_raw(raw)

    def track(self, frame, last):
        from latentsync.face.detector import box_overlap

        near = [b for b in self._boxes() if box_overlap(b, last.box) >= 0.3]
        return Detection(np.zeros((3, 2)), near[0], last.score, tracked=True) if near else None

    def close(self):
        pass


def _run(script, **kwargs):
    with FaceTracker(model_dir=MODELS, **kwargs) as tracker:
        tracker._finder = finder = ScriptedFinder(script)
        frame = np.zeros((4, 4, 3), np.uint8)
        out = [{k: round((d.box[0] + d.box[2]) / 2) for k, d in tracker.update(frame).items()}
               for _ in script]
    return out, finder.searched


A, B = (100, 100), (400, 100)


def test_a_face_back_far_away_is_the_only_unmatched_face_of_its_size():
    faces, searched = _run([[A, B]] * 2 + [[A]] * 3 + [[A, (900, 110)]] * 2)
    assert faces[-1] == {0: 100, 1: 900}
    assert searched == [0, 2, 3, 4, 5]  # tracking in between; every frame while a face is missing


def test_returning_faces_near_where_they_were_win_and_ambiguity_gives_new_ids():
    faces, _ = _run([[A, B]] + [[A]] + [[A, (1200, 100), (450, 100)]])
    assert faces[-1] == {0: 100, 1: 450, 2: 1200}  # near the old place: the old id; the other is new
    faces, _ = _run([[A, B, (700, 100)]] + [[A]] + [[A, (1200, 100), (1500, 100)]])
    assert faces[-1] == {0: 100, 3: 1200, 4: 1500}  # two lost, two far away: no guess, new ids left to right
    faces, _ = _run([[A, B]] + [[A]] + [[A, (1200, 250)]])
    assert faces[-1] == {0: 100, 2: 1200}  # a face of another size is someone else


def test_new_faces_get_the_next_ids_left_to_right():
    three = [(500, 100), (900, 100), (150, 100)]
    # redetect_every=1: one tracked frame between searches; faces that come in are seen at the next search
    faces, searched = _run([[], [(500, 100)], three, three], settings=DetectionSettings(redetect_every=1))
    assert faces == [{}, {0: 500}, {0: 500}, {0: 500, 1: 150, 2: 900}] and searched == [0, 1, 3]


def test_a_moving_face_keeps_its_id_and_reset_starts_over():
    script = [[(100 + 30 * i, 100), (800 - 30 * i, 100)] for i in range(6)]
    faces, searched = _run(script, settings=DetectionSettings(redetect_every=2))
    assert [sorted(f.items()) for f in faces] == [[(0, 100 + 30 * i), (1, 800 - 30 * i)] for i in range(6)]
    assert searched == [0, 3]  # tracked twice between searches; the search matched both faces by position
    with FaceTracker(model_dir=MODELS) as tracker:
        tracker._finder = ScriptedFinder([[A], [B]])
        frame = np.zeros((4, 4, 3), np.uint8)
        assert list(tracker.update(frame)) == [0]
        tracker.reset()
        assert list(tracker.update(frame)) == [0]
