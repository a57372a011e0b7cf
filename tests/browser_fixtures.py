"""Pytest fixtures for the browser tests: one real ComfyUI server with this pack and tiny random models
(tests/comfy_server.py, the COMFY harness), one headless Chromium, one ComfyUI tab, and small input clips."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
for _p in (str(REPO_ROOT / "tests"), str(REPO_ROOT)):  # also under --import-mode=importlib
    if _p not in sys.path:
        sys.path.insert(0, _p)

from browser_harness import Browser, ComfyPage, require_browser  # noqa: E402


def output_path(server, item: dict) -> Path:
    """Where a /history output entry ({"filename", "subfolder", "type"}) lies on disk."""
    return Path(server.base) / item.get("type", "output") / item.get("subfolder", "") / item["filename"]


def probe_output(server, item: dict):
    from latentsync.video import probe
    return probe(output_path(server, item))


# Test modules import these fixtures by name, so each module holds its own copy of every session fixture; the
# browser and the tab are therefore kept here once per process (Playwright's sync API allows one driver).
_ONCE: dict = {}


@pytest.fixture(scope="session")
def browser():
    require_browser()
    if "browser" not in _ONCE:
        _ONCE["browser"] = Browser.launch()
    yield _ONCE["browser"]
    _ONCE.pop("tab", None)
    b = _ONCE.pop("browser", None)
    if b is not None:
        b.close()


@pytest.fixture(scope="session")
def comfy(browser, tmp_path_factory, tiny_models):
    """The session's one real ComfyUI (COMFY harness: 127.0.0.1, --cpu, this pack in custom_nodes/, tiny models
    with a 64 px face crop in models/latentsync, the example workflows' media uploaded), shared with the
    test_comfy_server* modules."""
    import comfy_server as cs
    server = cs.shared_server(tmp_path_factory, tiny_models)
    yield server
    cs.stop_shared()


@pytest.fixture(scope="session")
def comfy_tab(browser, comfy):
    cp = _ONCE.get("tab")
    if cp is None or cp.base_url != comfy.url.rstrip("/"):
        cp = _ONCE["tab"] = ComfyPage.open(browser, comfy.url)
    yield cp


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
    """12 flat frames of 64x64 at 12 fps with one second of 16 kHz audio (for core-node checks)."""
    from latentsync.video import VideoWriter
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.mp4"
    n, fps, sr = 12, 12.0, 16000
    t = np.arange(sr, dtype=np.float32) / sr
    audio = (0.2 * np.sin(2 * np.pi * 440 * t))[None, :].astype(np.float32)
    with VideoWriter(path, fps, 64, 64, audio=(audio, sr)) as w:
        for i in range(n):
            w.write(np.full((1, 64, 64, 3), 20 * i % 255, dtype=np.uint8))
    return Clip(path, n, fps)


@dataclass
class TalkingClip:
    video: Path        # 6 frames, 384x384 (smallest size the face detector finds this face at), 25 fps, own speech
    speech: Path       # 0.1 s of speech, 16 kHz mono wav (with 0.5 s padding: 15 frames, one 16-frame window)
    n_frames: int
    fps: float
    speech_sec: float


@pytest.fixture(scope="session")
def talking_clip(tmp_path_factory) -> TalkingClip:
    """A very short talking-head clip (tools/make_sample.py's astronaut) and a separate, slightly longer speech."""
    from latentsync.video import VideoWriter
    from tools.make_sample import make_frames, make_speech, write_wav
    out = tmp_path_factory.mktemp("talking")
    n, fps, sr, speech_sec = 6, 25.0, 16000, 0.1
    speech = make_speech(speech_sec, sr)
    wav = write_wav(out / "speech.wav", speech, sr)
    video = out / "face.mp4"
    own = make_speech(n / fps, sr)
    with VideoWriter(video, fps, 384, 384, audio=(own[None], sr)) as w:
        w.write(make_frames(n, fps, 384, 384))
    return TalkingClip(video, wav, n, fps, speech_sec)
