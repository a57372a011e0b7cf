"""One progress bar for a whole batch (tqdm): jobs done / total, counting the running jobs' denoising steps as
fractions of a job (so the ETA moves while long jobs run), with frames written, frames per second and failures."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from .worker import DONE, UnitResult

BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} jobs [{elapsed}<{remaining}{postfix}]"


class BatchProgress:
    """``with BatchProgress(n_jobs) as bar: bar.running(statuses); bar.finished(result)``."""

    def __init__(self, total: int, disable: bool = False):
        self.total, self.disable = total, disable
        self.done = 0
        self.frames = self.failures = 0
        self.partial: dict[int, float] = {}  # manifest line of a running job → fraction of its steps done
        self.closed_lines: set[int] = set()
        self._start = time.monotonic()
        self._bar = None

    def __enter__(self) -> BatchProgress:
        self._bar = tqdm(total=self.total, desc="lip-sync ", bar_format=BAR_FORMAT, file=sys.stderr,
                         dynamic_ncols=True, disable=self.disable)
        return self

    def __exit__(self, *exc) -> None:
        self._refresh()
        self._bar.close()

    def running(self, statuses: list[dict]) -> None:
        """Workers' ``status()``: {"line", "done", "total"} of the job each one is running."""
        for s in statuses:
            if s.get("line") is not None and s["line"] not in self.closed_lines and s.get("total"):
                self.partial[s["line"]] = min(1.0, s["done"] / s["total"])
        self._refresh()

    def finished(self, result: UnitResult) -> None:
        self.closed_lines.add(result.line)
        self.partial.pop(result.line, None)
        self.done += 1
        self.frames += result.frames
        self.failures += result.status != DONE
        self._refresh()

    @property
    def jobs(self) -> float:
        """Jobs done, counting running jobs by the fraction of their steps done."""
        return self.done + sum(self.partial.values())

    def _refresh(self) -> None:
        if self._bar is None:
            return
        elapsed = max(time.monotonic() - self._start, 1e-6)
        postfix = f"{self.frames} frames, {self.frames / elapsed:.1f} fps"  # tqdm puts ", " before it
        if self.failures:
            postfix += f", {self.failures} failed"
        self._bar.n = self.jobs
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()
