"""Residual and resampling layers of the LatentSync UNet, working on frame-folded video tensors.

Layout convention inside the UNet: activations are 4-D ``(batch*frames, channels, height, width)`` with the
frame index running fastest inside each sample (row ``b*frames + f``), so 2-D convolutions and per-frame
norms apply directly. Only the resnet GroupNorms (and the UNet's final norm) pool their statistics over all
frames of a sample, as the reference does on its 5-D tensors: :func:`video_group_norm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def video_group_norm(x: torch.Tensor, norm: nn.GroupNorm, frames: int) -> torch.Tensor:
    """GroupNorm whose statistics cover every frame of a sample (the reference's GroupNorm on b c f h w).

    ``x`` is ``(batch*frames, C, H, W)``; returns the same layout.
    """
    bf, c, h, w = x.shape
    b = bf // frames
    y = x.view(b, frames, c, h * w).transpose(1, 2).reshape(b, c, frames * h * w)
    y = F.group_norm(y, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return y.view(b, c, frames, h * w).transpose(1, 2).reshape(bf, c, h, w)


class ResnetBlock3D(nn.Module):
    """GroupNorm(all frames) → SiLU → conv3x3 → + time projection → GroupNorm(all frames) → SiLU → conv3x3,
    plus a 1x1 shortcut when the channel count changes; output = (shortcut + h) / output_scale_factor.

    Checkpoint keys: ``norm1, conv1, time_emb_proj, norm2, conv2[, conv_shortcut]``.
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, *, groups: int, eps: float,
                 output_scale_factor: float = 1.0, pooled_norm: bool = True) -> None:
        super().__init__()
        self.pooled_norm = pooled_norm
        self.output_scale_factor = output_scale_factor
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.conv_shortcut = (nn.Conv2d(in_channels, out_channels, kernel_size=1)
                              if in_channels != out_channels else None)

    def _norm(self, x: torch.Tensor, norm: nn.GroupNorm, frames: int) -> torch.Tensor:
        return video_group_norm(x, norm, frames) if self.pooled_norm else norm(x)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, frames: int) -> torch.Tensor:
        h = self.conv1(F.silu(self._norm(x, self.norm1, frames)))
        if temb is not None:
            t = self.time_emb_proj(F.silu(temb))  # (B, C)
            h = h + t.repeat_interleave(frames, dim=0)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self._norm(h, self.norm2, frames))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = x + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample3D(nn.Module):
    """3x3 convolution with stride 2 on every frame (key ``conv``)."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        if padding != 1:
            raise ValueError(f"downsample_padding={padding} is not supported (LatentSync uses 1)")
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest-neighbour resize of every frame to ``size`` (normally 2x; the skip connection's exact size
    when the latent is not a multiple of 8), then a 3x3 convolution (key ``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            size = (x.shape[-2] * 2, x.shape[-1] * 2)
        if x.shape[0] >= 64:  # large-batch nearest kernels prefer contiguous input
            x = x.contiguous()
        x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(x)
