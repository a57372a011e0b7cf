"""ComfyUI nodes (V3 schema, pinned to comfy_api.v0_0_2): thin schemas whose execute hands off to lipsync_job.

Nodes: LatentSyncNode and VideoLengthAdjuster (drop-in for the old ComfyUI-LatentSyncWrapper: same ids, inputs,
widget order and defaults; new inputs are optional and come last), LatentSyncModelLoader (LATENTSYNC_MODEL) and
LatentSyncVideo (streaming VIDEO → VIDEO through a file in ComfyUI's temp dir).
Library errors (LatentSyncError) propagate with their own message, which ComfyUI shows as the execution_error.
"""

from __future__ import annotations

import logging
import os
import uuid
import weakref

import torch
from comfy_api.v0_0_2 import ComfyExtension, InputImpl, io

from . import length_adjuster, lipsync_job as jobs

log = logging.getLogger("latentsync.comfy")

CATEGORY = "LatentSyncNode"
MODEL_FOLDER = "latentsync"
LatentSyncModel = io.Custom("LATENTSYNC_MODEL")
FACES = ["largest", "center", "leftmost", "rightmost", "index:0", "index:1", "index:2", "index:3"]
LENGTH_MODES = ["audio", "video"]


def register_model_folders() -> None:
    """Register ComfyUI's models/latentsync (in-memory table only; extra_model_paths.yaml may add more)."""
    import folder_paths

    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER),
                                       is_default=True)


def comfy_host(progress_bar=None) -> jobs.Host:
    """The job's view of ComfyUI: model folders, model_management, progress bar and interrupt."""
    import comfy.model_management as mm
    import folder_paths

    def folders(name: str) -> list[str]:
        try:
            return folder_paths.get_folder_paths(name)
        except KeyError:
            return []

    def progress(done: int, total: int) -> None:
        if progress_bar is not None:
            progress_bar.update_absolute(done, total)
        mm.throw_exception_if_processing_interrupted()

    return jobs.Host(
        models_dirs=lambda: folders(MODEL_FOLDER), vae_dirs=lambda: folders("vae"),
        default_device=mm.get_torch_device,
        memory=lambda dev: (int(mm.get_total_memory(dev)), int(mm.get_free_memory(dev))),
        free_memory=lambda need, dev: mm.free_memory(need, dev),
        progress=progress, interrupted=mm.processing_interrupted,
        raise_if_interrupted=mm.throw_exception_if_processing_interrupted)


def _progress_bar():
    import comfy.utils

    return comfy.utils.ProgressBar(1)


def _sync_inputs(optional: bool = False) -> list:
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
        io.Combo.Input("length_mode", options=LENGTH_MODES, default="audio", optional=True,
                       tooltip="audio: the audio decides the length (video cut, or extended forward-backward); "
                               "video: the video keeps its length (audio padded with silence or trimmed)."),
        io.Boolean.Input("deepcache", default=False, optional=True,
                         tooltip="DeepCache: reuse deep UNet features between steps (faster, slightly softer)."),
        io.Combo.Input("face", options=FACES, default="largest", optional=True,
                       tooltip="Which face to lip-sync when several are visible (index counts left to right)."),
    ]


def _settings(handle: jobs.ModelHandle, plan, seed, lips_expression, inference_steps, length_mode, deepcache, face):
    return jobs.lib("pipeline").LipSyncSettings(
        version=handle.version, steps=int(inference_steps), guidance=float(lips_expression), seed=int(seed),
        face=face, length_mode=length_mode, deepcache=bool(deepcache),
        window_batch=plan.window_batch, vae_slice=plan.vae_slice, cfg_serial=plan.cfg_serial)


def _check_audio(audio) -> None:
    if audio is None:
        raise length_adjuster.LengthError(length_adjuster.NO_AUDIO)


def _handle(model, host: jobs.Host) -> jobs.ModelHandle:
    if model is not None:
        return model
    return jobs.find_handle("1.6", "auto", "auto", False, host)


class LatentSyncNode(io.ComfyNode):
    @classmethod
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
    def execute(cls, images, audio, seed=1247, lips_expression=1.5, inference_steps=20, model=None,
                length_mode="audio", deepcache=False, face="largest", fps=25.0) -> io.NodeOutput:
        _check_audio(audio)
        host = comfy_host(_progress_bar())
        handle = _handle(model, host)

        def work(models, plan):
            pipe = jobs.lib("pipeline").LipSyncPipeline(models)
            settings = _settings(handle, plan, seed, lips_expression, inference_steps, length_mode, deepcache, face)
            return pipe(images, fps, audio, settings, progress=jobs.progress_hook(host, handle.device),
                        cancel=host.interrupted)

        result = jobs.run_job(handle, host, work)
        frames = result.frames if isinstance(result.frames, torch.Tensor) else torch.from_numpy(result.frames)
        if frames.dtype == torch.uint8:
            frames = frames.to(torch.float32).div_(255.0)
        samples, sample_rate = result.audio
        out_audio = {"waveform": torch.from_numpy(samples)[None], "sample_rate": int(sample_rate)}
        return io.NodeOutput(frames, out_audio)


