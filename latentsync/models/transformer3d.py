"""Spatial transformer of the LatentSync UNet: per-frame self-attention over the h*w tokens of a frame,
cross-attention to that frame's audio tokens, GEGLU feed-forward.

Built from diffusers' ``Attention`` (keys ``to_q/to_k/to_v/to_out.0``, SDPA processor) and ``FeedForward``
(GEGLU, keys ``net.0.proj`` / ``net.2``), so the checkpoint key names are the official ones.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn


def make_attention(dim: int, heads: int, cross_dim: int | None = None) -> Attention:
    """Attention with ``heads`` heads of size ``dim // heads``, no q/k/v bias, biased output projection."""
    if dim % heads:
        raise ValueError(f"{dim} channels cannot be split into {heads} attention heads")
    return Attention(query_dim=dim, cross_attention_dim=cross_dim, heads=heads, dim_head=dim // heads,
                     bias=False, out_bias=True, processor=AttnProcessor2_0())


def run_attention(attn: Attention, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """Call the attention processor directly (skips diffusers' per-call signature inspection)."""
    return attn.processor(attn, x, encoder_hidden_states=context)


class BasicTransformerBlock(nn.Module):
    """LayerNorm → self-attn → (LayerNorm → audio cross-attn) → LayerNorm → GEGLU FF, residual around each.

    Keys: ``norm1, attn1, norm2, attn2, ff, norm3`` (``norm2``/``attn2`` only with an audio layer).
    """

    def __init__(self, dim: int, heads: int, cross_attention_dim: int, add_audio_layer: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = make_attention(dim, heads)
        if add_audio_layer:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = make_attention(dim, heads, cross_attention_dim)
        else:
            self.norm2 = None
            self.attn2 = None
        self.ff = FeedForward(dim, dropout=0.0, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = run_attention(self.attn1, self.norm1(x)) + x
        if self.attn2 is not None and context is not None:
            x = run_attention(self.attn2, self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer3DModel(nn.Module):
    """Per-frame GroupNorm (eps 1e-6) → 1x1 conv ``proj_in`` → transformer blocks → 1x1 conv ``proj_out``
    → + input. Input/output ``(batch*frames, C, H, W)``; ``context`` is ``(batch*frames, tokens, D)``."""

    def __init__(self, channels: int, heads: int, *, cross_attention_dim: int, groups: int,
                 add_audio_layer: bool, num_layers: int = 1) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, cross_attention_dim, add_audio_layer) for _ in range(num_layers))
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        bf, c, h, w = x.shape
        residual = x
        y = self.proj_in(self.norm(x))
        y = y.permute(0, 2, 3, 1).reshape(bf, h * w, c)
        for block in self.transformer_blocks:
            y = block(y, context)
        y = y.reshape(bf, h, w, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(y) + residual
