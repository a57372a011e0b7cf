"""Our nodes in the real ComfyUI frontend (headless Chromium): added from the node search, the old wrapper's
shared workflow dropped on the page and queued with the Run button, and every shipped example workflow.

Scenarios (issue 7): 1 node search → widgets/defaults/tooltips; 2 shared workflow → no missing-node dialog,
widget values where they belong; 3 queue it from the UI → success, saved video, progress shown for our node;
4 every file in example_workflows/ loads without warning and runs; 5 (issue 12) the preview output in a Preview
Image node, the faceless-frames text on the node, a before/after pair. Screenshots go to artifacts/browser/.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import requests

TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:  # also under --import-mode=importlib
    sys.path.insert(0, TESTS_DIR)

from browser_fixtures import (browser, comfy, comfy_tab, output_path, page, probe_output,  # noqa: F401
                              talking_clip)
from browser_harness import check_widgets, history_error, saved_videos, upload_input, wait_for_history

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_WORKFLOW = REPO_ROOT / "tests" / "fixtures" / "compat" / "wrapper_basic_workflow.json"
EXAMPLES = sorted((REPO_ROOT / "example_workflows").glob("*.json"))

OLD_SYNC_WIDGETS = ["seed", "control_after_generate", "lips_expression", "inference_steps"]
SYNC_DEFAULTS = {"seed": 1247, "control_after_generate": "randomize", "lips_expression": 1.5,
                 "inference_steps": 20, "length_mode": "audio", "deepcache": False, "face": "largest"}
CONTROL_DEFAULTS = {"blend": "reference", "feather_px": 12.0, "color_match": "off", "restore_strength": 1.0,
                    "min_face_height": 80.0, "face_confidence": 0.5, "redetect_every": 50}
NODES = {  # search text → (type, widget order that must start the list, defaults, widget hovered for its tooltip)
    "LatentSync1.6 Node": ("LatentSyncNode", OLD_SYNC_WIDGETS, {**SYNC_DEFAULTS, "fps": 25.0, **CONTROL_DEFAULTS,
                                                                "silence": "sync", "silence_db": -45.0},
                           "lips_expression"),
    "Video Length Adjuster": ("VideoLengthAdjuster", ["mode", "fps", "silent_padding_sec"],
                              {"mode": "normal", "fps": 25.0, "silent_padding_sec": 0.5}, "silent_padding_sec"),
    "LatentSync Model Loader": ("LatentSyncModelLoader", ["version", "dtype", "device", "keep_loaded"],
                                {"version": "1.6", "dtype": "auto", "device": "auto", "keep_loaded": False},
                                "dtype"),
    "LatentSync1.6 Video": ("LatentSyncVideo", OLD_SYNC_WIDGETS, SYNC_DEFAULTS, "inference_steps"),
    "LatentSync Dialogue": ("LatentSyncDialogue", ["fps", "face_1", "face_2", *OLD_SYNC_WIDGETS],
                            {"fps": 25.0, "face_1": "left", "face_2": "right", "face_3": "index:2",
                             **{k: v for k, v in SYNC_DEFAULTS.items() if k != "face"}, **CONTROL_DEFAULTS},
                            "face_1"),
}


# ------------------------------------------------------------------------------------------------ helpers
def shared_workflow_with_core_nodes(server, video: str) -> dict:
    """The old wrapper's shared workflow with its VHS nodes swapped for core ones (COMFY harness's swap), then
    completed as if a user had built it in the UI (the swap leaves positions and output link lists out)."""
    from comfy_server import swap_vhs_for_core
    original = json.loads(SHARED_WORKFLOW.read_text())
    wf = swap_vhs_for_core(original, video)
    complete_nodes(wf, {n["id"]: n for n in original["nodes"]}, server)
    return wf


def complete_nodes(wf: dict, original: dict, server) -> None:
    """Complete the nodes the swap added as a user-built graph would have them: a position next to their
    neighbours (a replaced node keeps the old node's place, a new source goes left of what it feeds, a new sink
    right of what feeds it) and the fields the frontend's workflow schema requires."""
    by_id = {n["id"]: n for n in wf["nodes"]}
    for n in wf["nodes"]:
        if "pos" not in n and n["id"] in original:
            n["pos"] = list(original[n["id"]]["pos"])
    for n in wf["nodes"]:
        if "pos" in n:
            continue
        for link in wf["links"]:
            if link[1] == n["id"] and "pos" in by_id[link[3]]:      # n feeds link[3]
                n["pos"] = [by_id[link[3]]["pos"][0] - 340, by_id[link[3]]["pos"][1]]
                break
            if link[3] == n["id"] and "pos" in by_id[link[1]]:      # link[1] feeds n
                n["pos"] = [by_id[link[1]]["pos"][0] + 340, by_id[link[1]]["pos"][1]]
                break
        else:
            n["pos"] = [0, 0]
    for order, n in enumerate(wf["nodes"]):  # the fields the frontend's workflow schema requires of a node
        n.setdefault("size", [300, 100])   # the frontend grows a node to fit its widgets
        n.setdefault("flags", {})
        n.setdefault("order", order)
        n.setdefault("mode", 0)
        n.setdefault("inputs", [])
        n.setdefault("outputs", [])
        n.setdefault("properties", {"Node name for S&R": n["type"]})
        if not n["outputs"]:   # output slots with the links that leave them, as the frontend saves them
            info = requests.get(f"{server.url}/object_info/{n['type']}", timeout=10).json()[n["type"]]
            n["outputs"] = [{"name": name, "type": typ, "links": [l[0] for l in wf["links"]
                                                                   if l[1] == n["id"] and l[2] == slot]}
                            for slot, (name, typ) in enumerate(zip(info["output_name"], info["output"]))]


