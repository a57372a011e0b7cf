"""Tiny face-restoration models in Real-ESRGAN's "compact" format (SRVGGNetCompact, as realesr-general-x4v3.pth:
``{"params": state_dict}``), which spandrel — and so ComfyUI's "Load Upscale Model" node — recognises.

    python tools/make_tiny_restorer.py DIR
writes DIR/tiny_restorer_1x.pth and DIR/tiny_restorer_4x.pth (random weights, for tests and for trying the
restoration path without a real model) and DIR/sharpen_1x.pth (a hand-set, deterministic unsharp mask: the
stand-in restorer of the README pictures), and prints the paths. Drop any of them into ComfyUI's
models/upscale_models/.

Functions (reused by tests and bench): ``compact_state_dict``, ``write_compact``, ``write_sharpener``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def compact_state_dict(scale: int = 1, channels: int = 3, num_feat: int = 8, num_conv: int = 2,
                       seed: int = 0, std: float = 0.05) -> dict[str, torch.Tensor]:
    """Random SRVGGNetCompact weights in the official key layout: body.0 = first conv, body.1 = its PReLU,
    body.2k / body.2k+1 = the num_conv convs and PReLUs, the last body entry = conv to channels · scale²."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator) * std

    state: dict[str, torch.Tensor] = {"body.0.weight": normal(num_feat, channels, 3, 3),
                                      "body.0.bias": normal(num_feat), "body.1.weight": torch.full((num_feat,), 0.25)}
    for k in range(num_conv):
        state[f"body.{2 + 2 * k}.weight"] = normal(num_feat, num_feat, 3, 3)
        state[f"body.{2 + 2 * k}.bias"] = normal(num_feat)
        state[f"body.{3 + 2 * k}.weight"] = torch.full((num_feat,), 0.25)
    last = 2 + 2 * num_conv
    state[f"body.{last}.weight"] = normal(channels * scale * scale, num_feat, 3, 3)
    state[f"body.{last}.bias"] = normal(channels * scale * scale)
    return state


def write_compact(path, state: dict[str, torch.Tensor]) -> Path:
    """Save ``state`` as Real-ESRGAN's release files do: ``torch.save({"params": state}, path)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": state}, path)
    return path


def sharpener_state_dict(amount: float = 1.0) -> dict[str, torch.Tensor]:
    """A linear 1x compact net (PReLU slopes 1) computing amount · (x − B(B(x))), B = 3×3 binomial blur; the
    architecture adds x back, so the model is an unsharp mask with a 5×5 blur."""
    blur = torch.tensor([1.0, 2.0, 1.0])
    blur = (blur[:, None] * blur[None, :]) / 16
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1
    first = torch.zeros(6, 3, 3, 3)
    second = torch.zeros(6, 6, 3, 3)
    last = torch.zeros(3, 6, 3, 3)
    for c in range(3):
        first[c, c], first[3 + c, c] = delta, blur  # features: x, B(x)
        second[c, c], second[3 + c, 3 + c] = delta, blur  # features: x, B(B(x))
        last[c, c], last[c, 3 + c] = amount * delta, -amount * delta
    ones = torch.ones(6)
    return {"body.0.weight": first, "body.0.bias": torch.zeros(6), "body.1.weight": ones.clone(),
            "body.2.weight": second, "body.2.bias": torch.zeros(6), "body.3.weight": ones.clone(),
            "body.4.weight": last, "body.4.bias": torch.zeros(3)}


def write_sharpener(path, amount: float = 1.0) -> Path:
    return write_compact(path, sharpener_state_dict(amount))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    paths = [write_compact(args.out_dir / "tiny_restorer_1x.pth", compact_state_dict(scale=1, seed=1)),
             write_compact(args.out_dir / "tiny_restorer_4x.pth", compact_state_dict(scale=4, seed=4)),
             write_sharpener(args.out_dir / "sharpen_1x.pth", amount=1.0)]
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
