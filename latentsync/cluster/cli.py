"""``python -m latentsync batch MANIFEST``: lip-sync every job of a manifest on a Ray cluster (or a local Ray).

    python -m latentsync batch jobs.jsonl [--workers N] [--ray-address HOST:PORT] [--models-dir DIR]
        [--steps 20] [--guidance 1.5] [--seed 1247] [--face largest] [--length-mode audio] [--deepcache]
        [--version 1.6] [--device auto] [--dtype auto] [--force] [--check] [--report results.jsonl]

The manifest format is described in ``latentsync.cluster.manifest``; the flags give every job's default
settings, a job's own keys override them. Exit codes: 0 every job done (or already finished), 1 some jobs
failed (each reported with its manifest line), 2 nothing was started (bad manifest, cluster unreachable,
missing weights), 130 interrupted. Ray is imported only when jobs are about to run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import LatentSyncError
from ..settings import DTYPES, LENGTH_MODES, VERSIONS, LipSyncSettings

EXIT_FAILED_JOBS, EXIT_USER_ERROR, EXIT_INTERRUPTED = 1, 2, 130
SETTING_FLAGS = ("version", "steps", "guidance", "seed", "face", "length_mode", "deepcache")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="jobs: a .jsonl file (one JSON object a line) or a .csv file with a header "
                                    "(video, audio, output, and optional settings columns)")
    p.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (HOST:PORT printed by `ray start --head`, or auto); "
                        "default: start a local Ray on this machine")
    p.add_argument("--workers", type=int, default=None,
                   help="number of workers (default: one per GPU of the cluster; 1 without GPUs)")
    p.add_argument("--gpus-per-worker", type=float, default=1.0,
                   help="GPU share of a worker (0.5 = two workers per GPU on large cards; default 1)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPU cores reserved per worker (default 1)")
    p.add_argument("--retries", type=int, default=3, help="runs of a job again after its worker died (default 3)")
    p.add_argument("--segment-frames", type=int, default=0,
                   help="split each video into segments of about N frames (on 16-frame window boundaries) run by "
                        "several workers, then joined with one encode; the result equals a one-worker run")
    p.add_argument("--models-dir", default=None, help="weights folder, the same path on every node "
                                                     "(default: the pack's checkpoints/)")
    p.add_argument("--download", action="store_true", help="workers download missing weights")
    p.add_argument("--device", default="auto", help="auto (a worker's GPU when it has one) | cpu | cuda")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto = fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--force", action="store_true", help="make every output again (default: skip finished ones)")
    p.add_argument("--check", action="store_true", help="check the manifest and list what would run, then stop")
    p.add_argument("--skip-invalid", action="store_true",
                   help="run the valid jobs even when some lines have problems (default: run nothing)")
    p.add_argument("--report", default=None, help="write one JSON line per job (status, message, frames, time)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log details, and show the workers' logs")
    defaults = p.add_argument_group("default settings of every job (a job's own keys override them)")
    defaults.add_argument("--version", default=None, choices=VERSIONS, help="LatentSync model version (1.6)")
    defaults.add_argument("--steps", type=int, default=None, help="DDIM steps (20)")
    defaults.add_argument("--guidance", type=float, default=None, help="lips expression / CFG scale (1.5)")
    defaults.add_argument("--seed", type=int, default=None, help="random seed (1247)")
    defaults.add_argument("--face", default=None, help="largest | leftmost | rightmost | center | index:N")
    defaults.add_argument("--length-mode", default=None, choices=LENGTH_MODES, help="audio | video (audio)")
    defaults.add_argument("--deepcache", action="store_true", default=None, help="DeepCache: faster, slightly "
                                                                                 "different")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m latentsync batch",
                                description="Lip-sync every job of a manifest on a Ray cluster.")
    add_arguments(p)
    return p


def main(argv=None) -> int:
    """``python -m latentsync batch ARGS``: ``argv`` are the arguments after ``batch``."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return execute(args)


def execute(args: argparse.Namespace) -> int:
    """Run a batch from arguments parsed by a parser that ``add_arguments`` set up; returns the exit code."""
    try:
        return run(args)
    except LatentSyncError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted (running jobs were cancelled; finished outputs are kept)", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(args) -> int:
    from .manifest import ManifestError, check_manifest, problems_text
    from .runner import ClusterOptions, run_batch, split_finished

    overrides = {k: getattr(args, k) for k in SETTING_FLAGS if getattr(args, k) is not None}
    jobs, problems = check_manifest(args.manifest, LipSyncSettings(**overrides))
    if problems and not (args.skip_invalid and jobs):
        raise ManifestError(args.manifest, problems)
    if problems:
        print(problems_text(args.manifest, problems, "those lines are skipped"), file=sys.stderr)
    if args.check:
        todo, finished = (jobs, []) if args.force else split_finished(jobs)
        print(f"manifest OK: {len(jobs)} jobs, {len(todo)} to run, {len(finished)} already finished")
        return EXIT_FAILED_JOBS if problems else 0
    options = ClusterOptions(address=args.ray_address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                             cpus_per_worker=args.cpus_per_worker, device=args.device, dtype=args.dtype,
                             models_dir=args.models_dir, download=args.download, retries=args.retries,
                             worker_logs=args.verbose, segment_frames=args.segment_frames)
    report = run_batch(jobs, options, resume=not args.force, show_progress=not args.no_progress)
    if args.report:
        write_report(args.report, jobs, problems, report)
    print(report.summary())
    return EXIT_FAILED_JOBS if report.failed or problems else 0


def write_report(path, jobs, problems, report) -> None:
    """One JSON line per manifest entry, in manifest order: line, video, audio, output, status (done | failed |
    cancelled | skipped | invalid), message, frames, fps, seconds, wall_s, worker."""
    by_line = {r.line: r for r in report.results}
    skipped = {j.line for j in report.skipped}
    entries = [{"line": line, "status": "invalid", "message": message} for line, message in problems]
    for job in jobs:
        entry = {"line": job.line, "video": str(job.video), "audio": str(job.audio) if job.audio else None,
                 "output": str(job.output)}
        r = by_line.get(job.line)
        if r is not None:
            entry.update(status=r.status, message=r.message, frames=r.frames, fps=r.fps, seconds=r.seconds,
                         wall_s=round(r.wall_s, 3), worker=r.worker)
        else:
            entry.update(status="skipped" if job.line in skipped else "not run")
        entries.append(entry)
    with open(Path(path), "w", encoding="utf-8") as f:
        for entry in sorted(entries, key=lambda e: e["line"]):
            f.write(json.dumps(entry) + "\n")
