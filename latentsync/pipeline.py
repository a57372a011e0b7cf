"""LatentSync 1.6 lip-sync: frames + audio in, lip-synced frames out, streaming with bounded memory.

    pipe = LipSyncPipeline(load_models(find_models("1.6"), "cuda", torch.float16))
    for chunk in pipe.stream(frame_chunks, fps, (samples, sample_rate), LipSyncSettings(seed=1)):
        writer.write(chunk)                                   # uint8 (n, H, W, 3)
    result = pipe(frames, fps, audio)                         # in memory: LipSyncResult(frames, fps, audio)

``stream`` reads top to bottom like a diffusers ``__call__``:
1 check inputs · 2 audio features · 3 timeline · 4 faces · 5 per window: encode → denoise → decode ·
6 paste back · 7 yield finished frames.
Peak RAM does not grow with the video's length: frames are processed window by window; only the current
windows' frames (and frames waiting behind them in display order) are held. Exceptions: the audio features of
the whole clip (~0.4 MB per second of audio) and, for a ping-pong extension from a one-shot iterator, the
source frames (see ``latentsync.timeline``).
Faces: detected once per SOURCE frame (kept for a ping-pong replay), aligned along the played sequence (the
smoothing state follows what is shown; it restarts after a frame without a face).
Frames without a face are passed through bit-identical; the windows of 16 frames run over the face frames
only (a run of 16 faceless frames closes the current window early so that waiting frames stay bounded).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from . import timeline as tl
from .denoise import DenoiseContext, WindowBatch, denoise_windows, faces_to_tensor
from .errors import CancelledError, InputError, NoFaceError
from .inputs import frames_to_uint8, parse_audio

log = logging.getLogger(__name__)

WINDOW = 16  # frames per denoising window (the reference's num_frames; the motion modules allow <= 24)
Progress = Callable[[int, int, dict], None]
Cancel = Callable[[], bool]


@dataclass(frozen=True)
class LipSyncSettings:
    """One job's settings (immutable). ``guidance`` is the lips-expression scale (1.0 = no CFG)."""

    version: str = "1.6"
    steps: int = 20
    guidance: float = 1.5
    seed: int = 1247
    face: str = "largest"  # which face when several: largest | center | left | right (FaceDetector)
    face_backend: str = "auto"
    length_mode: str = "audio"  # "audio": audio decides the length (ping-pong / cut); "video": video decides
    deepcache: bool = False
    deepcache_interval: int = 3
    window_batch: int = 1  # windows denoised together (same frame count)
    vae_slice: int = 16  # frames per VAE encode/decode slice
    cfg_serial: bool = False  # CFG halves one after the other: half the UNet activation memory, same math
    audio_mode: str = "stitched"  # "stitched" (continuous at 30 s seams) | "reference" (parity)
    strict_faces: bool = False  # True: a frame without a face raises NoFaceError instead of passing through
    cache_mb: int = 512  # ping-pong: source frames kept in RAM before re-opening the source

    def __post_init__(self):
        checks = [
            (self.version in ("1.6", "1.5"), f"version must be '1.6' or '1.5', got {self.version!r}"),
            (isinstance(self.steps, int) and 1 <= self.steps <= 1000, f"steps must be 1..1000, got {self.steps!r}"),
            (isinstance(self.guidance, (int, float)) and math.isfinite(self.guidance) and 1.0 <= self.guidance <= 20,
             f"guidance (lips expression) must be 1.0..20, got {self.guidance!r}"),
            (isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}"),
            (self.length_mode in tl.LENGTH_MODES, f"length_mode must be one of {tl.LENGTH_MODES}"),
            (self.window_batch >= 1 and self.vae_slice >= 1, "window_batch and vae_slice must be >= 1"),
            (self.deepcache_interval >= 1, "deepcache_interval must be >= 1"),
            (self.audio_mode in ("stitched", "reference"), "audio_mode must be 'stitched' or 'reference'"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"Invalid setting: {message}.")
        from .face.select import parse_choice

        parse_choice(self.face)  # InputError naming the valid choices


@dataclass
class LipSyncJob:
    """Steps 1-3 without frames: the checked audio, its features and the output timeline."""

    settings: LipSyncSettings
    timeline: tl.Timeline | None  # None only in video mode with an unknown frame count
    fps: float
    audio: np.ndarray  # caller's samples (C, T) float32 at the original rate
    sample_rate: int
    features: torch.Tensor  # (T, 5, C) float32 on the CPU
    rows: np.ndarray | None  # (n_out, 10) feature rows of each output frame

    def output_audio(self, n_out: int | None = None) -> tuple[np.ndarray, int]:
        """The original audio trimmed / padded with silence to ``n_out`` frames (default: the timeline's)."""
        n_out = self.timeline.n_out if n_out is None else n_out
        return tl.fit_audio(self.audio, tl.audio_sample_count(n_out, self.fps, self.sample_rate)), self.sample_rate


@dataclass
class LipSyncResult:
    frames: np.ndarray | torch.Tensor  # uint8 (N, H, W, 3), or float 0..1 if float frames came in
    fps: float
    audio: tuple[np.ndarray, int]  # (samples (C, T) float32, sample_rate): original audio fitted to N frames
    has_face: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


class _Progress:
    """progress(done, total, info) once per denoising step; total = steps x windows (estimated from the output
    length: windows with fewer face frames make the job end early, with a final call done == total)."""

    def __init__(self, progress: Progress | None, steps: int, windows: int):
        self.progress, self.steps = progress, steps
        self.done, self.total, self.windows_done = 0, steps * windows, 0

    def __call__(self, windows: int, final: bool = False) -> None:
        if self.progress is None:
            return
        if final:
            if self.done != self.total:
                self.total = self.done
                self.progress(self.done, self.total, {"windows_done": self.windows_done, "final": True})
            return
        self.done += windows
        self.total = max(self.total, self.done)
        self.progress(self.done, self.total, {"window": self.windows_done, "windows": windows, "steps": self.steps})


@dataclass
class _Frame:
    index: int
    frame: np.ndarray
    face: np.ndarray | None = None
    matrix: np.ndarray | None = None
    out: np.ndarray | None = None


def _checked_source(frames):
    """Validate chunks as they come (``inputs.frames_to_uint8``); the first chunk is checked right away so that
    a bad or empty video fails before any model work. Keeps a callable source re-openable."""
    size: list[tuple[int, int]] = []

    def checked(chunks):
        for chunk in chunks:
            out = frames_to_uint8(chunk, size[0] if size else None)
            if out.shape[0]:
                size[:1] = [out.shape[1:3]]
                yield out

    def first_of(chunks):
        it = iter(checked(chunks))
        first = next(it, None)
        if first is None:
            raise InputError("The video has no frames.")
        return itertools.chain([first], it)

    if not callable(frames):
        return first_of(frames)
    opened = [first_of(frames())]

    def reopen():
        return opened.pop() if opened else checked(frames())

    return reopen


class LipSyncPipeline:
    def __init__(self, models, device=None, dtype=None):
        if (device is not None and torch.device(device) != models.device) or (dtype and dtype != models.dtype):
            models.to(device, dtype)
        self.models = models
        self.device, self.dtype = models.device, models.dtype

    def _check_version(self, settings: LipSyncSettings) -> None:
        if str(settings.version) != str(self.models.version):
            log.warning("settings ask for LatentSync %s but the loaded models are %s; using the models",
                        settings.version, self.models.version)

    # ------------------------------------------------------------------------------------------ steps 1-3
    def prepare(self, audio, fps, settings: LipSyncSettings | None = None, n_frames: int | None = None) -> LipSyncJob:
        """Check the audio, fps and settings, compute the audio features and the timeline."""
        from .audio import audio_features, chunk_rows, to_mono_16k

        settings = settings or LipSyncSettings()
        self._check_version(settings)
        fps = tl.check_fps(fps)
        samples, sr = parse_audio(audio)  # 1. check inputs (audio)
        mono = to_mono_16k(samples, sr)
        if settings.length_mode == "video" and n_frames is None:
            log.warning("length_mode='video' without a frame count: frames past the audio get its last chunk")
            timeline = None
        else:
            timeline = tl.make_timeline(samples.shape[1], sr, fps, n_frames, settings.length_mode)
            # the features see exactly the output's audio: trimmed, or padded with silence
            mono = tl.fit_audio(mono, tl.audio_sample_count(timeline.n_out, fps, 16000))
        if mono.shape[0] < 320:
            mono = tl.fit_audio(mono, 320)  # at least one feature row (20 ms)
        encoder = self.models.audio_encoder
        with torch.inference_mode():  # 2. audio features
            features = audio_features(encoder, mono, mode=settings.audio_mode)
        rows = chunk_rows(timeline.n_out, fps, features.shape[0]) if timeline else None
        return LipSyncJob(settings, timeline, fps, samples, sr, features, rows)  # 3. timeline

    # ------------------------------------------------------------------------------------------ streaming
    def stream(self, frames, fps, audio, settings: LipSyncSettings | None = None, progress: Progress | None = None,
               cancel: Cancel | None = None, *, n_frames: int | None = None,
               job: LipSyncJob | None = None) -> Iterator[np.ndarray]:
        """Yield lip-synced uint8 chunks (n, H, W, 3). ``frames``: an iterable of chunks (see ``inputs``) or a
        zero-argument callable returning a fresh one (re-openable: bounded RAM for ping-pong). ``n_frames``: the
        source's frame count if known. ``job``: a ``prepare`` result to reuse (then fps/audio are ignored)."""
        for chunk, _ in self._run(frames, fps, audio, settings, progress, cancel, n_frames, job):
            yield chunk

    def _run(self, frames, fps, audio, settings, progress, cancel, n_frames, job):
        # 1. check inputs: settings, audio, first frames (before any heavy work)
        settings = job.settings if job is not None else (settings or LipSyncSettings())
        source = _checked_source(frames)
        job = job or self.prepare(audio, fps, settings, n_frames)  # 2. audio features, 3. timeline
        n_out = job.timeline.n_out if job.timeline else None
        played = tl.played_frames(source, n_out, n_frames=n_frames, cache_bytes=settings.cache_mb << 20)

        # 4. faces (detect once per source frame, align along the played sequence)
        from .face import FaceAligner, FaceDetector, latent_mask, load_mask

        res = self.models.resolution
        # mediapipe without the legacy API (numpy 2) uses the Tasks model face_landmarker.task from the models
        # folder, downloaded there once if it is missing and the network allows
        detector = FaceDetector(backend=settings.face_backend, face=settings.face,
                                model_dir=self.models.model_dir, allow_download=True)
        aligner = FaceAligner(res)
        keep_detections = n_out is not None and (n_frames is None or n_frames < n_out)
        detections: dict[int, object] = {}
        ctx = self._context(settings, res, load_mask, latent_mask, n_out, progress)
        pending: deque[_Frame] = deque()  # frames in display order waiting for their window
        window: list[_Frame] = []
        ready: list[list[_Frame]] = []
        gap = 0
        try:
            for j, (src, frame) in enumerate(played):
                if cancel is not None and cancel():
                    raise CancelledError("Lip-sync was cancelled.")
                det = detections[src] if src in detections else detector.detect(frame)
                if keep_detections:
                    detections[src] = det
                item = _Frame(j, frame)
                if det is None:
                    if settings.strict_faces:
                        raise NoFaceError(f"No face found in frame {src} (strict face mode).")
                    aligner.reset()
                    item.out = frame
                    gap += 1
                else:
                    item.face, item.matrix = aligner.align(frame, det.points)
                    window.append(item)
                    gap = 0
                pending.append(item)
                if len(window) == WINDOW or (window and gap >= WINDOW):
                    ready.append(window)
                    window = []
                if len(ready) >= settings.window_batch:
                    self._process(ctx, job, ready, cancel)  # 5. encode → denoise → decode, 6. paste back
                    ready = []
                yield from self._flush(pending)  # 7. yield finished frames
            if window:
                ready.append(window)
            if ready:
                self._process(ctx, job, ready, cancel)
            yield from self._flush(pending)
            ctx.step_hook(0, final=True)
        finally:
            detector.close()

    # ------------------------------------------------------------------------------------------ helpers
    def _context(self, settings, res, load_mask, latent_mask, n_out, progress) -> DenoiseContext:
        from .scheduler import make_scheduler

        vae_factor = 2 ** (len(self.models.vae.config.block_out_channels) - 1)
        h = res // vae_factor
        mask_np = load_mask(res)
        mask = torch.from_numpy(mask_np).to(self.device)
        mask_latent = torch.from_numpy(np.ascontiguousarray(latent_mask(mask_np)))
        if tuple(mask_latent.shape) != (h, h):
            mask_latent = torch.nn.functional.interpolate(mask[None, None], size=(h, h))[0, 0].cpu()
        scheduler = make_scheduler()
        scheduler.set_timesteps(settings.steps, device=self.device)
        generator = torch.Generator("cpu").manual_seed(int(settings.seed))
        channels = int(self.models.vae.config.latent_channels)
        noise = torch.randn((1, channels, 1, h, h), generator=generator, dtype=torch.float32).to(self.device)
        windows = math.ceil(n_out / WINDOW) if n_out else 1
        step_hook = _Progress(progress, settings.steps, windows)
        return DenoiseContext(
            unet=self.models.unet, vae=self.models.vae, scheduler=scheduler, mask=mask[None],
            mask_latent=mask_latent.to(self.device, self.dtype)[None, None, None], noise=noise,
            generator=generator, guidance=float(settings.guidance),
            deepcache=settings.deepcache_interval if settings.deepcache else 0, vae_slice=settings.vae_slice,
            step_hook=step_hook, cfg_serial=settings.cfg_serial)

    def _window_audio(self, job: LipSyncJob, indices: list[int]) -> torch.Tensor:
        from .audio import chunk_rows

        if job.rows is not None and indices[-1] < len(job.rows):
            rows = job.rows[indices]
        else:
            rows = chunk_rows(indices[-1] + 1, job.fps, job.features.shape[0])[indices]
        feats = job.features[torch.from_numpy(rows.reshape(-1))]
        return feats.reshape(len(indices), -1, feats.shape[-1])

    def _process(self, ctx: DenoiseContext, job: LipSyncJob, windows: list[list[_Frame]], cancel) -> None:
        """Denoise ``windows`` (grouped by frame count) and paste the generated faces into their frames."""
        from .face import restore_face

        groups: list[list[list[_Frame]]] = []
        for w in windows:
            if groups and len(groups[-1][0]) == len(w):
                groups[-1].append(w)
            else:
                groups.append([w])
        for group in groups:
            with torch.inference_mode():
                faces = torch.stack([faces_to_tensor([f.face for f in w], self.device, self.dtype) for w in group])
                audio = torch.stack([self._window_audio(job, [f.index for f in w]) for w in group])
                batch = WindowBatch(faces, audio.to(self.device, self.dtype))
                out = denoise_windows(ctx, batch, cancel).cpu()
            ctx.step_hook.windows_done += len(group)
            for k, item in enumerate(f for w in group for f in w):
                item.out = restore_face(item.frame, out[k], item.matrix)
                item.face = None

    @staticmethod
    def _flush(pending: deque) -> Iterator[tuple[np.ndarray, list[int]]]:
        done = []
        while pending and pending[0].out is not None:
            done.append(pending.popleft())
        if done:
            yield np.stack([d.out for d in done]), [d.matrix is not None for d in done]

    # ------------------------------------------------------------------------------------------ in memory
    def __call__(self, frames, fps, audio, settings: LipSyncSettings | None = None, progress: Progress | None = None,
                 cancel: Cancel | None = None, chunk: int = WINDOW) -> LipSyncResult:
        """In-memory variant: ``frames`` (N, H, W, 3) uint8, or float 0..1 (numpy or torch, e.g. ComfyUI IMAGE).
        Returns frames of the same kind; pixels the pipeline did not change keep their exact input values."""
        is_float_tensor = isinstance(frames, torch.Tensor) and frames.dtype.is_floating_point
        is_float = is_float_tensor or (isinstance(frames, np.ndarray) and frames.dtype.kind == "f")
        if not hasattr(frames, "shape") or len(frames.shape) < 3:
            raise InputError(f"Frames must be an array (N, H, W, 3); got {type(frames).__name__}.")
        n = int(frames.shape[0])
        if n == 0:
            raise InputError("The video has no frames.")
        settings = settings or LipSyncSettings()

        def source():
            return (frames[i:i + chunk] for i in range(0, n, chunk))

        job = self.prepare(audio, fps, settings, n_frames=n)
        src_idx = tl.source_indices(job.timeline.n_out, n)
        out, flags, pos = None, [], 0
        for part, has_face in self._run(source, fps, audio, settings, progress, cancel, n, job):
            if out is None:  # the whole result, filled chunk by chunk (no second full-size copy)
                shape = (job.timeline.n_out, *part.shape[1:])
                out = torch.empty(shape, dtype=torch.float32) if is_float_tensor else \
                    np.empty(shape, np.float32 if is_float else np.uint8)
            k = len(part)
            if is_float:
                part = self._to_float(part, frames, src_idx[pos:pos + k])
                part = torch.from_numpy(part) if is_float_tensor else part
            out[pos:pos + k] = part
            flags.extend(has_face)
            pos += k
        out = out[:pos]
        return LipSyncResult(out, job.fps, job.output_audio(pos), np.asarray(flags, bool))

    @staticmethod
    def _to_float(part: np.ndarray, frames, idx: np.ndarray) -> np.ndarray:
        """uint8 chunk → float32 0..1, keeping the caller's exact float value wherever the pixel is unchanged."""
        out = part.astype(np.float32) / 255.0
        orig = frames[torch.from_numpy(idx)] if isinstance(frames, torch.Tensor) else frames[idx]
        orig = orig.detach().cpu().float().numpy() if hasattr(orig, "detach") else np.asarray(orig, np.float32)
        if orig.ndim == 4 and orig.shape[-1] == 3:
            same = frames_to_uint8(orig) == part
            out = np.where(same, orig, out)
        return out


__all__ = ["LipSyncSettings", "LipSyncPipeline", "LipSyncJob", "LipSyncResult", "WINDOW"]
