"""A ResNet in plain PyTorch, 1-D or 2-D, whose residual blocks are the growth stages
(PAPER_NOTES §7.3 B "Architecture"; the paper's WRN family, §7.1, at CPU scale).

    x -> stem (conv k_s, BN, ReLU) -> block 1 -> block 2 -> ... -> block B
                                         |          |                 |
                                       head 1     head 2    ...     head B

Stage b = block b; the stem belongs to stage 1 (:meth:`ResNet.as_blocks` joins it to block 1).  A block is the
post-activation basic block relu(BN(conv(relu(BN(conv(x))))) + shortcut(x)); blocks listed in
``downsample`` use stride 2 and double the channels, with a 1x1 conv+BN shortcut.  Every head
is global-average pooling plus a linear layer on its block's output, so the network truncated
after block b with head b is a complete classifier: stage-wise protocols train head b in stage b
and ``e2e`` trains head B.  All blocks and heads are built at construction, so every protocol
starts from the same initial weights.
"""

from __future__ import annotations

import torch
from torch import nn

from ..probe.stack import Stack

from .config import ResNetConfig

LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d), 2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d)}


class BasicBlock(nn.Module):
    """Two k x k convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, dim: int, c_in: int, c_out: int, stride: int, kernel: int):
        super().__init__()
        Conv, BN, _ = LAYERS[dim]
        self.conv1 = Conv(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.bn1 = BN(c_out)
        self.conv2 = Conv(c_out, c_out, kernel, 1, padding=kernel // 2, bias=False)
        self.bn2 = BN(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(Conv(c_in, c_out, 1, stride, bias=False), BN(c_out))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class Head(nn.Module):
    """Global average pooling and a linear classifier."""

    def __init__(self, dim: int, channels: int, num_classes: int):
        super().__init__()
        self.pool = LAYERS[dim][2](1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(h).flatten(1))


def block_channels(cfg: ResNetConfig) -> list[int]:
    """Output channels of blocks 1..B: ``width``, doubled at every down-sampling block."""
    out, c = [], cfg.width
    for b in range(1, cfg.blocks + 1):
        c = c * 2 if b in cfg.downsample else c
        out.append(c)
    return out


class ResNet(nn.Module):
    """Stem + ``cfg.blocks`` residual blocks + one head per block (blocks/heads are 1-based in
    the API: ``block(b)``, ``head(b)``)."""

    def __init__(self, dim: int, in_channels: int, num_classes: int, cfg: ResNetConfig):
        super().__init__()
        if dim not in LAYERS:
            raise ValueError(f"ResNet supports 1-D and 2-D inputs, got dim={dim}")
        Conv, BN, _ = LAYERS[dim]
        self.dim, self.num_blocks = dim, cfg.blocks
        self.stem = nn.Sequential(Conv(in_channels, cfg.width, cfg.stem_kernel, 1, padding=cfg.stem_kernel // 2,
                                       bias=False), BN(cfg.width), nn.ReLU())
        self.channels = block_channels(cfg)
        c_in = [cfg.width] + self.channels[:-1]
        self.blocks = nn.ModuleList(
            BasicBlock(dim, ci, co, 2 if b + 1 in cfg.downsample else 1, cfg.kernel)
            for b, (ci, co) in enumerate(zip(c_in, self.channels)))
        self.heads = nn.ModuleList(Head(dim, c, num_classes) for c in self.channels)

    def block(self, b: int) -> BasicBlock:
        return self.blocks[b - 1]

    def head(self, b: int) -> Head:
        return self.heads[b - 1]

    def as_blocks(self) -> list[nn.Module]:
        """The growth units as modules for :class:`bfclab.probe.Stack`: stem + block 1, then
        blocks 2..B (the same modules, shared)."""
        return [nn.Sequential(self.stem, self.block(1))] + [self.block(b) for b in range(2, self.num_blocks + 1)]

    def stem_filters(self) -> torch.Tensor:
        """The first-layer filters, (width, in_channels, *kernel)."""
        return self.stem[0].weight

    def stack(self) -> Stack:
        """This network as a :class:`bfclab.probe.Stack` (the same modules, shared): what the probe
        trains and measures."""
        return Stack(self.as_blocks(), list(self.heads))

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Logits of the network truncated after block ``depth`` (default B), read by head ``depth``."""
        return self.stack()(x, depth)
