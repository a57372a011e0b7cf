"""A real ComfyUI with this pack: errors arrive as execution_error with our message and the server keeps serving;
POST /interrupt ends a run mid-way; five prompts back to back succeed without growing memory, leaving temp
files, or changing the server process's environment / CUDA memory fraction."""

from __future__ import annotations

import json
import re

import pytest

import comfy_server as cs

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, tiny_models):
    server = cs.shared_server(tmp_path_factory, tiny_models)
    yield server
    cs.stop_shared()


def basic(steps: int = 1, seed: int = 1247) -> dict:
    prompt = cs.load_workflow("latentsync_basic")
    prompt["5"]["inputs"].update(inference_steps=steps, seed=seed)
    return prompt


def _error(comfy, prompt: dict):
    result = comfy.client.run(prompt, timeout=600)
    assert result.status == "error", result.status
    assert comfy.alive and comfy.client.get("/system_stats")["system"]  # still serving
    return result.error


def test_missing_weights_is_a_clear_execution_error(comfy, tmp_path):
    prompt = cs.load_workflow("latentsync_model_loader")
    prompt["8"]["inputs"].update(version="1.5", models_dir=str(tmp_path))  # an empty folder
    error = _error(comfy, prompt)
    assert error["node_id"] == "8" and error["node_type"] == "LatentSyncModelLoader"
    assert error["exception_type"].endswith("MissingWeightsError")
    message = error["exception_message"]
    assert "LatentSync 1.5 weights are missing" in message
    assert str(tmp_path) in message and "python -m latentsync download" in message


def test_audio_without_an_audio_stream_is_a_clear_execution_error(comfy):
    prompt = basic()
    prompt["5"]["inputs"].update(images=["2", 0], audio=["2", 1])  # the sample clip is silent: AUDIO is None
    error = _error(comfy, prompt)
    assert error["node_id"] == "5" and error["node_type"] == "LatentSyncNode"
    assert "no audio stream" in error["exception_message"]


def test_a_file_that_is_not_a_video_is_a_clear_execution_error(comfy):
    prompt = cs.load_workflow("latentsync_streaming")
    prompt["1"]["inputs"]["file"] = cs.BAD_VIDEO
    prompt["9"]["inputs"]["inference_steps"] = 1
    error = _error(comfy, prompt)
    assert error["node_id"] == "9" and error["node_type"] == "LatentSyncVideo"
    assert "is not a readable video file" in error["exception_message"]
    assert cs.BAD_VIDEO in error["exception_message"]
    assert not [p for p in comfy.temp_files() if "latentsync_" in p.name and p.suffix == ".mp4"
                and p.stat().st_size == 0]  # no half-written output left behind


def test_interrupt_mid_run_then_the_next_prompt_succeeds(comfy):
    torn_down_before = comfy.log_text().count("LatentSync models released")
    sent = []

    def on_message(kind, data):
        if kind == "progress" and str(data.get("node")) == "5" and data.get("value", 0) >= 1 and not sent:
            sent.append(data)
            comfy.client.interrupt()

    result = comfy.client.run(basic(steps=6, seed=7), timeout=600, on_message=on_message)
    assert sent, "no denoising progress seen before the end"
    assert result.status == "interrupted", (result.status, result.error_text)
    steps = [d["value"] for k, d in result.messages if k == "progress" and str(d.get("node")) == "5"]
    total = sent[0]["max"]
    assert steps[-1] < total  # stopped before the end of the job
    assert comfy.log_text().count("LatentSync models released") == torn_down_before + 1  # freed after the interrupt
    ok = comfy.client.run(basic(steps=1, seed=8), timeout=600)
    assert ok.status == "success", ok.error_text


def _probe(comfy, tag: str) -> dict:
    result = comfy.client.run({"1": {"class_type": "LatentSyncTestProbe", "inputs": {"tag": tag}}}, timeout=120)
    assert result.status == "success", result.error_text
    return json.loads(result.outputs["1"]["text"][0])


def test_five_prompts_back_to_back(comfy):
    before = _probe(comfy, "before")
    temp_before = set(comfy.temp_files())  # other tests sharing this server may have left previews there
    rss, statuses = [], []
    for i in range(5):
        result = comfy.client.run(basic(steps=1, seed=100 + i), timeout=600)
        statuses.append((result.status, result.error_text))
        rss.append(comfy.rss())
    after = _probe(comfy, "after")
    assert statuses == [("success", "")] * 5
    assert abs(rss[-1] - rss[0]) <= 0.05 * rss[0], [r / 2**20 for r in rss]
    assert set(comfy.temp_files()) - temp_before == set()
    assert after["env_sha"] == before["env_sha"], set(after["env_keys"]) ^ set(before["env_keys"])
    assert after["memory_fraction"] == before["memory_fraction"]
    runs = re.findall(r"plan: tier (\w+): window_batch (\d+), vae_slice (\d+), fraction (\S+)", comfy.log_text())
    assert runs and all(r == ("cpu", "1", "4", "none") for r in runs)  # --cpu: no CUDA fraction is ever set
