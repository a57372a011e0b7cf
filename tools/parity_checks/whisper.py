"""Parity check of the audio features (log-mel, Whisper hidden states, per-frame chunks) against a whisper/
fixture folder: speech.wav, the OpenAI-format checkpoint (*.pt), features.safetensors (see the fixture README).
Shapes, dims and indices are read from the files."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from latentsync import audio as A
from latentsync.models.whisper import load_whisper_encoder

FEATURES_MAX = 1e-4
MEL_MAX = 5e-4


def read_wav(path: Path) -> np.ndarray:
    """PCM wav -> 16 kHz mono float32 (int16 / 32768 for a 16 kHz mono PCM16 file, like the reference)."""
    with wave.open(str(path)) as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    data = np.frombuffer(raw, dtype).reshape(-1, channels).T
    return A.to_mono_16k(data, rate)


def _one(folder: Path, pattern: str) -> Path:
    cands = sorted(folder.glob(pattern))
    if len(cands) != 1:
        raise FileNotFoundError(f"expected exactly one {pattern} in {folder}, found {[c.name for c in cands]}")
    return cands[0]


def check(folder) -> dict:
    folder = Path(folder)
    ref = load_file(str(folder / "features.safetensors"))
    audio = read_wav(_one(folder, "*.wav"))

    mel = A.log_mel(audio)
    mel_err = (mel[:, ref["mel_cols"]] - ref["mel"]).abs()

    encoder = load_whisper_encoder(_one(folder, "*.pt"))
    feats = A.audio_features(encoder, audio, mode="reference")
    expected = ref["whole_features"]
    shape_ok = tuple(feats.shape) == tuple(expected.shape)
    err = (feats - expected).abs() if shape_ok else torch.full((1,), float("inf"))

    index = ref["chunk_index"].numpy()
    n_chunks = index.shape[0]
    rows = A.chunk_rows(n_chunks, 25, expected.shape[0])
    index_ok = rows.shape == index.shape and bool((rows == index).all())
    frames = ref["chunk_frames"]
    stored_chunks_ok = torch.equal(A.frame_chunks(expected, n_chunks, 25)[frames], ref["chunks"])
    ours_chunks_err = (A.frame_chunks(feats, n_chunks, 25)[frames] - ref["chunks"]).abs().max().item() \
        if shape_ok else float("inf")
    n_rule = expected.shape[0] // 2 + 2

    ok = (shape_ok and err.max().item() <= FEATURES_MAX and mel_err.max().item() <= MEL_MAX and index_ok
          and stored_chunks_ok and ours_chunks_err <= FEATURES_MAX)
    return {"ok": bool(ok), "max_abs_err": err.max().item(), "mean_abs_err": err.mean().item(),
            "mel_max_abs_err": mel_err.max().item(), "mel_mean_abs_err": mel_err.mean().item(),
            "features_shape": list(feats.shape), "chunk_index_equal": index_ok, "n_chunks": n_chunks,
            "n_chunks_rule_T//2+2": n_rule, "stored_chunks_bitwise": stored_chunks_ok,
            "chunks_max_abs_err": ours_chunks_err}
