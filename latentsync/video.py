"""Streaming video IO with PyAV: probe, chunked frame decode, audio decode, and one-pass H.264 + AAC encode.

Frames are uint8 RGB arrays (n, H, W, 3). Decoding streams chunk by chunk (a long clip is never held in memory).
Encoding is a single libx264 (yuv420p, CRF) pass with BT.709 colour tags; the audio is muxed as AAC at its
original sample rate, interleaved with the video as frames arrive. 4:2:0 needs even sizes, so an odd width or
height is padded by one replicated edge column/row (nothing of the picture is lost; the file is 1 px larger).
The writer encodes to a hidden temporary file next to the target and renames it on success, so a failed or
cancelled job never leaves a half-written file at the target path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    n_frames: int
    width: int
    height: int
    has_audio: bool
    duration: float
    rate: Fraction = Fraction(0)  # exact frame rate (e.g. 30000/1001)
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    rotation: int = 0  # display rotation (degrees counterclockwise) of the file; iter_frames already applies it


def _open(path):
    import av

    p = Path(path)
    if not p.exists():
        raise InputError(f"Video file not found: {p}")
    if p.is_dir():
        raise InputError(f"Expected a video file but got a folder: {p}")
    try:
        return av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{p} is not a readable video file ({e}).") from e


def _video_stream(container, path):
    if not container.streams.video:
        container.close()
        raise InputError(f"{path} has no video stream.")
    return container.streams.video[0]


def _rate(stream) -> Fraction:
    for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if r is not None and r > 0:
            return Fraction(r.numerator, r.denominator)
    return Fraction(25)


def probe(path) -> VideoInfo:
    """Frame rate, frame count, size (as iter_frames returns the frames), duration and audio presence of a video
    file (counts packets when the container does not store the frame count)."""
    import av

    with _open(path) as c:
        v = _video_stream(c, path)
        rate = _rate(v)
        rotation = 0
        try:  # the display rotation is known from the first decoded frame
            for frame in c.decode(v):
                rotation = int(getattr(frame, "rotation", 0) or 0)
                break
        except av.error.FFmpegError as e:
            raise InputError(f"{path} is not a readable video file ({e}).") from e
        n = int(v.frames or 0)
        if n <= 0:  # the container does not store the count (e.g. some .mkv/.webm): count packets
            c.seek(0)
            n = sum(1 for pkt in c.demux(v) if pkt.size > 0)
        if v.duration is not None and v.time_base is not None:
            duration = float(v.duration * v.time_base)
        elif c.duration is not None:
            duration = c.duration / 1_000_000
        else:
            duration = n / float(rate)
        a = c.streams.audio[0] if c.streams.audio else None
        width, height = v.codec_context.width, v.codec_context.height
        if int(round(rotation / 90.0)) % 2:  # portrait phone videos: report the size iter_frames returns
            width, height = height, width
        return VideoInfo(fps=float(rate), n_frames=n, width=width, height=height,
                         has_audio=a is not None, duration=duration, rate=rate,
                         audio_sample_rate=a.codec_context.sample_rate if a else None,
                         audio_channels=a.codec_context.channels if a else None, rotation=rotation)


def _sws_flags():
    from av.video.reformatter import Interpolation as I

    # accurate rounding + full chroma interpolation: without them swscale's YUV→RGB is biased by about −1 level
    return I.BILINEAR | I.ACCURATE_RND | I.FULL_CHR_H_INT


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counterclockwise, FFmpeg's display-matrix convention, e.g. −90 for a
    portrait phone video) to an (H, W, C) frame, as players do."""
    k = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def _to_rgb(frame) -> np.ndarray:
    rgb = frame.reformat(format="rgb24", interpolation=_sws_flags()).to_ndarray()
    return upright(rgb, int(getattr(frame, "rotation", 0) or 0))


