"""Cluster batch on a local Ray: wall time of the same batch of short jobs on 1 and on 2 workers, and the
speed-up (prints one JSON line per run and a summary line; never asserts).

    python bench/cluster.py [--models-dir DIR] [--resolution 64] [--jobs 4] [--seconds 0.8] [--steps 2]
                            [--workers 1 2] [--cpus-per-worker 1]

One local Ray (dashboard off) with as many CPUs as the largest worker count asks for; each run starts its own
workers (each loads the models once, as a real batch does) and lip-syncs ``--jobs`` copies of a generated
astronaut clip (tools/make_sample.py) into a fresh folder. ``wall_s`` counts worker start-up, model loading and
the jobs, not Ray's own start; ``startup_s`` is its part spent starting the workers and loading the models,
``jobs_s`` the rest. Without ``--models-dir`` a tiny random-weight set is written to a temporary folder
(tools/make_tiny_models.py) with its face resolution set to ``--resolution``. On a machine with fewer free cores
than workers the speed-up stays near 1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

def make_jobs(folder: Path, n_jobs: int, seconds: float, steps: int) -> Path:
    from tools.make_sample import write_sample

    video, audio = write_sample(folder, seconds=seconds, fps=25, width=640, height=360)
    lines = [json.dumps({"video": str(video), "audio": str(audio), "output": f"out/{i}.mp4", "steps": steps,
                         "guidance": 1.0}) for i in range(n_jobs)]
    manifest = folder / "jobs.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def run_once(manifest: Path, workers: int, args) -> dict:
    import shutil

    from latentsync.cluster.manifest import read_manifest
    from latentsync.cluster.runner import ClusterOptions, run_batch

    out = manifest.parent / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    options = ClusterOptions(workers=workers, cpus_per_worker=args.cpus_per_worker, models_dir=args.models_dir,
                             device="cpu")
    start = time.perf_counter()
    report = run_batch(read_manifest(manifest), options, resume=False, show_progress=False)
    wall = time.perf_counter() - start
    return {"workers": workers, "jobs": len(report.results), "failed": len(report.failed),
            "frames": sum(r.frames for r in report.results), "wall_s": round(wall, 2),
            "startup_s": round(report.startup_s, 2), "jobs_s": round(wall - report.startup_s, 2),
            "job_wall_s": [round(r.wall_s, 2) for r in sorted(report.results, key=lambda r: r.line)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", default=None)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--seconds", type=float, default=0.8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    args = p.parse_args(argv)
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.models_dir is None:
            from tools.make_tiny_models import make_tiny_models, small_model_dir

            args.models_dir = str(small_model_dir(make_tiny_models(tmp / "tiny"), resolution=args.resolution))
        manifest = make_jobs(tmp / "jobs", args.jobs, args.seconds, args.steps)
        cpus = int(max(args.workers) * args.cpus_per_worker + 0.999)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, object_store_memory=128 * 1024 ** 2,
                 configure_logging=False, log_to_driver=False)
        try:
            runs = []
            for workers in args.workers:
                runs.append(run_once(manifest, workers, args))
                print(json.dumps(runs[-1]), flush=True)
        finally:
            ray.shutdown()
    base = runs[0]
    for run in runs[1:]:
        print(f"{base['jobs']} jobs: {base['workers']} worker(s) {base['wall_s']:.1f} s, {run['workers']} workers "
              f"{run['wall_s']:.1f} s -> speed-up x{base['wall_s'] / run['wall_s']:.2f} "
              f"(after the workers started: {base['jobs_s']:.1f} s vs {run['jobs_s']:.1f} s, "
              f"x{base['jobs_s'] / max(run['jobs_s'], 1e-6):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