class VideoLengthAdjuster(io.ComfyNode):
    @classmethod
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
    def execute(cls, images, audio, mode="normal", fps=25.0, silent_padding_sec=0.5) -> io.NodeOutput:
        frames, out_audio = length_adjuster.adjust_length(images, audio, mode, fps, silent_padding_sec)
        log.info("VideoLengthAdjuster %s: %d → %d frames at %.3f fps", mode, images.shape[0], frames.shape[0], fps)
        return io.NodeOutput(frames, out_audio)


class LatentSyncModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LatentSyncModelLoader", display_name="LatentSync Model Loader", category=CATEGORY,
            description="Choose the LatentSync version, precision and device. Weights are looked up in "
                        "models/latentsync (and models/vae for the VAE) and loaded when a job starts.",
            inputs=[
                io.Combo.Input("version", options=list(jobs.VERSIONS), default="1.6",
                               tooltip="1.6: 512 px faces (sharper); 1.5: 256 px (lighter)."),
                io.Combo.Input("dtype", options=list(jobs.DTYPES), default="auto",
                               tooltip="auto: fp16 on GPU, fp32 on CPU."),
                io.Combo.Input("device", options=["auto", "cpu", "cuda", "mps"], default="auto",
                               tooltip="auto: ComfyUI's device."),
                io.Boolean.Input("keep_loaded", default=False,
                                 tooltip="Keep the networks in memory between runs (faster re-runs, holds VRAM)."),
                io.String.Input("models_dir", default="", optional=True,
                                tooltip="Optional folder to search instead of ComfyUI's models/latentsync."),
            ],
            outputs=[LatentSyncModel.Output("model", display_name="model", tooltip="Connect to a LatentSync node.")],
        )

    @classmethod
    def execute(cls, version="1.6", dtype="auto", device="auto", keep_loaded=False, models_dir="") -> io.NodeOutput:
        handle = jobs.find_handle(version, dtype, device, keep_loaded, comfy_host(), models_dir.strip())
        log.info("LatentSync model: %r", handle)
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


class LatentSyncVideo(io.ComfyNode):
    @classmethod
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
    def execute(cls, video, audio, seed=1247, lips_expression=1.5, inference_steps=20, model=None,
                length_mode="audio", deepcache=False, face="largest") -> io.NodeOutput:
        _check_audio(audio)
        host = comfy_host(_progress_bar())
        handle = _handle(model, host)
        vio = jobs.lib("video")
        source = video.get_stream_source() if isinstance(video, InputImpl.VideoFromFile) else None
        spill = None
        if not isinstance(source, str):  # in-memory video: spill it once to the temp dir, then stream it
            spill = _temp_video_path("in")
            video.save_to(spill)
            source = spill
        out_path = _temp_video_path("out")
        try:
            info = vio.probe(source)

            def work(models, plan):
                pipe = jobs.lib("pipeline").LipSyncPipeline(models)
                settings = _settings(handle, plan, seed, lips_expression, inference_steps, length_mode, deepcache,
                                     face)
                job = pipe.prepare(audio, info.fps, settings, n_frames=info.n_frames)
                samples, sr = job.output_audio() if job.timeline else (job.audio, job.sample_rate)
                with vio.VideoWriter(out_path, info.rate or info.fps, info.width, info.height,
                                     audio=(samples, sr)) as writer:
                    frames = pipe.stream(lambda: vio.iter_frames(source, chunk=16), info.fps, audio, settings,
                                         jobs.progress_hook(host, handle.device), host.interrupted,
                                         n_frames=info.n_frames, job=job)
                    for chunk in frames:
                        writer.write(chunk)
                return writer.n_written

            written = jobs.run_job(handle, host, work)
        except BaseException:
            _remove(out_path)
            raise
        finally:
            if spill is not None:
                _remove(spill)
        log.info("LatentSyncVideo: %d frames → %s", written, out_path)
        result = InputImpl.VideoFromFile(out_path)
        weakref.finalize(result, _remove, out_path)  # the temp file lives exactly as long as this VIDEO value
        return io.NodeOutput(result)


NODES = [LatentSyncNode, VideoLengthAdjuster, LatentSyncModelLoader, LatentSyncVideo]


class LatentSyncExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> LatentSyncExtension:
    return LatentSyncExtension()
