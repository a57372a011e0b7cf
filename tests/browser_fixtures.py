"""Pytest fixtures for the browser tests: a real ComfyUI server, one headless Chromium, one ComfyUI tab."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from browser_harness import Browser, ComfyPage, require_browser

REPO_ROOT = Path(__file__).resolve().parents[1]
COMFYUI = REPO_ROOT / ".venv" / "comfyui"


@dataclass
class Server:
    url: str
    base: Path

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    def output_path(self, item: dict) -> Path:
        return self.output_dir / item.get("subfolder", "") / item["filename"]

    def probe_output(self, item: dict):
        from latentsync.video import probe
        return probe(self.output_path(item))


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """ComfyUI (core nodes only) on 127.0.0.1 with a temp base directory, --cpu."""
    base = tmp_path_factory.mktemp("comfy_base")
    for sub in ("custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir()
    port = _free_port()
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--base-directory", str(base), "--disable-auto-launch", "--disable-all-custom-nodes"],
        cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited: {(base / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(url + "/object_info/SaveVideo", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("ComfyUI did not start in 120 s")
            time.sleep(0.5)
        yield Server(url, base)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def browser():
    require_browser()
    b = Browser.launch()
    yield b
    b.close()


@pytest.fixture(scope="session")
def comfy_tab(browser, comfy):
    cp = ComfyPage.open(browser, comfy.url)
    yield cp
    cp.close()


@pytest.fixture
def page(comfy_tab):
    """The ComfyUI tab with an empty graph, no open dialog and an empty message log."""
    comfy_tab.dismiss_dialogs()
    comfy_tab.clear_graph()
    comfy_tab.messages.clear()
    yield comfy_tab


@dataclass
class Clip:
    path: Path
    n_frames: int
    fps: float


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Clip:
    """12 frames of 64x64 at 12 fps with one second of 16 kHz audio."""
    from latentsync.video import VideoWriter
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.mp4"
    n, fps, sr = 12, 12.0, 16000
    t = np.arange(sr, dtype=np.float32) / sr
    audio = (0.2 * np.sin(2 * np.pi * 440 * t))[None, :].astype(np.float32)
    with VideoWriter(path, fps, 64, 64, audio=(audio, sr)) as w:
        for i in range(n):
            frame = np.full((1, 64, 64, 3), 20 * i % 255, dtype=np.uint8)
            w.write(frame)
    return Clip(path, n, fps)
