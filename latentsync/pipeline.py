"""LatentSync 1.6 lip-sync: frames + speech in, lip-synced frames out, streaming with bounded memory.

    pipe = LipSyncPipeline(models)
    job = pipe.prepare(audio, fps, settings, n_frames=n, plan=plan)      # 1-3: checks, audio features, timeline
    for chunk in pipe.stream(FrameSource.from_file(path), job):         # 4-7, uint8 (n, H, W, 3) chunks
        writer.write(chunk)

``stream`` reads top to bottom like a diffusers ``__call__``:
1 check inputs · 2 audio features · 3 timeline (both in ``prepare``) · 4 faces: detect, align, group into windows
· 5 per window: encode → denoise → decode · 6 paste back · 7 yield finished frames in display order.
With ``settings.pipelined`` steps 4, 5 and 6 run in three background threads with small bounded queues
(latentsync.workers), so decoding, face work and paste-back overlap the denoiser; each stage keeps its order,
so the output is bit-identical to the serial run. Peak RAM does not grow with the clip's length: only the
frames of the windows in flight (and frames waiting behind them in display order) are held.

Faces are found once per source frame (kept for a ping-pong replay) and aligned along the played sequence (the
smoothing state follows what is shown; it restarts after a frame without the face). Frames without a face are
passed through bit-identical; windows run over each speaker's face frames only. ``prepare(start=k)`` /
``stream`` then produce only output frames k.. — exactly as the full run does there: the windows before k
only replay their random draws, and the alignment smoothing is warmed up on the faces before k (which must be
given: ``faces=GivenFaces(...)``).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from . import timeline as tl
from .accel import Accelerated, accelerated
from .denoise import DenoiseContext, denoise_windows, faces_to_tensor, replay_window_draws
from .errors import CancelledError, NoFaceError
from .face import FaceAligner, latent_mask, load_mask
from .face.blend import paste_face
from .inputs import FrameSource
from .job import LipSyncJob, prepare_job
from .scheduler import make_scheduler
from .settings import LipSyncSettings
from .speakers import DetectedFaces
from .windows import WINDOW, Batch, FaceSlot, FrameWork, Window, WindowBuilder, group_windows
from .workers import in_background

log = logging.getLogger(__name__)

OUTPUT_CHUNK = 4  # frames per yielded chunk: small, so few finished frames wait for the encoder at a time
Progress = Callable[[int, int, dict], None]
Cancel = Callable[[], bool]


class LipSyncPipeline:
    def __init__(self, models):
        self.models = models
        self.device, self.dtype = models.device, models.dtype

    def prepare(self, audio, fps, settings: LipSyncSettings | None = None, **options) -> LipSyncJob:
        """Steps 1-3 without frames (see ``latentsync.job.prepare_job`` for the options)."""
        return prepare_job(self.models, audio, fps, settings or LipSyncSettings(), **options)

    def stream(self, source: FrameSource, job: LipSyncJob, progress: Progress | None = None,
               cancel: Cancel | None = None, on_frame: Callable[[FrameWork], None] | None = None
               ) -> Iterator[np.ndarray]:
        """Yield the lip-synced frames as uint8 chunks (n, H, W, 3), in order. ``on_frame`` sees every finished
        frame (its detections, matrices and pixels) — for previews and reports."""
        settings = job.settings
        stages: list = []  # the background stages, closed in the end whatever happens

        def stage(items, name):
            if not settings.pipelined:
                return items
            stages.append(in_background(items, name))
            return stages[-1]

        # 1. check inputs: the source checks its frames where they enter; 2-3. audio features, timeline: the job
        frames = tl.played_frames(source, job.n_out, loop=job.loop, start=job.start,
                                  cache_bytes=settings.cache_mb << 20)
        # 4. faces: detect, align, group into windows
        batches = stage(self._find_faces(frames, job, cancel), "faces")
        # 5. per window: encode → denoise → decode
        batches = stage(self._denoise(batches, job, progress, cancel), "denoise")
        # 6. paste back
        chunks = stage(self._paste(batches, job, on_frame), "paste")
        # 7. finished frames, in display order
        try:
            yield from chunks
        finally:  # stop every stage first (none waits for another's next item), then wait for them
            for background in stages:
                background.stop()
            for background in reversed(stages):
                background.close()

    # ------------------------------------------------------------------------------------------ 4. faces
    def _find_faces(self, frames: Iterable, job: LipSyncJob, cancel: Cancel | None) -> Iterator[Batch]:
        finder = job.faces or DetectedFaces(job.settings, job.speakers[0].face, self.models.model_dir,
                                            self.models.allow_download)
        aligners = [FaceAligner(self.models.resolution) for _ in job.speakers]
        builders = [WindowBuilder(k) for k in range(len(job.speakers))]
        found_by_source: dict[int, list] = {}  # the detections of each source frame, for a ping-pong replay
        aligned_by_source: dict[int, list] = {}  # reference mode: each source frame aligned once, in source order
        keep_detections = job.keep_detections
        ready: list[Window] = []
        new_frames: list[FrameWork] = []

        def add(work: FrameWork) -> None:
            src = work.source
            found = found_by_source.get(src) or finder.find(src, work.frame)
            if keep_detections:
                found_by_source[src] = found
            for k, detection in enumerate(found):
                if detection is None:
                    if job.settings.strict_faces:
                        raise NoFaceError(f"No face found in frame {src} (strict face mode).")
                    aligners[k].reset()
                    work.slots.append(None)
                    window = builders[k].miss()
                else:
                    work.slots.append(self._align(work, k, detection, aligners[k], aligned_by_source, job))
                    window = builders[k].add(work)
                if window is not None:
                    ready.append(window)

        def flush(final: bool = False) -> Iterator[Batch]:
            nonlocal ready, new_frames
            groups = []
            if final or sum(not w.replay for w in ready) >= job.plan.window_batch:
                groups, ready = group_windows(ready), []
            if groups or final or len(new_frames) >= WINDOW:
                yield Batch(new_frames, groups)
                new_frames = []

        try:
            for j in range(job.start):  # a segment: warm up on the faces before it (no pixels)
                add(FrameWork(j, int(job.source_order[j]), None))
                yield from flush()
            for j, src, frame in frames:
                if cancel is not None and cancel():
                    raise CancelledError("Lip-sync was cancelled.")
                work = FrameWork(j, src, frame)
                add(work)
                new_frames.append(work)
                yield from flush()
            ready += [w for w in (b.finish() for b in builders) if w is not None]
            yield from flush(final=True)
        finally:
            finder.close()

    def _align(self, work: FrameWork, speaker: int, detection, aligner: FaceAligner, aligned_by_source: dict,
               job: LipSyncJob) -> FaceSlot:
        if work.frame is None:  # before a segment: only the smoothing state matters
            return FaceSlot(speaker, detection, aligner.matrix(detection.points))
        if job.settings.reference and (work.source, speaker) in aligned_by_source:
            face, matrix = aligned_by_source[work.source, speaker]
        else:
            face, matrix = aligner.align(work.frame, detection.points)
            if job.settings.reference:
                aligned_by_source[work.source, speaker] = face, matrix
        return FaceSlot(speaker, detection, matrix, face, weight=job.face_weight(speaker, work.index))

    # ------------------------------------------------------------------------------------------ 5. denoise
    def _denoise(self, batches: Iterable[Batch], job: LipSyncJob, progress: Progress | None,
                 cancel: Cancel | None) -> Iterator[Batch]:
        steps = job.settings.steps
        total = [steps * max(1, math.ceil((job.n_out or 1) / WINDOW)) * len(job.speakers)]
        done = [0]

        def on_step(windows: int) -> None:
            done[0] += windows
            total[0] = max(total[0], done[0])
            if progress is not None:
                progress(done[0], total[0], {"steps": steps})

        settings = job.settings
        with accelerated(self.models, settings.gpu_levers(), deepcache=settings.deepcache) as networks:
            contexts = [self._context(job, track.seed, on_step, networks) for track in job.speakers]
            for batch in batches:
                for group in batch.groups:
                    context = contexts[group[0].speaker]
                    if group[0].replay:
                        for window in group:
                            replay_window_draws(context, len(window))
                            done[0] += steps  # counted as done for the progress bar
                    else:
                        self._denoise_group(context, group, job, cancel)
                    for slot in (s for window in group for s in window.slots):
                        slot.done = True
                yield batch
        if progress is not None and done[0] != total[0]:
            progress(done[0], done[0], {"steps": steps, "final": True})

    def _denoise_group(self, context: DenoiseContext, group: list[Window], job: LipSyncJob, cancel) -> None:
        track = job.speakers[group[0].speaker]
        with torch.inference_mode():
            faces = torch.stack([faces_to_tensor([s.face for s in w.slots], self.device, self.dtype) for w in group])
            audio = torch.stack([track.window_audio([f.index for f in w.frames]) for w in group])
            generated = denoise_windows(context, faces, audio.to(self.device, self.dtype), cancel)
            if job.restorer is not None:
                generated = job.restorer(generated, context.mask[0])
            generated = generated.cpu()
        for k, slot in enumerate(s for w in group for s in w.slots):
            slot.generated, slot.face = generated[k], None

    def _context(self, job: LipSyncJob, seed: int, on_step: Callable[[int], None],
                 networks: Accelerated) -> DenoiseContext:
        resolution = self.models.resolution
        vae_factor = 2 ** (len(self.models.vae.config.block_out_channels) - 1)
        latent_side = resolution // vae_factor
        mask = load_mask(resolution)
        mask_latent = torch.from_numpy(np.ascontiguousarray(latent_mask(mask)))
        if tuple(mask_latent.shape) != (latent_side, latent_side):
            mask_latent = torch.nn.functional.interpolate(torch.from_numpy(mask)[None, None],
                                                          size=(latent_side, latent_side))[0, 0]
        scheduler = make_scheduler()
        scheduler.set_timesteps(job.settings.steps, device=self.device)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        channels = int(self.models.vae.config.latent_channels)
        shape = (1, channels, 1, latent_side, latent_side)
        initial_noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)
        return DenoiseContext(
            unet=networks.unet, vae=networks.vae, scheduler=scheduler,
            mask=torch.from_numpy(mask).to(self.device)[None],
            mask_latent=mask_latent.to(self.device, self.dtype)[None, None, None], initial_noise=initial_noise,
            generator=generator, guidance=float(job.settings.guidance),
            deepcache=job.settings.deepcache_interval if job.settings.deepcache else 0,
            vae_slice=job.plan.vae_slice, cfg_serial=job.plan.cfg_serial, on_step=on_step,
            vae_tiling=networks.vae_tiling)

    # ------------------------------------------------------------------------------------------ 6. paste back
    def _paste(self, batches: Iterable[Batch], job: LipSyncJob,
               on_frame: Callable[[FrameWork], None] | None) -> Iterator[np.ndarray]:
        pending: deque[FrameWork] = deque()
        for batch in batches:
            pending.extend(batch.frames)
            finished = []
            while pending and pending[0].complete:
                work = pending.popleft()
                work.out = self._paste_faces(work, job)
                if on_frame is not None:
                    on_frame(work)
                finished.append(work)
                if len(finished) == OUTPUT_CHUNK or not (pending and pending[0].complete):
                    chunk = np.stack([w.out for w in finished])
                    for done in finished:  # the pixels are in the chunk now: nothing else needs them
                        done.release_pixels()
                    finished = []
                    yield chunk  # 7. finished frames, in display order
        if pending:
            raise RuntimeError(f"{len(pending)} frames never got their window")  # a bug, not a user error

    @staticmethod
    def _paste_faces(work: FrameWork, job: LipSyncJob) -> np.ndarray:
        """Each speaker's generated face into the frame, in speaker order (overlapping faces: the later wins)."""
        out = work.frame
        options = job.paste_options
        _log_overlaps(work, job)
        for slot in work.slots:
            if slot is None or slot.generated is None or slot.weight == 0.0:
                continue
            pasted = paste_face(out, slot.generated, slot.matrix, options)
            if slot.weight < 1.0:
                pasted = (out + slot.weight * (pasted.astype(np.float32) - out)).round().astype(np.uint8)
            out = pasted
        return out


def _log_overlaps(work: FrameWork, job: LipSyncJob) -> None:
    """Say once per job and pair of speakers when their face boxes intersect (they are pasted in speaker order)."""
    slots = [s for s in work.slots if s is not None]
    for i, a in enumerate(slots):
        for b in slots[i + 1:]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.detection.box, b.detection.box
            pair = (a.speaker, b.speaker)
            if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1 and pair not in job.overlaps_logged:
                job.overlaps_logged.add(pair)
                log.warning("the faces of speakers %d and %d overlap (first in frame %d): they are pasted in speaker "
                            "order, speaker %d on top", a.speaker + 1, b.speaker + 1, work.index, b.speaker + 1)


__all__ = ["LipSyncPipeline", "LipSyncJob", "LipSyncSettings"]
