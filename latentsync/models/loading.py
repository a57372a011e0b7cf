"""Reading checkpoints and strict, shape-checked loading into modules built on the meta device."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointMismatchError, MissingWeightsError

logger = logging.getLogger(__name__)

_SHOW = 5  # keys listed per category in mismatch messages


def read_checkpoint(path: str | Path) -> Mapping:
    """The raw contents of a checkpoint file, on the CPU: a .safetensors file ({name: tensor}) or a PyTorch
    pickle (.pt/.ckpt/.bin/.pth) read with ``weights_only=True`` (memory-mapped when the format allows it).
    The one error policy for every network: a missing file is MissingWeightsError, an unreadable one a
    CheckpointMismatchError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"checkpoint file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise CheckpointMismatchError(f"{path.name} could not be read as safetensors: {exc}") from exc
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as exc:
        raise CheckpointMismatchError(
            f"{path.name} could not be read as a PyTorch checkpoint (weights_only=True): {exc}") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"{path.name} does not hold a dict of tensors (found {type(obj).__name__})")
    return obj


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: ``{"state_dict": {...}}`` (the official format, other entries such as
    ``global_step`` ignored) or a bare ``{name: tensor}``. Tensors may share storages (views); they are returned
    as stored."""
    obj = read_checkpoint(path)
    if isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointMismatchError(
            f"{Path(path).name} does not hold a state dict (expected {{'state_dict': {{name: tensor}}}} or "
            f"{{name: tensor}}; found {list(obj)[:_SHOW]})")
    return dict(obj)


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def _listing(title: str, items: list[str]) -> str:
    shown = "\n    ".join(items[:_SHOW])
    more = f"\n    ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return f"  {len(items)} {title}:\n    {shown}{more}"


def mismatch_report(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list, list, list]:
    """(missing keys, unexpected keys, [(key, expected shape, got shape)]) of ``state_dict`` vs ``module``."""
    expected = {k: _shape(v) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [(k, expected[k], _shape(state_dict[k])) for k in expected
             if k in state_dict and _shape(state_dict[k]) != expected[k]]
    return missing, unexpected, wrong


def check_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, header: str, footer: str = "",
                     extra_unexpected=(), name=lambda key: key) -> None:
    """Raise CheckpointMismatchError unless ``state_dict`` has exactly ``module``'s keys and shapes. The message
    is ``header``, then counts and the first few missing / unexpected / wrong-shape keys (shown through
    ``name``, e.g. to print the checkpoint's own key names), a key-prefix hint when one fits, then ``footer``.
    ``extra_unexpected``: source keys the caller already knows have no place in the module."""
    missing, unexpected, wrong = mismatch_report(module, state_dict)
    unexpected = list(extra_unexpected) + unexpected
    if not (missing or unexpected or wrong):
        return
    parts = [header]
    if missing:
        parts.append(_listing("missing keys (in the model, not in the checkpoint)", [name(k) for k in missing]))
    if unexpected:
        parts.append(_listing("unexpected keys (in the checkpoint, not in the model)", [name(k) for k in unexpected]))
    if wrong:
        parts.append(_listing("keys with the wrong shape", [f"{name(k)}: expected {e}, got {g}" for k, e, g in wrong]))
    hint = _common_prefix_hint(missing, unexpected)
    parts += [hint] if hint else []
    parts += [footer] if footer else []
    raise CheckpointMismatchError("\n".join(parts))


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str, config_name: str) -> nn.Module:
    """Load ``state_dict`` into ``module`` (typically built on the meta device) after checking that keys and
    shapes match exactly; tensors are assigned, not copied. Raises CheckpointMismatchError naming the
    checkpoint (``what``) and the config (``config_name``) that don't fit, with counts and the first few
    missing / unexpected / wrong-shape keys."""
    check_state_dict(module, state_dict, header=(
        f"{what} does not match config '{config_name}' — is it a checkpoint for another model or "
        f"size (another LatentSync version, a tiny test model without its unet_config.json, or a "
        f"different network altogether)?"))
    module.load_state_dict(dict(state_dict), strict=True, assign=True)
    assert_materialised(module)
    return module


def _common_prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    if not missing or len(unexpected) < len(missing):
        return ""
    for key in unexpected:
        for m in missing[:1]:
            if key.endswith("." + m):
                prefix = key[: -len(m)]
                return f"  hint: the checkpoint's keys carry the prefix '{prefix}'"
    return ""


def assert_materialised(module: nn.Module) -> None:
    """Raise if any parameter or buffer is still on the meta device (i.e. was never loaded)."""
    left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointMismatchError(f"{len(left)} tensors were not loaded and stayed on the meta device: "
                                      + ", ".join(left[:_SHOW]))


def cast_state_dict(state_dict: dict[str, torch.Tensor], device: torch.device | str,
                    dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Move every tensor to ``device`` and floating tensors to ``dtype``, one at a time (in place), so the
    peak memory stays near one copy of the weights."""
    for key in list(state_dict):
        t = state_dict[key]
        state_dict[key] = t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
    return state_dict
