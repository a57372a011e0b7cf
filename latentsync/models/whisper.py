"""Whisper audio encoder used by LatentSync: the hidden states after the positional embedding and after every
encoder block (the final layer norm is NOT applied), as the reference's Audio2Feature does.

Two checkpoint formats load into transformers' ``WhisperEncoder``:
- OpenAI's ``whisper/tiny.pt``: ``{"dims": {...}, "model_state_dict": {...}}`` (encoder.* keys, OpenAI names;
  the decoder keys are accepted and ignored);
- a Hugging Face folder (``openai/whisper-tiny``): ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``.
The encoder keys must match exactly; otherwise :class:`CheckpointMismatchError` lists what is wrong.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from ..errors import CheckpointMismatchError, MissingWeightsError
from .loading import check_state_dict, read_checkpoint, read_state_dict

log = logging.getLogger(__name__)

# OpenAI encoder key (after "encoder.") -> transformers WhisperEncoder key
_BLOCK_MAP = {
    "attn.query": "self_attn.q_proj",
    "attn.key": "self_attn.k_proj",
    "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj",
    "attn_ln": "self_attn_layer_norm",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
}
_TOP_MAP = {"positional_embedding": "embed_positions.weight", "ln_post.weight": "layer_norm.weight",
            "ln_post.bias": "layer_norm.bias"}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$")


def openai_to_hf_key(key: str) -> str | None:
    """Map one OpenAI ``encoder.*`` key (without the ``encoder.`` prefix) to the transformers name.
    Returns None for a name that has no counterpart (reported as unexpected)."""
    if key in _TOP_MAP:
        return _TOP_MAP[key]
    if key.startswith(("conv1.", "conv2.")):
        return key
    m = _BLOCK_RE.match(key)
    if m and m.group(2) in _BLOCK_MAP:
        return f"layers.{m.group(1)}.{_BLOCK_MAP[m.group(2)]}.{m.group(3)}"
    return None


def hf_to_openai_key(key: str) -> str:
    """Inverse of :func:`openai_to_hf_key` (for messages and for writing OpenAI files)."""
    for o, h in _TOP_MAP.items():
        if key == h:
            return o
    m = re.match(r"^layers\.(\d+)\.(.+)\.(weight|bias)$", key)
    if m:
        for o, h in _BLOCK_MAP.items():
            if m.group(2) == h:
                return f"blocks.{m.group(1)}.{o}.{m.group(3)}"
    return key


def whisper_config_from_dims(dims: dict):
    """A transformers ``WhisperConfig`` equivalent to OpenAI ``ModelDimensions``."""
    from transformers import WhisperConfig

    vocab = int(dims["n_vocab"])
    # small test vocabularies cannot hold Whisper's special token ids (unused by the encoder anyway)
    tokens = {} if vocab > 50257 else {k: vocab - 1 for k in ("pad_token_id", "bos_token_id", "eos_token_id",
                                                              "decoder_start_token_id")}
    return WhisperConfig(
        vocab_size=vocab, **tokens, num_mel_bins=int(dims["n_mels"]),
        d_model=int(dims["n_audio_state"]), encoder_layers=int(dims["n_audio_layer"]),
        encoder_attention_heads=int(dims["n_audio_head"]), encoder_ffn_dim=4 * int(dims["n_audio_state"]),
        max_source_positions=int(dims["n_audio_ctx"]), decoder_layers=int(dims["n_text_layer"]),
        decoder_attention_heads=int(dims["n_text_head"]), decoder_ffn_dim=4 * int(dims["n_text_state"]),
        max_target_positions=int(dims["n_text_ctx"]), activation_function="gelu", dropout=0.0,
    )


class WhisperFeatureEncoder:
    """Wraps a transformers ``WhisperEncoder``; :meth:`hidden_states` gives the LatentSync features."""

    def __init__(self, encoder, source: str = ""):
        self.encoder = encoder.eval().requires_grad_(False)
        self.source = source

    @property
    def dim(self) -> int:
        return int(self.encoder.config.d_model)

    @property
    def n_layers(self) -> int:
        return len(self.encoder.layers)

    @property
    def n_mels(self) -> int:
        return int(self.encoder.config.num_mel_bins)

    @property
    def n_ctx(self) -> int:
        """Encoder positions per window (1500); a window has 2 * n_ctx mel frames."""
        return int(self.encoder.config.max_source_positions)

    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    def to(self, device=None, dtype=None) -> "WhisperFeatureEncoder":
        self.encoder.to(device=device, dtype=dtype)
        return self

    def hidden_states(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, n_mels, 2*n_ctx) -> (B, n_ctx, n_layers + 1, C): after the positional embedding and after
        each block, without the final layer norm. Runs in the encoder's device/dtype."""
        enc = self.encoder
        if mel.ndim != 3 or mel.shape[1] != self.n_mels or mel.shape[2] != 2 * self.n_ctx:
            raise ValueError(f"expected mel of shape (B, {self.n_mels}, {2 * self.n_ctx}), got {tuple(mel.shape)}")
        with torch.inference_mode():
            x = mel.to(device=self.device, dtype=self.dtype)
            x = torch.nn.functional.gelu(enc.conv1(x))
            x = torch.nn.functional.gelu(enc.conv2(x))
            x = x.permute(0, 2, 1) + enc.embed_positions.weight
            states = [x]
            for layer in enc.layers:
                x = layer(x, None)
                states.append(x)
            return torch.stack(states, dim=2)


