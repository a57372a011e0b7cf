"""Weight downloads against a local Hub: a real HTTP server on 127.0.0.1 that speaks just enough of the Hub's
file protocol for huggingface_hub (HEAD/GET /{repo}/resolve/{revision}/{file} with X-Repo-Commit and ETag; LFS
files answer 302 to a CDN host with X-Linked-Size/X-Linked-Etag; the CDN serves byte ranges and can drop the
connection mid-file). Tiny byte files, no real weights."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from latentsync import checkpoints as C
from latentsync import download as D
from latentsync.errors import MissingWeightsError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
UNET = os.urandom(300_000)
WHISPER = os.urandom(70_000)
VAE_CONFIG = b'{"_class_name": "AutoencoderKL"}'
VAE_WEIGHTS = os.urandom(120_000)


class LocalHub:
    """Files by (repo, path); ``drops[sha] = [n0, n1, ...]``: the i-th GET of that blob sends n_i bytes of its
    body, then the connection is closed (reset, with ``reset_on_drop``)."""

    def __init__(self):
        self.files: dict[tuple[str, str], tuple[bytes, bool]] = {}
        self.blobs: dict[str, bytes] = {}
        self.drops: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.reset_on_drop = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def add(self, repo: str, path: str, data: bytes, lfs: bool = True) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.files[(repo, path)] = (data, lfs)
        self.blobs[sha] = data
        return sha

    def gets(self, prefix: str = "") -> list[tuple[str, str | None]]:
        return [(path, rng) for method, path, rng in self.requests if method == "GET" and path.startswith(prefix)]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                parts = self.path.lstrip("/").split("/")
                if parts[0] == "cdn":
                    return self._blob(parts[1], body)
                repo, path = "/".join(parts[:2]), "/".join(parts[4:])
                if parts[2:3] != ["resolve"] or (repo, path) not in hub.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, lfs = hub.files[(repo, path)]
                sha = hashlib.sha256(data).hexdigest()
                if lfs:  # like the Hub: metadata on the redirect, bytes on another host
                    self.send_response(302)
                    self.send_header("Location", f"http://localhost:{hub.port}/cdn/{sha}")
                    self.send_header("X-Linked-Size", str(len(data)))
                    self.send_header("X-Linked-Etag", f'"{sha}"')
                    self.send_header("ETag", '"gitoid"')
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _blob(self, sha: str, body: bool):
                data = hub.blobs[sha]
                start, rng = 0, self.headers.get("Range")
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("ETag", f'"{sha}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if not body:
                    return
                drops = hub.drops.get(sha)
                if drops:
                    self.wfile.write(data[start:start + drops.pop(0)])
                    self.wfile.flush()
                    if hub.reset_on_drop:  # RST instead of a clean end of stream, once the client has the bytes
                        time.sleep(0.3)
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        os.close(self.connection.detach())
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        return Handler

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real weights from <pack>/checkpoints; online unless a test says otherwise."""
    monkeypatch.setattr(C, "PACK_CHECKPOINTS", tmp_path / "pack_checkpoints")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub():
    with LocalHub() as server:
        server.add("ByteDance/LatentSync-1.6", "latentsync_unet.pt", UNET)
        server.add("ByteDance/LatentSync-1.6", "whisper/tiny.pt", WHISPER)
        server.add("ByteDance/LatentSync-1.5", "latentsync_unet.pt", UNET[::-1])
        server.add("ByteDance/LatentSync-1.5", "whisper/tiny.pt", WHISPER)
        server.add("stabilityai/sd-vae-ft-mse", "config.json", VAE_CONFIG, lfs=False)
        server.add("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors", VAE_WEIGHTS)
        yield server


def _touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _recorder():
    calls = []
    return calls, lambda done, total, info: calls.append((done, total, dict(info)))


def _assert_progress(calls, total):
    dones = [done for done, _, _ in calls]
    assert dones == sorted(dones) and dones[-1] == total, dones
    assert all(t == total for _, t, _ in calls)


