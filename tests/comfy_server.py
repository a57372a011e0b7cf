"""Test harness: a real ComfyUI (the vendored 0.3.75 in the running venv's comfyui/) with this pack, on 127.0.0.1.

`ComfyServer.start(base_dir, models_dir)` lays out base_dir (custom_nodes/ input/ output/ models/ temp/ user/),
links this pack into custom_nodes/ and the given model folder into models/latentsync/, starts
`main.py --cpu --listen 127.0.0.1 --port P --disable-api-nodes --base-directory base_dir
--database-url sqlite:///:memory: --dont-print-server`, and waits for /system_stats. `stop()` ends it.
Also here: the UI→API workflow converter the tests use, the VHS → core node swap for shared workflows, the test
media (`make_media`) and `run_recording_texts` (a run that also records the text a node shows on itself).
"""

from __future__ import annotations

import copy
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.queue_workflow import ComfyClient  # noqa: E402

COMFY_DIR = Path(sys.prefix) / "comfyui"  # tools/env.sh and tools/env_today.sh put it inside their venv
PYTHON = Path(sys.executable)
PACK_NAME = "comfyui-latentsync"
LAYOUT = ("custom_nodes", "input", "output", "models", "temp", "user")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, base: Path, port: int, proc: subprocess.Popen, log_path: Path):
        self.base, self.port, self.proc, self.log_path = base, port, proc, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.client = ComfyClient(self.url, timeout=60)
        self.media: dict[str, Path] = {}  # name in the input folder → the local file uploaded under that name

    # ------------------------------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, base: Path, models_dir: Path | None = None, timeout: float = 240.0,
              extra_args: tuple[str, ...] = ()) -> "ComfyServer":
        base = Path(base)
        for name in LAYOUT:
            (base / name).mkdir(parents=True, exist_ok=True)
        pack = base / "custom_nodes" / PACK_NAME
        if not pack.exists():
            pack.symlink_to(REPO_ROOT, target_is_directory=True)
        if models_dir is not None:
            link = base / "models" / "latentsync"
            if not link.exists():
                link.symlink_to(Path(models_dir).resolve(), target_is_directory=True)
        port = free_port()
        log_path = base / "comfyui.log"
        cmd = [str(PYTHON), str(COMFY_DIR / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--disable-api-nodes", "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
               "--dont-print-server", *extra_args]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, cwd=str(base), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        server = cls(base, port, proc, log_path)
        server._wait_ready(timeout)
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/system_stats", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not start within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    # ------------------------------------------------------------------------------------------ probes
    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def temp_files(self) -> list[Path]:
        return sorted(p for p in (self.base / "temp").rglob("*") if p.is_file())

    def upload(self, path: Path, name: str | None = None) -> str:
        return self.client.upload(path, name)


# ---------------------------------------------------------------------------------------------- workflows
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(spec) -> bool:
    typ = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(typ, list) or typ in WIDGET_TYPES) and not opts.get("forceInput")


def _default(spec):
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in opts:
        return opts["default"]
    options = spec[0] if isinstance(spec[0], list) else opts.get("options") or []
    if options:
        return options[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0])


