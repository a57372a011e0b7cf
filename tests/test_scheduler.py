"""DDIM scheduler: the reference's config, parity with the ddim/ fixture."""

from __future__ import annotations

import json

from latentsync.scheduler import CONFIG_PATH, make_scheduler


def test_ddim_parity(parity_dir):
    from tools.parity_checks import ddim as check_ddim

    res = check_ddim.check(parity_dir / "ddim")
    assert res["ok"], res
    assert res["config_equal"] and all(res["timesteps_exact"].values()) and res["max_abs_err"] <= 1e-6


def test_shipped_config_is_the_reference_file(parity_dir):
    assert json.loads(CONFIG_PATH.read_text()) == json.loads((parity_dir / "ddim" / "scheduler_config.json").read_text())
    a, b = make_scheduler(), make_scheduler()
    a.set_timesteps(20)
    assert b.timesteps.numel() == 1000  # independent instances: one job's steps don't leak into another
    assert a.timesteps.tolist() == list(range(951, 0, -50))
    assert a.config.prediction_type == "epsilon" and a.config.timestep_spacing == "leading"
