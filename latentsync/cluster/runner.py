"""Run a batch of lip-sync jobs on Ray: one long-lived worker actor per GPU (or per CPU slot), jobs handed to
whichever worker is free, one progress bar for the whole batch.

Failures: a job's user error is reported with its manifest line and the batch goes on. A worker process that
dies (killed, out of host memory, its node lost) is restarted by Ray (``max_restarts=-1``) and the job it was
running is run again (``max_task_retries=retries``); after that many deaths the job is reported as failed.
Finished outputs are never touched: every output is written atomically and, unless ``resume`` is off, jobs whose
output is already finished (``outputs.is_finished``) are skipped before any worker starts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .connection import ClusterError, ray_session
from .manifest import Job, WorkUnit
from .outputs import is_finished
from .progress import BatchProgress
from .worker import DONE, FAILED, LipSyncWorker, UnitResult

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the workers' progress is asked for
CANCEL_WAIT_S = 30.0  # Ctrl-C: how long running jobs get to stop cleanly


@dataclass(frozen=True)
class ClusterOptions:
    address: str | None = None  # None: start a local Ray on this machine; "HOST:PORT" / "auto": join a cluster
    workers: int | None = None  # None: one per GPU of the cluster (no GPU: 1)
    gpus_per_worker: float = 1.0  # < 1 puts several workers on one large GPU
    cpus_per_worker: float = 1.0
    device: str = "auto"  # the workers' device: auto = their GPU when they have one
    dtype: str = "auto"
    models_dir: str | None = None  # the same path on every node
    download: bool = False  # workers download missing weights
    retries: int = 3  # runs of a job again after its worker died
    segment_frames: int = 0  # > 0: split each video into segments of about this many frames across workers
    local_cpus: int | None = None  # local Ray only: CPUs it may use (None: all)
    worker_logs: bool = False  # show the workers' log output here (else only in Ray's log files)
    connect_timeout_s: float = 5.0


@dataclass
class BatchReport:
    results: list[UnitResult] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)  # outputs already finished
    wall_s: float = 0.0
    startup_s: float = 0.0  # of wall_s: starting Ray and the workers, loading the models

    @property
    def failed(self) -> list[UnitResult]:
        return [r for r in self.results if r.status != DONE]

    def summary(self) -> str:
        done = sum(r.status == DONE for r in self.results)
        frames = sum(r.frames for r in self.results)
        lines = [f"{done} done, {len(self.skipped)} skipped (already finished), {len(self.failed)} failed; "
                 f"{frames} frames in {self.wall_s:.1f} s ({self.startup_s:.1f} s to start the workers)"]
        lines += [f"line {r.line}: {r.status}: {r.message}" for r in sorted(self.failed, key=lambda r: r.line)]
        return "\n".join(lines)


def split_finished(jobs: list[Job]) -> tuple[list[Job], list[Job]]:
    """(jobs to run, jobs whose output is already finished)."""
    todo, finished = [], []
    for job in jobs:
        (finished if is_finished(job.output) else todo).append(job)
    return todo, finished


def run_batch(jobs: list[Job], options: ClusterOptions = ClusterOptions(), *, resume: bool = True,
              job: Callable | None = None, on_status: Callable[[list[dict]], None] | None = None,
              show_progress: bool = True) -> BatchReport:
    """Run ``jobs`` on Ray and report every job's result. ``job`` replaces ``lipsync_file`` in the workers
    (tests); ``on_status`` gets the running workers' ``LipSyncWorker.status()`` dicts about every POLL_S."""
    start = time.monotonic()
    todo, skipped = split_finished(jobs) if resume else (list(jobs), [])
    for s in skipped:
        log.info("line %d: %s is already finished; skipped", s.line, s.output)
    report = BatchReport(skipped=skipped)
    if todo:
        units, plans, failed = work_units(todo, options)
        with ray_session(options.address, local_cpus=options.local_cpus, timeout_s=options.connect_timeout_s,
                         worker_logs=options.worker_logs) as resources:
            workers = _start_workers(options, resources, len(units), {j.settings.version for j in todo}, job)
            report.startup_s = time.monotonic() - start
            try:
                with BatchProgress(len(units), disable=not show_progress) as bar:
                    results = _dispatch(workers, units, options.retries, bar, on_status) if units else []
            finally:
                _stop_workers(workers)
        report.results = failed + [r for r in results if r.segment is None] + join_split_jobs(plans, results)
    report.wall_s = time.monotonic() - start
    return report


