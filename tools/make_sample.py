"""A sample talking-head clip for the main job and the tests: scikit-image's astronaut photo (NASA, public
domain) placed on a canvas and moving slightly, plus speech (espeak-ng when installed, else a synthetic
voice-like signal).

    python tools/make_sample.py OUT_DIR [--seconds 4] [--fps 25] [--width 1280] [--height 720]
writes OUT_DIR/sample.mp4 (video with its speech track) and OUT_DIR/speech.wav, and prints both paths.
Functions (reused by tests and bench): ``astronaut``, ``make_frames``, ``make_dialogue_frames`` (two people) and
its ``dialogue_layout``, ``make_speech``, ``write_wav``, ``write_sample``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
        "Peter Piper picked a peck of pickled peppers, how many pickled peppers did he pick?")
BACKGROUND = (52, 64, 80)


@lru_cache(maxsize=4)
def astronaut(size: int = 360) -> np.ndarray:
    """The astronaut photo's head and shoulders (uint8 RGB) resized to ``size`` x ``size``."""
    import cv2

    try:
        from skimage.data import astronaut as _astronaut

        img = _astronaut()[0:300, 80:380]  # head and shoulders
    except Exception:  # noqa: BLE001 - scikit-image is a test dependency; fall back to the parity copy
        import cv2 as _cv2

        path = ROOT / "tests" / "fixtures" / "parity" / "affine" / "photo_window.png"
        img = _cv2.cvtColor(_cv2.imread(str(path)), _cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))


def frame_at(i: int, fps: float, width: int = 1280, height: int = 720, face: bool = True,
             photo_height: float = 0.6) -> np.ndarray:
    """Frame ``i``: the photo (``photo_height`` × the canvas height) near the centre, drifting a few pixels."""
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    if not face:
        return canvas
    size = max(64, int(height * photo_height)) // 2 * 2
    img = astronaut(size)
    t = i / fps
    x0 = (width - size) // 2 + int(round(4 * math.sin(2 * math.pi * 0.5 * t)))
    y0 = (height - size) // 2 + int(round(3 * math.sin(2 * math.pi * 0.3 * t + 1.0)))
    xs, ys = max(0, x0), max(0, y0)
    xe, ye = min(width, x0 + size), min(height, y0 + size)
    canvas[ys:ye, xs:xe] = img[ys - y0:ye - y0, xs - x0:xe - x0]
    return canvas


def make_frames(n: int, fps: float = 25, width: int = 1280, height: int = 720, faceless=(),
                photo_height: float = 0.6) -> np.ndarray:
    """``n`` frames uint8 (n, H, W, 3); frames whose index is in ``faceless`` show only the background."""
    faceless = set(faceless)
    return np.stack([frame_at(i, fps, width, height, i not in faceless, photo_height) for i in range(n)])


