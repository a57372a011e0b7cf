"""AnimateDiff-style motion module ("Vanilla" temporal transformer) of the LatentSync UNet.

Per-frame GroupNorm(32, eps 1e-6) → Linear ``proj_in`` → temporal transformer blocks → Linear ``proj_out``
→ + input. Each block: for every attention in ``attention_block_types`` (LatentSync: two "Temporal_Self"),
LayerNorm → add the sinusoidal position table ``pos_encoder.pe`` (1, max_len, C) → self-attention across the
frames at each pixel → residual; then LayerNorm → GEGLU feed-forward → residual.

The token layout is switched to ``(batch*pixels, frames, C)`` once per module: LayerNorm, the linear layers
and the feed-forward are per token, so this is the same computation as switching around each attention.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from ..errors import InputError

MOTION_MODULE_GROUPS = 32  # the reference's temporal transformer always uses 32 groups, whatever the config


def sinusoid_table(max_len: int, dim: int) -> torch.Tensor:
    """(1, max_len, dim): even channels sin, odd channels cos, frequency exp(-ln(10000) * 2i / dim)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * freq)
    pe[0, :, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return pe


class PositionalEncoding(nn.Module):
    """Holds the checkpoint buffer ``pe`` (persistent, loaded from the checkpoint)."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        if frames > self.pe.shape[1]:
            raise InputError(f"the UNet's motion modules handle at most {self.pe.shape[1]} frames per window, "
                             f"got {frames}")
        return x + self.pe[:, :frames].to(x.dtype)


class TemporalAttention(Attention):
    """Self-attention across frames; input ``(batch*pixels, frames, C)``. Keys: ``to_q, to_k, to_v, to_out.0``
    and ``pos_encoder.pe`` when temporal position encoding is on."""

    def __init__(self, dim: int, heads: int, dim_head: int, *, position_encoding: bool, max_len: int) -> None:
        super().__init__(query_dim=dim, heads=heads, dim_head=dim_head, bias=False, out_bias=True,
                         processor=AttnProcessor2_0())
        self.pos_encoder = PositionalEncoding(dim, max_len) if position_encoding else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        return self.processor(self, x)


class TemporalTransformerBlock(nn.Module):
    """Keys: ``attention_blocks.N``, ``norms.N``, ``ff``, ``ff_norm``."""

    def __init__(self, dim: int, heads: int, dim_head: int, block_types: list[str], *, position_encoding: bool,
                 max_len: int) -> None:
        super().__init__()
        for name in block_types:
            if name != "Temporal_Self":
                raise ValueError(f"motion module attention type {name!r} is not supported (only Temporal_Self)")
        self.attention_blocks = nn.ModuleList(
            TemporalAttention(dim, heads, dim_head, position_encoding=position_encoding, max_len=max_len)
            for _ in block_types)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in block_types)
        self.ff = FeedForward(dim, dropout=0.0, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    def __init__(self, channels: int, heads: int, dim_head: int, num_layers: int, block_types: list[str], *,
                 position_encoding: bool, max_len: int) -> None:
        super().__init__()
        inner = heads * dim_head
        if inner != channels:
            raise ValueError(f"motion module inner width {inner} must equal its channels {channels}")
        self.norm = nn.GroupNorm(MOTION_MODULE_GROUPS, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(inner, heads, dim_head, block_types, position_encoding=position_encoding,
                                     max_len=max_len)
            for _ in range(num_layers))
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        bf, c, h, w = x.shape
        b = bf // frames
        y = self.norm(x)  # per frame
        # (b f) c h w -> (b h w) f c
        y = y.view(b, frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, frames, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y)
        y = self.proj_out(y)
        # (b h w) f c -> (b f) c h w
        y = y.view(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return y + x


class VanillaTemporalModule(nn.Module):
    """Key prefix ``temporal_transformer``; kwargs are the config's ``motion_module_kwargs``."""

    def __init__(self, in_channels: int, num_attention_heads: int = 8, num_transformer_block: int = 2,
                 attention_block_types: tuple[str, ...] | list[str] = ("Temporal_Self", "Temporal_Self"),
                 cross_frame_attention_mode: str | None = None, temporal_position_encoding: bool = False,
                 temporal_position_encoding_max_len: int = 24, temporal_attention_dim_div: int = 1,
                 zero_initialize: bool = True) -> None:
        super().__init__()
        if cross_frame_attention_mode is not None:
            raise ValueError("cross_frame_attention_mode is not supported")
        dim_head = in_channels // num_attention_heads // temporal_attention_dim_div
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels, num_attention_heads, dim_head, num_transformer_block, list(attention_block_types),
            position_encoding=temporal_position_encoding, max_len=temporal_position_encoding_max_len)
        # zero_initialize only affects training-time init; weights always come from the checkpoint.

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, frames)


def make_motion_module(channels: int, kind: str | None, kwargs: dict) -> VanillaTemporalModule:
    if kind != "Vanilla":
        raise ValueError(f"motion_module_type {kind!r} is not supported (only 'Vanilla')")
    return VanillaTemporalModule(channels, **kwargs)