def overlapping_nodes(nodes: list[dict], title_height: float = 30.0) -> list[str]:
    """Pairs of nodes whose boxes (title bar included, sizes as the frontend drew them) overlap."""
    boxes = [(n["title"], n["pos"][0], n["pos"][1] - title_height, n["pos"][0] + n["size"][0],
              n["pos"][1] + n["size"][1]) for n in nodes]
    found = []
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            if min(ax1, bx1) - max(ax0, bx0) > 2 and min(ay1, by1) - max(ay0, by0) > 2:
                found.append(f"{a} / {b}")
    return found


def nodes_of(wf: dict, node_type: str) -> list[dict]:
    return [n for n in wf["nodes"] if n["type"] == node_type]


def input_tooltips(node_def: dict) -> dict:
    inputs = {**node_def["input"].get("required", {}), **node_def["input"].get("optional", {})}
    return {name: (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}).get("tooltip", "")
            for name, spec in inputs.items()}


# ------------------------------------------------------------------------------------------------ scenario 1
def test_nodes_from_search_show_widgets_defaults_and_tooltips(page):
    spots = [(330, 160), (330, 800), (700, 160), (1070, 160), (1440, 160)]  # clear of the nodes added before
    for (query, (node_type, order, defaults, hovered)), at in zip(NODES.items(), spots):
        node = page.add_node_via_search(query, at=at)
        assert node["type"] == node_type, f"search {query!r} picked {node['type']}"
        assert node["widgetOrder"][:len(order)] == order, node["widgetOrder"]
        assert check_widgets(node["widgets"], defaults) == [], node_type
        tips = input_tooltips(page.node_def(node_type))
        assert all(tips.values()), f"{node_type} inputs without a tooltip: {[k for k, v in tips.items() if not v]}"
        assert page.hover_tooltip(node["id"], hovered) == tips[hovered]
        # sensible default size: every widget fits in the node as the frontend sized it
        assert node["size"][0] >= 250 and node["size"][1] >= 26 + 20 * len(node["widgetOrder"]), node["size"]
    page.screenshot("scenario1_node_search")


