"""The batch command end to end with the real pipeline (tiny random-weight models, 64 px faces) on a local Ray
head that the command joins with ``--ray-address``, as it joins a cluster: two CPU workers lip-sync a 4-job
manifest; the unreadable video is reported with its line while the other outputs are written (playable, with the
documented length and sound); running the manifest again skips the finished outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-cluster.txt)")

from latentsync.video import probe, read_audio  # noqa: E402
from pipeline_support import ROOT  # noqa: E402
from tools.make_sample import make_speech, write_sample, write_wav  # noqa: E402
from tools.make_tiny_models import small_model_dir  # noqa: E402

pytestmark = pytest.mark.slow
BATCH = "import sys; from latentsync.cluster.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def ray_head():
    """A local Ray head (2 CPUs, no dashboard); yields the address a batch joins."""
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 ** 2,
                       configure_logging=False, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def _batch(*args):
    return subprocess.run([sys.executable, "-c", BATCH, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_batch_command_on_a_cluster_with_the_real_pipeline(ray_head, tiny_models, tmp_path):
    models = small_model_dir(tiny_models)
    video, wav = write_sample(tmp_path, seconds=0.4, fps=25, width=640, height=360)  # 10 frames
    write_wav(tmp_path / "long.wav", make_speech(0.6, 22050), 22050)  # 15 frames at 25 fps
    (tmp_path / "broken.mp4").write_text("not a video")
    (tmp_path / "out").mkdir()
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("\n".join(json.dumps(e) for e in [
        {"video": video.name, "audio": wav.name, "output": "out/a.mp4"},
        {"video": video.name, "audio": "long.wav", "output": "out/b.mp4", "seed": 3},
        {"video": "broken.mp4", "audio": wav.name, "output": "out/broken.mp4"},
        {"video": video.name, "output": "out/c.mp4", "length_mode": "video"},
    ]) + "\n")
    args = [manifest, "--ray-address", ray_head, "--workers", 2, "--models-dir", models, "--steps", 1,
            "--guidance", 1.0, "--no-progress", "--report", tmp_path / "report.jsonl"]

    r = _batch(*args)
    assert r.returncode == 1, r.stderr  # one job failed
    summary = r.stdout.splitlines()
    assert summary[0].startswith("3 done, 0 skipped (already finished), 1 failed; 35 frames")
    assert summary[1].startswith(f"line 3: failed: {tmp_path / 'broken.mp4'} is not a readable video file")
    for name, frames, sample_rate in (("a", 10, 44100), ("b", 15, 22050), ("c", 10, 44100)):
        info = probe(tmp_path / "out" / f"{name}.mp4")
        assert (info.n_frames, info.fps, info.width, info.height) == (frames, 25.0, 640, 360)
        audio, sr = read_audio(tmp_path / "out" / f"{name}.mp4")
        assert sr == sample_rate and abs(audio.shape[1] / sr - frames / 25) < 0.03
    report = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert [(e["line"], e["status"], e.get("frames")) for e in report] == [
        (1, "done", 10), (2, "done", 15), (3, "failed", 0), (4, "done", 10)]
    assert len({e["worker"] for e in report if e["status"] == "done"}) == 2  # both workers took jobs
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]

    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    again = _batch(*args)
    assert again.returncode == 1 and again.stdout.startswith("0 done, 3 skipped (already finished), 1 failed")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == stamps


def test_one_long_video_split_across_two_workers_equals_one_process(ray_head, tiny_models, tmp_path):
    """A 90-frame clip in segments of 32 frames over 2 workers equals the same job run whole by one worker (same
    settings, same encoder, same thread settings): decoded frames identical (the segments' frames are bit-identical
    before the encoder, see tests/test_segments.py)."""
    import numpy as np

    from latentsync.video import iter_frames

    models = small_model_dir(tiny_models)
    video, wav = write_sample(tmp_path, seconds=3.6, fps=25, width=640, height=360)  # 90 frames
    (tmp_path / "out").mkdir()
    common = ["--ray-address", ray_head, "--models-dir", models, "--steps", 2, "--no-progress"]
    for name, extra in (("split", ["--workers", 2, "--segment-frames", 32]), ("whole", ["--workers", 1])):
        manifest = tmp_path / f"{name}.jsonl"
        manifest.write_text(json.dumps({"video": video.name, "audio": wav.name, "output": f"out/{name}.mp4"}) + "\n")
        r = _batch(manifest, *common, *extra, "--report", tmp_path / f"{name}.report")
        assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "split.report").read_text().splitlines()[0])
    assert report["status"] == "done" and report["frames"] == 90
    assert len(report["worker"].split(",")) == 2  # both workers ran segments
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["split.mp4", "whole.mp4"]  # the parts are gone
    split = np.concatenate(list(iter_frames(tmp_path / "out" / "split.mp4")))
    whole = np.concatenate(list(iter_frames(tmp_path / "out" / "whole.mp4")))
    assert split.shape == whole.shape == (90, 360, 640, 3)
    assert np.abs(split.astype(np.int16) - whole.astype(np.int16)).max() == 0  # measured: identical
