"""ComfyUI nodes (V3 schema, pinned to comfy_api.v0_0_2): schemas, and an ``execute`` that hands off to the
library's API (``latentsync.api``) with ComfyUI's host (model folders, memory, progress bar, interrupt).

LatentSyncNode and VideoLengthAdjuster are drop-ins for the old ComfyUI-LatentSyncWrapper: same ids, inputs,
widget order and defaults; new inputs are optional and come last. LatentSyncModelLoader gives a LATENTSYNC_MODEL
(a ``latentsync.runtime.ModelHandle``); LatentSyncVideo streams a VIDEO through a file in ComfyUI's temp folder.
Library errors (LatentSyncError) propagate with their own message, which ComfyUI shows as the execution_error.
"""

from __future__ import annotations

import logging
import os
import uuid
import weakref

import torch
from comfy_api.v0_0_2 import ComfyExtension, InputImpl, io
from typing_extensions import override

from . import memory_limiter
from .latentsync import length_adjuster
from .latentsync.runtime import Host, ModelHandle
from .latentsync.settings import DTYPES, LENGTH_MODES, VERSIONS, LipSyncSettings

log = logging.getLogger("latentsync.comfy")

CATEGORY = "LatentSyncNode"
MODEL_FOLDER = "latentsync"
LatentSyncModel = io.Custom("LATENTSYNC_MODEL")
FACES = ["largest", "center", "leftmost", "rightmost", "index:0", "index:1", "index:2", "index:3"]


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
    """The library's view of ComfyUI: model folders plus the memory limiter's memory, device and interrupt."""
    return memory_limiter.limited_host(models_dirs=lambda: _folders(MODEL_FOLDER), vae_dirs=lambda: _folders("vae"))


def comfy_progress():
    """(progress, cancel) for a job: ComfyUI's progress bar for the node, and its interrupt flag."""
    import comfy.model_management as mm
    import comfy.utils

    bar = comfy.utils.ProgressBar(1)

    def progress(done: int, total: int, _info: dict) -> None:
        bar.update_absolute(done, max(1, total))

    return progress, mm.processing_interrupted


def _sync_inputs() -> list:
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


def _extra_inputs() -> list:
    """New optional inputs, after the old ones so old workflows keep their widget values."""
    return [
        LatentSyncModel.Input("model", optional=True,
                              tooltip="Models from 'LatentSync Model Loader'. Not connected: LatentSync 1.6 from "
                                      "models/latentsync, auto dtype/device, unloaded after the job."),
        io.Combo.Input("length_mode", options=list(LENGTH_MODES), default="audio", optional=True,
                       tooltip="audio: the audio decides the length (video cut, or extended forward-backward); "
                               "video: the video keeps its length (audio padded with silence or trimmed)."),
        io.Boolean.Input("deepcache", default=False, optional=True,
                         tooltip="DeepCache: reuse deep UNet features between steps (faster, slightly softer)."),
        io.Combo.Input("face", options=FACES, default="largest", optional=True,
                       tooltip="Which face to lip-sync when several are visible (index counts left to right)."),
    ]


def _settings(model: ModelHandle, seed, lips_expression, inference_steps, length_mode, deepcache, face):
    return LipSyncSettings(version=model.version, steps=int(inference_steps), guidance=float(lips_expression),
                           seed=int(seed), face=face, length_mode=length_mode, deepcache=bool(deepcache))


def _audio(audio):
    if audio is None:
        raise length_adjuster.LengthError(length_adjuster.NO_AUDIO)
    return audio


def _comfy_audio(audio: tuple) -> dict:
    samples, sample_rate = audio
    return {"waveform": torch.from_numpy(samples)[None], "sample_rate": int(sample_rate)}


def _comfy_image(frames) -> torch.Tensor:
    frames = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames)
    return frames.to(torch.float32).div_(255.0) if frames.dtype == torch.uint8 else frames