def test_missing_weights_are_downloaded_with_progress(tmp_path, hub):
    models = tmp_path / "models"
    calls, progress = _recorder()
    paths = C.ensure_models("1.6", models_dir=models, endpoint=hub.url, progress=progress, bar=False)
    assert paths == C.ModelPaths(models / "latentsync_unet.pt", models / "whisper" / "tiny.pt", models / "vae", "1.6")
    assert paths.unet.read_bytes() == UNET and paths.whisper.read_bytes() == WHISPER
    assert (models / "vae" / "config.json").read_bytes() == VAE_CONFIG
    assert (models / "vae" / "diffusion_pytorch_model.safetensors").read_bytes() == VAE_WEIGHTS
    _assert_progress(calls, len(UNET) + len(WHISPER) + len(VAE_CONFIG) + len(VAE_WEIGHTS))
    assert {info["file"] for _, _, info in calls} == {"ByteDance/LatentSync-1.6/latentsync_unet.pt",
                                                     "ByteDance/LatentSync-1.6/whisper/tiny.pt",
                                                     "stabilityai/sd-vae-ft-mse/config.json",
                                                     "stabilityai/sd-vae-ft-mse/diffusion_pytorch_model.safetensors"}
    last = {info["file"]: info for _, _, info in calls}  # every file's last report: complete, in order
    assert all(i["file_done"] == i["file_total"] for i in last.values())
    assert sorted(i["index"] for i in last.values()) == [0, 1, 2, 3] and {i["count"] for i in last.values()} == {4}
    assert not list(models.rglob("*.incomplete"))
    hub.requests.clear()
    assert C.ensure_models("1.6", models_dir=models, endpoint=hub.url) == paths  # all there: no network
    assert hub.requests == []


def test_only_what_is_found_nowhere_is_fetched_into_comfy_folder(tmp_path, hub):
    comfy, comfy_vae = tmp_path / "comfy" / "latentsync", tmp_path / "comfy" / "vae"
    _touch(C.PACK_CHECKPOINTS / "whisper" / "tiny.pt", b"mine")
    _touch(comfy_vae / "vae-ft-mse-840000-ema-pruned.safetensors")
    paths = C.ensure_models("1.6", search_dirs=[comfy], vae_dirs=[comfy_vae], endpoint=hub.url, bar=False)
    assert hub.gets() == [(f"/cdn/{hashlib.sha256(UNET).hexdigest()}", None)]
    assert paths.unet == comfy / "latentsync_unet.pt" and paths.unet.read_bytes() == UNET  # first search dir
    assert paths.whisper.read_bytes() == b"mine" and paths.vae == comfy_vae / "vae-ft-mse-840000-ema-pruned.safetensors"


def test_version_15_unet_goes_to_its_subfolder(tmp_path, hub):
    models = tmp_path / "models"
    paths = C.download_models("1.5", models, endpoint=hub.url, bar=False)
    assert paths.unet == models / "latentsync-1.5" / "latentsync_unet.pt" and paths.unet.read_bytes() == UNET[::-1]
    assert paths.whisper == models / "whisper" / "tiny.pt" and paths.vae == models / "vae"
    hub.requests.clear()
    _touch(models / "latentsync_unet.pt", b"1.6")
    C.download_models("1.6", models, endpoint=hub.url, bar=False)  # everything of 1.6 is there already
    assert hub.requests == []


def test_download_models_skips_files_already_in_dest(tmp_path, hub):
    _touch(tmp_path / "whisper" / "tiny.pt", b"mine")
    C.download_models("1.6", tmp_path, endpoint=hub.url, bar=False)
    assert (tmp_path / "whisper" / "tiny.pt").read_bytes() == b"mine"
    assert not any("tiny.pt" in path for _, path, _ in hub.requests)
    assert C.download_models(endpoint=hub.url, bar=False).unet == C.PACK_CHECKPOINTS / "latentsync_unet.pt"


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_dropped_connection_resumes_with_a_range_request(tmp_path, hub, reset, caplog):
    sha = hashlib.sha256(UNET).hexdigest()
    hub.drops[sha], hub.reset_on_drop = [100_000], reset
    calls, progress = _recorder()
    paths = C.ensure_models("1.6", models_dir=tmp_path, endpoint=hub.url, progress=progress, bar=False)
    assert hub.gets(f"/cdn/{sha}") == [(f"/cdn/{sha}", None), (f"/cdn/{sha}", "bytes=100000-")]
    assert hashlib.sha256(paths.unet.read_bytes()).hexdigest() == sha
    _assert_progress(calls, len(UNET) + len(WHISPER) + len(VAE_CONFIG) + len(VAE_WEIGHTS))
    assert ("connection lost after 100000 bytes" in caplog.text) == reset  # a reset is an error, a close is not