def work_units(jobs: list[Job], options: ClusterOptions) -> tuple[list[WorkUnit], dict, list[UnitResult]]:
    """(units to run, {line: (job, segment plan)} of the split jobs, results of jobs that could not be planned).

    One unit per job; with ``segment_frames`` one per segment (a face pass over each video, here, before any
    worker starts; a segment whose lossless part is already complete is not run again). A job whose plan fails
    (an unreadable video, a face choice that fits no face...) is reported and the others go on."""
    if not options.segment_frames:
        return [WorkUnit(j) for j in jobs], {}, []
    from ..errors import LatentSyncError
    from ..segments import part_is_complete, plan_segments

    units, plans, failed = [], {}, []
    for job in jobs:
        try:
            plan = plan_segments(job.video, job.audio, job.settings, options.segment_frames,
                                 model_dir=options.models_dir, allow_download=options.download)
        except LatentSyncError as e:
            failed.append(UnitResult(line=job.line, output=str(job.output), status=FAILED, message=str(e)))
            continue
        plans[job.line] = (job, plan)
        for k, (start, stop) in enumerate(plan.segments):
            unit = WorkUnit(job, k, plan)
            if part_is_complete(unit.part, stop - start):
                log.info("line %d: segment %d is already done (%s)", job.line, k, unit.part)
            else:
                units.append(unit)
    return units, plans, failed


def join_split_jobs(plans: dict, results: list[UnitResult]) -> list[UnitResult]:
    """One result per split job: its segments joined into the output (one encode with the audio) once every
    segment is done; else the first failed segment's message (the done parts stay for a re-run)."""
    joined = []
    for line, (job, plan) in plans.items():
        parts = [r for r in results if r.line == line and r.segment is not None]
        bad = next((r for r in parts if r.status != DONE), None)
        if bad is not None:
            joined.append(dataclasses.replace(bad, segment=None, message=f"segment {bad.segment}: {bad.message}"))
        else:
            joined.append(_join(job, plan, parts))
    return joined


def _join(job: Job, plan, parts: list[UnitResult]) -> UnitResult:
    from ..errors import LatentSyncError
    from ..segments import join_segments

    paths = [WorkUnit(job, k, plan).part for k in range(len(plan))]
    try:
        result = join_segments(job.video, job.audio, paths, job.output, plan)
    except LatentSyncError as e:
        return UnitResult(line=job.line, output=str(job.output), status=FAILED, message=f"joining the parts: {e}")
    for path in paths:
        path.unlink(missing_ok=True)
    return UnitResult(line=job.line, output=str(job.output), status=DONE, frames=result.frames, fps=result.fps,
                      seconds=result.seconds, wall_s=sum(r.wall_s for r in parts),
                      worker=",".join(sorted({r.worker for r in parts})))


