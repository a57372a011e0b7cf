"""Writes example_workflows/*.json (UI format, what the ComfyUI frontend loads) and the same graphs in API format
(example_workflows/api/*.json, what POST /prompt takes) from one description, so the two never drift apart.

    python tools/make_example_workflows.py [OUT_DIR]     (default: example_workflows/)

Inputs reference latentsync_sample.mp4 / latentsync_sample.wav in ComfyUI's input folder (upload your own
files under these names, or pick others in the UI). Only core nodes besides this pack's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEO, AUDIO = "latentsync_sample.mp4", "latentsync_sample.wav"

# type -> (socket inputs [(name, type, optional)], widget names in order, outputs [(name, type)])
TYPES = {
    "LoadVideo": ([], ["file"], [("VIDEO", "VIDEO")]),
    "LoadAudio": ([], ["audio"], [("AUDIO", "AUDIO")]),
    "GetVideoComponents": ([("video", "VIDEO", False)], [], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "VideoLengthAdjuster": ([("images", "IMAGE", False), ("audio", "AUDIO", False)],
                            ["mode", "fps", "silent_padding_sec"], [("images", "IMAGE"), ("audio", "AUDIO")]),
    "LatentSyncNode": ([("images", "IMAGE", False), ("audio", "AUDIO", False), ("model", "LATENTSYNC_MODEL", True)],
                       ["seed", "lips_expression", "inference_steps", "length_mode", "deepcache", "face", "fps"],
                       [("images", "IMAGE"), ("audio", "AUDIO")]),
    "LatentSyncVideo": ([("video", "VIDEO", False), ("audio", "AUDIO", False), ("model", "LATENTSYNC_MODEL", True)],
                        ["seed", "lips_expression", "inference_steps", "length_mode", "deepcache", "face"],
                        [("video", "VIDEO")]),
    "LatentSyncModelLoader": ([], ["version", "dtype", "device", "keep_loaded", "models_dir"],
                              [("model", "LATENTSYNC_MODEL")]),
    "CreateVideo": ([("images", "IMAGE", False), ("audio", "AUDIO", True)], ["fps"], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO", False)], ["filename_prefix", "format", "codec"], []),
}
WIDGET_TYPES = {"fps": "FLOAT"}
SEEDED = {"LatentSyncNode", "LatentSyncVideo"}


def _node(nid, typ, widgets, links=None, pos=(0, 0), title=None):
    return {"id": nid, "type": typ, "widgets": widgets, "links": links or {}, "pos": pos, "title": title}


def basic(loader: bool) -> list[dict]:
    nodes = [
        _node(1, "LoadVideo", {"file": VIDEO}, pos=(0, 0)),
        _node(2, "GetVideoComponents", {}, {"video": (1, 0)}, pos=(340, 0)),
        _node(3, "LoadAudio", {"audio": AUDIO}, pos=(0, 430)),
        _node(4, "VideoLengthAdjuster", {"mode": "normal", "fps": 25.0, "silent_padding_sec": 0.5},
              {"images": (2, 0), "audio": (3, 0), "fps": (2, 2)}, pos=(680, 0)),
        _node(5, "LatentSyncNode", {"seed": 1247, "lips_expression": 1.5, "inference_steps": 20,
                                    "length_mode": "audio", "deepcache": False, "face": "largest", "fps": 25.0},
              {"images": (4, 0), "audio": (4, 1), "fps": (2, 2), **({"model": (8, 0)} if loader else {})},
              pos=(1020, 0)),
        _node(6, "CreateVideo", {"fps": 25.0}, {"images": (5, 0), "audio": (5, 1), "fps": (2, 2)}, pos=(1360, 0)),
        _node(7, "SaveVideo", {"filename_prefix": "video/latentsync", "format": "auto", "codec": "auto"},
              {"video": (6, 0)}, pos=(1700, 0)),
    ]
    if loader:
        nodes.append(_node(8, "LatentSyncModelLoader", {"version": "1.6", "dtype": "auto", "device": "auto",
                                                        "keep_loaded": False, "models_dir": ""}, pos=(680, 240)))
    return nodes


def streaming() -> list[dict]:
    return [
        _node(1, "LoadVideo", {"file": VIDEO}, pos=(0, 0)),
        _node(3, "LoadAudio", {"audio": AUDIO}, pos=(0, 430)),
        _node(8, "LatentSyncModelLoader", {"version": "1.6", "dtype": "auto", "device": "auto",
                                           "keep_loaded": False, "models_dir": ""}, pos=(0, 640)),
        _node(9, "LatentSyncVideo", {"seed": 1247, "lips_expression": 1.5, "inference_steps": 20,
                                     "length_mode": "audio", "deepcache": False, "face": "largest"},
              {"video": (1, 0), "audio": (3, 0), "model": (8, 0)}, pos=(400, 0)),
        _node(7, "SaveVideo", {"filename_prefix": "video/latentsync_stream", "format": "auto", "codec": "auto"},
              {"video": (9, 0)}, pos=(760, 0)),
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
            "id": n["id"], "type": n["type"], "pos": list(n["pos"]), "size": [300, 160], "flags": {},
            "order": order, "mode": 0, "inputs": inputs,
            "outputs": [{"name": name, "type": typ, "links": out_links.get((n["id"], slot), []), "slot_index": slot}
                        for slot, (name, typ) in enumerate(outputs)],
            "properties": {"Node name for S&R": n["type"]}, "widgets_values": _widget_values(n)})
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": [lk[:6] for lk in links], "groups": [], "config": {}, "extra": {}, "version": 0.4}


EXAMPLES = {
    "latentsync_basic": lambda: basic(loader=False),
    "latentsync_model_loader": lambda: basic(loader=True),
    "latentsync_streaming": streaming,
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
