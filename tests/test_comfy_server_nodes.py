"""A real ComfyUI with this pack: the node schemas it serves, the old wrapper's shared workflow and every shipped
example run to success and write an mp4 whose frame count / fps / audio duration follow the rules."""

from __future__ import annotations

import json

import pytest

import comfy_server as cs

pytestmark = [pytest.mark.server, pytest.mark.slow]

STEPS = 1  # tiny random models on CPU: one denoising step is enough to exercise every stage
FPS = cs.SAMPLE_FPS
AUDIO_TOL = 0.05  # AAC frames (1024 samples) round the muxed audio's length


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, tiny_models):
    server = cs.shared_server(tmp_path_factory, tiny_models)
    yield server
    cs.stop_shared()


@pytest.fixture(scope="session")
def object_info(comfy):
    return comfy.client.get("/object_info")


def _names(info: dict, section: str) -> list[str]:
    return info["input_order"].get(section, [])


def test_object_info_lists_every_node_with_its_inputs(object_info):
    node = object_info["LatentSyncNode"]
    assert node["display_name"] == "LatentSync1.6 Node" and node["category"] == "LatentSyncNode"
    assert _names(node, "required") == ["images", "audio", "seed", "lips_expression", "inference_steps"]
    controls = ["blend", "feather_px", "color_match", "restore_model", "restore_strength", "min_face_height",
                "face_confidence", "face_region", "redetect_every", "silence", "silence_db"]
    # the old optional inputs first, in their order; the artist controls after them (old workflows keep loading)
    assert _names(node, "optional") == ["model", "length_mode", "deepcache", "face", "fps", *controls]
    assert node["input"]["optional"]["restore_model"][0] == "UPSCALE_MODEL"
    assert node["input"]["optional"]["face_region"][0] == "MASK"
    req = node["input"]["required"]
    assert req["seed"][1]["default"] == 1247 and req["seed"][1]["control_after_generate"] is True
    assert (req["lips_expression"][1]["default"], req["lips_expression"][1]["min"], req["lips_expression"][1]["max"],
            req["lips_expression"][1]["step"]) == (1.5, 1.0, 3.0, 0.1)
    assert (req["inference_steps"][1]["default"], req["inference_steps"][1]["min"],
            req["inference_steps"][1]["max"]) == (20, 1, 999)
    assert node["output"] == ["IMAGE", "AUDIO", "IMAGE"] and node["output_name"] == ["images", "audio", "preview"]

    adj = object_info["VideoLengthAdjuster"]
    assert _names(adj, "required") == ["images", "audio", "mode", "fps", "silent_padding_sec"]
    assert adj["input"]["required"]["mode"][1]["options"] == ["normal", "pingpong", "loop_to_audio"]
    assert adj["input"]["required"]["fps"][1]["default"] == 25.0
    assert adj["input"]["required"]["silent_padding_sec"][1]["default"] == 0.5
    assert adj["output_name"] == ["images", "audio"]

    loader = object_info["LatentSyncModelLoader"]
    assert _names(loader, "required") == ["version", "dtype", "device", "keep_loaded"]
    assert loader["input"]["required"]["version"][1]["options"] == ["1.6", "1.5"]
    assert loader["input"]["required"]["dtype"][1]["options"] == ["auto", "fp16", "bf16", "fp32"]
    assert loader["output"] == ["LATENTSYNC_MODEL"]

    video = object_info["LatentSyncVideo"]
    assert _names(video, "required") == ["video", "audio", "seed", "lips_expression", "inference_steps"]
    assert _names(video, "optional") == ["model", "length_mode", "deepcache", "face", *controls]
    assert video["output"] == ["VIDEO"]

    dialogue = object_info["LatentSyncDialogue"]
    assert _names(dialogue, "required") == ["images", "fps", "audio_1", "face_1", "audio_2", "face_2", "seed",
                                            "lips_expression", "inference_steps"]
    assert _names(dialogue, "optional")[:6] == ["model", "length_mode", "deepcache", "audio_3", "face_3", "audio_4"]
    assert dialogue["output_name"] == ["images", "audio", "preview"]
    assert object_info["LatentSyncDialogueVideo"]["output"] == ["VIDEO"]
    for name in ("LatentSyncNode", "VideoLengthAdjuster", "LatentSyncModelLoader", "LatentSyncVideo",
                 "LatentSyncDialogue", "LatentSyncDialogueVideo"):
        for section in ("required", "optional"):
            for inp, spec in object_info[name]["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{name}.{inp} has no tooltip"


EXAMPLES = sorted(p.stem for p in (cs.REPO_ROOT / "example_workflows").glob("*.json"))


def test_every_example_ships_in_both_formats():
    api = sorted(p.stem for p in (cs.REPO_ROOT / "example_workflows" / "api").glob("*.json"))
    assert api == EXAMPLES and {"latentsync_basic", "latentsync_dialogue"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_shipped_ui_and_api_examples_are_the_same_graph(object_info, name):
    converted = cs.ui_to_api(cs.load_workflow(name, api=False), object_info, strict=True)  # every widget written
    shipped = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in cs.load_workflow(name).items()}
    assert converted == shipped


def _run(comfy, prompt: dict, tmp_path):
    result = comfy.client.run(prompt, timeout=900)
    assert result.status == "success", f"{result.error_text}\n{comfy.log_tail()}"
    videos = [f for f in result.files() if f["filename"].endswith(".mp4")]
    assert len(videos) == 1, result.outputs
    return cs.probe_output(comfy.client.download(videos[0], tmp_path)), result


def test_shared_wrapper_workflow_runs_unchanged_with_core_video_nodes(comfy, object_info, tmp_path, repo_root):
    """The old wrapper's example (VHS nodes swapped for core ones) converts and runs: pingpong, 0.5 s padding."""
    shared = json.loads((repo_root / "tests" / "fixtures" / "compat" / "wrapper_basic_workflow.json").read_text())
    workflow = cs.swap_vhs_for_core(shared, cs.SAMPLE_VIDEO)
    for node in workflow["nodes"]:
        if node["type"] == "LoadAudio":
            node["widgets_values"][0] = cs.SAMPLE_AUDIO
    prompt = cs.ui_to_api(workflow, object_info)
    sync = next(v for v in prompt.values() if v["class_type"] == "LatentSyncNode")
    # the old file carries only [seed, "randomize"]: the other widgets take the defaults
    assert {k: sync["inputs"][k] for k in ("seed", "lips_expression", "inference_steps")} == \
        {"seed": 1331, "lips_expression": 1.5, "inference_steps": 20}
    adjuster = next(v for v in prompt.values() if v["class_type"] == "VideoLengthAdjuster")
    assert {k: adjuster["inputs"][k] for k in ("mode", "fps", "silent_padding_sec")} == \
        {"mode": "pingpong", "fps": 25, "silent_padding_sec": 0.5}
    sync["inputs"]["inference_steps"] = STEPS  # CPU time only; everything else as shared
    (frames, fps, audio_s), result = _run(comfy, prompt, tmp_path)
    expected = round((cs.SPEECH_SECONDS + 0.5) * FPS)  # pingpong covers the padded audio: 1.11 s → 28 frames
    assert (frames, fps) == (expected, FPS)
    assert audio_s == pytest.approx(expected / FPS, abs=AUDIO_TOL)
    assert not any(k == "execution_error" for k, _ in result.messages)
    progress = [d for k, d in result.messages if k == "progress" and str(d.get("node")) == "54"]
    assert progress and progress[-1]["value"] == progress[-1]["max"]  # per-step progress reached the end


def _steps(prompt: dict, steps: int = STEPS) -> dict:
    for node in prompt.values():
        if node["class_type"] in ("LatentSyncNode", "LatentSyncVideo", "LatentSyncDialogue"):
            node["inputs"]["inference_steps"] = steps
    return prompt


def test_basic_example(comfy, tmp_path):
    (frames, fps, audio_s), _ = _run(comfy, _steps(cs.load_workflow("latentsync_basic")), tmp_path)
    # normal mode: the 0.8 s video is shorter than the padded audio (1.11 s) → audio cut to the video
    assert (frames, fps) == (cs.SAMPLE_FRAMES, FPS)
    assert audio_s == pytest.approx(cs.SAMPLE_FRAMES / FPS, abs=AUDIO_TOL)


def test_model_loader_example(comfy, tmp_path):
    prompt = _steps(cs.load_workflow("latentsync_model_loader"))
    prompt["4"]["inputs"]["mode"] = "loop_to_audio"  # 20 frames looped to the padded audio: 28 frames
    (frames, fps, audio_s), _ = _run(comfy, prompt, tmp_path)
    assert (frames, fps) == (round((cs.SPEECH_SECONDS + 0.5) * FPS), FPS)
    assert audio_s == pytest.approx(frames / FPS, abs=AUDIO_TOL)


def test_streaming_example(comfy, tmp_path):
    temp_before = set(comfy.temp_files())  # other tests sharing this server may have left previews there
    (frames, fps, audio_s), _ = _run(comfy, _steps(cs.load_workflow("latentsync_streaming")), tmp_path)
    expected = round(cs.SPEECH_SECONDS * FPS)  # length_mode audio: 0.61 s → 15 frames, video cut
    assert (frames, fps) == (expected, FPS)
    assert audio_s == pytest.approx(expected / FPS, abs=AUDIO_TOL)
    # the node's mp4 in ComfyUI's temp dir lives as long as its cached VIDEO value: another graph drops it
    assert [p.name[:15] for p in set(comfy.temp_files()) - temp_before] == ["latentsync_out_"]
    other = comfy.client.run({"1": {"class_type": "LatentSyncTestProbe", "inputs": {"tag": "x"}}}, timeout=120)
    assert other.status == "success" and set(comfy.temp_files()) - temp_before == set()


def test_queue_workflow_client(comfy, tmp_path, repo_root, capsys):
    """tools/queue_workflow.py: upload under the workflow's names, --set an input, follow, download."""
    from tools.queue_workflow import main

    media = cs.make_media(tmp_path / "media")
    out = tmp_path / "out"
    code = main([str(repo_root / "example_workflows" / "api" / "latentsync_basic.json"), "--server", comfy.url,
                 "--upload", f"{media[cs.SAMPLE_VIDEO]}={cs.SAMPLE_VIDEO}",
                 "--upload", f"{media[cs.SAMPLE_AUDIO]}={cs.SAMPLE_AUDIO}",
                 "--set", "5.inference_steps=1", "--set", "5.seed=4242", "--set", "4.mode=\"pingpong\"",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    files = [line for line in captured.out.splitlines() if line.endswith(".mp4")]
    assert len(files) == 1 and str(out) in files[0]
    frames, fps, _ = cs.probe_output(files[0])
    assert (frames, fps) == (round((cs.SPEECH_SECONDS + 0.5) * FPS), FPS)
    assert "execution_success" in captured.err and "node 5:" in captured.err  # progress was followed

    bad = cs.load_workflow("latentsync_model_loader")
    bad["8"]["inputs"].update(version="1.5", models_dir=str(tmp_path / "empty"))
    wf = tmp_path / "bad.json"
    wf.write_text(json.dumps(bad))
    assert main([str(wf), "--server", comfy.url]) == 1
    assert "workflow failed: " in capsys.readouterr().err


@pytest.fixture(scope="module")
def clip30(comfy, tmp_path_factory):
    """A 30 fps astronaut clip (18 frames = 0.6 s) uploaded as latentsync_sample_30fps.mp4."""
    from latentsync.video import VideoWriter
    from tools.make_sample import make_frames

    path = tmp_path_factory.mktemp("media30") / "latentsync_sample_30fps.mp4"
    with VideoWriter(path, 30, cs.SAMPLE_SIZE, cs.SAMPLE_SIZE) as w:
        w.write(make_frames(18, 30, cs.SAMPLE_SIZE, cs.SAMPLE_SIZE))
    return comfy.upload(path, path.name)


@pytest.mark.parametrize("example", ["latentsync_basic", "latentsync_streaming"])
def test_30fps_video_keeps_its_frame_rate(comfy, clip30, example, tmp_path):
    """No fps forced to 25: a 30 fps clip comes out at 30 fps with the length rules applied at 30 fps."""
    prompt = _steps(cs.load_workflow(example))
    prompt["1"]["inputs"]["file"] = clip30
    (frames, fps, audio_s), _ = _run(comfy, prompt, tmp_path)
    # basic: normal mode, video (0.6 s) shorter than the padded audio (1.11 s) → the video's 18 frames;
    # streaming: length_mode audio → round(0.61 s × 30) frames, the video cut
    expected = 18 if example == "latentsync_basic" else round(cs.SPEECH_SECONDS * 30)
    assert fps == pytest.approx(30.0) and frames == expected
    assert audio_s == pytest.approx(frames / 30, abs=AUDIO_TOL)