def test_interrupted_file_is_never_used_and_resumes_in_the_next_run(tmp_path, hub):
    sha = hashlib.sha256(UNET).hexdigest()
    hub.drops[sha] = [120_000, 0]  # the second attempt of this call gets nothing: the call gives up
    with pytest.raises(MissingWeightsError) as info:
        C.ensure_models("1.6", models_dir=tmp_path, endpoint=hub.url, bar=False)
    partial = tmp_path / f"latentsync_unet.pt.{sha[:16]}.incomplete"
    assert "the next run resumes" in str(info.value) and str(partial) in str(info.value)
    assert partial.read_bytes() == UNET[:120_000]
    with pytest.raises(MissingWeightsError, match="Searched for the unet"):  # the partial file is not a weight
        C.find_models("1.6", models_dir=tmp_path)
    hub.requests.clear()
    calls, progress = _recorder()
    paths = C.ensure_models("1.6", models_dir=tmp_path, endpoint=hub.url, progress=progress, bar=False)
    assert hub.gets(f"/cdn/{sha}") == [(f"/cdn/{sha}", "bytes=120000-")]
    assert paths.unet.read_bytes() == UNET and not partial.exists()
    total = len(UNET) + len(WHISPER) + len(VAE_CONFIG) + len(VAE_WEIGHTS)
    assert calls[0][0] == 120_000  # the kept bytes count as done
    _assert_progress(calls, total)


def test_corrupt_download_is_deleted(tmp_path, hub):
    sha = hub.add("ByteDance/LatentSync-1.6", "latentsync_unet.pt", UNET)
    hub.blobs[sha] = UNET[:-1] + b"?"  # same size, other bytes
    with pytest.raises(MissingWeightsError, match="corrupt"):
        C.ensure_models("1.6", models_dir=tmp_path, endpoint=hub.url, bar=False)
    assert not (tmp_path / "latentsync_unet.pt").exists() and not list(tmp_path.glob("*.incomplete"))


def test_server_without_range_support_restarts_the_file(tmp_path, hub):
    remote = D.resolve_hub_file("ByteDance/LatentSync-1.6", "latentsync_unet.pt", tmp_path / "u.pt",
                                endpoint=hub.url)
    _touch(remote.partial, b"stale bytes")
    hub.blobs[remote.sha256] = UNET
    original = hub.server.RequestHandlerClass._blob

    def ignore_range(handler, sha, body):
        del handler.headers["Range"]
        original(handler, sha, body)

    hub.server.RequestHandlerClass._blob = ignore_range
    D.download([remote], bar=False)
    assert (tmp_path / "u.pt").read_bytes() == UNET


