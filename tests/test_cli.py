"""The command line: missing weights stop at once (exit 2, one message, no traceback), bad files likewise,
and a real run on a generated astronaut clip writes a video with the documented length, fps and audio."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from latentsync import cli
from latentsync.video import probe, read_audio
from pipeline_support import ROOT, small_model_dir
from tools.make_sample import make_speech, write_sample, write_wav


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models64(tiny_models):
    return small_model_dir(tiny_models)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("sample"), seconds=0.4, fps=25, width=640, height=360)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "latentsync", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_missing_weights_stop_at_once_with_exit_code_2(sample, tmp_path):
    r = _run("--video", str(sample[0]), "-o", str(tmp_path / "o.mp4"), "--models-dir", str(tmp_path / "empty"),
             "--no-download")
    assert r.returncode == 2
    assert "weights are missing" in r.stderr and "python -m latentsync download" in r.stderr
    assert str(tmp_path / "empty") in r.stderr  # names the paths searched
    assert "Traceback" not in r.stderr and not (tmp_path / "o.mp4").exists()
    s = _run("status", "--models-dir", str(tmp_path / "empty"))
    assert s.returncode == 2 and "MISSING" in s.stdout


def test_run_sh_without_weights_prints_the_message_and_fails(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "tools" / "run.sh"), "--models-dir", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode != 0
    assert "weights are missing" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("kind", ["missing", "text", "folder"])
def test_bad_video_files_are_one_clear_error(models64, tmp_path, capsys, kind):
    video = {"missing": tmp_path / "nope.mp4", "text": tmp_path / "fake.mp4", "folder": tmp_path}[kind]
    if kind == "text":
        video.write_text("this is not a video")
    rc = cli.main(["--video", str(video), "-o", str(tmp_path / "out.mp4"), "--models-dir", str(models64)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err
    assert str(video.name) in err


def test_cli_lip_syncs_a_sample_with_a_longer_audio_file(models64, sample, tmp_path, capsys):
    video, _ = sample
    wav = write_wav(tmp_path / "long.wav", make_speech(0.6, 22050), 22050)  # 15 frames at 25 fps > 10 frames
    out = tmp_path / "synced.mp4"
    rc = cli.main(["--video", str(video), "--audio", str(wav), "-o", str(out), "--models-dir", str(models64),
                   "--steps", "1", "--guidance", "1.0", "--seed", "7"])
    assert rc == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    info = probe(out)
    assert (info.n_frames, info.fps, info.width, info.height) == (15, 25.0, 640, 360)
    audio, sr = read_audio(out)
    assert sr == 22050 and abs(audio.shape[1] / sr - 0.6) < 0.03  # the original rate, fitted to 15 frames


def test_cli_uses_the_videos_own_audio_in_video_length_mode(models64, sample, tmp_path, capsys):
    video, _ = sample
    out = tmp_path / "own.mp4"
    rc = cli.main(["--video", str(video), "-o", str(out), "--models-dir", str(models64), "--steps", "1",
                   "--guidance", "1.0", "--length-mode", "video"])
    assert rc == 0, capsys.readouterr().err
    info = probe(out)
    assert info.n_frames == probe(video).n_frames == 10 and info.has_audio
    audio, sr = read_audio(out)
    assert sr == 44100 and abs(audio.shape[1] / sr - 0.4) < 0.03
    assert np.abs(audio).max() > 0.01


def test_bad_options_fail_before_the_models_load(models64, sample, tmp_path, capsys):
    video, _ = sample
    base = ["--video", str(video), "--models-dir", str(models64)]
    cases = {"missing audio": ["--audio", str(tmp_path / "none.wav"), "-o", str(tmp_path / "a.mp4")],
             "no output folder": ["-o", str(tmp_path / "nope" / "a.mp4")],
             "bad face": ["--face", "tallest", "-o", str(tmp_path / "a.mp4")],
             "bad device": ["--device", "quantum", "-o", str(tmp_path / "a.mp4")],
             "bad steps": ["--steps", "0", "-o", str(tmp_path / "a.mp4")]}
    for name, extra in cases.items():
        rc = cli.main(base + extra)
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, name


def test_cli_preview_and_result_controls(models64, sample, tmp_path, capsys):
    video, wav = sample
    rc = cli.main(["--video", str(video), "--audio", str(wav), "-o", str(tmp_path / "out.mp4"), "--models-dir",
                   str(models64), "--steps", "1", "--guidance", "1.0", "--blend", "feather", "--color-match",
                   "mean_std", "--silence", "keep", "--preview", str(tmp_path / "preview")])
    assert rc == 0, capsys.readouterr().err
    pngs = sorted(p.name for p in (tmp_path / "preview").iterdir())
    assert "contact_sheet.png" in pngs and "frame_000000.png" in pngs
    rc = cli.main(["--video", str(video), "--audio", str(wav), "-o", str(tmp_path / "b.mp4"), "--models-dir",
                   str(models64), "--blend", "smudge"])
    assert rc == 2 and "unknown blend 'smudge'" in capsys.readouterr().err


def test_cli_dialogue_with_one_track_per_face(models64, tmp_path, capsys):
    from latentsync.video import VideoWriter
    from tools.make_sample import make_dialogue_frames

    frames = make_dialogue_frames(8, 25, 640, 360)
    with VideoWriter(tmp_path / "two.mp4", 25, 640, 360) as writer:
        writer.write(frames)
    a = write_wav(tmp_path / "a.wav", make_speech(8 / 25, 16000), 16000)
    b = write_wav(tmp_path / "b.wav", np.zeros(int(8 / 25 * 16000), np.float32), 16000)
    out = tmp_path / "dialogue.mp4"
    rc = cli.main(["--video", str(tmp_path / "two.mp4"), "-o", str(out), "--models-dir", str(models64), "--steps",
                   "1", "--guidance", "1.0", "--speaker", f"left={a}", "--speaker", f"right={b}"])
    assert rc == 0, capsys.readouterr().err
    assert probe(out).n_frames == 8
    rc = cli.main(["--video", str(tmp_path / "two.mp4"), "-o", str(out), "--models-dir", str(models64),
                   "--speaker", f"left={a}", "--speaker", f"left={b}"])
    assert rc == 2 and "both resolve to face id" in capsys.readouterr().err