class LatentSyncNode(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncNode", display_name="LatentSync1.6 Node", category=CATEGORY,
            description="Lip-sync the face in the frames to the audio with ByteDance LatentSync 1.6.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames (IMAGE batch) with a visible face."),
                io.Audio.Input("audio", tooltip="Speech to lip-sync to (any sample rate / channels)."),
                *_sync_inputs(),
                *_extra_inputs(),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01, optional=True,
                               tooltip="Frame rate of the images (connect Get Video Components' fps); "
                                       "each frame is synced to the audio at its own timestamp."),
            ],
            outputs=[io.Image.Output("out_images", display_name="images", tooltip="Lip-synced frames, input size."),
                     io.Audio.Output("out_audio", display_name="audio",
                                     tooltip="The original audio trimmed/padded to the frames' length.")],
        )

    @classmethod
    @override
    def execute(cls, images: torch.Tensor, audio: dict, seed: int = 1247, lips_expression: float = 1.5,
                inference_steps: int = 20, model: ModelHandle | None = None, length_mode: str = "audio",
                deepcache: bool = False, face: str = "largest", fps: float = 25.0) -> io.NodeOutput:
        from .latentsync.api import lipsync_frames  # at run time: the pipeline imports OpenCV, which sets env vars

        model = model or ModelHandle()
        settings = _settings(model, seed, lips_expression, inference_steps, length_mode, deepcache, face)
        progress, cancel = comfy_progress()
        result = lipsync_frames(images, fps, _audio(audio), settings, models=model, host=comfy_host(),
                                    progress=progress, cancel=cancel)
        return io.NodeOutput(_comfy_image(result.frames), _comfy_audio(result.audio))


class VideoLengthAdjuster(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VideoLengthAdjuster", display_name="Video Length Adjuster", category=CATEGORY,
            description="Fit the frames and the audio to each other's length before lip-syncing.",
            inputs=[
                io.Image.Input("images", tooltip="Video frames (IMAGE batch)."),
                io.Audio.Input("audio", tooltip="The speech the frames should cover."),
                io.Combo.Input("mode", options=list(length_adjuster.MODES), default="normal",
                               tooltip="normal: cut the frames to the audio (or the audio to a shorter video); "
                                       "pingpong: extend a short video forward-backward; "
                                       "loop_to_audio: repeat a short video from the start."),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0,
                               tooltip="Frame rate of the frames: converts the audio's duration to frames."),
                io.Float.Input("silent_padding_sec", default=0.5, min=0.1, max=3.0, step=0.1,
                               tooltip="Seconds of silence added after the audio."),
            ],
            outputs=[io.Image.Output("out_images", display_name="images", tooltip="Frames fitted to the audio."),
                     io.Audio.Output("out_audio", display_name="audio",
                                     tooltip="Audio lasting exactly (frames / fps) seconds.")],
        )

    @classmethod
    @override
    def execute(cls, images: torch.Tensor, audio: dict, mode: str = "normal", fps: float = 25.0,
                silent_padding_sec: float = 0.5) -> io.NodeOutput:
        frames, out_audio = length_adjuster.adjust_length(images, audio, mode, fps, silent_padding_sec)
        log.info("VideoLengthAdjuster %s: %d → %d frames at %.3f fps", mode, images.shape[0], frames.shape[0], fps)
        return io.NodeOutput(frames, out_audio)