def iter_frames(path, chunk: int = 16, start: int = 0) -> Iterator[np.ndarray]:
    """Yield the video's frames from frame ``start`` on as uint8 RGB arrays (n, H, W, 3), n ≤ ``chunk`` (only the
    last chunk is shorter), turned upright when the file carries a display rotation (so faces are upright and the
    output needs no tag). A ``start`` > 0 seeks to the key frame before it and decodes forward from there."""
    import av

    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    c = _open(path)
    try:
        v = _video_stream(c, path)
        v.thread_type = "AUTO"
        index = _seek(c, v, start) if start > 0 else 0
        buf = []
        try:
            for frame in c.decode(v):
                if index is None:  # after a seek: the frame's number from its timestamp
                    index = _frame_index(frame, v)
                index += 1
                if index <= start:
                    continue
                buf.append(_to_rgb(frame))
                if len(buf) == chunk:
                    yield np.stack(buf)
                    buf = []
        except av.error.FFmpegError as e:
            raise InputError(f"Decoding {path} failed: {e}") from e
        if buf:
            yield np.stack(buf)
    finally:
        c.close()


def _seek(container, stream, start: int) -> int | None:
    """Seek to the key frame at or before frame ``start``; None = the next frame's number comes from its pts
    (0 when the stream has no timestamps to seek by: decode from the beginning)."""
    rate = _rate(stream)
    if stream.time_base is None or not rate:
        return 0
    offset = stream.start_time or 0
    target = offset + int(Fraction(start) / rate / stream.time_base)
    container.seek(target, stream=stream, backward=True, any_frame=False)
    return None


def _frame_index(frame, stream) -> int:
    if frame.pts is None:
        raise InputError("Cannot seek in this video (frames without timestamps).")
    seconds = (frame.pts - (stream.start_time or 0)) * stream.time_base
    return int(round(seconds * _rate(stream)))


def read_audio(path) -> tuple[np.ndarray, int] | None:
    """Decode the first audio stream: (float32 samples (C, T) in about [-1, 1], sample rate), or None if the file
    has no audio stream."""
    import av

    with _open(path) as c:
        if not c.streams.audio:
            return None
        a = c.streams.audio[0]
        sr = a.codec_context.sample_rate
        resampler = None
        parts = []
        try:
            for frame in c.decode(a):
                if resampler is None:
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
                for f in resampler.resample(frame):
                    parts.append(f.to_ndarray())
            if resampler is not None:
                parts += [f.to_ndarray() for f in resampler.resample(None)]
        except av.error.FFmpegError as e:
            raise InputError(f"Decoding the audio of {path} failed: {e}") from e
        if not parts:
            return np.zeros((a.codec_context.channels or 1, 0), np.float32), sr
        samples = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
        if a.duration and a.time_base:  # drop the AAC end padding the container's duration excludes
            n = int(round(float(a.duration * a.time_base) * sr))
            if 0 < n < samples.shape[1]:
                samples = samples[:, :n]
        return samples, sr


def _exact_rate(fps) -> Fraction:
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(100_000)
    if rate <= 0:
        raise InputError(f"Invalid frame rate {fps}.")
    return rate