def _build_encoder(config):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        return WhisperEncoder(config)


def _load_strict(encoder, state: dict, *, what: str, name=lambda k: k) -> None:
    check_state_dict(encoder, state, name=name, header=(
        f"The Whisper checkpoint {what} does not fit a Whisper encoder built from its own dimensions "
        f"(n_audio_state={encoder.config.d_model}, layers={encoder.config.encoder_layers}, "
        f"heads={encoder.config.encoder_attention_heads})."), footer=(
        "Use the official whisper/tiny.pt from ByteDance/LatentSync-1.6 (or an openai/whisper-tiny folder)."))
    encoder.load_state_dict(state, strict=True, assign=True)


def _load_openai(path: Path):
    ckpt = read_checkpoint(path)
    if "dims" not in ckpt or "model_state_dict" not in ckpt:
        keys = list(ckpt)[:5]
        raise CheckpointMismatchError(
            f"{path} is not an OpenAI Whisper checkpoint: expected a dict with 'dims' and 'model_state_dict', "
            f"found {keys}.")
    dims = dict(ckpt["dims"])
    try:
        config = whisper_config_from_dims(dims)
    except KeyError as exc:
        raise CheckpointMismatchError(f"{path}: 'dims' lacks {exc}") from exc
    state = {}
    for key, value in ckpt["model_state_dict"].items():
        if not key.startswith("encoder."):
            continue  # decoder weights: not used for features
        name = key[len("encoder."):]
        state[openai_to_hf_key(name) or f"<openai>{name}"] = value.to(torch.float32)
    encoder = _build_encoder(config)
    _load_strict(encoder, state, what=str(path),
                 name=lambda k: "encoder." + (k[8:] if k.startswith("<openai>") else hf_to_openai_key(k)))
    return encoder


def _load_hf_folder(folder: Path):
    from transformers import WhisperConfig

    config = WhisperConfig.from_pretrained(str(folder))
    config.dropout = 0.0
    weights = [folder / name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).is_file()]
    if weights:
        raw = read_state_dict(weights[0])
    else:
        raise MissingWeightsError(f"The Whisper folder {folder} has config.json but neither model.safetensors "
                                  "nor pytorch_model.bin.")
    state = {}
    for key, value in raw.items():
        for prefix in ("model.encoder.", "encoder."):
            if key.startswith(prefix):
                state[key[len(prefix):]] = value.to(torch.float32)
                break
    encoder = _build_encoder(config)
    _load_strict(encoder, state, what=str(folder))
    return encoder


def load_whisper_encoder(path, device="cpu", dtype=torch.float32) -> WhisperFeatureEncoder:
    """Load an OpenAI ``.pt`` Whisper checkpoint or a Hugging Face Whisper folder (encoder only)."""
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            encoder = _load_hf_folder(path)
        elif (path / "tiny.pt").is_file():
            encoder = _load_openai(path / "tiny.pt")
        else:
            raise MissingWeightsError(f"{path} holds neither an OpenAI Whisper tiny.pt nor a Hugging Face "
                                      "Whisper folder (config.json + model.safetensors).")
    elif path.is_file():
        encoder = _load_openai(path)
    else:
        raise MissingWeightsError(f"Whisper checkpoint not found: {path}")
    log.debug("loaded Whisper encoder from %s (C=%d, %d layers)", path, encoder.config.d_model,
              encoder.config.encoder_layers)
    return WhisperFeatureEncoder(encoder, source=str(path)).to(device, dtype)


def encoder_state_to_openai(encoder) -> dict:
    """The encoder's weights under OpenAI key names (``encoder.*``), e.g. to write a ``tiny.pt``."""
    return {"encoder." + hf_to_openai_key(k): v.detach().clone() for k, v in encoder.state_dict().items()}


def dims_from_config(config) -> dict:
    return {"n_mels": config.num_mel_bins, "n_audio_ctx": config.max_source_positions,
            "n_audio_state": config.d_model, "n_audio_head": config.encoder_attention_heads,
            "n_audio_layer": config.encoder_layers, "n_vocab": config.vocab_size,
            "n_text_ctx": config.max_target_positions, "n_text_state": config.d_model,
            "n_text_head": config.decoder_attention_heads, "n_text_layer": config.decoder_layers}


__all__ = ["WhisperFeatureEncoder", "load_whisper_encoder", "openai_to_hf_key", "hf_to_openai_key",
           "whisper_config_from_dims", "encoder_state_to_openai", "dims_from_config"]
