"""ComfyUI nodes (V3 schema, pinned to comfy_api.v0_0_2): schemas, and an ``execute`` that hands off to the
library's API (``latentsync.api``) with ComfyUI's host (model folders, memory, progress bar, interrupt).

LatentSyncNode and VideoLengthAdjuster are drop-ins for the old ComfyUI-LatentSyncWrapper: same ids, inputs,
widget order and defaults; new inputs are optional and come last. LatentSyncModelLoader gives a LATENTSYNC_MODEL
(a ``latentsync.runtime.ModelHandle``); LatentSyncVideo streams a VIDEO through a file in ComfyUI's temp folder.
Library errors (LatentSyncError) propagate with their own message, which ComfyUI shows as the execution_error.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.v0_0_2 import ComfyExtension, io
from typing_extensions import override

from .latentsync import length_adjuster
from .latentsync.runtime import ModelHandle
from .latentsync.settings import DTYPES, VERSIONS
from .node_common import (CATEGORY, LatentSyncModel, audio_value, comfy_host, control_inputs, face_input,
                          lipsync_images, lipsync_video_file, model_inputs, register_model_folders, settings_for,
                          sync_inputs)
from .nodes_dialogue import DIALOGUE_NODES

log = logging.getLogger("latentsync.comfy")
GPU_LEVERS = [  # the loader's optional GPU levers (latentsync.accel), all off
    ("compile", "torch.compile the UNet: faster windows after a first one that takes minutes (cached on disk)."),
    ("cuda_graphs", "Capture and replay the UNet call on CUDA (less launch overhead; not with DeepCache)."),
    ("channels_last", "Run the convolutions in channels-last (NHWC) memory layout."),
    ("cudnn_benchmark", "Let cuDNN time its algorithms for this job's shapes (CUDA)."),
    ("vae_tiling", "Decode the VAE in overlapping tiles (less memory, a close approximation)."),
]
__all__ = ["NODES", "LatentSyncExtension", "register_model_folders"]


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
                *sync_inputs(),
                *model_inputs(),
                face_input(),
                io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01, optional=True,
                               tooltip="Frame rate of the images (connect Get Video Components' fps); "
                                       "each frame is synced to the audio at its own timestamp."),
                *control_inputs(),
            ],
            outputs=[io.Image.Output("out_images", display_name="images", tooltip="Lip-synced frames, input size."),
                     io.Audio.Output("out_audio", display_name="audio",
                                     tooltip="The original audio trimmed/padded to the frames' length."),
                     io.Image.Output("preview", display_name="preview",
                                     tooltip="Downscaled frames with the face box, the alignment points and the "
                                             "regenerated mouth region drawn; frames without a face marked.")],
        )

    @classmethod
    @override
    def execute(cls, images: torch.Tensor, audio: dict, seed: int = 1247, lips_expression: float = 1.5,
                inference_steps: int = 20, model: ModelHandle | None = None, fps: float = 25.0,
                restore_model=None, **controls) -> io.NodeOutput:
        model = model or ModelHandle()
        settings = settings_for(model, seed, lips_expression, inference_steps, **controls)
        return lipsync_images(images, fps, audio_value(audio), settings, model, restore_model)


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
                *[io.Boolean.Input(name, default=False, optional=True, tooltip=tip) for name, tip in GPU_LEVERS],
                io.Boolean.Input("auto_download", default=True, optional=True,
                                 tooltip="Download missing weights from Hugging Face (resumable, shown on the progress "
                                         "bar). Off: missing weights are an error that says where to put them."),
            ],
            outputs=[LatentSyncModel.Output("model", display_name="model", tooltip="Connect to a LatentSync node.")],
        )

    @classmethod
    @override
    def execute(cls, version: str = "1.6", dtype: str = "auto", device: str = "auto", keep_loaded: bool = False,
                models_dir: str = "", auto_download: bool = True, **levers: bool) -> io.NodeOutput:
        from .latentsync.accel import Accel

        handle = ModelHandle(version, device, dtype, keep_loaded=keep_loaded, models_dir=models_dir.strip() or None,
                             download=auto_download, accel=Accel(**levers))
        handle.paths(comfy_host())  # missing weights: the clear message now, or fetched now when allowed
        return io.NodeOutput(handle)


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
                *sync_inputs(),
                *model_inputs(),
                face_input(),
                *control_inputs(),
            ],
            outputs=[io.Video.Output("out_video", display_name="video",
                                     tooltip="The lip-synced video with the audio.")],
        )

    @classmethod
    @override
    def execute(cls, video, audio: dict, seed: int = 1247, lips_expression: float = 1.5, inference_steps: int = 20,
                model: ModelHandle | None = None, restore_model=None, **controls) -> io.NodeOutput:
        model = model or ModelHandle()
        settings = settings_for(model, seed, lips_expression, inference_steps, **controls)
        return io.NodeOutput(lipsync_video_file(video, audio_value(audio), settings, model, restore_model))


NODES = [LatentSyncNode, VideoLengthAdjuster, LatentSyncModelLoader, LatentSyncVideo, *DIALOGUE_NODES]


class LatentSyncExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
