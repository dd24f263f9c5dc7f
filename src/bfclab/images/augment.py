"""Standard CIFAR augmentation in torch (PAPER_NOTES §7.3 B): a random crop of the original size
from the image zero-padded by ``pad`` pixels on every side, and a horizontal flip with
probability 1/2.  Works on batches (N, C, *spatial) with one or two spatial axes; the random
draws come from an explicit ``torch.Generator`` (on the CPU), so a seed fixes the result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ConfigError


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Per-image random crop of size ``x.shape[2:]`` from ``x`` zero-padded by ``pad``."""
    if pad == 0:
        return x
    n, dim = x.shape[0], x.dim() - 2
    padded = F.pad(x, [pad] * (2 * dim))
    offsets = torch.randint(0, 2 * pad + 1, (n, dim), generator=gen).to(x.device)
    batch = torch.arange(n, device=x.device)
    if dim == 1:
        cols = offsets[:, 0, None] + torch.arange(x.shape[2], device=x.device)
        return padded[batch[:, None], :, cols].permute(0, 2, 1)
    rows = offsets[:, 0, None] + torch.arange(x.shape[2], device=x.device)
    cols = offsets[:, 1, None] + torch.arange(x.shape[3], device=x.device)
    out = padded[batch[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # N, H, W, C
    return out.permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image along its last axis with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)


def canonical(spec: str, dataset: str) -> str:
    """'auto' -> 'crop+flip' for CIFAR, 'none' otherwise; other accepted names unchanged."""
    if spec == "auto":
        spec = "crop+flip" if dataset.startswith("cifar") else "none"
    if spec not in ("none", "crop", "flip", "crop+flip"):
        raise ConfigError(f"config key 'data.augment': unknown {spec!r}; accepted: auto, none, crop, flip, crop+flip")
    return spec


def resolve(spec: str, dataset: str) -> tuple[bool, bool]:
    """The augmentation setting -> (crop, flip)."""
    spec = canonical(spec, dataset)
    return "crop" in spec, "flip" in spec


def augment(x: torch.Tensor, crop: bool, flip: bool, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Apply the resolved augmentation to a batch."""
    if crop:
        x = random_crop(x, pad, gen)
    if flip:
        x = random_flip(x, gen)
    return x
