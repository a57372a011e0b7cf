"""Down, mid and up blocks of the LatentSync UNet (SD-1.5 layout inflated to video).

Each layer of a block is ``resnet → [spatial transformer] → [motion module]``; attribute names
(``resnets``, ``attentions``, ``motion_modules``, ``downsamplers``, ``upsamplers``) and registration order are
the reference's, so ``state_dict()`` keys match the official checkpoint. All tensors are frame-folded
``(batch*frames, C, H, W)``; ``frames`` travels alongside.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .motion_module import make_motion_module
from .resnet3d import Downsample3D, ResnetBlock3D, Upsample3D
from .transformer3d import Transformer3DModel


@dataclass(frozen=True)
class BlockSpec:
    """Everything a block needs from the UNet config."""

    temb_channels: int
    eps: float
    groups: int
    cross_attention_dim: int
    add_audio_layer: bool
    pooled_norm: bool = True
    output_scale_factor: float = 1.0
    motion_module_type: str | None = None
    motion_module_kwargs: dict = field(default_factory=dict)

    def resnet(self, cin: int, cout: int) -> ResnetBlock3D:
        return ResnetBlock3D(cin, cout, self.temb_channels, groups=self.groups, eps=self.eps,
                             output_scale_factor=self.output_scale_factor, pooled_norm=self.pooled_norm)

    def transformer(self, channels: int, heads: int) -> Transformer3DModel:
        return Transformer3DModel(channels, heads, cross_attention_dim=self.cross_attention_dim, groups=self.groups,
                                  add_audio_layer=self.add_audio_layer)

    def motion(self, channels: int):
        return make_motion_module(channels, self.motion_module_type, self.motion_module_kwargs)


class _Layers(nn.Module):
    """Shared layer runner: resnet → optional transformer → optional motion module."""

    has_attention = False

    def _layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None,
               frames: int) -> torch.Tensor:
        x = self.resnets[i](x, temb, frames)
        if self.has_attention:
            x = self.attentions[i](x, context)
        if self.motion_modules is not None:
            x = self.motion_modules[i](x, frames)
        return x


class DownBlock3D(_Layers):
    """``CrossAttnDownBlock3D`` (with_attention=True) or ``DownBlock3D``; returns (x, skip tensors)."""

    def __init__(self, spec: BlockSpec, cin: int, cout: int, num_layers: int, *, heads: int, with_attention: bool,
                 motion: bool, downsample: bool, downsample_padding: int = 1) -> None:
        super().__init__()
        self.has_attention = with_attention
        if with_attention:
            self.attentions = nn.ModuleList(spec.transformer(cout, heads) for _ in range(num_layers))
        self.resnets = nn.ModuleList(spec.resnet(cin if i == 0 else cout, cout) for i in range(num_layers))
        self.motion_modules = nn.ModuleList(spec.motion(cout) for _ in range(num_layers)) if motion else None
        self.downsamplers = nn.ModuleList([Downsample3D(cout, downsample_padding)]) if downsample else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None,
                frames: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i in range(len(self.resnets)):
            x = self._layer(i, x, temb, context, frames)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UNetMidBlock3DCrossAttn(_Layers):
    """resnet, then (transformer [→ motion module] → resnet) x num_layers."""

    has_attention = True

    def __init__(self, spec: BlockSpec, channels: int, *, heads: int, motion: bool, num_layers: int = 1) -> None:
        super().__init__()
        self.attentions = nn.ModuleList(spec.transformer(channels, heads) for _ in range(num_layers))
        self.resnets = nn.ModuleList(spec.resnet(channels, channels) for _ in range(num_layers + 1))
        self.motion_modules = nn.ModuleList(spec.motion(channels) for _ in range(num_layers)) if motion else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None,
                frames: int) -> torch.Tensor:
        x = self.resnets[0](x, temb, frames)
        for i, attention in enumerate(self.attentions):
            x = attention(x, context)
            if self.motion_modules is not None:
                x = self.motion_modules[i](x, frames)
            x = self.resnets[i + 1](x, temb, frames)
        return x


class UpBlock3D(_Layers):
    """``CrossAttnUpBlock3D`` (with_attention=True) or ``UpBlock3D``.

    Every layer concatenates (current, skip) on channels first; skips are consumed from the end.
    """

    def __init__(self, spec: BlockSpec, cin: int, cout: int, prev_cout: int, num_layers: int, *, heads: int,
                 with_attention: bool, motion: bool, upsample: bool) -> None:
        super().__init__()
        self.has_attention = with_attention
        if with_attention:
            self.attentions = nn.ModuleList(spec.transformer(cout, heads) for _ in range(num_layers))
        self.resnets = nn.ModuleList(
            spec.resnet((prev_cout if i == 0 else cout) + (cin if i == num_layers - 1 else cout), cout)
            for i in range(num_layers))
        self.motion_modules = nn.ModuleList(spec.motion(cout) for _ in range(num_layers)) if motion else None
        self.upsamplers = nn.ModuleList([Upsample3D(cout)]) if upsample else None

    def run_layers(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor,
                   context: torch.Tensor | None, frames: int, layers: range) -> torch.Tensor:
        """Run the given layers; ``skips`` holds this block's skip tensors in down-path order
        (layer i uses ``skips[-1 - i]``)."""
        for i in layers:
            x = torch.cat([x, skips[-1 - i]], dim=1)
            x = self._layer(i, x, temb, context, frames)
        return x

    def upsample(self, x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        return x if self.upsamplers is None else self.upsamplers[0](x, size)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor,
                context: torch.Tensor | None, frames: int, upsample_size: tuple[int, int] | None = None
                ) -> torch.Tensor:
        x = self.run_layers(x, skips, temb, context, frames, range(len(self.resnets)))
        return self.upsample(x, upsample_size)