_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class VideoWriter:
    """``with VideoWriter(path, fps, width, height, audio=(samples (C,T) float32, sr)) as w: w.write(frames)``.

    ``fps`` may be a float or a Fraction (29.97 → 2997/100; pass Fraction(30000, 1001) or ``VideoInfo.rate`` for
    NTSC rates). Audio is written in full (trim/pad it beforehand to the length you want)."""

    def __init__(self, path, fps, width: int, height: int, audio=None, crf: int = 18, preset: str = "medium",
                 lossless: bool = False):
        self.path = Path(path)
        self.rate = _exact_rate(fps)
        self.width, self.height = int(width), int(height)
        if self.width < 1 or self.height < 1:
            raise InputError(f"Invalid video size {width}x{height}.")
        self.enc_width, self.enc_height = self.width + self.width % 2, self.height + self.height % 2
        self.crf, self.preset, self.lossless = int(crf), preset, bool(lossless)
        if self.lossless:  # FFV1 in RGB: frames come back bit-exact (segments of a distributed job)
            self.enc_width, self.enc_height = self.width, self.height
        self.audio = None
        if audio is not None:
            samples, sr = audio
            samples = np.asarray(samples, dtype=np.float32)
            if samples.ndim == 1:
                samples = samples[None]
            if samples.ndim != 2 or samples.shape[0] not in _LAYOUTS or int(sr) <= 0:
                raise InputError(f"Audio for the video must be (channels ≤ 8, samples) with a positive sample rate, "
                                 f"got shape {samples.shape} at {sr} Hz.")
            self.audio = (np.ascontiguousarray(samples), int(sr))
        self.n_written = 0
        self._audio_pos = 0
        self._container = None
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")

    def __enter__(self) -> "VideoWriter":
        import av

        if not self.path.parent.is_dir():
            raise InputError(f"Output folder does not exist: {self.path.parent}")
        try:
            c = av.open(str(self._tmp), "w", options={"movflags": "+faststart"}
                        if self.path.suffix.lower() in (".mp4", ".mov", ".m4v") else {})
        except (av.error.FFmpegError, ValueError) as e:
            raise InputError(f"Cannot write video {self.path} ({e}); use an .mp4, .mov or .mkv name.") from e
        self._container = c
        if self.lossless:
            return self._open_lossless(c)
        v = c.add_stream("libx264", rate=self.rate)
        v.width, v.height, v.pix_fmt = self.enc_width, self.enc_height, "yuv420p"
        self._tb = 1 / self.rate  # fixed codec time base (the muxer may change the stream's own)
        v.time_base = self._tb
        v.codec_context.time_base = self._tb
        v.options = {"crf": str(self.crf), "preset": self.preset}
        cc = v.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited range
        self._v = v
        if self.audio is not None:
            samples, sr = self.audio
            self._a = c.add_stream("aac", rate=sr, layout=_LAYOUTS[samples.shape[0]])
            self._a.bit_rate = 192_000
        if self.width % 2 or self.height % 2:
            logger.info("Odd frame size %dx%d padded to %dx%d for H.264 4:2:0", self.width, self.height,
                        self.enc_width, self.enc_height)
        return self

    def _open_lossless(self, container) -> "VideoWriter":
        if self.audio is not None:
            raise InputError("A lossless (FFV1) part is written without audio.")
        v = container.add_stream("ffv1", rate=self.rate)
        v.width, v.height, v.pix_fmt = self.width, self.height, "bgr0"
        self._tb = 1 / self.rate
        v.time_base = v.codec_context.time_base = self._tb
        self._v = v
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append frames (n, H, W, 3) uint8 RGB (or one frame (H, W, 3))."""
        import av

        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise InputError(f"VideoWriter expects uint8 frames (n, {self.height}, {self.width}, 3), "
                             f"got {frames.dtype} {tuple(frames.shape)}.")
        if self.enc_width != self.width or self.enc_height != self.height:
            frames = np.pad(frames, ((0, 0), (0, self.enc_height - self.height), (0, self.enc_width - self.width),
                                     (0, 0)), mode="edge")
        for img in frames:
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f = f.reformat(format="bgr0") if self.lossless else \
                f.reformat(format="yuv420p", dst_colorspace="ITU709", interpolation=_sws_flags())
            f.pts = self.n_written
            f.time_base = self._tb
            self.n_written += 1
            self._container.mux(self._v.encode(f))
        self._write_audio(self.n_written / self.rate)

    def _write_audio(self, until_s) -> None:
        """Encode the audio up to ``until_s`` seconds (None = all of it), in frames of 1024 samples."""
        import av

        if self.audio is None:
            return
        samples, sr = self.audio
        end = samples.shape[1] if until_s is None else min(samples.shape[1], int(until_s * sr))
        layout = _LAYOUTS[samples.shape[0]]
        while self._audio_pos < end:
            stop = min(end, self._audio_pos + 1024)
            if until_s is not None and stop - self._audio_pos < 1024:
                break  # keep partial blocks for later so frames stay 1024 samples long
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, self._audio_pos:stop]), format="fltp",
                                           layout=layout)
            f.sample_rate = sr
            f.pts = self._audio_pos
            f.time_base = Fraction(1, sr)
            self._audio_pos = stop
            self._container.mux(self._a.encode(f))

    def close(self) -> None:
        if self._container is None:
            return
        c = self._container
        try:
            if self.n_written == 0:
                raise InputError(f"No frames were written to {self.path}.")
            self._write_audio(None)
            c.mux(self._v.encode(None))
            if self.audio is not None:
                c.mux(self._a.encode(None))
        finally:
            self._container = None
            c.close()
        os.replace(self._tmp, self.path)
        logger.info("Wrote %s: %d frames at %s fps%s", self.path, self.n_written, self.rate,
                    " with audio" if self.audio is not None else "")

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - we are already failing; the file is removed below
                pass
            self._container = None
        self._tmp.unlink(missing_ok=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:
            self.abort()
            raise