class LatentSyncModelLoader(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncModelLoader", display_name="LatentSync Model Loader", category=CATEGORY,
            description="Choose the LatentSync version, precision and device. Weights are looked up in "
                        "models/latentsync (and models/vae for the VAE) and loaded when a job starts.",
            inputs=[
                io.Combo.Input("version", options=list(VERSIONS), default="1.6",
                               tooltip="1.6: 512 px faces (sharper); 1.5: 256 px (lighter)."),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto",
                               tooltip="auto: ComfyUI's choice for its diffusion models (fp16 on most GPUs, fp32 "
                                       "on the CPU; follows --force-fp32, --force-fp16, --fp16/bf16/fp32-unet)."),
                io.Combo.Input("device", options=["auto", "cpu", "cuda", "mps"], default="auto",
                               tooltip="auto: ComfyUI's device."),
                io.Boolean.Input("keep_loaded", default=False,
                                 tooltip="Keep the networks in memory between runs (faster re-runs, holds VRAM). "
                                         "ComfyUI unloads them like its own models: Unload Models (POST /free), "
                                         "or when another model needs the memory."),
                io.String.Input("models_dir", default="", optional=True,
                                tooltip="Optional folder to search instead of ComfyUI's models/latentsync."),
            ],
            outputs=[LatentSyncModel.Output("model", display_name="model", tooltip="Connect to a LatentSync node.")],
        )

    @classmethod
    @override
    def execute(cls, version: str = "1.6", dtype: str = "auto", device: str = "auto", keep_loaded: bool = False,
                models_dir: str = "") -> io.NodeOutput:
        handle = ModelHandle(version, device, dtype, keep_loaded=keep_loaded, models_dir=models_dir.strip() or None)
        handle.paths(comfy_host())  # missing weights: the clear message now, or fetched now when allowed
        return io.NodeOutput(handle)


def _temp_video_path(tag: str) -> str:
    import folder_paths

    folder = folder_paths.get_temp_directory()
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"latentsync_{tag}_{uuid.uuid4().hex[:12]}.mp4")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _video_file(video) -> tuple[str, str | None]:
    """(path to read, temp copy to remove afterwards or None): an in-memory VIDEO is spilled once to temp."""
    source = video.get_stream_source() if isinstance(video, InputImpl.VideoFromFile) else None
    if isinstance(source, str):
        return source, None
    spill = _temp_video_path("in")
    video.save_to(spill)
    return spill, spill


def _output_video(path: str):
    """A VIDEO for ``path``; the temp file lives exactly as long as the VIDEO value."""
    result = InputImpl.VideoFromFile(path)
    weakref.finalize(result, _remove, path)
    return result


class LatentSyncVideo(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncVideo", display_name="LatentSync1.6 Video (streaming)", category=CATEGORY,
            description="Lip-sync a whole video file chunk by chunk: frames are decoded, synced and encoded in "
                        "small batches, so long clips never sit in RAM. Output: an mp4 with the audio muxed.",
            inputs=[
                io.Video.Input("video", tooltip="The video (Load Video). Its frame rate is kept."),
                io.Audio.Input("audio", tooltip="Speech to lip-sync to (any sample rate / channels)."),
                *_sync_inputs(),
                *_extra_inputs(),
            ],
            outputs=[io.Video.Output("out_video", display_name="video",
                                     tooltip="The lip-synced video with the audio.")],
        )

    @classmethod
    @override
    def execute(cls, video, audio: dict, seed: int = 1247, lips_expression: float = 1.5, inference_steps: int = 20,
                model: ModelHandle | None = None, length_mode: str = "audio", deepcache: bool = False,
                face: str = "largest") -> io.NodeOutput:
        from .latentsync.api import lipsync_file  # at run time: the pipeline imports OpenCV, which sets env vars

        model = model or ModelHandle()
        settings = _settings(model, seed, lips_expression, inference_steps, length_mode, deepcache, face)
        source, spill = _video_file(video)
        out_path = _temp_video_path("out")
        progress, cancel = comfy_progress()
        try:
            lipsync_file(source, _audio(audio), out_path, settings, models=model, host=comfy_host(),
                             progress=progress, cancel=cancel)
        finally:
            if spill is not None:
                _remove(spill)
        return io.NodeOutput(_output_video(out_path))


NODES = [LatentSyncNode, VideoLengthAdjuster, LatentSyncModelLoader, LatentSyncVideo]


class LatentSyncExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