def dialogue_layout(i: int, fps: float, width: int = 640, height: int = 360) -> tuple[int, list[tuple[int, int]]]:
    """Photo side and top-left corners (left person, right person) in frame ``i`` of the two-person shot: each
    photo about 85 % of the canvas height (at most half its width), drifting a few pixels independently."""
    size = max(64, min(int(height * 0.85), (width - 40) // 2)) // 2 * 2
    t = i / fps
    gap = (width - 2 * size) // 3
    corners = []
    for x_base, phase in ((gap, 0.0), (width - gap - size, 2.0)):
        corners.append((x_base + int(round(4 * math.sin(2 * math.pi * 0.5 * t + phase))),
                        (height - size) // 2 + int(round(3 * math.sin(2 * math.pi * 0.3 * t + 1.0 + phase)))))
    return size, corners


def dialogue_frame_at(i: int, fps: float, width: int = 640, height: int = 360, show_left: bool = True,
                      show_right: bool = True) -> np.ndarray:
    """Frame ``i`` of a two-person shot (see ``dialogue_layout``): the photo on the left and, mirrored, on the
    right."""
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    size, corners = dialogue_layout(i, fps, width, height)
    for show, (x0, y0), img in ((show_left, corners[0], astronaut(size)),
                                (show_right, corners[1], astronaut(size)[:, ::-1])):
        if not show:
            continue
        xs, ys = max(0, x0), max(0, y0)
        xe, ye = min(width, x0 + size), min(height, y0 + size)
        canvas[ys:ye, xs:xe] = img[ys - y0:ye - y0, xs - x0:xe - x0]
    return canvas


def make_dialogue_frames(n: int, fps: float = 25, width: int = 640, height: int = 360, hidden=None,
                         hidden_side: str = "right") -> np.ndarray:
    """``n`` frames uint8 (n, H, W, 3) of two people (see ``dialogue_frame_at``); frames ``hidden[0]`` up to
    (not including) ``hidden[1]`` show the ``hidden_side`` ("left" or "right") person covered by background."""
    if hidden_side not in ("left", "right"):
        raise ValueError(f"hidden_side must be 'left' or 'right', got {hidden_side!r}")
    start, stop = hidden if hidden is not None else (0, 0)
    frames = []
    for i in range(n):
        covered = start <= i < stop
        frames.append(dialogue_frame_at(i, fps, width, height, not (covered and hidden_side == "left"),
                                        not (covered and hidden_side == "right")))
    return np.stack(frames)


def iter_frames(n: int, fps: float = 25, width: int = 1280, height: int = 720, chunk: int = 16):
    """The same frames as ``make_frames``, generated chunk by chunk (constant memory)."""
    for a in range(0, n, chunk):
        yield np.stack([frame_at(i, fps, width, height) for i in range(a, min(n, a + chunk))])


@lru_cache(maxsize=4)
def _espeak(text: str, sr: int) -> np.ndarray | None:
    """espeak-ng speech (cached per process; callers must not modify it), or None without espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        try:
            subprocess.run([exe, "-v", "en-us", "-s", "160", "-w", str(out), text], check=True,
                           capture_output=True, timeout=60)
            samples, rate = read_wav(out)
        except (subprocess.SubprocessError, OSError, wave.Error):
            return None
    mono = samples.mean(axis=0)
    if rate != sr:
        import soxr

        mono = soxr.resample(mono, rate, sr)
    return mono.astype(np.float32)


def _synthetic(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Voice-like: a 120-180 Hz glottal pulse train with formant-ish harmonics, 4 syllables/s, short pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) * a for k, a in ((1, 1.0), (2, 0.6), (3, 0.5), (5, 0.3), (8, 0.2)))
    syllable = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 0.7
    pauses = (np.sin(2 * np.pi * 0.35 * t) > -0.8).astype(np.float64)
    noise = rng.normal(0, 0.05, t.shape)
    return (0.25 * (voice / 2.6 * syllable * pauses + noise * syllable)).astype(np.float32)


def make_speech(seconds: float, sr: int = 16000, text: str = TEXT) -> np.ndarray:
    """float32 mono [round(seconds * sr)]: espeak-ng speech (repeated/trimmed) if available, else synthetic."""
    n = int(round(seconds * sr))
    speech = _espeak(text, sr)
    if speech is None or speech.size == 0:
        return _synthetic(seconds, sr)[:n]
    reps = -(-n // speech.size)
    return np.tile(speech, reps)[:n].astype(np.float32)


def read_wav(path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        sr, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        data = w.readframes(w.getnframes())
    if width != 2:
        raise wave.Error(f"only 16-bit PCM is supported, got {8 * width}-bit")
    x = np.frombuffer(data, "<i2").reshape(-1, ch).T.astype(np.float32) / 32768.0
    return x, sr


def write_wav(path, samples: np.ndarray, sr: int) -> Path:
    """Write float samples [T] or (C, T) in -1..1 as 16-bit PCM."""
    x = np.asarray(samples, np.float32)
    x = x[None] if x.ndim == 1 else x
    pcm = (np.clip(x, -1, 1) * 32767).round().astype("<i2").T
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sr))
        w.writeframes(pcm.tobytes())
    return Path(path)


def write_sample(out_dir, seconds: float = 4.0, fps: float = 25, width: int = 1280, height: int = 720,
                 sr: int = 44100) -> tuple[Path, Path]:
    """Write ``sample.mp4`` (with its audio) and ``speech.wav`` into ``out_dir``; returns both paths."""
    from latentsync.video import VideoWriter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    speech = make_speech(seconds, sr)
    wav = write_wav(out / "speech.wav", speech, sr)
    n = max(1, int(round(seconds * fps)))
    video = out / "sample.mp4"
    with VideoWriter(video, fps, width, height, audio=(speech[None], sr)) as w:
        for chunk in iter_frames(n, fps, width, height):
            w.write(chunk)
    return video, wav


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--fps", type=float, default=25)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    a = p.parse_args(argv)
    video, wav = write_sample(a.out_dir, a.seconds, a.fps, a.width, a.height)
    print(video)
    print(wav)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
