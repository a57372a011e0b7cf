"""Batch manifests (JSON lines and CSV): jobs with per-job settings, and every problem reported with its line
number before anything runs. Also: what a finished output is (resume), and that nothing outside
latentsync/cluster imports Ray. No Ray needed."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from cluster_support import write_jsonl, write_tiny_video
from latentsync.cluster.cli import main as batch_main
from latentsync.cluster.manifest import ManifestError, check_manifest, read_manifest
from latentsync.cluster.outputs import is_finished
from latentsync.settings import LipSyncSettings
from latentsync.video import probe
from pipeline_support import ROOT


@pytest.fixture
def media(tmp_path):
    """A folder with two tiny videos, a (fake) wav and an out/ folder."""
    write_tiny_video(tmp_path / "a.mp4")
    write_tiny_video(tmp_path / "b.mp4")
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "out").mkdir()
    return tmp_path


def test_jsonl_jobs_resolve_paths_and_override_the_batch_defaults(media):
    manifest = media / "jobs.jsonl"
    manifest.write_text('# dub of season 1\n'
                        '{"video": "a.mp4", "audio": "a.wav", "output": "out/a.mp4"}\n'
                        '\n'
                        f'{{"video": "{media / "b.mp4"}", "output": "out/b.mp4", "steps": 30, "face": "center", '
                        '"deepcache": true}\n')
    jobs = read_manifest(manifest, LipSyncSettings(steps=10, seed=5))
    assert [j.line for j in jobs] == [2, 4]
    a, b = jobs
    assert (a.video, a.audio, a.output) == (media / "a.mp4", media / "a.wav", media / "out" / "a.mp4")
    assert (a.settings.steps, a.settings.seed, a.settings.face) == (10, 5, "largest")
    assert b.audio is None  # the video's own sound track
    assert (b.settings.steps, b.settings.seed, b.settings.face, b.settings.deepcache) == (30, 5, "center", True)


def test_csv_cells_are_converted_to_the_settings_types(media):
    manifest = media / "jobs.csv"
    manifest.write_text("video,audio,output,steps,guidance,deepcache,face\n"
                        "a.mp4,a.wav,out/a.mp4,,,,\n"
                        "b.mp4,,out/b.mp4,25,2.0,yes,index:1\n")
    a, b = read_manifest(manifest)
    assert a.settings == LipSyncSettings() and a.line == 2
    assert b.line == 3 and b.audio is None
    assert (b.settings.steps, b.settings.guidance, b.settings.deepcache, b.settings.face) == (25, 2.0, True, "index:1")


def test_every_problem_is_reported_with_its_line_number(media):
    manifest = write_jsonl(media / "jobs.jsonl", [
        {"video": "a.mp4", "output": "out/ok.mp4"},  # 1: fine
        {"video": "a.mp4", "output": "out/x.mp4", "stepz": 3},  # 2: unknown key
        {"video": "missing.mp4", "output": "out/m.mp4"},  # 3: missing input
        {"video": "a.mp4", "audio": "gone.wav", "output": "out/g.mp4"},  # 4: missing audio
        {"video": "a.mp4", "output": "nowhere/o.mp4"},  # 5: output folder does not exist
        {"video": "b.mp4", "output": "out/ok.mp4"},  # 6: same output as line 1
        {"video": "a.mp4", "output": "out/s.mp4", "steps": 0},  # 7: invalid setting
        {"video": "a.mp4"},  # 8: no output
        {"video": "a.mp4", "output": "out/a.txt"},  # 9: not a video name
        {"video": "a.mp4", "output": "a.mp4"},  # 10: overwrites its own input
        {"video": "b.mp4", "output": "out/f.mp4", "face": "tallest"},  # 11: invalid face
    ])
    with open(manifest, "a") as f:
        f.write('{"video": "a.mp4", "output": \n')  # 12: not JSON
        f.write('["a.mp4", "out/l.mp4"]\n')  # 13: not an object
    with pytest.raises(ManifestError) as err:
        read_manifest(manifest)
    problems = dict(err.value.problems)
    assert sorted(problems) == list(range(2, 14))
    assert "unknown key 'stepz'" in problems[2] and "steps" in problems[2]  # names the valid keys
    assert problems[3] == f"video file not found: {media / 'missing.mp4'}"
    assert problems[4] == f"audio file not found: {media / 'gone.wav'}"
    assert problems[5] == f"output folder does not exist: {media / 'nowhere'}"
    assert problems[6] == f"writes the same output as line 1: {media / 'out' / 'ok.mp4'}"
    assert problems[7] == "steps must be 1..1000, got 0"
    assert problems[8] == "missing 'output'"
    assert "output must be a video file" in problems[9] and "'a.txt'" in problems[9]
    assert problems[10] == f"output would overwrite this job's input: {media / 'a.mp4'}"
    assert "unknown face choice 'tallest'" in problems[11]
    assert problems[12].startswith("not valid JSON")
    assert problems[13].startswith("expected a JSON object")
    message = str(err.value)
    assert message.startswith(f"Manifest {manifest} has 12 problems (nothing was started):")
    assert "  line 3: video file not found" in message
    jobs, _ = check_manifest(manifest)
    assert [j.line for j in jobs] == [1]  # what --skip-invalid would run


def test_output_that_overwrites_another_jobs_input_is_refused(media):
    manifest = write_jsonl(media / "jobs.jsonl", [{"video": "a.mp4", "output": "out/a.mp4"},
                                                  {"video": "b.mp4", "output": "a.mp4"}])
    with pytest.raises(ManifestError, match=r"line 2: output overwrites the input of line 1"):
        read_manifest(manifest)


@pytest.mark.parametrize("text, message", [
    ("", "no jobs"),
    ("video,output,video\na.mp4,out/a.mp4,b.mp4\n", "line 1: the header names a column twice: video"),
    ("a.mp4,out/a.mp4\n", "line 1: the first row must be a header"),
    ("video,output\na.mp4,out/a.mp4,extra\n", "line 2: 3 cells but the header has 2 columns"),
    ("video,output,steps\na.mp4,out/a.mp4,many\n", "line 2: steps must be a int, got 'many'"),
    ("video,output,deepcache\na.mp4,out/a.mp4,maybe\n", "line 2: deepcache must be true or false, got 'maybe'"),
])
def test_csv_problems(media, text, message):
    (media / "jobs.csv").write_text(text)
    with pytest.raises(ManifestError, match=re.escape(message)):
        read_manifest(media / "jobs.csv")


def test_finished_means_a_complete_readable_video(tmp_path):
    video = write_tiny_video(tmp_path / "done.mp4", frames=50)
    assert is_finished(video)
    assert not is_finished(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert not is_finished(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    assert not is_finished(tmp_path / "text.mp4")
    data = video.read_bytes()  # faststart: the index is at the front, the last frames' data is cut off
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 9 // 10])
    assert probe(tmp_path / "cut.mp4").n_frames == 50  # the index still promises every frame
    assert not is_finished(tmp_path / "cut.mp4")


def test_batch_check_lists_the_work_and_reports_bad_lines(media, capsys):
    write_tiny_video(media / "out" / "a.mp4")  # already finished
    manifest = write_jsonl(media / "jobs.jsonl", [{"video": "a.mp4", "output": "out/a.mp4"},
                                                  {"video": "b.mp4", "output": "out/b.mp4"}])
    assert batch_main([str(manifest), "--check"]) == 0
    assert "manifest OK: 2 jobs, 1 to run, 1 already finished" in capsys.readouterr().out
    assert batch_main([str(manifest), "--check", "--force"]) == 0
    assert "2 to run, 0 already finished" in capsys.readouterr().out
    bad = write_jsonl(media / "bad.jsonl", [{"video": "a.mp4", "output": "out/c.mp4", "seed": "x"},
                                            {"video": "nope.mp4", "output": "out/d.mp4"}])
    assert batch_main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Manifest {bad} has 2 problems (nothing was started):")
    assert "line 1: seed must be an integer, got 'x'" in err and "line 2: video file not found" in err
    assert batch_main([str(bad), "--steps", "0"]) == 2  # a bad batch default is one clear message
    assert "steps must be 1..1000, got 0" in capsys.readouterr().err


def test_ray_is_imported_only_inside_latentsync_cluster_and_only_in_functions():
    top_level = re.compile(r"^(import ray|from ray)", re.M)
    anywhere = re.compile(r"^\s*(import ray|from ray)\b", re.M)
    sources = [p for p in ROOT.rglob("*.py") if not {".venv", ".venv-today", "tests", "bench", ".git"} & set(p.parts)]
    outside = [p for p in sources if "cluster" not in p.relative_to(ROOT).parts and anywhere.search(p.read_text())]
    assert outside == []
    assert [p for p in (ROOT / "latentsync" / "cluster").glob("*.py") if top_level.search(p.read_text())] == []
    # the manifest check of the batch command runs without Ray
    code = ("import sys; from latentsync.cluster.cli import main; main(['--check', 'x.jsonl']); "
            "print('ray' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stdout.strip() == "False" and "Manifest not found: x.jsonl" in r.stderr
