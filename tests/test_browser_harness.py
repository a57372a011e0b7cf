"""The browser harness itself, proven on ComfyUI core nodes: search box, tooltips, file drop, Run, /history,
and the widget checker catching a deliberately wrong widget order."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # also under --import-mode=importlib
    sys.path.insert(0, TESTS_DIR)

from browser_harness import (check_widgets, history_error, saved_videos, upload_input,
                             wait_for_history)
from browser_fixtures import browser, comfy, comfy_tab, page, probe_output, tiny_clip  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.server]


def test_core_node_from_search_shows_widgets_defaults_and_tooltip(page):
    page.clear_graph()
    node = page.add_node_via_search("Save Video", at=(700, 350))
    assert node["type"] == "SaveVideo"
    assert node["widgetOrder"] == ["filename_prefix", "format", "codec"]
    assert check_widgets(node["widgets"], {"filename_prefix": "video/ComfyUI", "format": "auto", "codec": "auto"}) == []
    tip = page.hover_tooltip(node["id"], "filename_prefix")
    assert tip.startswith("The prefix for the file to save.")
    page.screenshot("harness_core_search")


def _core_video_workflow(video_name: str, fps: float) -> dict:
    """LoadVideo → GetVideoComponents → CreateVideo (with audio) → SaveVideo, in the UI's file format."""
    def node(id_, type_, pos, inputs=(), outputs=(), widgets=()):
        return {"id": id_, "type": type_, "pos": list(pos), "size": [300, 100], "flags": {}, "order": id_ - 1,
                "mode": 0, "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs],
                "properties": {"Node name for S&R": type_}, "widgets_values": list(widgets)}
    nodes = [
        node(1, "LoadVideo", (0, 0), outputs=[{"name": "VIDEO", "type": "VIDEO", "links": [1]}],
             widgets=[video_name, "image"]),
        node(2, "GetVideoComponents", (350, 0), inputs=[{"name": "video", "type": "VIDEO", "link": 1}],
             outputs=[{"name": "images", "type": "IMAGE", "links": [2]},
                      {"name": "audio", "type": "AUDIO", "links": [3]},
                      {"name": "fps", "type": "FLOAT", "links": []}]),
        node(3, "CreateVideo", (700, 0), inputs=[{"name": "images", "type": "IMAGE", "link": 2},
                                                 {"name": "audio", "type": "AUDIO", "link": 3}],
             outputs=[{"name": "VIDEO", "type": "VIDEO", "links": [4]}], widgets=[fps]),
        node(4, "SaveVideo", (1050, 0), inputs=[{"name": "video", "type": "VIDEO", "link": 4}],
             widgets=["browser/core", "auto", "auto"]),
    ]
    links = [[1, 1, 0, 2, 0, "VIDEO"], [2, 2, 0, 3, 0, "IMAGE"], [3, 2, 1, 3, 1, "AUDIO"],
             [4, 3, 0, 4, 0, "VIDEO"]]
    return {"last_node_id": 4, "last_link_id": 4, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4}


def test_core_workflow_dropped_and_queued_from_ui(page, comfy, tiny_clip):
    name = upload_input(comfy.url, tiny_clip.path)
    report = page.drop_workflow(_core_video_workflow(name, 12.0), "core_video.json")
    assert report == {"dialogs": [], "toasts": [], "unknown_nodes": [], "console": []}
    assert check_widgets(page.node(3)["widgets"], {"fps": 12.0}) == []
    page.fit_view()
    page.screenshot("harness_core_workflow")
    answer = page.queue_from_ui()
    assert answer["status"] == 200 and answer["node_errors"] == {}, answer
    entry = wait_for_history(comfy.url, answer["prompt_id"], timeout=60)
    assert entry["status"]["status_str"] == "success", history_error(entry)
    [video] = saved_videos(entry)
    info = probe_output(comfy, video)
    assert info.n_frames == tiny_clip.n_frames
    assert info.fps == pytest.approx(12.0)
    assert info.has_audio


def test_wrong_widget_order_is_caught(page, comfy, tiny_clip):
    """A file whose widget values are in the wrong order: the checker names every widget that got a wrong value,
    and the server refuses the frontend's prompt for it (so a wrong mapping can never pass silently)."""
    wf = _core_video_workflow(upload_input(comfy.url, tiny_clip.path), 12.0)
    good = copy.deepcopy(wf)
    page.drop_workflow(good, "good.json")
    assert check_widgets(page.node(4)["widgets"],
                         {"filename_prefix": "browser/core", "format": "auto", "codec": "auto"}) == []
    wf["nodes"][3]["widgets_values"] = ["auto", "browser/core", "auto"]   # first two swapped
    page.drop_workflow(wf, "swapped.json")
    problems = check_widgets(page.node(4)["widgets"],
                             {"filename_prefix": "browser/core", "format": "auto", "codec": "auto"})
    assert problems == ["filename_prefix: expected 'browser/core', got 'auto'",
                        "format: expected 'auto', got 'browser/core'"]
    # ComfyUI 0.3.75 accepts the unknown combo value at /prompt; the job then fails on it
    answer = page.queue_from_ui()
    entry = wait_for_history(comfy.url, answer["prompt_id"], timeout=60)
    assert entry["status"]["status_str"] == "error"
    assert "browser/core" in history_error(entry)
    page.dismiss_dialogs()


def test_missing_node_dialog_is_detected(page):
    """The load report sees the 'missing nodes' warning a user would get (here: VHS nodes, not installed)."""
    wf = _core_video_workflow("missing.mp4", 12.0)
    wf["nodes"][0]["type"] = "VHS_LoadVideo"
    wf["nodes"][3]["type"] = "VHS_VideoCombine"
    report = page.drop_workflow(wf, "vhs.json")
    assert sorted(set(report["unknown_nodes"])) == ["VHS_LoadVideo", "VHS_VideoCombine"]
    assert any("VHS_LoadVideo" in d for d in report["dialogs"]), report
    page.dismiss_dialogs()


def test_check_widgets_names_every_misplaced_value():
    """The checker itself (no browser): by name, with float tolerance, type-strict, missing widgets reported."""
    live = {"seed": 1331, "control_after_generate": 1.5, "lips_expression": 20, "inference_steps": 20}
    want = {"seed": 1331, "control_after_generate": "randomize", "lips_expression": 1.5, "inference_steps": 20,
            "face": "largest"}
    assert check_widgets(live, want) == [
        "control_after_generate: expected 'randomize', got 1.5",
        "lips_expression: expected 1.5, got 20",
        "face: widget missing (node has ['control_after_generate', 'inference_steps', 'lips_expression', 'seed'])",
    ]
    assert check_widgets({"fps": 25, "x": 0.30000000000000004, "on": True}, {"fps": 25.0, "x": 0.3, "on": True}) == []
    assert check_widgets({"steps": True}, {"steps": 1}) == ["steps: expected 1, got True"]
