"""The memory policy every front end shares (latentsync.runtime): tiers, CPU/MPS, overrides, scoped memory
fraction, memory log and the OOM retry."""

from __future__ import annotations

import logging

import pytest
import torch

from latentsync import runtime as ml
from latentsync.errors import LatentSyncError

GIB = 1024 ** 3


@pytest.mark.parametrize("total_gib, batch, windows, fraction, tier", [
    (80, 8, 2, 0.75, "high"),
    (24, 8, 2, 0.75, "high"),
    (20.5, 8, 2, 0.75, "high"),
    (20, 4, 1, 0.75, "medium"),  # exactly 20 is not "> 20"
    (16, 4, 1, 0.75, "medium"),  # fraction 0.75 starts at 16
    (15.9, 4, 1, 0.70, "medium"),
    (12, 4, 1, 0.70, "medium"),
    (8.1, 4, 1, 0.70, "medium"),
    (8, 2, 1, 0.70, "low"),
    (6, 2, 1, 0.70, "low"),
    (2, 2, 1, 0.70, "low"),
])
def test_cuda_tiers(total_gib, batch, windows, fraction, tier):
    total = int(total_gib * GIB)
    plan = ml.plan_for(total, total, "cuda")
    assert (plan.batch, plan.vae_slice, plan.window_batch, plan.memory_fraction, plan.tier) == \
        (batch, batch, windows, fraction, tier)
    assert plan.total_vram_bytes == total and plan.device_type == "cuda"


def test_cuda_device_string_with_index():
    assert ml.plan_for(24 * GIB, 24 * GIB, "cuda:1").tier == "high"


def test_busy_card_drops_one_tier():
    plan = ml.plan_for(24 * GIB, 6 * GIB, "cuda")
    assert (plan.tier, plan.vae_slice, plan.window_batch) == ("medium", 4, 1)
    assert plan.memory_fraction == 0.75  # the fraction still follows the card's size
    low = ml.plan_for(6 * GIB, 1 * GIB, "cuda")
    assert (low.tier, low.vae_slice) == ("low", 2)  # nothing below low


def test_cpu_plan():
    plan = ml.plan_for(64 * GIB, 32 * GIB, "cpu")
    assert (plan.tier, plan.window_batch, plan.vae_slice, plan.memory_fraction) == ("cpu", 1, 4, None)


def test_mps_plan_uses_unified_memory_but_no_fraction():
    plan = ml.plan_for(32 * GIB, 32 * GIB, "mps")
    assert (plan.tier, plan.window_batch, plan.vae_slice, plan.memory_fraction) == ("mps", 1, 8, None)
    small = ml.plan_for(8 * GIB, 8 * GIB, "mps")
    assert (small.vae_slice, small.memory_fraction) == (2, None)


def test_overrides_replace_the_tiers_numbers():
    plan = ml.plan_for(24 * GIB, 24 * GIB, "cuda").with_overrides(window_batch=3, vae_slice=6)
    assert (plan.window_batch, plan.vae_slice, plan.memory_fraction, plan.tier) == (3, 6, 0.75, "high")
    assert "override" in plan.reason
    same = ml.plan_for(12 * GIB, 12 * GIB, "cuda")
    assert same.with_overrides(0, 0) is same  # 0 = automatic
    assert same.describe() == "tier medium: window_batch 1, vae_slice 4, fraction 0.70"


def test_lower_walks_down_the_tiers():
    plan = ml.plan_for(24 * GIB, 24 * GIB, "cuda")
    seen = []
    while plan is not None:
        seen.append((plan.tier, plan.vae_slice, plan.window_batch))
        plan = plan.lower()
    assert seen == [("high", 8, 2), ("medium", 4, 1), ("low", 2, 1), ("low", 1, 1)]


class FakeCuda:
    """Records what the limiter does to torch.cuda."""

    class OutOfMemoryError(RuntimeError):
        pass

    def __init__(self, available=True, fraction=1.0):
        self.available, self.fraction, self.calls, self.emptied = available, fraction, [], 0

    def is_available(self):
        return self.available

    def get_per_process_memory_fraction(self, device=None):
        return self.fraction

    def set_per_process_memory_fraction(self, fraction, device=None):
        self.calls.append(fraction)
        self.fraction = fraction

    def empty_cache(self):
        self.emptied += 1

    def memory_allocated(self, device=None):
        return 3_000_000_000

    def memory_reserved(self, device=None):
        return 19_000_000_000

    def mem_get_info(self, device=None):
        return 5_000_000_000, 24_000_000_000