# ------------------------------------------------------------------------------------------------ scenario 2
def test_shared_workflow_loads_with_widget_values_in_place(page, comfy, talking_clip):
    wf = shared_workflow_with_core_nodes(comfy, "face.mp4")
    report = page.drop_workflow(wf, "latentsync1.5_comfyui_basic.json")
    assert report == {"dialogs": [], "toasts": [], "unknown_nodes": [], "console": []}
    # the old two-value list [seed, "randomize"]: seed and its control land, the rest take our defaults
    assert check_widgets(page.node(54)["widgets"], {**SYNC_DEFAULTS, "seed": 1331}) == []
    assert check_widgets(page.node(55)["widgets"], {"mode": "pingpong", "fps": 25.0, "silent_padding_sec": 0.5}) == []
    assert check_widgets(page.node(41)["widgets"], {"fps": 25.0}) == []           # CreateVideo (was VideoCombine)
    assert overlapping_nodes(page.nodes()) == []
    page.fit_view()
    page.screenshot("scenario2_shared_workflow")

    # a full old-wrapper list keeps every value, and so does a full list of today's node
    old_full = copy.deepcopy(wf)
    nodes_of(old_full, "LatentSyncNode")[0]["widgets_values"] = [4242, "fixed", 2.5, 7]
    nodes_of(old_full, "VideoLengthAdjuster")[0]["widgets_values"] = ["loop_to_audio", 30, 1.2]
    report = page.load_graph(old_full)          # the app's own load-graph call (workflow sidebar, templates)
    assert report == {"dialogs": [], "toasts": [], "unknown_nodes": [], "console": []}
    assert check_widgets(page.node(54)["widgets"], {**SYNC_DEFAULTS, "seed": 4242, "control_after_generate": "fixed",
                                                    "lips_expression": 2.5, "inference_steps": 7}) == []
    assert check_widgets(page.node(55)["widgets"], {"mode": "loop_to_audio", "fps": 30.0,
                                                    "silent_padding_sec": 1.2}) == []
    new_full = copy.deepcopy(wf)
    nodes_of(new_full, "LatentSyncNode")[0]["widgets_values"] = [77, "increment", 1.8, 3, "video", True,
                                                                 "index:1", 29.97, "feather", 20.0, "mean_std",
                                                                 0.5, 0.1, 0.7, 10, "keep", -40.0]
    report = page.drop_workflow(new_full, "new_full.json")
    assert report == {"dialogs": [], "toasts": [], "unknown_nodes": [], "console": []}
    assert check_widgets(page.node(54)["widgets"], {
        "seed": 77, "control_after_generate": "increment", "lips_expression": 1.8, "inference_steps": 3,
        "length_mode": "video", "deepcache": True, "face": "index:1", "fps": 29.97, "blend": "feather",
        "feather_px": 20.0, "color_match": "mean_std", "restore_strength": 0.5, "min_face_height": 0.1,
        "face_confidence": 0.7, "redetect_every": 10, "silence": "keep", "silence_db": -40.0}) == []


def test_wrong_widget_order_in_shared_workflow_is_caught(page, comfy):
    """Values written in the wrong order (as a buggy node definition would read them) are reported by name."""
    wf = shared_workflow_with_core_nodes(comfy, "face.mp4")
    nodes_of(wf, "LatentSyncNode")[0]["widgets_values"] = [1331, 1.5, 20]          # control value left out
    nodes_of(wf, "VideoLengthAdjuster")[0]["widgets_values"] = [25, "pingpong", 0.5]  # mode and fps swapped
    page.drop_workflow(wf, "swapped.json")
    sync = check_widgets(page.node(54)["widgets"], {**SYNC_DEFAULTS, "seed": 1331})
    adjust = check_widgets(page.node(55)["widgets"], {"mode": "pingpong", "fps": 25.0, "silent_padding_sec": 0.5})
    assert sync and all(p.split(":")[0] in ("control_after_generate", "lips_expression", "inference_steps")
                        for p in sync), sync
    assert adjust == ["mode: expected 'pingpong', got 25", "fps: expected 25.0, got 'pingpong'"]


