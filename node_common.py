"""What the LatentSync nodes share: ComfyUI's host for the library (model folders, memory, progress bar,
interrupt), the input lists every sync node offers, and conversions between ComfyUI values and the library's."""

from __future__ import annotations

import logging
import os
import uuid
import weakref

import torch
from comfy_api.v0_0_2 import InputImpl, io

from . import memory_limiter
from .latentsync import length_adjuster
from .latentsync.runtime import Host, ModelHandle
from .latentsync.settings import LENGTH_MODES, SILENCE_MODES, LipSyncSettings

log = logging.getLogger("latentsync.comfy")

CATEGORY = "LatentSyncNode"
MODEL_FOLDER = "latentsync"
LatentSyncModel = io.Custom("LATENTSYNC_MODEL")
FACES = ["largest", "center", "leftmost", "rightmost", "index:0", "index:1", "index:2", "index:3"]
BLENDS = ["reference", "feather", "poisson"]
COLOR_MATCHES = ["off", "mean", "mean_std"]


def register_model_folders() -> None:
    """Register ComfyUI's models/latentsync (in-memory table only; extra_model_paths.yaml may add more)."""
    import folder_paths

    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER),
                                       is_default=True)


def _folders(name: str) -> list[str]:
    import folder_paths

    try:
        return folder_paths.get_folder_paths(name)
    except KeyError:
        return []


def comfy_host() -> Host:
    """The library's view of ComfyUI: model folders, the weights' download shown on the node's progress bar, plus
    the memory limiter's memory, device and interrupt."""
    return memory_limiter.limited_host(models_dirs=lambda: _folders(MODEL_FOLDER), vae_dirs=lambda: _folders("vae"),
                                       download_progress=download_progress())


def download_progress():
    """progress(done_bytes, total_bytes, info) for a weights download: ComfyUI's progress bar of the running node
    (interrupt works during the download; the partial file is kept and resumed next time)."""
    import comfy.model_management as mm
    import comfy.utils

    bar = comfy.utils.ProgressBar(100)

    def progress(done: int, total: int, _info: dict) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(int(100 * done / max(total, 1)), 100)

    return progress


def comfy_progress():
    """(progress, cancel) for a job: ComfyUI's progress bar for the node, and its interrupt flag."""
    import comfy.model_management as mm
    import comfy.utils

    bar = comfy.utils.ProgressBar(1)

    def progress(done: int, total: int, _info: dict) -> None:
        bar.update_absolute(done, max(1, total))

    return progress, mm.processing_interrupted


def show_on_node(text: str) -> None:
    """A line of text on the running node in the frontend (e.g. which frames had no face)."""
    from comfy_execution.utils import get_executing_context
    from server import PromptServer

    context = get_executing_context()
    if text and context is not None and PromptServer.instance is not None:
        PromptServer.instance.send_progress_text(text, context.node_id)


# ---------------------------------------------------------------------------------------------- inputs
def sync_inputs() -> list:
    """seed, lips_expression, inference_steps — the old node's widgets, in its order and with its defaults."""
    return [
        io.Int.Input("seed", default=1247, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="Seed of the initial noise; the same seed gives the same result."),
        io.Float.Input("lips_expression", default=1.5, min=1.0, max=3.0, step=0.1,
                       tooltip="Classifier-free guidance scale: higher = stronger, more expressive lip motion. "
                               "1.0 turns guidance off (faster)."),
        io.Int.Input("inference_steps", default=20, min=1, max=999,
                     tooltip="Denoising (DDIM) steps per 16-frame window; more = slower, usually sharper."),
    ]


def model_inputs() -> list:
    """New optional inputs of the 1.6 nodes (after the old ones, so old workflows keep their widget values)."""
    return [
        LatentSyncModel.Input("model", optional=True,
                              tooltip="Models from 'LatentSync Model Loader'. Not connected: LatentSync 1.6 from "
                                      "models/latentsync, auto dtype/device, unloaded after the job."),
        io.Combo.Input("length_mode", options=list(LENGTH_MODES), default="audio", optional=True,
                       tooltip="audio: the audio decides the length (video cut, or extended forward-backward); "
                               "video: the video keeps its length (audio padded with silence or trimmed)."),
        io.Boolean.Input("deepcache", default=False, optional=True,
                         tooltip="DeepCache: reuse deep UNet features between steps (faster, slightly softer)."),
    ]


def face_input() -> io.Combo.Input:
    return io.Combo.Input("face", options=FACES, default="largest", optional=True,
                          tooltip="Which face to lip-sync when several are visible (index counts left to right).")