def test_fraction_is_applied_only_inside_the_job_and_restored():
    cuda = FakeCuda(fraction=0.9)
    with ml.memory_fraction_scope(0.75, cuda=cuda):
        assert cuda.fraction == 0.75
    assert cuda.fraction == 0.9 and cuda.calls == [0.75, 0.9]


def test_fraction_restored_after_an_error():
    cuda = FakeCuda(fraction=1.0)
    with pytest.raises(KeyError):
        with ml.memory_fraction_scope(0.7, cuda=cuda):
            raise KeyError("boom")
    assert cuda.fraction == 1.0


def test_fraction_untouched_on_cpu_or_without_fraction():
    cuda = FakeCuda(available=False)
    with ml.memory_fraction_scope(0.75, cuda=cuda):
        pass
    cuda2 = FakeCuda()
    with ml.memory_fraction_scope(None, cuda=cuda2):
        pass
    assert cuda.calls == [] and cuda2.calls == []


def test_real_torch_cuda_scope_is_a_noop_without_a_gpu():
    if torch.cuda.is_available():
        before = torch.cuda.get_per_process_memory_fraction()
        with ml.memory_fraction_scope(0.5):
            assert torch.cuda.get_per_process_memory_fraction() == pytest.approx(0.5)
        assert torch.cuda.get_per_process_memory_fraction() == pytest.approx(before)
    else:
        with ml.memory_fraction_scope(0.5):
            pass


def test_log_memory_usage_warns_above_threshold(caplog):
    cuda = FakeCuda()
    with caplog.at_level(logging.INFO, logger="latentsync.runtime"):
        stats = ml.log_memory_usage("after decode", cuda=cuda)
        ml.log_memory_usage("quiet", threshold_gb=30, cuda=cuda)
    assert stats == {"allocated_gb": 3.0, "reserved_gb": 19.0, "free_gb": 5.0, "total_gb": 24.0}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "after decode" in warnings[0].getMessage()
    assert ml.log_memory_usage("cpu", cuda=FakeCuda(available=False)) is None


def _oom():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_oom_retries_once_one_tier_down(caplog):
    plans, freed = [], []

    def job(plan):
        plans.append(plan)
        if len(plans) == 1:
            raise _oom()
        return "done"

    with caplog.at_level(logging.WARNING, logger="latentsync.runtime"):
        result = ml.run_with_oom_retry(job, ml.plan_for(24 * GIB, 24 * GIB, "cuda"), free=lambda: freed.append(1))
    assert result == "done"
    assert [(p.vae_slice, p.window_batch) for p in plans] == [(8, 2), (4, 1)]
    assert freed == [1]
    assert any("retrying once" in r.getMessage() for r in caplog.records)


def test_second_oom_is_a_clear_error():
    calls = []

    def job(plan):
        calls.append(plan)
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(ml.OutOfMemoryError) as info:
        ml.run_with_oom_retry(job, ml.plan_for(12 * GIB, 12 * GIB, "cuda"))
    assert len(calls) == 2
    assert isinstance(info.value, LatentSyncError)
    assert "window_batch=1 and vae_slice=2" in str(info.value)


def test_other_errors_are_not_retried():
    calls = []

    def job(plan):
        calls.append(plan)
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        ml.run_with_oom_retry(job, ml.plan_for(12 * GIB, 12 * GIB, "cuda"))
    assert len(calls) == 1


def test_lowest_gpu_tier_runs_the_cfg_halves_serially():
    """Only the smallest GPU tier trades speed for memory by running the CFG halves one after the other."""
    assert [ml.plan_for(g * GIB, g * GIB, "cuda").cfg_serial for g in (80, 12, 8, 6)] == [False, False, True, True]
    assert ml.plan_for(24 * GIB, 24 * GIB, "cuda").lower().lower().cfg_serial  # OOM retry reaches it too
    assert ml.plan_for(6 * GIB, 6 * GIB, "mps").cfg_serial
    assert not ml.plan_for(0, 0, "cpu").cfg_serial
