"""Run an API-format workflow on a running ComfyUI: upload inputs, queue, follow progress, fetch outputs.

    python tools/queue_workflow.py example_workflows/api/latentsync_basic.json \\
        --server http://127.0.0.1:8188 --upload my_clip.mp4=latentsync_sample.mp4 \\
        --upload my_voice.wav=latentsync_sample.wav --set 4.inference_steps=20 --out results/

`--upload PATH[=NAME]` puts a local file into ComfyUI's input folder under NAME (default: its file name) — the
names the workflow's LoadVideo / LoadAudio nodes reference. `--set NODE.INPUT=VALUE` changes one input (VALUE is
JSON, or a plain string). Progress goes to stderr; the saved files are downloaded into --out and their paths
printed. Exit status: 0 success, 1 the workflow failed (the server's execution_error text is printed),
2 the prompt was rejected (node_errors printed), 3 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlparse

import requests


class PromptRejected(RuntimeError):
    """/prompt answered 400: the workflow does not validate (node_errors says why)."""

    def __init__(self, body: dict):
        self.body = body
        error = body.get("error", {})
        details = f": {error['details']}" if error.get("details") else ""
        lines = [str(error.get("message", "prompt rejected")) + details]
        for node_id, info in (body.get("node_errors") or {}).items():
            for e in info.get("errors", []):
                lines.append(f"  node {node_id} ({info.get('class_type')}): {e.get('message')} — {e.get('details')}")
        super().__init__("\n".join(lines))


@dataclass
class RunResult:
    prompt_id: str
    status: str  # success | error | interrupted | timeout
    error: dict | None = None  # the execution_error message's data
    messages: list = field(default_factory=list)  # every ws message of this prompt (type, data)
    outputs: dict = field(default_factory=dict)  # /history outputs per node

    @property
    def error_text(self) -> str:
        if not self.error:
            return ""
        return (f"{self.error.get('exception_type', 'error')} in node {self.error.get('node_id')} "
                f"({self.error.get('node_type')}): {self.error.get('exception_message', '').strip()}")

    def files(self) -> list[dict]:
        """Saved files ({filename, subfolder, type}) from every output node: images, videos, audio."""
        found = []
        for node_out in self.outputs.values():
            for key in ("images", "videos", "gifs", "audio", "animated"):
                for item in node_out.get(key, []) or []:
                    if isinstance(item, dict) and "filename" in item:
                        found.append(item)
        return found


class ComfyClient:
    def __init__(self, server: str = "http://127.0.0.1:8188", timeout: float = 30.0):
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self.http = requests.Session()

    # ------------------------------------------------------------------------------------------ HTTP
    def get(self, path: str, **params):
        r = self.http.get(f"{self.server}{path}", params=params or None, timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def upload(self, path, name: str | None = None) -> str:
        """Copy a local file into ComfyUI's input folder (POST /upload/image takes any file type)."""
        path = Path(path)
        with path.open("rb") as f:
            r = self.http.post(f"{self.server}/upload/image", files={"image": (name or path.name, f)},
                               data={"overwrite": "true", "type": "input"}, timeout=max(self.timeout, 120))
        r.raise_for_status()
        return r.json()["name"]

    def queue(self, prompt: dict) -> str:
        r = self.http.post(f"{self.server}/prompt", json={"prompt": prompt, "client_id": self.client_id},
                           timeout=self.timeout)
        if r.status_code == 400:
            raise PromptRejected(r.json())
        r.raise_for_status()
        return r.json()["prompt_id"]

    def interrupt(self) -> None:
        self.http.post(f"{self.server}/interrupt", timeout=self.timeout).raise_for_status()

    def history(self, prompt_id: str) -> dict:
        return self.get(f"/history/{prompt_id}").get(prompt_id, {})

    def download(self, item: dict, dest) -> Path:
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        params = {"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                  "type": item.get("type", "output")}
        r = self.http.get(f"{self.server}/view", params=params, timeout=max(self.timeout, 120))
        r.raise_for_status()
        out = dest / Path(item["filename"]).name
        out.write_bytes(r.content)
        return out

    # ------------------------------------------------------------------------------------------ websocket
    def connect(self):
        import websocket

        u = urlparse(self.server)
        scheme = "wss" if u.scheme == "https" else "ws"
        ws = websocket.create_connection(f"{scheme}://{u.netloc}/ws?{urlencode({'clientId': self.client_id})}",
                                         timeout=self.timeout)
        return ws

    def follow(self, ws, prompt_id: str, timeout: float = 600.0, on_message=None) -> RunResult:
        """Read /ws messages until this prompt succeeds, fails or is interrupted."""
        import websocket

        result = RunResult(prompt_id, "timeout")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ws.settimeout(min(5.0, max(0.1, deadline - time.monotonic())))
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                if self._finished_in_history(prompt_id, result):
                    break
                continue
            if not isinstance(raw, str):
                continue  # binary preview images
            msg = json.loads(raw)
            kind, data = msg.get("type"), msg.get("data") or {}
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            result.messages.append((kind, data))
            if on_message is not None:
                on_message(kind, data)
            if kind == "execution_error":
                result.status, result.error = "error", data
                break
            if kind == "execution_interrupted":
                result.status = "interrupted"
                break
            if kind == "execution_success" or (kind == "executing" and data.get("node") is None
                                               and data.get("prompt_id") == prompt_id):
                result.status = "success"
                break
        if result.status != "timeout":
            result.outputs = self._wait_history(prompt_id).get("outputs", {})
        return result

    def _wait_history(self, prompt_id: str, timeout: float = 30.0) -> dict:
        """The prompt's /history entry; it is stored just after the final ws message, so wait for it."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry or time.monotonic() > deadline:
                return entry
            time.sleep(0.1)

    def _finished_in_history(self, prompt_id: str, result: RunResult) -> bool:
        status = self.history(prompt_id).get("status") or {}
        if not status.get("completed") and status.get("status_str") != "error":
            return False
        for kind, data in status.get("messages", []):
            if kind == "execution_error":
                result.status, result.error = "error", data
                return True
            if kind == "execution_interrupted":
                result.status = "interrupted"
                return True
        result.status = "success" if status.get("status_str") == "success" else "error"
        return True

    def run(self, prompt: dict, timeout: float = 600.0, on_message=None) -> RunResult:
        """Queue `prompt` and wait for its end (connects the websocket first so no message is missed)."""
        ws = self.connect()
        try:
            prompt_id = self.queue(prompt)
            return self.follow(ws, prompt_id, timeout, on_message)
        finally:
            ws.close()


def _set(prompt: dict, spec: str) -> None:
    target, _, value = spec.partition("=")
    node, _, name = target.partition(".")
    if node not in prompt or not name:
        raise SystemExit(f"--set {spec!r}: expected NODE_ID.INPUT=VALUE with a node id of the workflow")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    prompt[node]["inputs"][name] = parsed


def _printer(kind: str, data: dict) -> None:
    if kind == "progress":
        print(f"\r  node {data.get('node')}: {data.get('value')}/{data.get('max')}", end="", file=sys.stderr)
    elif kind == "executing" and data.get("node") is not None:
        print(f"\n> node {data['node']}", end="", file=sys.stderr)
    elif kind in ("execution_success", "execution_error", "execution_interrupted"):
        print(f"\n{kind}", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow", type=Path, help="API-format workflow JSON (ComfyUI: Export (API))")
    ap.add_argument("--server", default="http://127.0.0.1:8188")
    ap.add_argument("--upload", action="append", default=[], metavar="PATH[=NAME]")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE")
    ap.add_argument("--out", type=Path, default=Path("."), help="folder for the downloaded outputs")
    ap.add_argument("--timeout", type=float, default=3600.0)
    args = ap.parse_args(argv)

    prompt = json.loads(args.workflow.read_text())
    if "nodes" in prompt and "links" in prompt:
        raise SystemExit("This is a UI-format workflow; export it with 'Export (API)' or use example_workflows/api/.")
    for spec in args.set:
        _set(prompt, spec)
    client = ComfyClient(args.server)
    for spec in args.upload:
        path, _, name = spec.partition("=")
        print(f"uploaded {client.upload(path, name or None)}", file=sys.stderr)
    try:
        result = client.run(prompt, timeout=args.timeout, on_message=_printer)
    except PromptRejected as e:
        print(f"prompt rejected:\n{e}", file=sys.stderr)
        return 2
    if result.status == "error":
        print(f"workflow failed: {result.error_text}", file=sys.stderr)
        return 1
    if result.status != "success":
        print(f"workflow {result.status}", file=sys.stderr)
        return 3
    for item in result.files():
        print(client.download(item, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