def worker_plan(options: ClusterOptions, resources: dict, n_units: int) -> tuple[int, float]:
    """(number of workers, GPUs per worker) for a cluster with ``resources``: one worker per GPU slot when the
    cluster has GPUs and the device is not the CPU, else ``options.workers`` (default 1) CPU workers; never more
    workers than slots (a worker without room would wait forever) or than jobs."""
    gpus = resources.get("GPU", 0.0) if options.device != "cpu" else 0.0
    if gpus >= options.gpus_per_worker > 0:
        per_gpu, slots = options.gpus_per_worker, int(gpus // options.gpus_per_worker)
    else:
        per_gpu, slots = 0.0, int(resources.get("CPU", 1) // max(options.cpus_per_worker, 1e-3))
        if options.device not in ("auto", "cpu"):
            raise ClusterError(f"--device {options.device}: the Ray cluster has no GPU.")
    wanted = options.workers or (slots if per_gpu else 1)
    if wanted > slots:
        log.warning("%d workers asked for but the cluster has room for %d; using %d", wanted, slots, slots)
    count = max(1, min(wanted, slots, n_units))
    return count, per_gpu


def _start_workers(options: ClusterOptions, resources: dict, n_units: int, versions: set, job) -> list:
    import ray

    count, gpus = worker_plan(options, resources, n_units)
    actor = ray.remote(LipSyncWorker).options(num_gpus=gpus, num_cpus=options.cpus_per_worker, max_restarts=-1,
                                              max_task_retries=options.retries, max_concurrency=2)
    workers = [actor.remote(options.models_dir, options.device, options.dtype, options.download, job)
               for _ in range(count)]
    log.info("%d worker%s (%s each)", count, "s" if count > 1 else "",
             f"{gpus:g} GPU" if gpus else f"{options.cpus_per_worker:g} CPU")
    try:
        states = ray.get([w.ready.remote(tuple(sorted(versions))) for w in workers])
        errors = [f"Worker {s['worker']} cannot run jobs: {s['error']}" for s in states if s["error"]]
        if errors:
            raise ClusterError(errors[0])
    except (ray.exceptions.RayError, ClusterError) as e:
        _stop_workers(workers)
        if isinstance(e, ClusterError):
            raise
        raise ClusterError(f"The workers could not start: {e}") from None
    return workers


def _stop_workers(workers: list) -> None:
    """End the worker processes now (not when their handles are garbage-collected)."""
    import ray

    for worker in workers:
        ray.kill(worker, no_restart=True)


def _dispatch(workers: list, units: list[WorkUnit], retries: int, bar: BatchProgress, on_status) -> list:
    """Hand each unit to a free worker until all are done; poll the busy workers' progress for the bar."""
    import ray

    pending, idle = deque(units), list(range(len(workers)))
    running: dict = {}  # ObjectRef of run() → (worker index, unit)
    status_refs: dict = {}  # worker index → ObjectRef of its outstanding status()
    results = []
    try:
        while pending or running:
            while idle and pending:
                index, unit = idle.pop(), pending.popleft()
                running[workers[index].run.remote(unit)] = (index, unit)
            finished, rest = ray.wait(list(running), num_returns=1, timeout=POLL_S)  # the first that ends
            if finished and rest:
                finished += ray.wait(rest, num_returns=len(rest), timeout=0)[0]  # and any others already done
            for ref in finished:
                index, unit = running.pop(ref)
                result = _result(ref, unit, retries)
                results.append(result)
                bar.finished(result)
                idle.append(index)
            statuses = _poll_status(workers, [index for index, _ in running.values()], status_refs)
            bar.running(statuses)
            if on_status is not None:
                on_status(statuses)
    except KeyboardInterrupt:
        # running jobs stop at their next step and remove their temporary files; then Ray shuts down
        for index, _ in running.values():
            workers[index].cancel.remote()
        if running:
            ray.wait(list(running), num_returns=len(running), timeout=CANCEL_WAIT_S)
        raise
    return results


def _result(ref, unit: WorkUnit, retries: int) -> UnitResult:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as e:
        message = (f"its worker died {retries + 1} time{'s' if retries else ''} while running it "
                   f"({type(e).__name__}); the job may need more host memory, or its input crashes the decoder")
    except ray.exceptions.RayError as e:
        message = f"internal error: {e}"
    log.error("line %d: %s", unit.job.line, message)
    return UnitResult(line=unit.job.line, output=str(unit.job.output), status=FAILED, message=message)


def _poll_status(workers: list, busy: list[int], status_refs: dict) -> list[dict]:
    """The status of the busy workers that answered since the last poll (one outstanding call per worker)."""
    import ray

    for index in busy:
        if index not in status_refs:
            status_refs[index] = workers[index].status.remote()
    if not status_refs:
        return []
    ready, _ = ray.wait(list(status_refs.values()), num_returns=len(status_refs), timeout=0)
    ready = set(ready)
    statuses = []
    for index, ref in list(status_refs.items()):
        if ref in ready:
            del status_refs[index]
            try:
                statuses.append(ray.get(ref))
            except ray.exceptions.RayError:
                pass  # the worker died; Ray restarts it and runs its job again
    return statuses
