"""A real ComfyUI with this pack: networks kept loaded by the loader node are one of ComfyUI's loaded models;
POST /free {"unload_models": true} releases them (the handle lets its networks go, the server's RSS drops) and the
next run loads them again; networks that are not kept are torn down after each run and never registered."""

from __future__ import annotations

import re
import time

import pytest
import requests

import comfy_server as cs

pytestmark = [pytest.mark.server, pytest.mark.slow]

REGISTERED = "Requested to load LatentSyncNetworks"  # ComfyUI's own line: load_models_gpu took our model
KEPT = re.compile(r"LatentSync models kept loaded in ComfyUI's model management \(([\d.]+) MB on cpu\)")
UNLOADED = "LatentSync models unloaded by ComfyUI's model management"
RELEASED = "LatentSync models released"
LOADING = "loading LatentSync 1.6 models on cpu"


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, tiny_models):
    server = cs.shared_server(tmp_path_factory, tiny_models)
    yield server
    cs.stop_shared()


def loader_prompt(keep_loaded: bool, seed: int) -> dict:
    prompt = cs.load_workflow("latentsync_model_loader")
    prompt["5"]["inputs"].update(inference_steps=1, seed=seed)
    prompt["8"]["inputs"]["keep_loaded"] = keep_loaded
    return prompt


def _run(comfy, prompt: dict) -> None:
    result = comfy.client.run(prompt, timeout=600)
    assert result.status == "success", f"{result.error_text}\n{comfy.log_tail()}"


def _counts(comfy) -> dict[str, int]:
    log = comfy.log_text()
    return {line: log.count(line) for line in (REGISTERED, UNLOADED, RELEASED, LOADING)}


def _free_models(comfy, released_before: int, timeout: float = 30.0) -> None:
    """POST /free {"unload_models": true} until the server log says our networks were released. Sent again every
    2 s: ComfyUI 0.3.75's prompt worker only notices the flag when it wakes, and a wake-up sent while it is still
    finishing the previous prompt (its gc pass) is lost until the next prompt."""
    deadline = time.monotonic() + timeout
    while comfy.log_text().count(RELEASED) == released_before:
        assert time.monotonic() < deadline, f"not released within {timeout:.0f} s:\n{comfy.log_tail()}"
        assert requests.post(f"{comfy.url}/free", json={"unload_models": True}, timeout=10).ok
        for _ in range(10):
            time.sleep(0.2)
            if comfy.log_text().count(RELEASED) != released_before:
                break


def test_free_unload_models_releases_kept_networks_and_the_next_run_reloads_them(comfy):
    before = _counts(comfy)
    _run(comfy, loader_prompt(keep_loaded=True, seed=31))
    after_run = _counts(comfy)
    assert after_run[LOADING] == before[LOADING] + 1 and after_run[REGISTERED] == before[REGISTERED] + 1
    assert after_run[RELEASED] == before[RELEASED]  # kept: not torn down after the run
    kept_mb = float(KEPT.findall(comfy.log_text())[-1])
    rss_loaded = comfy.rss()

    _free_models(comfy, after_run[RELEASED])
    after_free = _counts(comfy)
    assert after_free[UNLOADED] == after_run[UNLOADED] + 1 and after_free[RELEASED] == after_run[RELEASED] + 1
    rss_freed = comfy.rss()
    assert rss_loaded - rss_freed >= 0.5 * kept_mb * 2 ** 20, (rss_loaded / 2 ** 20, rss_freed / 2 ** 20, kept_mb)

    # same loader (its output, the handle, comes from ComfyUI's cache), another seed: the sync node runs again
    _run(comfy, loader_prompt(keep_loaded=True, seed=32))
    after_rerun = _counts(comfy)
    assert after_rerun[LOADING] == after_free[LOADING] + 1 and after_rerun[REGISTERED] == after_free[REGISTERED] + 1
    assert after_rerun[RELEASED] == after_free[RELEASED]

    _free_models(comfy, after_rerun[RELEASED])  # leave the shared server without kept networks


def test_networks_that_are_not_kept_are_torn_down_after_the_run_and_never_registered(comfy):
    before = _counts(comfy)
    _run(comfy, loader_prompt(keep_loaded=False, seed=33))
    after = _counts(comfy)
    assert after[LOADING] == before[LOADING] + 1 and after[RELEASED] == before[RELEASED] + 1
    assert after[REGISTERED] == before[REGISTERED] and after[UNLOADED] == before[UNLOADED]