def ui_to_api(workflow: dict, object_info: dict, strict: bool = False) -> dict:
    """Convert a UI-format workflow (what the frontend saves) to the API format /prompt takes, the way the
    frontend does: links become [node_id, slot]; widgets_values map onto the widget inputs in the node's
    input order (required then optional), skipping the control_after_generate value after a seed; widgets an
    older workflow does not carry take their defaults, as when the frontend loads it. ``strict``: a node whose
    list has fewer widget values than the node has widgets is a ValueError (for files we write ourselves)."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt: dict = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4):  # muted / bypassed
            continue
        info = object_info[node["type"]]
        inputs: dict = {}
        for inp in node.get("inputs", []) or []:
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        values = node.get("widgets_values") or []
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
        if isinstance(values, dict):
            for name in order:
                if name in values and name not in inputs and _is_widget(specs[name]):
                    inputs[name] = values[name]
        else:
            pos = 0
            for name in order:
                spec = specs[name]
                if not _is_widget(spec):
                    continue
                if pos >= len(values):  # older workflows carry fewer widgets: the rest take their defaults
                    if strict:
                        raise ValueError(f"node {node['id']} ({node['type']}) has no value for widget {name!r}")
                    if name not in inputs:
                        inputs[name] = _default(spec)
                    continue
                if name not in inputs:
                    inputs[name] = values[pos]
                pos += 1
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if opts.get("control_after_generate") and pos < len(values) and isinstance(values[pos], str):
                    pos += 1
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def swap_vhs_for_core(workflow: dict, video: str, frame_rate_default: float = 25.0) -> dict:
    """Replace VideoHelperSuite's VHS_LoadVideo / VHS_VideoCombine with core nodes, keeping every link:
    VHS_LoadVideo → LoadVideo + GetVideoComponents (IMAGE slot 0 → images 0, audio slot 2 → audio 1);
    VHS_VideoCombine → CreateVideo (images, audio, frame_rate) + SaveVideo."""
    wf = copy.deepcopy(workflow)
    next_node = max(n["id"] for n in wf["nodes"]) + 1
    next_link = max((link[0] for link in wf["links"]), default=0) + 1
    nodes = []
    for node in wf["nodes"]:
        if node["type"] == "VHS_LoadVideo":
            loader_id, link_id = next_node, next_link
            next_node, next_link = next_node + 1, next_link + 1
            nodes.append({"id": loader_id, "type": "LoadVideo", "inputs": [], "mode": 0,
                          "outputs": [{"name": "VIDEO", "type": "VIDEO", "links": [link_id]}],
                          "widgets_values": [video, "image"]})
            slot_map = {0: 0, 2: 1}
            for link in wf["links"]:
                if link[1] == node["id"]:
                    link[2] = slot_map[link[2]]
            wf["links"].append([link_id, loader_id, 0, node["id"], 0, "VIDEO"])
            nodes.append({"id": node["id"], "type": "GetVideoComponents", "mode": node.get("mode", 0),
                          "inputs": [{"name": "video", "type": "VIDEO", "link": link_id}], "widgets_values": []})
        elif node["type"] == "VHS_VideoCombine":
            values = node.get("widgets_values") or {}
            rate = values.get("frame_rate", frame_rate_default) if isinstance(values, dict) else frame_rate_default
            prefix = values.get("filename_prefix", "latentsync") if isinstance(values, dict) else "latentsync"
            save_id, link_id = next_node, next_link
            next_node, next_link = next_node + 1, next_link + 1
            kept = [i for i in node.get("inputs", []) if i["name"] in ("images", "audio")]
            nodes.append({"id": node["id"], "type": "CreateVideo", "mode": node.get("mode", 0), "inputs": kept,
                          "widgets_values": [rate]})
            wf["links"].append([link_id, node["id"], 0, save_id, 0, "VIDEO"])
            nodes.append({"id": save_id, "type": "SaveVideo", "mode": 0,
                          "inputs": [{"name": "video", "type": "VIDEO", "link": link_id}],
                          "widgets_values": [f"video/{prefix}", "auto", "auto"]})
        else:
            nodes.append(node)
    wf["nodes"] = nodes
    return wf


def env_snapshot_node_source() -> str:
    """Source of a test-only custom node (installed into the test server's custom_nodes, never shipped) that
    reports what a job could have changed in the server process: os.environ and the CUDA memory fraction."""
    return '''
import hashlib, json, os
import torch

class LatentSyncTestProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tag": ("STRING", {"default": ""})}}
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def probe(self, tag):
        fraction = None
        if torch.cuda.is_available():
            fraction = torch.cuda.get_per_process_memory_fraction()
        env = json.dumps(sorted(os.environ.items()))
        state = {"tag": tag, "env_sha": hashlib.sha256(env.encode()).hexdigest(), "env_keys": sorted(os.environ),
                 "cuda": torch.cuda.is_available(), "memory_fraction": fraction}
        return {"ui": {"text": [json.dumps(state)]}}

    @classmethod
    def IS_CHANGED(cls, tag):
        return float("nan")

NODE_CLASS_MAPPINGS = {"LatentSyncTestProbe": LatentSyncTestProbe}
'''


# ---------------------------------------------------------------------------------------------- session setup
SAMPLE_VIDEO, SAMPLE_AUDIO, BAD_VIDEO = "latentsync_sample.mp4", "latentsync_sample.wav", "latentsync_bad.mp4"
SAMPLE_FRAMES, SAMPLE_FPS, SAMPLE_SIZE = 20, 25.0, 384  # 0.8 s; 384 px is the smallest size the detector finds
SPEECH_SECONDS, SPEECH_RATE = 0.61, 22050  # 15.25 frames at 25 fps: no .5 rounding ties in any rule
DIALOGUE_VIDEO, SPEAKER_AUDIO = "latentsync_dialogue.mp4", ("latentsync_speaker1.wav", "latentsync_speaker2.wav")
DIALOGUE_FRAMES, DIALOGUE_SIZE = 20, (640, 360)  # two people (tools/make_sample.make_dialogue_frames), 0.8 s
TEST_RESOLUTION = 64  # face crop of the tiny test models (CPU time); the real 1.6 models use 512
_SHARED: dict = {}


def prepare_models(src: Path, dst: Path, resolution: int = TEST_RESOLUTION) -> Path:
    """Copy the tiny random models into dst and shrink their face crop (unet_config.json "resolution") so that a
    CPU job takes seconds. The networks are fully convolutional/attention: the same weights run at any size."""
    import json
    import shutil

    shutil.copytree(src, dst)
    cfg = dst / "unet_config.json"
    config = json.loads(cfg.read_text())
    config["resolution"] = resolution
    cfg.write_text(json.dumps(config))
    return dst


def make_media(folder: Path) -> dict[str, Path]:
    """The clips the tests upload: a silent 20-frame 384 px astronaut clip, 0.61 s of speech, a garbage .mp4, and
    for the dialogue example a silent 20-frame 640x360 two-person clip with speech for speaker 1 (left) and
    digital silence for speaker 2 (right), both as long as the clip."""
    import numpy as np

    from latentsync.video import VideoWriter
    from tools.make_sample import make_dialogue_frames, make_frames, make_speech, write_wav

    folder.mkdir(parents=True, exist_ok=True)
    video = folder / SAMPLE_VIDEO
    with VideoWriter(video, SAMPLE_FPS, SAMPLE_SIZE, SAMPLE_SIZE) as w:
        w.write(make_frames(SAMPLE_FRAMES, SAMPLE_FPS, SAMPLE_SIZE, SAMPLE_SIZE))
    wav = write_wav(folder / SAMPLE_AUDIO, make_speech(SPEECH_SECONDS, SPEECH_RATE), SPEECH_RATE)
    bad = folder / BAD_VIDEO
    bad.write_bytes(b"this is not a video file\n" * 64)
    dialogue = folder / DIALOGUE_VIDEO
    with VideoWriter(dialogue, SAMPLE_FPS, *DIALOGUE_SIZE) as w:
        w.write(make_dialogue_frames(DIALOGUE_FRAMES, SAMPLE_FPS, *DIALOGUE_SIZE))
    seconds = DIALOGUE_FRAMES / SAMPLE_FPS
    talk = write_wav(folder / SPEAKER_AUDIO[0], make_speech(seconds, SPEECH_RATE), SPEECH_RATE)
    quiet = write_wav(folder / SPEAKER_AUDIO[1], np.zeros(round(seconds * SPEECH_RATE), np.float32), SPEECH_RATE)
    return {SAMPLE_VIDEO: video, SAMPLE_AUDIO: wav, BAD_VIDEO: bad, DIALOGUE_VIDEO: dialogue,
            SPEAKER_AUDIO[0]: talk, SPEAKER_AUDIO[1]: quiet}


FACELESS_VIDEO, FACELESS_FRAMES = "latentsync_faceless.mp4", range(5, 10)


def write_faceless_clip(folder: Path) -> Path:
    """The sample clip (20 frames, 384 px, 25 fps) with frames 5..9 showing only the background, as
    folder/latentsync_faceless.mp4."""
    from latentsync.video import VideoWriter
    from tools.make_sample import make_frames

    path = Path(folder) / FACELESS_VIDEO
    with VideoWriter(path, SAMPLE_FPS, SAMPLE_SIZE, SAMPLE_SIZE) as w:
        w.write(make_frames(SAMPLE_FRAMES, SAMPLE_FPS, SAMPLE_SIZE, SAMPLE_SIZE, faceless=FACELESS_FRAMES))
    return path


def shared_server(tmp_path_factory, tiny_models: Path) -> ComfyServer:
    """One ComfyUI per test session (all test_comfy_server* modules), with the tiny models, the media uploaded
    and a test-only probe node; stopped by `stop_shared()` at session end."""
    server = _SHARED.get("server")
    if server is not None and server.alive:
        return server
    base = tmp_path_factory.mktemp("comfy")
    (base / "models").mkdir()
    prepare_models(Path(tiny_models), base / "models" / "latentsync")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "latentsync_test_probe.py").write_text(env_snapshot_node_source())
    media = make_media(tmp_path_factory.mktemp("media"))
    server = ComfyServer.start(base)
    server.media = media
    _SHARED["server"] = server
    for name, path in media.items():
        server.upload(path, name)
    return server


def stop_shared() -> None:
    server = _SHARED.pop("server", None)
    if server is not None:
        server.stop()


def probe_output(path: Path) -> tuple[int, float, float]:
    """(frames, fps, audio seconds) of a written video, decoded with PyAV."""
    from latentsync.video import probe, read_audio

    info = probe(path)
    audio = read_audio(path)
    seconds = audio[0].shape[1] / audio[1] if audio is not None else 0.0
    return info.n_frames, info.fps, seconds


def load_workflow(name: str, api: bool = True) -> dict:
    import json

    folder = REPO_ROOT / "example_workflows" / ("api" if api else "")
    return json.loads((folder / f"{name}.json").read_text())


# ---------------------------------------------------------------------------------------------- node texts
BINARY_TEXT = 3  # protocol.BinaryEventTypes.TEXT: what PromptServer.send_progress_text sends


class _TextRecorder:
    """The client's websocket, passed through unchanged, noting every binary TEXT event as (node id, text)."""

    def __init__(self, ws):
        self.ws, self.texts = ws, []

    def settimeout(self, seconds: float) -> None:
        self.ws.settimeout(seconds)

    def recv(self):
        raw = self.ws.recv()
        if isinstance(raw, bytes) and len(raw) >= 8 and struct.unpack(">I", raw[:4])[0] == BINARY_TEXT:
            (length,) = struct.unpack(">I", raw[4:8])
            self.texts.append((raw[8:8 + length].decode(), raw[8 + length:].decode()))
        return raw


def run_recording_texts(client: ComfyClient, prompt: dict, timeout: float = 600.0):
    """Queue ``prompt`` and follow it like ``client.run``; returns (RunResult, [(node id, text), ...]) with the
    texts nodes showed on themselves over the websocket (binary TEXT events, the frontend's "progress text")."""
    ws = client.connect()
    try:
        recorder = _TextRecorder(ws)
        prompt_id = client.queue(prompt)
        return client.follow(recorder, prompt_id, timeout), recorder.texts
    finally:
        ws.close()
