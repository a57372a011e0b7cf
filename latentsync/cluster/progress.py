"""One progress bar for a whole batch (tqdm): work units (jobs, or segments of split videos) done / total,
counting the running units' denoising steps as fractions (so the ETA moves while long units run), with frames
written, frames per second and failures."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from .worker import DONE, UnitResult

BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n:.1f}/{total_fmt} units [{elapsed}<{remaining}{postfix}]"


class BatchProgress:
    """``with BatchProgress(n_jobs) as bar: bar.running(statuses); bar.finished(result)``."""

    def __init__(self, total: int, disable: bool = False):
        self.total, self.disable = total, disable
        self.done = 0
        self.frames = self.failures = 0
        self.partial: dict[tuple, float] = {}  # running unit (line, segment) → fraction of its steps done
        self.closed_units: set[tuple] = set()
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
        """Workers' ``status()``: {"unit", "done", "total"} of the unit each one is running."""
        for s in statuses:
            unit = tuple(s["unit"]) if s.get("unit") is not None else None
            if unit is not None and unit not in self.closed_units and s.get("total"):
                self.partial[unit] = min(1.0, s["done"] / s["total"])
        self._refresh()

    def finished(self, result: UnitResult) -> None:
        unit = (result.line, -1 if result.segment is None else result.segment)
        self.closed_units.add(unit)
        self.partial.pop(unit, None)
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
