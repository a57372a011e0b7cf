"""One lip-sync job's settings: a frozen dataclass checked when it is made, plus the few vocabularies every
front end shares (model versions, dtypes). The defaults reproduce the reference LatentSync 1.6."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError

VERSIONS = ("1.6", "1.5")  # LatentSync versions we can load (1.6: 512 px faces, 1.5: 256 px)
DTYPES = ("auto", "fp16", "bf16", "fp32")  # auto = fp16 on a GPU, fp32 on the CPU
LENGTH_MODES = ("audio", "video")
SILENCE_MODES = ("sync", "keep")


@dataclass(frozen=True)
class LipSyncSettings:
    """``guidance`` is the lips-expression scale (classifier-free guidance; 1.0 = off, one UNet batch).

    ``window_batch`` / ``vae_slice``: 0 = chosen by the memory plan (VRAM tier), else an override.
    ``reference``: the reference's frame count (n_samples // 640 + 2 at 25 fps), audio chunk rows, features
    from the unfitted audio, 30 s audio windows and forward/backward loop — for parity checks. The default keeps
    the input fps, makes round(audio seconds × fps) frames and stitches the audio windows (README, "Length rules").
    ``pipelined``: decode/faces and paste-back run in background threads next to the denoiser (same output).

    Artist controls (all off by default = the reference's result):
    ``blend`` reference | feather | poisson, ``feather_px``, ``color_match`` off | mean | mean_std (see
    latentsync.face.blend); ``restore_strength`` of an optional face restoration model (given to the job);
    face search: ``min_face_height`` (px, or a fraction of the frame height when < 1), ``face_confidence``,
    ``face_region`` (a box (x0, y0, x1, y1) in px, or a mask (H, W)), ``redetect_every`` (frames);
    ``silence`` sync | keep: where the audio is below ``silence_db`` dBFS the original face is kept (with
    cross-fades; a dialogue always keeps silent speakers still).
    ``accel``: GPU levers (latentsync.accel.Accel: torch.compile, channels-last, cuDNN benchmark, CUDA graphs,
    tiled VAE decode), all off by default.
    """

    version: str = "1.6"
    steps: int = 20
    guidance: float = 1.5
    seed: int = 1247
    face: str = "largest"  # largest | center | leftmost | rightmost | index:N (see latentsync.face.select)
    face_backend: str = "auto"  # auto | solutions | tasks | insightface
    length_mode: str = "audio"  # audio: the audio decides the length; video: the video does
    deepcache: bool = False
    deepcache_interval: int = 3
    window_batch: int = 0
    vae_slice: int = 0
    reference: bool = False
    strict_faces: bool = False  # a frame without a face raises NoFaceError instead of passing through
    pipelined: bool = True
    cache_mb: int = 512  # ping-pong from a file: source frames kept in RAM before re-reading the file
    blend: str = "reference"
    feather_px: float = 12.0
    color_match: str = "off"
    restore_strength: float = 1.0
    min_face_height: float = 80.0
    face_confidence: float = 0.5
    face_region: Any = field(default=None, compare=False)  # box or mask; arrays do not compare, so not compared
    redetect_every: int = 50
    silence: str = "sync"
    silence_db: float = -45.0
    accel: Any = None  # GPU levers, latentsync.accel.Accel (None: all off)

    def __post_init__(self):
        checks = [
            (self.version in VERSIONS, f"version must be one of {VERSIONS}, got {self.version!r}"),
            (_is_int(self.steps) and 1 <= self.steps <= 1000, f"steps must be 1..1000, got {self.steps!r}"),
            (isinstance(self.guidance, (int, float)) and math.isfinite(self.guidance) and 1.0 <= self.guidance <= 20,
             f"guidance (lips expression) must be 1.0..20, got {self.guidance!r}"),
            (_is_int(self.seed), f"seed must be an integer, got {self.seed!r}"),
            (self.length_mode in LENGTH_MODES, f"length_mode must be one of {LENGTH_MODES}, got {self.length_mode!r}"),
            (_is_int(self.window_batch) and self.window_batch >= 0, "window_batch must be >= 0 (0 = automatic)"),
            (_is_int(self.vae_slice) and self.vae_slice >= 0, "vae_slice must be >= 0 (0 = automatic)"),
            (_is_int(self.deepcache_interval) and self.deepcache_interval >= 1, "deepcache_interval must be >= 1"),
            (_is_int(self.cache_mb) and self.cache_mb >= 0, "cache_mb must be >= 0"),
            (self.silence in SILENCE_MODES, f"silence must be one of {SILENCE_MODES}, got {self.silence!r}"),
            (isinstance(self.silence_db, (int, float)) and -120 <= self.silence_db <= 0,
             f"silence_db must be -120..0 dBFS, got {self.silence_db!r}"),
            (isinstance(self.restore_strength, (int, float)) and 0 <= self.restore_strength <= 1,
             f"restore_strength must be 0..1, got {self.restore_strength!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"Invalid setting: {message}.")
        from .face.select import parse_choice  # here, not at import: latentsync.face imports OpenCV

        parse_choice(self.face)  # InputError naming the valid choices
        self.paste_options()  # InputError for an unknown blend / colour match or a negative feather
        self.detection()  # InputError for impossible search controls
        self.gpu_levers()  # InputError for something that is not an Accel

    def paste_options(self):
        """The paste-back options (latentsync.face.blend.PasteOptions)."""
        from .face.blend import PasteOptions

        return PasteOptions(self.blend, self.feather_px, self.color_match)

    def gpu_levers(self):
        """The GPU levers (latentsync.accel.Accel), all off unless given."""
        from .accel import Accel

        if self.accel is None:
            return Accel()
        if not isinstance(self.accel, Accel):
            raise InputError(f"Invalid setting: accel must be a latentsync.accel.Accel, got {type(self.accel).__name__}.")
        return self.accel

    def detection(self):
        """The face search controls (latentsync.face.DetectionSettings)."""
        from .face.detection_settings import DetectionSettings

        return DetectionSettings(self.min_face_height, self.face_confidence, self.face_region, self.redetect_every)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_version(version) -> str:
    version = str(version)
    if version not in VERSIONS:
        raise InputError(f"Unknown LatentSync version {version!r}; choose one of {', '.join(VERSIONS)}.")
    return version
