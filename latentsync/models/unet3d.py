"""The LatentSync UNet3DConditionModel (official checkpoint key layout), with an optional DeepCache pass.

``forward(sample (B, 13, F, h, w), timestep (0-d or (B,)), encoder_hidden_states (B*F, 50, 384))`` returns the
predicted noise ``(B, 4, F, h, w)``. Audio rows are batch-major (row ``b*F + f``), as in the reference.

DeepCache (as the reference's ``DeepCacheSDHelper(cache_interval=3, cache_branch_id=0)``): on a full step the
whole UNet runs and the feature map entering the last layer of the last up block is kept; on the other steps
only ``conv_in``, that last layer (resnet with the fresh ``conv_in`` skip, spatial transformer, motion module)
and the output head run, on the kept feature map. Usage::

    cache = DeepCacheState(interval=3)          # one per denoising loop (16-frame window), or cache.reset()
    for i, t in enumerate(scheduler.timesteps):
        noise = unet(x, t, audio, cache=cache, step_index=i)   # full when i % 3 == 0

A full pass is forced whenever nothing is cached yet or the batch/latent shape changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from ..errors import InputError
from .resnet3d import video_group_norm
from .unet_blocks import BlockSpec, DownBlock3D, UNetMidBlock3DCrossAttn, UpBlock3D

logger = logging.getLogger(__name__)

# Config keys of the reference model block we accept; values other than these defaults are not supported.
_FIXED = {"center_input_sample": False, "class_embed_type": None, "num_class_embeds": None,
          "dual_cross_attention": False, "use_linear_projection": False, "only_cross_attention": False,
          "resnet_time_scale_shift": "default", "act_fn": "silu", "downsample_padding": 1,
          "mid_block_type": "UNetMidBlock3DCrossAttn"}
_KNOWN = set(_FIXED) | {
    "sample_size", "in_channels", "out_channels", "flip_sin_to_cos", "freq_shift", "down_block_types",
    "up_block_types", "block_out_channels", "layers_per_block", "mid_block_scale_factor", "norm_num_groups",
    "norm_eps", "cross_attention_dim", "attention_head_dim", "upcast_attention", "use_inflated_groupnorm",
    "use_motion_module", "motion_module_resolutions", "motion_module_mid_block", "motion_module_decoder_only",
    "motion_module_type", "motion_module_kwargs", "add_audio_layer"}
_META = {"version", "resolution", "name"}


@dataclass
class DeepCacheState:
    """Caller-owned DeepCache state for one denoising loop. ``interval`` 3 = the reference's setting;
    interval 1 = always full (identical to no cache)."""

    interval: int = 3
    features: torch.Tensor | None = None
    calls: int = 0
    last_was_full: bool = False

    def reset(self) -> None:
        self.features, self.calls, self.last_was_full = None, 0, False

    def wants_full(self, step_index: int, shape: tuple[int, ...]) -> bool:
        if self.features is None or tuple(self.features.shape[:1] + self.features.shape[2:]) != shape:
            return True
        return step_index % max(1, self.interval) == 0


class UNet3DConditionModel(nn.Module):
    """Built from the reference's ``model`` config block (see ``configs/unet/latentsync-1.6.json``)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        cfg = {k: v for k, v in config.items() if k not in _META and not k.startswith("_")}
        unknown = sorted(set(cfg) - _KNOWN)
        if unknown:
            logger.warning("ignoring unknown UNet config keys: %s", ", ".join(unknown))
        for key, default in _FIXED.items():
            if key in cfg and cfg[key] != default:
                raise ValueError(f"UNet config {key}={cfg[key]!r} is not supported (LatentSync uses {default!r})")
        self.config = dict(config)
        widths = list(cfg.get("block_out_channels", (320, 640, 1280, 1280)))
        n = len(widths)
        heads = cfg.get("attention_head_dim", 8)
        heads = [heads] * n if isinstance(heads, int) else list(heads)
        layers = cfg.get("layers_per_block", 2)
        temb_dim = widths[0] * 4
        use_mm = cfg.get("use_motion_module", False)
        mm_res = list(cfg.get("motion_module_resolutions", (1, 2, 4, 8)))
        decoder_only = cfg.get("motion_module_decoder_only", False)
        spec = BlockSpec(temb_channels=temb_dim, eps=float(cfg.get("norm_eps", 1e-5)),
                         groups=cfg.get("norm_num_groups", 32),
                         cross_attention_dim=cfg.get("cross_attention_dim", 1280),
                         add_audio_layer=cfg.get("add_audio_layer", False),
                         pooled_norm=not cfg.get("use_inflated_groupnorm", False),
                         motion_module_type=cfg.get("motion_module_type"),
                         motion_module_kwargs=dict(cfg.get("motion_module_kwargs") or {}))
        down_types = list(cfg.get("down_block_types"))
        up_types = list(cfg.get("up_block_types"))
        if len(down_types) != n or len(up_types) != n:
            raise ValueError("down_block_types / up_block_types must have one entry per block_out_channels")

        self.conv_in = nn.Conv2d(cfg.get("in_channels", 4), widths[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(widths[0], cfg.get("flip_sin_to_cos", True), cfg.get("freq_shift", 0))
        self.time_embedding = TimestepEmbedding(widths[0], temb_dim)

        self.down_blocks = nn.ModuleList()
        cout = widths[0]
        for i, kind in enumerate(down_types):
            cin, cout = cout, widths[i]
            self.down_blocks.append(DownBlock3D(
                spec, cin, cout, layers, heads=heads[i], with_attention=_block_kind(kind, "Down"),
                motion=use_mm and (2 ** i in mm_res) and not decoder_only, downsample=i < n - 1,
                downsample_padding=cfg.get("downsample_padding", 1)))

        self.up_blocks = nn.ModuleList()
        rev, rev_heads = widths[::-1], heads[::-1]
        cout = rev[0]
        for i, kind in enumerate(up_types):
            prev, cout, cin = cout, rev[i], rev[min(i + 1, n - 1)]
            self.up_blocks.append(UpBlock3D(
                spec, cin, cout, prev, layers + 1, heads=rev_heads[i], with_attention=_block_kind(kind, "Up"),
                motion=use_mm and (2 ** (n - 1 - i) in mm_res), upsample=i < n - 1))

        mid_spec = replace(spec, output_scale_factor=float(cfg.get("mid_block_scale_factor", 1)))
        self.mid_block = UNetMidBlock3DCrossAttn(mid_spec, widths[-1], heads=heads[-1],
                                                 motion=use_mm and cfg.get("motion_module_mid_block", False))
        self.conv_norm_out = nn.GroupNorm(spec.groups, widths[0], eps=spec.eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(widths[0], cfg.get("out_channels", 4), kernel_size=3, padding=1)
        self._pooled_out_norm = spec.pooled_norm

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def _time_embedding(self, timestep, batch: int, device: torch.device) -> torch.Tensor:
        t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep)
        t = t.to(device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        elif t.numel() != batch:
            raise InputError(f"timestep has {t.numel()} values for a batch of {batch}")
        emb = self.time_proj(t).to(self.dtype)  # sinusoids are float32; the MLP runs in the model dtype
        return self.time_embedding(emb)

    def _head(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        x = video_group_norm(x, self.conv_norm_out, frames) if self._pooled_out_norm else self.conv_norm_out(x)
        return self.conv_out(self.conv_act(x))

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor | None = None, *,
                cache: DeepCacheState | None = None, step_index: int | None = None) -> torch.Tensor:
        if sample.dim() != 5:
            raise InputError(f"UNet sample must be (batch, channels, frames, height, width), got {tuple(sample.shape)}")
        b, c, frames, h, w = sample.shape
        dtype = self.dtype
        x = sample.to(dtype).permute(0, 2, 1, 3, 4).reshape(b * frames, c, h, w)
        context = encoder_hidden_states
        if context is not None:
            if context.dim() == 4:  # (B, F, tokens, D)
                context = context.flatten(0, 1)
            if context.shape[0] != b * frames:
                raise InputError(f"encoder_hidden_states has {context.shape[0]} rows, expected batch*frames = "
                                 f"{b * frames}")
            context = context.to(dtype)
        temb = self._time_embedding(timestep, b, sample.device)
        x = self.conv_in(x)

        full = True
        if cache is not None:
            step = cache.calls if step_index is None else step_index
            cache.calls += 1
            full = cache.wants_full(step, (b * frames, h, w))
            cache.last_was_full = full
        last = self.up_blocks[-1]
        if full:
            skips = [x]
            for block in self.down_blocks:
                x, block_skips = block(x, temb, context, frames)
                skips.extend(block_skips)
            x = self.mid_block(x, temb, context, frames)
            for block in self.up_blocks[:-1]:
                n_res = len(block.resnets)
                block_skips, skips = skips[-n_res:], skips[:-n_res]
                x = block(x, block_skips, temb, context, frames, upsample_size=tuple(skips[-1].shape[-2:]))
            n_layers = len(last.resnets)
            x = last.run_layers(x, skips, temb, context, frames, range(n_layers - 1))
            if cache is not None:
                cache.features = x.detach()
            x = last.run_layers(x, skips, temb, context, frames, range(n_layers - 1, n_layers))
        else:
            # cheap pass: the last layer of the last up block consumes the fresh conv_in output as its skip
            n_layers = len(last.resnets)
            skips = [x] + [None] * (n_layers - 1)  # layer n-1 reads skips[-n_layers]
            x = last.run_layers(cache.features, skips, temb, context, frames, range(n_layers - 1, n_layers))
        out = self._head(x, frames)
        return out.reshape(b, frames, -1, h, w).permute(0, 2, 1, 3, 4).contiguous()


def _block_kind(kind: str, where: str) -> bool:
    """True for a cross-attention block type, False for a plain one."""
    kind = kind[7:] if kind.startswith("UNetRes") else kind
    if kind == f"CrossAttn{where}Block3D":
        return True
    if kind == f"{where}Block3D":
        return False
    raise ValueError(f"unknown {where.lower()} block type {kind!r}")
