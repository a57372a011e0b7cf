"""A real ComfyUI with this pack: the artist controls and the dialogue node (issues 12 and 13) in real graphs.

- the shipped dialogue example on a two-person clip, speaker 1 talking and speaker 2 silent: the output keeps the
  clip's frames and fps, the left person changes, the right person's half stays the input within encode noise;
- a random-weight Real-ESRGAN compact file in models/upscale_models, loaded by the CORE "Load Upscale Model" node
  and connected to restore_model, changes the mouth only; a grayscale model is our node's clear error; a file
  that is no model at all fails in the core loader before our node runs;
- the preview output is an IMAGE batch a core Preview Image node saves (face box drawn, faceless frames marked),
  and the faceless frames' summary reaches the websocket as the node's progress text.
"""

from __future__ import annotations

import numpy as np
import pytest

import comfy_server as cs

pytestmark = [pytest.mark.server, pytest.mark.slow]

STEPS = 1
FPS = cs.SAMPLE_FPS
FACELESS = cs.FACELESS_FRAMES  # frames 5..9 of the faceless clip show only the background


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, tiny_models):
    server = cs.shared_server(tmp_path_factory, tiny_models)
    yield server
    cs.stop_shared()


@pytest.fixture(scope="module")
def restorers(comfy):
    """Model files in the server's models/upscale_models (what a user drops there), by their role."""
    from tools.make_tiny_restorer import compact_state_dict, write_compact

    folder = comfy.base / "models" / "upscale_models"
    files = {"rgb": write_compact(folder / "tiny_restorer_1x.pth", compact_state_dict(scale=1, seed=1)),
             "gray": write_compact(folder / "tiny_gray_1x.pth", compact_state_dict(scale=1, channels=1, seed=2))}
    files["broken"] = folder / "broken_restorer.pth"
    files["broken"].write_bytes(b"not a model\n" * 64)
    spec = comfy.client.get("/object_info/UpscaleModelLoader")["UpscaleModelLoader"]["input"]["required"]["model_name"]
    offered = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert {p.name for p in files.values()} <= set(offered)  # the core loader offers them
    return {role: path.name for role, path in files.items()}


@pytest.fixture(scope="module")
def faceless_clip(comfy, tmp_path_factory) -> str:
    """The sample clip with frames 5..9 showing no face, uploaded to the input folder."""
    return comfy.upload(cs.write_faceless_clip(tmp_path_factory.mktemp("faceless")))


def _decode(path) -> np.ndarray:
    from latentsync.video import iter_frames

    return np.concatenate(list(iter_frames(path)))


def _success(result, comfy):
    assert result.status == "success", f"{result.error_text}\n{comfy.log_tail()}"
    return result


def _images(comfy, result, node_id: str, tmp_path) -> np.ndarray:
    """The PNGs a Save Image / Preview Image node wrote, in order, decoded to uint8 RGB (n, H, W, 3)."""
    import cv2

    items = result.outputs[node_id]["images"]
    paths = [comfy.client.download(item, tmp_path / node_id) for item in items]
    return np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths])


def _basic(steps: int = STEPS) -> dict:
    prompt = cs.load_workflow("latentsync_basic")
    prompt["5"]["inputs"]["inference_steps"] = steps
    return prompt


