"""Dialogue nodes: two to four speakers in one shot, each face synced to its own audio track.

Faces are picked per speaker with ``left``, ``right``, ``index:N`` (the N-th face from the left in the first frame
with faces) or ``id:K`` (a face id as the preview shows it); they are followed through the clip with stable ids.
Where a speaker's track is silent its face keeps the original frames (cross-faded), so listeners stay still. The
output audio is the tracks mixed. Speaker k's seed is seed + k.
"""

from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io
from typing_extensions import override

from .latentsync.runtime import ModelHandle
from .node_common import (CATEGORY, audio_value, control_inputs, lipsync_images, lipsync_video_file, model_inputs,
                          settings_for, sync_inputs)

DEFAULT_FACES = ("left", "right", "index:2", "index:3")


def _pair(k: int, optional: bool) -> list:
    return [
        io.Audio.Input(f"audio_{k}", optional=optional, tooltip=f"Speaker {k}'s speech."),
        io.String.Input(f"face_{k}", default=DEFAULT_FACES[k - 1], optional=optional,
                        tooltip="Speaker's face: left, right, index:N (N-th from the left in the first frame with "
                                "faces, from 0) or id:K (a face id from the preview)."),
    ]


def _speakers(audio_1, face_1, audio_2, face_2, audio_3=None, face_3="index:2", audio_4=None, face_4="index:3"):
    from .latentsync.api import Speaker

    pairs = [(audio_1, face_1), (audio_2, face_2), (audio_3, face_3), (audio_4, face_4)]
    return [Speaker(audio_value(audio), face.strip()) for audio, face in pairs[:2] + [p for p in pairs[2:] if p[0]]]


def _inputs() -> list:
    return [*_pair(1, False), *_pair(2, False), *sync_inputs(), *model_inputs(), *_pair(3, True), *_pair(4, True),
            *control_inputs(silence=False)]


class LatentSyncDialogue(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncDialogue", display_name="LatentSync Dialogue", category=CATEGORY,
            description=__doc__.splitlines()[0],
            inputs=[io.Image.Input("images", tooltip="Video frames (IMAGE batch) showing the speakers."),
                    io.Float.Input("fps", default=25.0, min=1.0, max=120.0, step=0.01,
                                   tooltip="Frame rate of the images."),
                    *_inputs()],
            outputs=[io.Image.Output("out_images", display_name="images"),
                     io.Audio.Output("out_audio", display_name="audio", tooltip="The speakers' tracks mixed."),
                     io.Image.Output("preview", display_name="preview", tooltip="Faces and their speakers drawn.")],
        )

    @classmethod
    @override
    def execute(cls, images: torch.Tensor, fps: float, seed: int = 1247, lips_expression: float = 1.5,
                inference_steps: int = 20, model: ModelHandle | None = None, restore_model=None,
                **inputs) -> io.NodeOutput:
        speakers = _speakers(**{k: inputs.pop(k) for k in list(inputs) if k[:-1] in ("audio_", "face_")})
        model = model or ModelHandle()
        settings = settings_for(model, seed, lips_expression, inference_steps, **inputs)
        return lipsync_images(images, fps, speakers, settings, model, restore_model)


class LatentSyncDialogueVideo(io.ComfyNode):
    @classmethod
    @override
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncDialogueVideo", display_name="LatentSync Dialogue Video (streaming)",
            category=CATEGORY, description=__doc__.splitlines()[0] + " Streams a VIDEO chunk by chunk.",
            inputs=[io.Video.Input("video", tooltip="The video showing the speakers. Its frame rate is kept."),
                    *_inputs()],
            outputs=[io.Video.Output("out_video", display_name="video", tooltip="The lip-synced video, tracks mixed.")],
        )

    @classmethod
    @override
    def execute(cls, video, seed: int = 1247, lips_expression: float = 1.5, inference_steps: int = 20,
                model: ModelHandle | None = None, restore_model=None, **inputs) -> io.NodeOutput:
        speakers = _speakers(**{k: inputs.pop(k) for k in list(inputs) if k[:-1] in ("audio_", "face_")})
        model = model or ModelHandle()
        settings = settings_for(model, seed, lips_expression, inference_steps, **inputs)
        return io.NodeOutput(lipsync_video_file(video, speakers, settings, model, restore_model))


DIALOGUE_NODES = [LatentSyncDialogue, LatentSyncDialogueVideo]
