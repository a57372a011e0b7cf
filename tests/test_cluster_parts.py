"""The cluster batch's parts without a Ray cluster: the worker (results, errors, cancel, progress), how many
workers a cluster gets, the batch progress bar, and the address check that makes an unreachable
``--ray-address`` a clear message within seconds instead of a hang."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from cluster_support import FAKE_FRAMES, fake_lipsync, write_tiny_video
from latentsync.cluster.connection import ClusterError, check_reachable, split_address
from latentsync.cluster.manifest import Job, WorkUnit
from latentsync.cluster.progress import BatchProgress
from latentsync.cluster.runner import ClusterOptions, worker_plan
from latentsync.cluster.worker import CANCELLED, DONE, FAILED, LipSyncWorker, UnitResult
from latentsync.settings import LipSyncSettings
from latentsync.video import iter_frames
from pipeline_support import ROOT


def _unit(tmp_path, video, steps=2, seed=7, line=3):
    return WorkUnit(Job(line=line, video=video, audio=None, output=tmp_path / f"out{line}.mp4",
                        settings=LipSyncSettings(steps=steps, seed=seed)))


def test_worker_runs_a_job_and_reports_what_it_wrote(tmp_path):
    video = write_tiny_video(tmp_path / "in.mp4")
    result = LipSyncWorker(job=fake_lipsync).run(_unit(tmp_path, video, seed=77))
    assert (result.status, result.line, result.frames, result.message) == (DONE, 3, FAKE_FRAMES, "")
    assert result.output == str(tmp_path / "out3.mp4") and result.worker.endswith(f":{os.getpid()}")
    frames = next(iter_frames(tmp_path / "out3.mp4"))
    assert abs(int(frames.mean()) - 77) <= 2  # the job's own settings reached the job


def test_worker_turns_errors_into_results_and_goes_on(tmp_path):
    worker = LipSyncWorker(job=fake_lipsync)
    missing = worker.run(_unit(tmp_path, tmp_path / "gone.mp4"))
    assert (missing.status, missing.message) == (FAILED, f"Video file not found: {tmp_path / 'gone.mp4'}")

    def broken(*args, **kwargs):
        raise KeyError("bug")

    bug = LipSyncWorker(job=broken).run(_unit(tmp_path, tmp_path / "x.mp4"))
    assert (bug.status, bug.message) == (FAILED, "internal error: KeyError: 'bug'")
    video = write_tiny_video(tmp_path / "in.mp4")
    assert worker.run(_unit(tmp_path, video)).status == DONE  # the same worker runs the next job


def test_worker_status_and_cancel_while_a_job_runs(tmp_path):
    video = write_tiny_video(tmp_path / "in.mp4")
    worker = LipSyncWorker(job=fake_lipsync)
    assert worker.status()["unit"] is None
    results = []
    thread = threading.Thread(target=lambda: results.append(worker.run(_unit(tmp_path, video, steps=200))))
    thread.start()
    deadline = time.monotonic() + 30
    while worker.status()["done"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    status = worker.status()
    assert status["unit"] == (3, -1) and status["total"] == 200 and 2 <= status["done"] < 200
    worker.cancel()
    thread.join(30)
    assert results[0].status == CANCELLED and not (tmp_path / "out3.mp4").exists()
    assert worker.status()["unit"] is None


@pytest.mark.parametrize("resources, options, n_units, expected", [
    ({"CPU": 64, "GPU": 8}, ClusterOptions(), 100, (8, 1.0)),  # one worker per GPU
    ({"CPU": 64, "GPU": 8}, ClusterOptions(), 3, (3, 1.0)),  # never more workers than jobs
    ({"CPU": 64, "GPU": 2}, ClusterOptions(gpus_per_worker=0.5), 100, (4, 0.5)),  # two per large GPU
    ({"CPU": 64, "GPU": 2}, ClusterOptions(workers=5), 100, (2, 1.0)),  # capped at the GPUs there are
    ({"CPU": 64, "GPU": 2}, ClusterOptions(device="cpu", workers=3), 100, (3, 0.0)),
    ({"CPU": 2}, ClusterOptions(), 100, (1, 0.0)),  # no GPU: one CPU worker unless asked
    ({"CPU": 2}, ClusterOptions(workers=2), 100, (2, 0.0)),
    ({"CPU": 2}, ClusterOptions(workers=4), 100, (2, 0.0)),  # capped at the CPU slots
])
def test_worker_plan(resources, options, n_units, expected):
    assert worker_plan(options, resources, n_units) == expected


def test_worker_plan_refuses_a_gpu_device_on_a_cluster_without_gpus():
    with pytest.raises(ClusterError, match="--device cuda: the Ray cluster has no GPU"):
        worker_plan(ClusterOptions(device="cuda"), {"CPU": 8}, 4)


def test_batch_progress_counts_running_jobs_by_their_steps():
    with BatchProgress(4, disable=True) as bar:
        bar.running([{"unit": (1, -1), "done": 5, "total": 20}, {"unit": (2, -1), "done": 10, "total": 20},
                     {"unit": None, "done": 0, "total": 0}])
        assert bar.jobs == pytest.approx(0.75)
        bar.finished(UnitResult(line=1, output="o", status=DONE, frames=40))
        bar.running([{"unit": (1, -1), "done": 20, "total": 20}])  # a late status of a finished job is ignored
        bar.finished(UnitResult(line=3, output="o", status=FAILED, message="bad"))
        assert (bar.jobs, bar.frames, bar.failures) == (pytest.approx(2.5), 40, 1)


@pytest.mark.parametrize("address, expected", [
    ("10.0.0.5:6379", ("10.0.0.5", 6379)), ("head", ("head", 6379)), ("ray://head:10001", ("head", 10001)),
    ("[::1]:7000", ("::1", 7000)), ("[::1]", ("::1", 6379)),
])
def test_split_address(address, expected):
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["head:0", "head:99999", "head:port", ":6379"])
def test_split_address_refuses_what_is_not_host_port(address):
    with pytest.raises(ClusterError, match="is not HOST:PORT"):
        split_address(address)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_address_check_names_the_reason_within_the_timeout():
    with pytest.raises(ClusterError, match="Connection refused. Is the head running"):
        check_reachable(f"127.0.0.1:{_free_port()}", timeout_s=2)
    with pytest.raises(ClusterError, match="unknown host 'no-such-head.invalid'"):
        check_reachable("no-such-head.invalid:6379", timeout_s=2)
    with socket.socket() as silent:  # accepts connections, never answers (ray.init would retry for minutes)
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        with pytest.raises(ClusterError, match="no answer within 1 s"):
            check_reachable(f"127.0.0.1:{silent.getsockname()[1]}", timeout_s=1)
        assert time.monotonic() - start < 3
    web = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ClusterError, match="answers but is not a Ray head"):
            check_reachable(f"127.0.0.1:{web.server_port}", timeout_s=2)
    finally:
        web.shutdown()
        web.server_close()


def test_batch_with_an_unreachable_address_stops_at_once(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-cluster.txt)")
    write_tiny_video(tmp_path / "in.mp4")
    (tmp_path / "jobs.jsonl").write_text('{"video": "in.mp4", "output": "out.mp4"}\n')
    start = time.monotonic()
    code = "import sys; from latentsync.cluster.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "jobs.jsonl"), "--ray-address",
                        f"127.0.0.1:{_free_port()}"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    elapsed = time.monotonic() - start
    assert r.returncode == 2 and r.stderr.startswith("error: Cannot reach the Ray cluster at 127.0.0.1:")
    assert "Traceback" not in r.stderr and not (tmp_path / "out.mp4").exists()
    assert elapsed < 30, elapsed
