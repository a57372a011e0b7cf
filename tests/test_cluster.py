"""Batches on a real local Ray (2 CPUs, 2 workers): every job's output is written, a failing job is reported
with its manifest line while the others finish, a worker killed mid-job is restarted and its job run again,
and re-running the manifest skips the finished outputs. These use a stand-in job (tests/cluster_support.py:
same signature as lipsync_file, writes a small real video); test_cluster_e2e.py runs the real models."""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-cluster.txt)")

import cluster_support  # noqa: E402
from cluster_support import FAKE_FRAMES, fake_lipsync, write_jsonl, write_tiny_video  # noqa: E402
from latentsync.cluster.connection import ClusterError  # noqa: E402
from latentsync.cluster.manifest import read_manifest  # noqa: E402
from latentsync.cluster.outputs import is_finished  # noqa: E402
from latentsync.cluster.runner import ClusterOptions, run_batch  # noqa: E402
from latentsync.cluster.worker import DONE, FAILED  # noqa: E402
from latentsync.settings import LipSyncSettings  # noqa: E402
from latentsync.video import iter_frames, probe  # noqa: E402

TWO_WORKERS = ClusterOptions(workers=2)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module: 2 CPUs, no dashboard, a small object store; shut down afterwards."""
    ray.cloudpickle.register_pickle_by_value(cluster_support)  # workers cannot import test modules
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 ** 2,
                       configure_logging=False, log_to_driver=False)
    yield context
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(cluster_support)


@pytest.fixture
def manifest(tmp_path):
    """Three jobs (seeds 10, 20, 30) on one tiny input video, outputs in out/."""
    write_tiny_video(tmp_path / "in.mp4")
    (tmp_path / "out").mkdir()
    return write_jsonl(tmp_path / "jobs.jsonl", [{"video": "in.mp4", "output": f"out/{n}.mp4", "seed": seed,
                                                  "steps": 6} for n, seed in (("a", 10), ("b", 20), ("c", 30))])


def _grey(path) -> int:
    return int(round(next(iter_frames(path)).mean()))


def test_batch_writes_every_output_and_a_rerun_skips_them(local_ray, manifest):
    jobs = read_manifest(manifest)
    report = run_batch(jobs, TWO_WORKERS, job=fake_lipsync, show_progress=False)
    assert sorted((r.line, r.status) for r in report.results) == [(1, DONE), (2, DONE), (3, DONE)]
    assert len({r.worker for r in report.results}) == 2  # both workers took jobs
    for job in jobs:
        info = probe(job.output)
        assert (info.n_frames, info.fps) == (FAKE_FRAMES, 25.0)
        assert abs(_grey(job.output) - job.settings.seed) <= 2  # each job ran with its own settings
    assert "3 done, 0 skipped (already finished), 0 failed; 18 frames" in report.summary()

    again = run_batch(jobs, TWO_WORKERS, job=fake_lipsync, show_progress=False)
    assert again.results == [] and [j.line for j in again.skipped] == [1, 2, 3]
    stamp = jobs[1].output.stat().st_mtime_ns
    jobs[2].output.write_bytes(jobs[2].output.read_bytes()[:300])  # a damaged output is made again
    third = run_batch(jobs, TWO_WORKERS, job=fake_lipsync, show_progress=False)
    assert [(r.line, r.status) for r in third.results] == [(3, DONE)] and is_finished(jobs[2].output)
    assert jobs[1].output.stat().st_mtime_ns == stamp  # finished outputs are never touched


def test_a_failing_job_is_reported_with_its_line_while_the_others_finish(local_ray, manifest, tmp_path):
    write_tiny_video(tmp_path / "other.mp4")
    write_jsonl(manifest, [{"video": "in.mp4", "output": "out/a.mp4"},
                           {"video": "other.mp4", "output": "out/b.mp4"},
                           {"video": "in.mp4", "output": "out/c.mp4"}])
    jobs = read_manifest(manifest)
    (tmp_path / "other.mp4").unlink()  # gone after the check (e.g. not on the worker's node)
    report = run_batch(jobs, TWO_WORKERS, job=fake_lipsync, show_progress=False)
    results = {r.line: r for r in report.results}
    assert (results[2].status, results[2].message) == (FAILED, f"Video file not found: {tmp_path / 'other.mp4'}")
    assert results[1].status == results[3].status == DONE
    assert is_finished(jobs[0].output) and is_finished(jobs[2].output) and not jobs[1].output.exists()
    assert report.summary().splitlines()[1] == f"line 2: failed: Video file not found: {tmp_path / 'other.mp4'}"


@pytest.mark.slow  # 14-22 s on two shared cores: three 3-second jobs plus a worker restart
def test_a_worker_killed_mid_job_is_restarted_and_the_batch_completes(local_ray, manifest):
    jobs = [dataclasses.replace(j, settings=LipSyncSettings(steps=20)) for j in read_manifest(manifest)]  # 3 s
    killed = []

    def kill_one_worker_mid_job(statuses):  # a status may be up to a poll old: kill well before the end
        for s in statuses:
            if not killed and s["unit"] is not None and 2 <= s["done"] <= 8:
                killed.append(s)
                os.kill(s["pid"], signal.SIGKILL)

    report = run_batch(jobs, TWO_WORKERS, job=fake_lipsync, on_status=kill_one_worker_mid_job, show_progress=False)
    assert killed, "no worker was seen running a job"
    assert sorted((r.line, r.status) for r in report.results) == [(1, DONE), (2, DONE), (3, DONE)]
    rerun = next(r for r in report.results if r.line == killed[0]["unit"][0])
    assert not rerun.worker.endswith(f":{killed[0]['pid']}")  # finished by a restarted worker
    assert all(is_finished(j.output) for j in jobs)
    assert sorted(p.name for p in jobs[0].output.parent.iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]


def test_missing_weights_stop_the_batch_before_any_job(local_ray, manifest, tmp_path):
    jobs = read_manifest(manifest)
    with pytest.raises(ClusterError) as err:  # the real job: workers load the models when they start
        run_batch(jobs, ClusterOptions(workers=1, models_dir=str(tmp_path / "no-weights")), show_progress=False)
    message = str(err.value)
    assert message.startswith("Worker ") and "cannot run jobs: LatentSync 1.6 weights are missing" in message
    assert str(tmp_path / "no-weights") in message and "python -m latentsync download" in message
    assert not any(j.output.exists() for j in jobs)