def test_hf_hub_offline_means_no_network_at_all(tmp_path, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models, comfy = tmp_path / "models", tmp_path / "comfy"
    t0 = time.monotonic()
    with pytest.raises(MissingWeightsError) as info:
        C.ensure_models("1.6", models_dir=models, search_dirs=[comfy], endpoint=hub.url)
    assert time.monotonic() - t0 < 1.0 and hub.requests == []
    msg = str(info.value)
    assert msg.startswith(f"Cannot download the missing weights into {models}: HF_HUB_OFFLINE is set")
    for path in (models / "latentsync_unet.pt", comfy / "latentsync_unet.pt", C.PACK_CHECKPOINTS / "vae",
                 models / "whisper" / "tiny.pt"):
        assert str(path) in msg
    assert f'python -m latentsync download --models-dir "{models}"' in msg and "ByteDance/LatentSync-1.6" in msg
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE"):
        C.download_models("1.6", models, endpoint=hub.url)
    assert not models.exists()


def test_unreachable_hub_fails_at_once(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    t0 = time.monotonic()
    with pytest.raises(MissingWeightsError) as info:
        C.ensure_models("1.6", models_dir=tmp_path, endpoint=endpoint)
    assert time.monotonic() - t0 < 5.0  # no retries, no back-off
    msg = str(info.value)
    assert f"cannot reach {endpoint}/ByteDance/LatentSync-1.6/resolve/main/latentsync_unet.pt" in msg
    assert "Searched for the unet" in msg and "python -m latentsync download" in msg
    assert not list(tmp_path.rglob("*"))  # nothing written


def test_silent_hub_times_out(tmp_path):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        t0 = time.monotonic()
        with pytest.raises(MissingWeightsError, match="cannot reach"):
            C.ensure_models("1.6", models_dir=tmp_path, endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}",
                            timeout=0.5)
        assert time.monotonic() - t0 < 3.0


def test_auto_download_off(tmp_path, hub):
    with pytest.raises(MissingWeightsError) as info:
        C.ensure_models("1.6", models_dir=tmp_path, endpoint=hub.url, download=False)
    assert str(info.value).endswith("(Automatic download is off.)") and "Searched for the unet" in str(info.value)
    assert hub.requests == []


def test_missing_file_on_the_hub_is_named(tmp_path, hub):
    del hub.files[("stabilityai/sd-vae-ft-mse", "config.json")]
    with pytest.raises(MissingWeightsError, match="server answered HTTP 404 for .*/sd-vae-ft-mse/resolve/main/config.json"):
        C.ensure_models("1.6", models_dir=tmp_path, endpoint=hub.url, bar=False)
    assert hub.gets() == []  # every file is resolved before the first byte is fetched


def test_landmarker_uses_the_same_downloader(tmp_path, hub, monkeypatch):
    from latentsync.face import landmarks

    data = os.urandom(50_000)
    sha = hub.add("google/mediapipe", "face_landmarker.task", data)
    hub.drops[sha] = [10_000]
    monkeypatch.setattr(landmarks, "LANDMARKER_URL", f"{hub.url}/cdn/{sha}")
    calls, progress = _recorder()
    path = landmarks.find_landmarker_model(tmp_path, allow_download=True, progress=progress)
    assert path == tmp_path / "face_landmarker.task" and path.read_bytes() == data
    assert hub.gets() == [(f"/cdn/{sha}", None), (f"/cdn/{sha}", "bytes=10000-")]
    _assert_progress(calls, len(data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.requests.clear()
    with pytest.raises(MissingWeightsError, match="HF_HUB_OFFLINE"):
        landmarks.find_landmarker_model(tmp_path / "other", allow_download=True)
    assert hub.requests == []


def test_message_after_a_partial_success_names_only_what_is_still_missing(tmp_path, hub):
    hub.drops[hashlib.sha256(VAE_WEIGHTS).hexdigest()] = [0]
    with pytest.raises(MissingWeightsError) as info:
        C.ensure_models("1.6", models_dir=tmp_path, endpoint=hub.url, bar=False)
    msg = str(info.value)
    assert "stabilityai/sd-vae-ft-mse/diffusion_pytorch_model.safetensors: got 0 bytes, expected 120000" in msg
    assert "Searched for the vae" in msg and "Searched for the unet" not in msg
    assert (tmp_path / "latentsync_unet.pt").read_bytes() == UNET


def test_a_hanging_lookup_is_cut_at_the_timeout(tmp_path, monkeypatch):
    """A DNS lookup that hangs is not covered by socket timeouts: the answer must come within ``timeout``."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, timeout: time.sleep(3))
    t0 = time.monotonic()
    with pytest.raises(MissingWeightsError, match=r"latentsync_unet.pt \(no answer within 0.3 s\)"):
        C.ensure_models("1.6", models_dir=tmp_path, endpoint="http://hub.invalid", timeout=0.3)
    assert time.monotonic() - t0 < 1.5


def test_cancelling_from_the_progress_callback_keeps_the_partial_file(tmp_path, hub, monkeypatch):
    """ComfyUI's interrupt raises inside the progress hook: the error goes through, the bytes stay for later."""
    monkeypatch.setattr(D, "PROGRESS_INTERVAL", 0.0)  # a callback for every piece that arrives

    class Interrupted(Exception):
        pass

    def progress(done, total, info):
        if info["file_done"] >= 100_000:
            raise Interrupted

    hub.drops[hashlib.sha256(UNET).hexdigest()] = [150_000]
    with pytest.raises(Interrupted):
        C.ensure_models("1.6", models_dir=tmp_path, endpoint=hub.url, progress=progress, bar=False)
    (partial,) = tmp_path.glob("latentsync_unet.pt.*.incomplete")
    assert partial.stat().st_size >= 100_000 and not (tmp_path / "latentsync_unet.pt").exists()
    assert C.ensure_models("1.6", models_dir=tmp_path, endpoint=hub.url, bar=False).unet.read_bytes() == UNET


def test_no_writable_folder_is_a_clear_error(tmp_path, hub, monkeypatch):
    blocker = _touch(tmp_path / "a_file")
    monkeypatch.setattr(C, "PACK_CHECKPOINTS", blocker / "pack")
    with pytest.raises(MissingWeightsError) as info:
        C.ensure_models("1.6", models_dir=blocker / "models", endpoint=hub.url)
    msg = str(info.value)
    assert msg.startswith("Cannot download the missing weights: No writable folder") and "Searched for the unet" in msg
    assert hub.requests == []
