"""Writes example_workflows/*.json (UI format, what the ComfyUI frontend loads) and the same graphs in API format
(example_workflows/api/*.json, what POST /prompt takes) from one description, so the two never drift apart.

    python tools/make_example_workflows.py [OUT_DIR]     (default: example_workflows/)

Inputs reference latentsync_sample.mp4 / latentsync_sample.wav (the dialogue: latentsync_dialogue.mp4,
latentsync_speaker1.wav, latentsync_speaker2.wav) in ComfyUI's input folder (upload your own files under these
names, or pick others in the UI). Only core nodes besides this pack's. Every widget is written with its value
(the defaults unless an example says otherwise), so the API files show every control a job can set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEO, AUDIO = "latentsync_sample.mp4", "latentsync_sample.wav"
DIALOGUE_VIDEO = "latentsync_dialogue.mp4"
SPEAKER_AUDIO = ("latentsync_speaker1.wav", "latentsync_speaker2.wav")

# The sync nodes' widgets with their defaults, in the order the nodes declare them (nodes.py, node_common.py).
SYNC = {"seed": 1247, "lips_expression": 1.5, "inference_steps": 20}
MODEL = {"length_mode": "audio", "deepcache": False}
CONTROLS = {"blend": "reference", "feather_px": 12.0, "color_match": "off", "restore_strength": 1.0,
            "min_face_height": 80.0, "face_confidence": 0.5, "redetect_every": 50}
SILENCE = {"silence": "sync", "silence_db": -45.0}
SYNC_NODE_WIDGETS = {**SYNC, **MODEL, "face": "largest", "fps": 25.0, **CONTROLS, **SILENCE}
VIDEO_NODE_WIDGETS = {**SYNC, **MODEL, "face": "largest", **CONTROLS, **SILENCE}
DIALOGUE_WIDGETS = {"fps": 25.0, "face_1": "left", "face_2": "right", **SYNC, **MODEL, "face_3": "index:2",
                    "face_4": "index:3", **CONTROLS}
# sockets the sync nodes offer besides their media: models, the restoration model, the face search region
EXTRA_SOCKETS = [("model", "LATENTSYNC_MODEL", True), ("restore_model", "UPSCALE_MODEL", True),
                 ("face_region", "MASK", True)]

GPU_LEVERS = ["compile", "cuda_graphs", "channels_last", "cudnn_benchmark", "vae_tiling"]  # the loader's, all off
# type -> (socket inputs [(name, type, optional)], widget names in order, outputs [(name, type)])
TYPES = {
    "LoadVideo": ([], ["file"], [("VIDEO", "VIDEO")]),
    "LoadAudio": ([], ["audio"], [("AUDIO", "AUDIO")]),
    "GetVideoComponents": ([("video", "VIDEO", False)], [],
                           [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "VideoLengthAdjuster": ([("images", "IMAGE", False), ("audio", "AUDIO", False)],
                            ["mode", "fps", "silent_padding_sec"], [("images", "IMAGE"), ("audio", "AUDIO")]),
    "LatentSyncNode": ([("images", "IMAGE", False), ("audio", "AUDIO", False), *EXTRA_SOCKETS],
                       list(SYNC_NODE_WIDGETS), [("images", "IMAGE"), ("audio", "AUDIO"), ("preview", "IMAGE")]),
    "LatentSyncVideo": ([("video", "VIDEO", False), ("audio", "AUDIO", False), *EXTRA_SOCKETS],
                        list(VIDEO_NODE_WIDGETS), [("video", "VIDEO")]),
    "LatentSyncDialogue": ([("images", "IMAGE", False), ("audio_1", "AUDIO", False), ("audio_2", "AUDIO", False),
                            ("model", "LATENTSYNC_MODEL", True), ("audio_3", "AUDIO", True),
                            ("audio_4", "AUDIO", True), *EXTRA_SOCKETS[1:]],
                           list(DIALOGUE_WIDGETS), [("images", "IMAGE"), ("audio", "AUDIO"), ("preview", "IMAGE")]),
    "LatentSyncModelLoader": ([], ["version", "dtype", "device", "keep_loaded", "models_dir", *GPU_LEVERS,
                                   "auto_download"],
                              [("model", "LATENTSYNC_MODEL")]),
    "CreateVideo": ([("images", "IMAGE", False), ("audio", "AUDIO", True)], ["fps"], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO", False)], ["filename_prefix", "format", "codec"], []),
    "PreviewImage": ([("images", "IMAGE", False)], [], []),
}
WIDGET_TYPES = {"fps": "FLOAT"}
SEEDED = {"LatentSyncNode", "LatentSyncVideo", "LatentSyncDialogue"}
COLUMN = 340  # x distance between the columns of the layout (nodes are 300 px wide)


def _node(nid, typ, widgets, links=None, pos=(0, 0), title=None, size=(300, 160)):
    return {"id": nid, "type": typ, "widgets": widgets, "links": links or {}, "pos": pos, "title": title,
            "size": size}


def _loader(nid: int, pos) -> dict:
    return _node(nid, "LatentSyncModelLoader", {"version": "1.6", "dtype": "auto", "device": "auto",
                                                "keep_loaded": False, "models_dir": "",
                                                **{lever: False for lever in GPU_LEVERS}, "auto_download": True},
                 pos=pos, size=(300, 320))


def _save(nid: int, prefix: str, video_from: tuple[int, int], pos) -> dict:
    return _node(nid, "SaveVideo", {"filename_prefix": prefix, "format": "auto", "codec": "auto"},
                 {"video": video_from}, pos=pos, size=(300, 420))


def basic(loader: bool) -> list[dict]:
    """Frames and audio fitted by the Video Length Adjuster, lip-synced, saved as a video. With the loader (the
    fuller example) the sync node's preview (face box, alignment points, mouth region) goes to a Preview Image
    node too; the basic graph stays the old wrapper's shape."""
    nodes = [
        _node(1, "LoadVideo", {"file": VIDEO}, pos=(0, 0), size=(300, 400)),
        _node(2, "GetVideoComponents", {}, {"video": (1, 0)}, pos=(COLUMN, 0), size=(300, 90)),
        _node(3, "LoadAudio", {"audio": AUDIO}, pos=(0, 460), size=(300, 140)),
        _node(4, "VideoLengthAdjuster", {"mode": "normal", "fps": 25.0, "silent_padding_sec": 0.5},
              {"images": (2, 0), "audio": (3, 0), "fps": (2, 2)}, pos=(2 * COLUMN, 0), size=(300, 140)),
        _node(5, "LatentSyncNode", dict(SYNC_NODE_WIDGETS),
              {"images": (4, 0), "audio": (4, 1), "fps": (2, 2), **({"model": (8, 0)} if loader else {})},
              pos=(3 * COLUMN, 0), size=(300, 520)),
        _node(6, "CreateVideo", {"fps": 25.0}, {"images": (5, 0), "audio": (5, 1), "fps": (2, 2)},
              pos=(4 * COLUMN, 0), size=(300, 100)),
        _save(7, "video/latentsync", (6, 0), pos=(5 * COLUMN, 0)),
    ]
    if loader:
        nodes += [_loader(8, pos=(2 * COLUMN, 220)),
                  _node(9, "PreviewImage", {}, {"images": (5, 2)}, pos=(4 * COLUMN, 160), title="Face preview",
                        size=(300, 360))]
    return nodes


