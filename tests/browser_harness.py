"""Headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a real ComfyUI frontend.

Everything here acts the way a user does: the node search box (double-click the canvas, type, Enter), a workflow
file dropped on the page, the Run button, hovering a widget for its tooltip. State is read back from the live
frontend (`window.app.graph`), never from our own conversion code.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
VIEWPORT = {"width": 1920, "height": 1080}
# Server-side user settings for a quiet first visit: no template gallery, no minimap over the graph, classic
# (litegraph) node rendering, tooltips on with a short delay.
UI_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.VueNodes.Enabled": False,
    "Comfy.EnableTooltips": True,
    "LiteGraph.Node.TooltipDelay": 200,
}


def _can_install_system_packages() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def require_browser() -> None:
    """Skip (with the reason) only where the browser cannot be installed here; in CI or as root with apt, fail."""
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the machine
        problems.append(f"playwright is not importable ({exc}); it is in requirements-test.txt")
    if not Path(CHROMIUM).exists():
        problems.append(f"{CHROMIUM} is missing; `bash tools/system_deps.sh` installs Debian's chromium")
    if not problems:
        return
    reason = "; ".join(problems)
    if os.environ.get("CI") or _can_install_system_packages():
        pytest.fail(f"browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"browser tests need root+apt to install chromium: {reason}")


@dataclass
class Browser:
    """One Chromium for the whole session, with a fresh user-data directory that is removed at the end."""

    playwright: object
    context: object
    user_data_dir: str

    @classmethod
    def launch(cls) -> "Browser":
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        user_data_dir = tempfile.mkdtemp(prefix="latentsync-chromium-")
        try:
            context = pw.chromium.launch_persistent_context(
                user_data_dir, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport=VIEWPORT, accept_downloads=False)
        except Exception:
            pw.stop()
            shutil.rmtree(user_data_dir, ignore_errors=True)
            raise
        return cls(pw, context, user_data_dir)

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self.playwright.stop()
            shutil.rmtree(self.user_data_dir, ignore_errors=True)


@dataclass
class ComfyPage:
    """A ComfyUI tab. `messages` collects console warnings/errors and page errors with a timestamp."""

    page: object
    base_url: str
    messages: list = field(default_factory=list)

    # ----------------------------------------------------------------------------------------------- open
    @classmethod
    def open(cls, browser: Browser, base_url: str) -> "ComfyPage":
        r = requests.post(f"{base_url}/settings", json=UI_SETTINGS, timeout=10)
        r.raise_for_status()
        page = browser.context.new_page()
        cp = cls(page, base_url.rstrip("/"))
        page.on("console", lambda m: cp.messages.append((time.monotonic(), m.type, m.text))
                if m.type in ("warning", "error") else None)
        page.on("pageerror", lambda e: cp.messages.append((time.monotonic(), "pageerror", str(e))))
        # the "Introducing Nodes 2.0" banner, as if dismissed once: it would cover the top of every screenshot
        page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        page.goto(cp.base_url + "/")
        page.wait_for_function(
            "() => window.app && window.app.vueAppReady && window.app.graph && window.app.canvas"
            " && window.LiteGraph && Object.keys(LiteGraph.registered_node_types).length > 0",
            timeout=90_000)
        page.evaluate(_INSTALL_RECORDERS)
        return cp

    def close(self) -> None:
        self.page.close()

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.evaluate("() => app.graph.setDirtyCanvas(true, true)")
        self.page.wait_for_timeout(150)
        self.page.screenshot(path=str(path))
        return path

    def fit_view(self, node_ids: list[int] | None = None) -> None:
        """Frame the whole graph, or the given nodes (selected first), as the '.' key does."""
        self.page.mouse.click(VIEWPORT["width"] - 300, VIEWPORT["height"] - 120)  # focus the canvas
        self.page.evaluate("(ids) => { app.canvas.deselectAll();"
                           " app.canvas.selectItems(ids.map(id => app.graph.getNodeById(id))); }", node_ids or [])
        self.page.keyboard.press(".")   # fits the selected nodes, or every node when none is selected
        self.page.wait_for_timeout(200)
        self.page.evaluate("() => app.canvas.deselectAll()")

    # ------------------------------------------------------------------------------------------ node search
    def clear_graph(self) -> None:
        self.page.evaluate("() => { app.graph.clear(); app.graph.setDirtyCanvas(true, true); }")

    def add_node_via_search(self, query: str, at: tuple[int, int]) -> dict:
        """Double-click empty canvas, type into the node search box, press Enter; return the new node."""
        before = set(self.page.evaluate("() => app.graph._nodes.map(n => n.id)"))
        box = self.page.get_by_placeholder("Search Nodes...")
        for attempt in range(3):  # a double-click right after a page change can land before the canvas listens
            self.page.mouse.move(*at)
            self.page.mouse.dblclick(*at)
            try:
                box.wait_for(state="visible", timeout=3_000)
                break
            except Exception:
                if attempt == 2:
                    raise
        box.fill(query)
        # the first suggestion is what Enter picks; wait until the list shows results for this query
        self.page.wait_for_function(
            "(q) => (document.querySelector('.p-autocomplete-option')?.innerText || '').toLowerCase()"
            ".includes(q.toLowerCase())", arg=query, timeout=10_000)
        self.page.keyboard.press("Enter")
        self.page.wait_for_function(f"() => app.graph._nodes.length > {len(before)}", timeout=10_000)
        box.wait_for(state="hidden", timeout=10_000)
        self.page.locator(".p-dialog-mask").last.wait_for(state="detached", timeout=10_000)
        nodes = [n for n in self.nodes() if n["id"] not in before]
        assert len(nodes) == 1, f"search for {query!r} added {len(nodes)} nodes"
        return nodes[0]

    # ------------------------------------------------------------------------------------------- reading
    def nodes(self) -> list[dict]:
        return self.page.evaluate(_READ_NODES)

    def node(self, node_id: int) -> dict:
        for n in self.nodes():
            if n["id"] == node_id:
                return n
        raise KeyError(f"node {node_id} not in the graph")

    def node_def(self, node_type: str) -> dict:
        """The definition the frontend registered for `node_type` (from /object_info, as the UI holds it)."""
        return self.page.evaluate(
            "(t) => { const c = LiteGraph.registered_node_types[t]; return c ? c.nodeData : null; }", node_type)

    def hover_tooltip(self, node_id: int, widget_name: str) -> str:
        """Move the mouse over a widget and return the text of the tooltip the frontend shows."""
        x, y = self.page.evaluate(_WIDGET_SCREEN_POS, [node_id, widget_name])
        tip = self.page.locator(".node-tooltip")
        for attempt in range(3):
            self.page.mouse.move(x - 30, y, steps=5)
            self.page.mouse.move(x, y, steps=5)
            try:
                tip.wait_for(state="visible", timeout=3_000)
                break
            except Exception:
                if attempt == 2:
                    raise
        text = tip.inner_text()
        self.page.mouse.move(5, VIEWPORT["height"] // 2)  # away, so the tooltip hides
        return text

    # ------------------------------------------------------------------------------------------- loading
    def drop_workflow(self, workflow: dict, filename: str = "workflow.json") -> dict:
        """Drop a workflow file on the canvas, like dragging it from the file manager.

        Returns what the user would see as problems: open dialogs, warning toasts, console warnings/errors
        logged while loading, and nodes whose type the frontend does not know.
        """
        start = time.monotonic()
        self.page.evaluate(_DROP_FILE, [json.dumps(workflow), filename])
        self.page.wait_for_function(
            "(n) => app.graph._nodes.length === n", arg=len(workflow["nodes"]), timeout=15_000)
        self.page.wait_for_timeout(500)  # dialogs and toasts open asynchronously after configure()
        return self.load_report(since=start)

    def load_graph(self, workflow: dict) -> dict:
        """The app's own load-graph call (what a template or a workflow-sidebar click does)."""
        start = time.monotonic()
        self.page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
        self.page.wait_for_timeout(500)
        return self.load_report(since=start)

    def load_report(self, since: float) -> dict:
        ui = self.page.evaluate(_UI_PROBLEMS)
        console = [f"{kind}: {text}" for t, kind, text in self.messages
                   if t >= since and not _is_noise(text)]
        return {**ui, "console": console}

    def dismiss_dialogs(self) -> None:
        self.page.keyboard.press("Escape")
        self.page.wait_for_timeout(200)

    # ----------------------------------------------------------------------------------------- widgets
    def set_widget(self, node_id: int, name: str, value) -> None:
        """Set a widget as the UI does after an edit (value + its callback)."""
        self.page.evaluate(_SET_WIDGET, [node_id, name, value])

    def connect(self, source: tuple[int, int], target: tuple[int, str]) -> None:
        """Link output slot source[1] of node source[0] to the input named target[1] of node target[0]."""
        self.page.evaluate("([s, slot, t, name]) => { const n = app.graph.getNodeById(t);"
                           " app.graph.getNodeById(s).connect(slot, n, n.findInputSlot(name)); }", [*source, *target])

    def place(self, node_id: int, pos: tuple[float, float], size: tuple[float, float], title: str | None = None):
        """Move and resize a node (what dragging its title and its corner does) and optionally rename it."""
        self.page.evaluate("([id, pos, size, title]) => { const n = app.graph.getNodeById(id); n.pos = pos;"
                           " n.setSize(size); if (title) n.title = title; app.graph.setDirtyCanvas(true, true); }",
                           [node_id, list(pos), list(size), title])

    # ------------------------------------------------------------------------------------------ queueing
    def queue_from_ui(self) -> dict:
        """Click Run; return the server's answer to the frontend's own POST /prompt."""
        with self.page.expect_response(
                lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST", timeout=30_000) as info:
            self.page.locator('[data-testid="queue-button"]').click()
        resp = info.value
        body = resp.json()
        body["status"] = resp.status
        body["request"] = json.loads(resp.request.post_data or "{}")
        return body

    def recorded_progress(self) -> dict:
        return self.page.evaluate("() => window.__lsRecorder")

    def wait_for_node_progress(self, node_id: int, prompt_id: str, timeout_ms: int = 120_000) -> bool:
        """Wait until the canvas draws a part-filled progress bar on the node (True) or the prompt ended (False)."""
        handle = self.page.wait_for_function(
            """([id, pid]) => ((app.graph.getNodeById(id)?.progress ?? 0) > 0 && 'running')
                 || (window.__lsRecorder.ended.some(e => e.prompt_id === pid) && 'ended')""",
            arg=[node_id, prompt_id], timeout=timeout_ms, polling=20)
        return handle.json_value() == "running"


def check_widgets(actual: dict, expected: dict, *, rel: float = 1e-6) -> list[str]:
    """Compare a node's live widget values by name. Returns one line per mismatch (empty list = all right).

    A wrong positional mapping shows here: a value landing on the wrong widget leaves its own widget with
    another value (or a wrong type), e.g. `mode: expected 'pingpong', got 25`.
    """
    problems = []
    for name, want in expected.items():
        if name not in actual:
            problems.append(f"{name}: widget missing (node has {sorted(actual)})")
            continue
        got = actual[name]
        if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
            if not math.isclose(got, want, rel_tol=rel, abs_tol=rel):
                problems.append(f"{name}: expected {want!r}, got {got!r}")
        elif type(got) is not type(want) or got != want:
            if isinstance(want, int) and isinstance(got, float) and got == want and not isinstance(want, bool):
                continue
            problems.append(f"{name}: expected {want!r}, got {got!r}")
    return problems


def wait_for_history(base_url: str, prompt_id: str, timeout: float = 180.0) -> dict:
    """Poll the server's /history until the prompt finished; return its entry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(f"{base_url}/history/{prompt_id}", timeout=10)
        r.raise_for_status()
        entry = r.json().get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"].get("status_str") in ("success", "error")):
            return entry
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f} s")


def history_error(entry: dict) -> str:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_message')}"
    return ""


def saved_videos(entry: dict) -> list[dict]:
    files = []
    for out in entry.get("outputs", {}).values():
        for key in ("images", "videos", "gifs"):
            for f in out.get(key, []):
                if str(f.get("filename", "")).endswith((".mp4", ".webm", ".mov")):
                    files.append(f)
    return files


def upload_input(base_url: str, path: Path, name: str | None = None) -> str:
    """Upload a file to ComfyUI's input folder the way the UI's upload button does (POST /upload/image)."""
    with open(path, "rb") as fh:
        r = requests.post(f"{base_url}/upload/image", files={"image": (name or path.name, fh)},
                          data={"overwrite": "true", "type": "input"}, timeout=30)
    r.raise_for_status()
    return r.json()["name"]


def _is_noise(text: str) -> bool:
    # The page has no internet (and no favicon/user files yet): failed fetches there are not load warnings.
    # Neither is the frontend's look-up of node packs in the Comfy registry (blocked by its own CSP here).
    return ("ERR_NAME_NOT_RESOLVED" in text or "Failed to load resource" in text
            or "ERR_INTERNET_DISCONNECTED" in text
            or ("https://api.comfy.org/" in text and "Content Security Policy" in text))


_INSTALL_RECORDERS = """() => {
  const rec = window.__lsRecorder = {progress: [], progressState: [], nodeProgress: {}, executing: [], ended: [],
                                     progressText: []};
  for (const kind of ['execution_success', 'execution_error', 'execution_interrupted'])
    app.api.addEventListener(kind, e => rec.ended.push({kind, prompt_id: e.detail?.prompt_id}));
  app.api.addEventListener('progress', e => rec.progress.push(e.detail));
  app.api.addEventListener('progress_state', e => rec.progressState.push(e.detail));
  app.api.addEventListener('executing', e => rec.executing.push(e.detail));
  // the text a node shows on itself (PromptServer.send_progress_text → the frontend's text preview widget)
  app.api.addEventListener('progress_text', e => rec.progressText.push(e.detail));
  // what the canvas draws: node.progress is set by the frontend while a node runs (its progress bar)
  setInterval(() => {
    for (const n of app.graph._nodes) {
      if (typeof n.progress === 'number') {
        const k = String(n.id);
        (rec.nodeProgress[k] = rec.nodeProgress[k] || []).push(n.progress);
      }
    }
  }, 25);
}"""

_READ_NODES = """() => app.graph._nodes.map(n => ({
  id: n.id, type: n.type, title: n.title, pos: Array.from(n.pos), size: Array.from(n.size),
  hasErrors: !!n.has_errors, known: n.type in LiteGraph.registered_node_types,
  widgets: Object.fromEntries((n.widgets || []).map(w => [w.name, w.value])),
  widgetOrder: (n.widgets || []).map(w => w.name),
  widgetTooltips: Object.fromEntries((n.widgets || []).map(w => [w.name, w.tooltip ?? null])),
  inputs: (n.inputs || []).map(i => ({name: i.name, type: i.type, link: i.link, widget: !!i.widget})),
  outputs: (n.outputs || []).map(o => ({name: o.name, type: o.type})),
}))"""

_WIDGET_SCREEN_POS = """([id, name]) => {
  const n = app.graph.getNodeById(id);
  const w = n.widgets.find(w => w.name === name);
  const h = w.computedHeight || LiteGraph.NODE_WIDGET_HEIGHT;
  const p = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0] / 2, n.pos[1] + w.y + h / 2]);
  const r = app.canvas.canvas.getBoundingClientRect();
  return [r.left + p[0], r.top + p[1]];
}"""

_DROP_FILE = """([text, filename]) => {
  const dt = new DataTransfer();
  dt.items.add(new File([text], filename, {type: 'application/json'}));
  const target = document.querySelector('#graph-canvas') || document.body;
  target.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
  target.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
}"""

_UI_PROBLEMS = """() => {
  const visible = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const dialogs = [...document.querySelectorAll('.p-dialog')].filter(visible)
      .map(d => d.innerText.trim().slice(0, 300));
  const toasts = [...document.querySelectorAll('.p-toast-message')].filter(visible)
      .map(t => t.innerText.trim().slice(0, 300));
  const unknown = app.graph._nodes.filter(n => !(n.type in LiteGraph.registered_node_types) || n.has_errors)
      .map(n => n.type);
  return {dialogs, toasts, unknown_nodes: unknown};
}"""

_SET_WIDGET = """([id, name, value]) => {
  const n = app.graph.getNodeById(id);
  const w = n.widgets.find(w => w.name === name);
  if (!w) throw new Error(`node ${id} has no widget ${name}`);
  w.value = value;
  w.callback?.(w.value, app.canvas, n, app.canvas.graph_mouse, {});
  app.graph.setDirtyCanvas(true, true);
}"""