def _save_frames(prompt: dict, prefix: str) -> dict:
    """Also save the sync node's frames losslessly (core Save Image) as node "20"."""
    prompt["20"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": prefix}}
    return prompt


# ------------------------------------------------------------------------------------------------ dialogue
def _halves(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel |a − b| (max over channels) in the left and the right half of the frames."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)
    half = a.shape[2] // 2
    return diff[:, :, :half], diff[:, :, half:]


def test_dialogue_example_moves_the_speaker_and_keeps_the_silent_face(comfy, tmp_path):
    prompt = cs.load_workflow("latentsync_dialogue")
    prompt["5"]["inputs"]["inference_steps"] = STEPS
    prompt["20"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "dialogue_in"}}
    prompt["21"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "dialogue_out"}}
    result = _success(comfy.client.run(prompt, timeout=900), comfy)
    [video] = [f for f in result.files() if f["filename"].endswith(".mp4")]
    out_path = comfy.client.download(video, tmp_path)
    frames, fps, audio_s = cs.probe_output(out_path)
    assert (frames, fps) == (cs.DIALOGUE_FRAMES, FPS)  # length_mode video: the clip keeps its length
    assert audio_s == pytest.approx(frames / fps, abs=0.05)
    preview = result.outputs["8"]["images"]  # the dialogue's preview reached its Preview Image node
    assert len(preview) == cs.DIALOGUE_FRAMES and all(p["type"] == "temp" for p in preview)

    # The node's frames against the frames it was given (both saved losslessly): the silent speaker's half is
    # the input exactly, the talking speaker's mouth is regenerated (random tiny models) in every frame.
    left, right = _halves(_images(comfy, result, "21", tmp_path), _images(comfy, result, "20", tmp_path))
    assert right.max() == 0 and ((left > 24).sum(axis=(1, 2)) > 500).all()

    # The saved video against the same clip passed through the core video nodes alone (Load Video → Get Video
    # Components → Create Video → Save Video): the core round trip is not lossless (H.264 again, and a colour
    # conversion that shifts the flat background by ~3 levels), so the input is compared after the same trip.
    passthrough = {k: prompt[k] for k in ("1", "2")}
    passthrough["6"] = {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": ["2", 2]}}
    passthrough["7"] = {"class_type": "SaveVideo", "inputs": {"video": ["6", 0], "filename_prefix": "video/pass",
                                                              "format": "auto", "codec": "auto"}}
    plain = _success(comfy.client.run(passthrough, timeout=300), comfy)
    [same] = [f for f in plain.files() if f["filename"].endswith(".mp4")]
    source = _decode(comfy.media[cs.DIALOGUE_VIDEO])
    through, out = _decode(comfy.client.download(same, tmp_path / "pass")), _decode(out_path)
    assert out.shape == through.shape == source.shape
    left, right = _halves(out, through)
    raw_left, raw_right = _halves(out, source)
    print(f"\ndialogue video, right half (silent speaker) vs the core round trip: mean |diff| {right.mean():.3f}, "
          f"max {right.max()}, share > 24 levels {(right > 24).mean():.4%}; vs the input file: mean "
          f"{raw_right.mean():.2f}, share > 24 {(raw_right > 24).mean():.4%}. Left half (speaker 1) vs the round "
          f"trip: mean {left.mean():.2f}, pixels > 24 levels per frame: min {(left > 24).sum(axis=(1, 2)).min()}")
    # measured: right half mean 1.4 levels (x264 spends its bits differently when the left half changes), max 30,
    # 0.0003 % of pixels > 24; against the input file mean 3.4 (the colour shift); left half mean 5.3, ≥ 5000
    # pixels > 24 levels in every frame
    assert right.mean() < 2.5 and (right > 24).mean() < 0.001  # encode noise only
    assert raw_right.mean() < 5 and (raw_right > 24).mean() < 0.001  # the colour shift of the core nodes, no more
    assert ((left > 24).sum(axis=(1, 2)) > 500).all()


# ------------------------------------------------------------------------------------------------ restoration
def test_core_upscale_model_loader_feeds_the_restoration(comfy, restorers, tmp_path):
    plain = _success(comfy.client.run(_save_frames(_basic(), "plain"), timeout=900), comfy)
    prompt = _save_frames(_basic(), "restored")
    prompt["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": restorers["rgb"]}}
    prompt["5"]["inputs"]["restore_model"] = ["10", 0]
    restored = _success(comfy.client.run(prompt, timeout=900), comfy)

    a, b = _images(comfy, plain, "20", tmp_path / "plain"), _images(comfy, restored, "20", tmp_path / "restored")
    assert a.shape == b.shape == (cs.SAMPLE_FRAMES, cs.SAMPLE_SIZE, cs.SAMPLE_SIZE, 3)
    changed = np.any(a != b, axis=-1)
    assert changed.any(axis=(1, 2)).all()  # the restorer changed the mouth in every frame...
    rows, cols = np.nonzero(changed.any(axis=0))
    # ...and nothing outside the face: the photo (60 % of the frame height, centred) covers 77..307 both ways
    assert 77 < min(rows.min(), cols.min()) and max(rows.max(), cols.max()) < 307 and changed.mean() < 0.05, \
        (rows.min(), rows.max(), cols.min(), cols.max())


def test_a_grayscale_restoration_model_is_a_clear_error(comfy, restorers):
    prompt = _basic()
    prompt["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": restorers["gray"]}}
    prompt["5"]["inputs"]["restore_model"] = ["10", 0]
    result = comfy.client.run(prompt, timeout=900)
    assert result.status == "error" and result.error["node_type"] == "LatentSyncNode", result.error_text
    message = result.error["exception_message"]
    assert "1→1 channels" in message and "needs a model that takes and gives 3 channels (RGB)" in message, message
    assert comfy.alive


def test_a_file_that_is_no_model_fails_in_the_core_loader(comfy, restorers):
    prompt = _basic()
    prompt["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": restorers["broken"]}}
    prompt["5"]["inputs"]["restore_model"] = ["10", 0]
    result = comfy.client.run(prompt, timeout=300)
    assert result.status == "error" and result.error["node_type"] == "UpscaleModelLoader", result.error_text
    assert not any(kind == "executing" and str(data.get("node")) == "5" for kind, data in result.messages)
    assert comfy.alive


# ------------------------------------------------------------------------------------------------ preview
def test_preview_output_is_an_image_batch_with_faceless_frames_marked(comfy, faceless_clip, tmp_path):
    from latentsync.preview import BOX_COLOUR, NO_FACE_COLOUR

    prompt = cs.load_workflow("latentsync_model_loader")  # its node 9 previews the sync node's preview output
    prompt["5"]["inputs"]["inference_steps"] = STEPS
    prompt["1"]["inputs"]["file"] = faceless_clip
    result, texts = cs.run_recording_texts(comfy.client, prompt, timeout=900)
    _success(result, comfy)
    expected = f"no face in {len(FACELESS)} of {cs.SAMPLE_FRAMES} frames: {FACELESS[0]}–{FACELESS[-1]}"
    assert ("5", expected) in texts, texts  # PromptServer.send_progress_text, as the frontend receives it

    previews = _images(comfy, result, "9", tmp_path)  # the example's Preview Image node, fed by the preview output
    assert previews.shape == (cs.SAMPLE_FRAMES, 384, 384, 3)

    def share(images, colour, tolerance=40):
        return (np.abs(images.astype(int) - np.array(colour)).max(axis=-1) <= tolerance).mean(axis=(1, 2))

    border = previews[:, :4, :, :]  # the top rows: a faceless frame's red border
    red, green = share(border, NO_FACE_COLOUR), share(previews, BOX_COLOUR)
    faceless = np.isin(np.arange(cs.SAMPLE_FRAMES), FACELESS)
    assert (red[faceless] > 0.9).all() and (red[~faceless] < 0.05).all(), red
    assert (green[~faceless] > 0.0008).all() and (green[faceless] < 0.0005).all(), green  # the face box