def streaming() -> list[dict]:
    return [
        _node(1, "LoadVideo", {"file": VIDEO}, pos=(0, 0), size=(300, 400)),
        _node(3, "LoadAudio", {"audio": AUDIO}, pos=(0, 460), size=(300, 140)),
        _loader(8, pos=(0, 660)),
        _node(9, "LatentSyncVideo", dict(VIDEO_NODE_WIDGETS), {"video": (1, 0), "audio": (3, 0), "model": (8, 0)},
              pos=(400, 0), size=(300, 520)),
        _save(7, "video/latentsync_stream", (9, 0), pos=(760, 0)),
    ]


def dialogue() -> list[dict]:
    """A two-person shot: speaker 1 (the left face) and speaker 2 (the right face), each with its own track;
    the video keeps its length (length_mode video), the output audio is both tracks mixed."""
    return [
        _node(1, "LoadVideo", {"file": DIALOGUE_VIDEO}, pos=(0, 0), size=(300, 400)),
        _node(2, "GetVideoComponents", {}, {"video": (1, 0)}, pos=(COLUMN, 0), size=(300, 90)),
        _node(3, "LoadAudio", {"audio": SPEAKER_AUDIO[0]}, pos=(0, 460), title="Speaker 1 (left)", size=(300, 140)),
        _node(4, "LoadAudio", {"audio": SPEAKER_AUDIO[1]}, pos=(0, 660), title="Speaker 2 (right)",
              size=(300, 140)),
        _node(5, "LatentSyncDialogue", {**DIALOGUE_WIDGETS, "length_mode": "video"},
              {"images": (2, 0), "fps": (2, 2), "audio_1": (3, 0), "audio_2": (4, 0)},
              pos=(2 * COLUMN, 0), size=(300, 560)),
        _node(6, "CreateVideo", {"fps": 25.0}, {"images": (5, 0), "audio": (5, 1), "fps": (2, 2)},
              pos=(3 * COLUMN, 0), size=(300, 100)),
        _save(7, "video/latentsync_dialogue", (6, 0), pos=(4 * COLUMN, 0)),
        _node(8, "PreviewImage", {}, {"images": (5, 2)}, pos=(3 * COLUMN, 160), title="Speakers preview",
              size=(300, 360)),
    ]


