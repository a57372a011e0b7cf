"""One batch worker: a long-lived process (a Ray actor, one per GPU) that keeps the models loaded between jobs.

``LipSyncWorker`` is a plain class (no Ray import): the runner makes it an actor with ``ray.remote``; tests can
use it directly. It runs one work unit at a time; a second thread of the actor answers ``status`` (progress of
the running unit) and ``cancel`` while a unit runs. A user error (``LatentSyncError``: a bad file, no audio...)
becomes a failed ``UnitResult`` with its message; any other exception too, named as an internal error, so one
bad job never stops the batch. A worker that dies (killed, out of host memory) is restarted by Ray and its unit
run again; ``lipsync_file`` writes atomically, so a killed unit leaves no partial file under the output name.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CancelledError, LatentSyncError
from .manifest import WorkUnit

log = logging.getLogger(__name__)

DONE, FAILED, CANCELLED = "done", "failed", "cancelled"


@dataclass(frozen=True)
class UnitResult:
    line: int  # the job's manifest line
    output: str
    status: str  # DONE | FAILED | CANCELLED
    message: str = ""  # why it failed (for a person)
    frames: int = 0
    fps: float = 0.0
    seconds: float = 0.0  # length of the output video
    wall_s: float = 0.0  # time the worker spent on the unit
    worker: str = ""  # host:pid
    segment: int | None = None  # the segment of a split video, None for a whole job


def default_job(video, audio, output, settings, *, models, progress, cancel):
    """The real job: ``latentsync.api.lipsync_file`` (imported when the first job runs)."""
    from ..api import lipsync_file

    return lipsync_file(video, audio, output, settings, models=models, progress=progress, cancel=cancel)


def segment_job(unit: WorkUnit, *, models, progress, cancel):
    """One segment of a split video: ``latentsync.segments.run_segment`` into the unit's lossless part file."""
    from ..segments import run_segment

    job = unit.job
    return run_segment(job.video, job.audio, unit.part, job.settings, unit.plan, unit.segment, models=models,
                       progress=progress, cancel=cancel)


class LipSyncWorker:
    """Runs work units with models kept loaded: one ``ModelHandle(keep_loaded=True)`` per model version.

    ``job`` has ``lipsync_file``'s signature (keyword-only ``models``, ``progress``, ``cancel``) and returns an
    object with ``frames``, ``fps`` and ``seconds``; tests pass a stand-in, batches use the default."""

    def __init__(self, models_dir: str | None = None, device: str = "auto", dtype: str = "auto",
                 download: bool = False, job: Callable | None = None):
        self.models_dir, self.device, self.dtype, self.download = models_dir, device, dtype, download
        self.job = job or default_job
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._handles: dict = {}
        self._cancel = threading.Event()
        self._progress: tuple = (None, 0, 0)  # (line, done, total) of the running unit; a tuple swap is atomic

    def models(self, version: str):
        """The kept-loaded ModelHandle for ``version`` (made on first use)."""
        if version not in self._handles:
            from ..runtime import ModelHandle

            self._handles[version] = ModelHandle(version, self.device, self.dtype, keep_loaded=True,
                                                 models_dir=self.models_dir, download=self.download)
        return self._handles[version]

    def ready(self, versions: tuple[str, ...]) -> dict:
        """Load the models of ``versions`` now (found, or fetched when ``download``), so missing or broken weights
        stop the batch before any job and every job finds them loaded; a stand-in ``job`` loads nothing.
        Returns {"worker", "pid", "error"}: error None when ready, else a message for a person."""
        from ..runtime import Host

        try:
            for version in versions:
                handle = self.models(version)
                if self.job is default_job:
                    with handle.lock:
                        handle.acquire(Host())
            error = None
        except LatentSyncError as e:
            error = str(e)
        return {"worker": self.name, "pid": os.getpid(), "error": error}

    def run(self, unit: WorkUnit) -> UnitResult:
        job = unit.job
        self._cancel.clear()
        self._progress = (unit.key, 0, 0)
        start = time.monotonic()

        def result(status, message="", **values):
            return UnitResult(line=job.line, output=str(job.output), status=status, message=message,
                              wall_s=time.monotonic() - start, worker=self.name, **values)

        def progress(done: int, total: int, info: dict | None = None) -> None:
            self._progress = (unit.key, int(done), int(total))

        models = self.models(job.settings.version)
        try:
            if unit.segment is not None:
                out = segment_job(unit, models=models, progress=progress, cancel=self._cancel.is_set)
            else:
                out = self.job(job.video, job.audio, job.output, job.settings, models=models, progress=progress,
                               cancel=self._cancel.is_set)
        except CancelledError as e:
            return result(CANCELLED, str(e) or "cancelled")
        except LatentSyncError as e:
            return result(FAILED, str(e))
        except Exception as e:  # noqa: BLE001 - a bug on one job is reported; the batch goes on
            log.exception("line %d: internal error", job.line)
            return result(FAILED, f"internal error: {type(e).__name__}: {e}")
        finally:
            self._progress = (None, 0, 0)
        return result(DONE, frames=int(out.frames), fps=float(out.fps), seconds=float(out.seconds),
                      segment=unit.segment)

    def status(self) -> dict:
        """Progress of the running unit: {"worker", "pid", "unit" ((line, segment); None when idle), "done",
        "total"}."""
        unit, done, total = self._progress
        return {"worker": self.name, "pid": os.getpid(), "unit": unit, "done": done, "total": total}

    def cancel(self) -> None:
        """Ask the running unit to stop at its next check (it raises CancelledError and writes nothing)."""
        self._cancel.set()