# ------------------------------------------------------------------------------------------------ scenario 3
def test_shared_workflow_queued_from_ui_runs_and_shows_progress(page, comfy, talking_clip):
    video = upload_input(comfy.url, talking_clip.video, "face.mp4")
    upload_input(comfy.url, talking_clip.speech, "talk.wav")          # the name the shared workflow uses
    wf = shared_workflow_with_core_nodes(comfy, video)
    assert page.drop_workflow(wf, "latentsync1.5_comfyui_basic.json")["unknown_nodes"] == []
    # A user edits the node in the UI before running: 3 steps (20 steps of a random tiny model would only cost
    # time; scenario 2 checks that the loaded value is 20).
    page.set_widget(54, "inference_steps", 3)
    page.fit_view()
    page.page.evaluate("() => { const r = window.__lsRecorder; r.progress.length = 0; r.nodeProgress = {}; }")

    answer = page.queue_from_ui()
    assert answer["status"] == 200 and answer["node_errors"] == {}, answer
    sent = answer["request"]["prompt"]["54"]["inputs"]            # the frontend's own graph → prompt conversion
    assert (sent["seed"], sent["lips_expression"], sent["inference_steps"]) == (1331, 1.5, 3), sent
    assert sent["images"] == ["55", 0] and sent["audio"] == ["55", 1]
    if page.wait_for_node_progress(54, answer["prompt_id"]):   # photograph the bar on our node while it runs
        page.screenshot("scenario3_running")
    entry = wait_for_history(comfy.url, answer["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "success", history_error(entry)
    page.page.wait_for_timeout(300)
    page.screenshot("scenario3_done")

    rec = page.recorded_progress()
    ours = [p for p in rec["progress"] if str(p.get("node")) == "54"]
    assert ours, f"no progress events for LatentSyncNode: {rec['progress'][:5]}"
    # one 16-frame window x 3 steps: the bar goes 1/3, 2/3, 3/3
    assert [(p["value"], p["max"]) for p in ours if p["value"] > 0] == [(1, 3), (2, 3), (3, 3)], ours
    drawn = rec["nodeProgress"].get("54", [])
    assert any(0 < v < 1 for v in drawn), f"the canvas never drew a part-filled progress bar on our node: {drawn}"

    # pingpong: 0.1 s speech + 0.5 s padding = 0.6 s → 15 frames at 25 fps (6 input frames played back and forth)
    [item] = saved_videos(entry)
    info = probe_output(comfy, item)
    assert (info.n_frames, info.fps, info.has_audio) == (15, 25.0, True), info
    from latentsync.video import read_audio
    samples, sr = read_audio(output_path(comfy, item))
    assert samples.shape[-1] / sr == pytest.approx(0.6, abs=0.05)


# ------------------------------------------------------------------------------------------------ scenario 4
@pytest.mark.parametrize("path", EXAMPLES or [None], ids=[p.stem for p in EXAMPLES] or ["no-examples"])
def test_example_workflow_loads_cleanly_and_runs(page, comfy, path):
    assert path is not None, "example_workflows/ has no workflow (issue 5 ships three)"
    wf = json.loads(path.read_text())   # its media (latentsync_sample.mp4/.wav ...) is uploaded by the harness
    report = page.drop_workflow(wf, path.name)
    assert report == {"dialogs": [], "toasts": [], "unknown_nodes": [], "console": []}
    for n in page.nodes():   # edited in the UI before running, as a user would: 1 step (CPU time)
        if "inference_steps" in n["widgets"]:
            page.set_widget(n["id"], "inference_steps", 1)
    page.fit_view()
    answer = page.queue_from_ui()
    assert answer["status"] == 200 and answer["node_errors"] == {}, answer
    entry = wait_for_history(comfy.url, answer["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "success", history_error(entry)
    page.page.wait_for_timeout(300)
    page.screenshot(f"scenario4_{path.stem}")   # with the saved video's preview
    [item] = saved_videos(entry)
    info = probe_output(comfy, item)
    assert info.n_frames > 0 and info.has_audio, info
    import comfy_server as cs   # the harness's media: 20 frames at 25 fps, 0.61 s of speech
    expected = {"latentsync_basic": cs.SAMPLE_FRAMES,        # normal: the padded audio is longer → video kept
                "latentsync_model_loader": cs.SAMPLE_FRAMES,
                "latentsync_streaming": round(cs.SPEECH_SECONDS * cs.SAMPLE_FPS),  # audio decides
                "latentsync_dialogue": cs.DIALOGUE_FRAMES}.get(path.stem)  # length_mode video: the clip decides
    if expected is not None:
        assert (info.n_frames, info.fps) == (expected, cs.SAMPLE_FPS), info
        from latentsync.video import read_audio
        samples, sr = read_audio(output_path(comfy, item))
        assert samples.shape[-1] / sr == pytest.approx(expected / cs.SAMPLE_FPS, abs=0.05)


@pytest.mark.parametrize("path", EXAMPLES or [None], ids=[p.stem for p in EXAMPLES] or ["no-examples"])
def test_example_workflow_layout_is_readable(page, comfy, path):
    """Once the frontend has sized every node (video/audio previews loaded), no node covers another."""
    assert path is not None, "example_workflows/ has no workflow (issue 5 ships three)"
    page.drop_workflow(json.loads(path.read_text()), path.name)
    page.page.wait_for_function("() => [...document.querySelectorAll('video')].every(v => v.readyState >= 1)",
                                timeout=10_000)
    page.page.wait_for_timeout(500)
    nodes = page.nodes()
    assert overlapping_nodes(nodes) == [], (
        f"{path.name}: nodes overlap when drawn; drawn boxes (x, y, w, h): "
        + "; ".join(f"{n['title']} {[round(v) for v in n['pos'] + n['size']]}" for n in nodes))


# ------------------------------------------------------------------------------------------------ scenario 5
CLEAN = {"dialogs": [], "toasts": [], "unknown_nodes": [], "console": []}
TEXT_WIDGET = "$$node-text-preview"  # the frontend's widget for a node's progress text
_ADD_NODE = """([type, title]) => { const n = LiteGraph.createNode(type); n.title = title; app.graph.add(n);
                                    return n.id; }"""


def _colour_share(path: Path, colour, tolerance: int = 30) -> float:
    import cv2
    import numpy as np
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(int)
    return float((np.abs(image - np.array(colour)).max(axis=-1) <= tolerance).mean())


def test_preview_output_and_a_before_after_pair_in_the_frontend(page, comfy, tmp_path):
    """The model-loader example (its sync node's preview output feeds a Preview Image node), on a clip whose
    frames 5..9 show no face, with two more Preview Image nodes for the input frames (before) and the lip-synced
    frames (after), run with the Run button."""
    import comfy_server as cs
    from latentsync.preview import BOX_COLOUR, MOUTH_COLOUR, NO_FACE_COLOUR
    video = upload_input(comfy.url, cs.write_faceless_clip(tmp_path), cs.FACELESS_VIDEO)
    wf = json.loads((REPO_ROOT / "example_workflows" / "latentsync_model_loader.json").read_text())
    nodes_of(wf, "LoadVideo")[0]["widgets_values"][0] = video
    assert page.drop_workflow(wf, "latentsync_model_loader.json") == CLEAN
    page.set_widget(5, "inference_steps", 1)
    before = page.page.evaluate(_ADD_NODE, ["PreviewImage", "Before: input frames"])
    after = page.page.evaluate(_ADD_NODE, ["PreviewImage", "After: lip-synced frames"])
    page.connect((2, 0), (before, "images"))   # Get Video Components' images
    page.connect((5, 0), (after, "images"))    # the sync node's images
    page.place(9, (0, 720), (1000, 620))       # the preview output's node, made large under the graph
    page.place(before, (1040, 720), (480, 620))
    page.place(after, (1560, 720), (480, 620))
    page.page.evaluate("() => { window.__lsRecorder.progressText.length = 0; }")

    answer = page.queue_from_ui()
    assert answer["status"] == 200 and answer["node_errors"] == {}, answer
    entry = wait_for_history(comfy.url, answer["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "success", history_error(entry)
    n = cs.SAMPLE_FRAMES
    page.page.wait_for_function("([ids, n]) => ids.every(id => app.graph.getNodeById(id).imgs?.length === n)",
                                arg=[[9, before, after], n], timeout=30_000)
    assert [len(entry["outputs"][str(i)]["images"]) for i in (9, before, after)] == [n, n, n]
    summary = f"no face in {len(cs.FACELESS_FRAMES)} of {n} frames: {cs.FACELESS_FRAMES[0]}–{cs.FACELESS_FRAMES[-1]}"
    assert {"nodeId": "5", "text": summary} in page.recorded_progress()["progressText"]
    assert page.node(5)["widgets"].get(TEXT_WIDGET) == summary   # the text the node shows
    assert overlapping_nodes(page.nodes()) == []

    page.fit_view()
    shot = page.screenshot("preview_output")   # the 20 previews as a grid, frames 5..9 with their red border
    assert _colour_share(shot, NO_FACE_COLOUR) > 0.0002, "no faceless-frame border visible in the preview grid"
    page.page.evaluate("(ids) => ids.forEach(id => { app.graph.getNodeById(id).imageIndex = 0; })",
                       [9, before, after])   # what a click on the first thumbnail does
    page.fit_view([9])
    shot = page.screenshot("preview_output_frame")   # frame 0 large: face box, alignment points, mouth region
    # thin anti-aliased lines: measured ~4.5e-5 of the screenshot each for the box and the mouth outline
    assert _colour_share(shot, BOX_COLOUR) > 2e-5, "no face box visible in the enlarged preview"
    assert _colour_share(shot, MOUTH_COLOUR) > 2e-5, "no mouth region visible in the enlarged preview"
    page.fit_view([before, after])
    shot = page.screenshot("before_after")   # frame 0 before and after (random tiny weights: the mouth is noise)
    assert _colour_share(shot, BOX_COLOUR) < 5e-6   # the frames themselves, nothing drawn on them