def control_inputs(silence: bool = True) -> list:
    """The artist controls (all optional, defaults = the reference's result)."""
    controls = [
        io.Combo.Input("blend", options=BLENDS, default="reference", optional=True,
                       tooltip="Paste-back: reference (as LatentSync), feather (only the mouth region, soft edge, "
                               "the rest of the face stays original) or poisson (seamless clone)."),
        io.Float.Input("feather_px", default=12.0, min=0.0, max=128.0, step=1.0, optional=True,
                       tooltip="Soft edge of feather / poisson, in frame pixels."),
        io.Combo.Input("color_match", options=COLOR_MATCHES, default="off", optional=True,
                       tooltip="Match the regenerated mouth's colour to the skin around it (Lab mean / mean+std)."),
        io.UpscaleModel.Input("restore_model", optional=True,
                              tooltip="Face restoration model (Load Upscale Model: GFPGAN, RestoreFormer, ESRGAN "
                                      "families) applied to the generated mouth."),
        io.Float.Input("restore_strength", default=1.0, min=0.0, max=1.0, step=0.05, optional=True,
                       tooltip="How much of the restored mouth (0 = none)."),
        io.Float.Input("min_face_height", default=80.0, min=0.01, max=4096.0, step=1.0, optional=True,
                       tooltip="Smallest face: pixels, or a fraction of the frame height below 1."),
        io.Float.Input("face_confidence", default=0.5, min=0.0, max=1.0, step=0.05, optional=True,
                       tooltip="Face detection confidence needed."),
        io.Mask.Input("face_region", optional=True, tooltip="Search faces only inside this mask (frame size)."),
        io.Int.Input("redetect_every", default=50, min=1, max=10000, optional=True,
                     tooltip="Frames between full face searches (tracking in between)."),
    ]
    if silence:
        controls += [
            io.Combo.Input("silence", options=list(SILENCE_MODES), default="sync", optional=True,
                           tooltip="keep: where the audio is silent the original face is kept (cross-faded), so "
                                   "mouths stay still in pauses."),
            io.Float.Input("silence_db", default=-45.0, min=-90.0, max=0.0, step=1.0, optional=True,
                           tooltip="Level below which the audio counts as silent (dBFS over 200 ms)."),
        ]
    return controls


# ---------------------------------------------------------------------------------------------- values
def settings_for(model: ModelHandle, seed, lips_expression, inference_steps, **controls) -> LipSyncSettings:
    """The job's settings from the node's widgets (``controls``: the optional inputs by their names)."""
    region = controls.pop("face_region", None)
    controls.pop("restore_model", None)
    return LipSyncSettings(version=model.version, steps=int(inference_steps), guidance=float(lips_expression),
                           seed=int(seed), face_region=None if region is None else region.cpu().numpy(),
                           accel=model.accel, **controls)


def audio_value(audio):
    if audio is None:
        raise length_adjuster.LengthError(length_adjuster.NO_AUDIO)
    return audio


def comfy_audio(audio: tuple) -> dict:
    samples, sample_rate = audio
    return {"waveform": torch.from_numpy(samples)[None], "sample_rate": int(sample_rate)}


def comfy_image(frames) -> torch.Tensor:
    frames = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames)
    return frames.to(torch.float32).div_(255.0) if frames.dtype == torch.uint8 else frames


def temp_video_path(tag: str) -> str:
    import folder_paths

    folder = folder_paths.get_temp_directory()
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"latentsync_{tag}_{uuid.uuid4().hex[:12]}.mp4")


def remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def video_file(video) -> tuple[str, str | None]:
    """(path to read, temp copy to remove afterwards or None): an in-memory VIDEO is spilled once to temp."""
    source = video.get_stream_source() if isinstance(video, InputImpl.VideoFromFile) else None
    if isinstance(source, str):
        return source, None
    spill = temp_video_path("in")
    video.save_to(spill)
    return spill, spill


def output_video(path: str):
    """A VIDEO for ``path``; the temp file lives exactly as long as the VIDEO value."""
    result = InputImpl.VideoFromFile(path)
    weakref.finalize(result, remove_file, path)
    return result


def lipsync_images(images: torch.Tensor, fps: float, audio, settings: LipSyncSettings, model: ModelHandle,
                   restore_model) -> io.NodeOutput:
    """Lip-sync an IMAGE batch through the library: (images, audio, preview) for the node's outputs."""
    from .latentsync.api import lipsync_frames  # at run time: the pipeline imports OpenCV, which sets env vars

    progress, cancel = comfy_progress()
    result = lipsync_frames(images, fps, audio, settings, models=model, host=comfy_host(), progress=progress,
                            cancel=cancel, restore_model=restore_model, preview=True)
    show_on_node(result.faceless)
    return io.NodeOutput(comfy_image(result.frames), comfy_audio(result.audio), comfy_image(result.preview))


def lipsync_video_file(video, audio, settings: LipSyncSettings, model: ModelHandle, restore_model):
    """Stream ``video`` through the library into a temp mp4 and return it as a VIDEO."""
    from .latentsync.api import lipsync_file  # at run time: the pipeline imports OpenCV, which sets env vars

    source, spill = video_file(video)
    out_path = temp_video_path("out")
    progress, cancel = comfy_progress()
    try:
        result = lipsync_file(source, audio, out_path, settings, models=model, host=comfy_host(),
                              progress=progress, cancel=cancel, restore_model=restore_model)
    finally:
        if spill is not None:
            remove_file(spill)
    show_on_node(result.faceless)
    return output_video(out_path)