def to_api(nodes: list[dict]) -> dict:
    prompt = {}
    for n in nodes:
        inputs = dict(n["widgets"])
        for name, (src, slot) in n["links"].items():
            inputs[name] = [str(src), slot]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs,
                                "_meta": {"title": n["title"] or n["type"]}}
    return prompt


def _widget_values(n: dict) -> list:
    sockets, widgets, _ = TYPES[n["type"]]
    values = []
    for name in widgets:
        values.append(n["widgets"][name])
        if name == "seed" and n["type"] in SEEDED:
            values.append("fixed")
        if n["type"] == "LoadVideo":
            values.append("image")  # the upload button's value, as the frontend saves it
        if n["type"] == "LoadAudio":
            values += ["", ""]  # audio upload + preview widgets, as the frontend saves them
    return values


def to_ui(nodes: list[dict]) -> dict:
    links, ui_nodes = [], []
    by_id = {n["id"]: n for n in nodes}
    out_links: dict[tuple[int, int], list[int]] = {}
    for n in nodes:
        for name, (src, slot) in n["links"].items():
            lid = len(links) + 1
            src_type = TYPES[by_id[src]["type"]][2][slot][1]
            links.append([lid, src, slot, n["id"], None, src_type, name])
            out_links.setdefault((src, slot), []).append(lid)
    link_of = {(lk[3], lk[6]): lk for lk in links}
    for order, n in enumerate(nodes):
        sockets, widgets, outputs = TYPES[n["type"]]
        inputs = []
        for name, typ, optional in sockets:
            entry = {"name": name, "type": typ, "link": None}
            if optional:
                entry["shape"] = 7
            inputs.append(entry)
        for name in widgets:  # widgets driven by a link get a socket entry too
            if name in n["links"]:
                inputs.append({"name": name, "type": WIDGET_TYPES.get(name, "FLOAT"), "widget": {"name": name},
                               "link": None})
        for slot, entry in enumerate(inputs):
            lk = link_of.get((n["id"], entry["name"]))
            if lk is not None:
                entry["link"], lk[4] = lk[0], slot
        ui_nodes.append({
            "id": n["id"], "type": n["type"], **({"title": n["title"]} if n["title"] else {}),
            "pos": list(n["pos"]), "size": list(n["size"]), "flags": {}, "order": order, "mode": 0, "inputs": inputs,
            "outputs": [{"name": name, "type": typ, "links": out_links.get((n["id"], slot), []), "slot_index": slot}
                        for slot, (name, typ) in enumerate(outputs)],
            "properties": {"Node name for S&R": n["type"]}, "widgets_values": _widget_values(n)})
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": [lk[:6] for lk in links], "groups": [], "config": {}, "extra": {}, "version": 0.4}


EXAMPLES = {
    "latentsync_basic": lambda: basic(loader=False),
    "latentsync_model_loader": lambda: basic(loader=True),
    "latentsync_streaming": streaming,
    "latentsync_dialogue": dialogue,
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else ROOT / "example_workflows"
    (out / "api").mkdir(parents=True, exist_ok=True)
    for name, build in EXAMPLES.items():
        nodes = build()
        (out / f"{name}.json").write_text(json.dumps(to_ui(nodes), indent=2) + "\n")
        (out / "api" / f"{name}.json").write_text(json.dumps(to_api(nodes), indent=2) + "\n")
        print(out / f"{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
