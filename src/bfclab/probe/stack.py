"""A model as an ordered stack of blocks with one head per block (PAPER_NOTES §5.3, §5.4:
the units a growth protocol trains), and the splitters that make one from common models.

    x -> block 1 -> block 2 -> ... -> block B
            |          |                |
          head 1     head 2    ...    head B

The network truncated after block b and read by head b is a complete predictor, so a stage-wise
protocol trains head b in stage b and ``e2e`` trains head B.  Blocks are 1-based in the API
(``block(b)``, ``head(b)``).  Any ``nn.Module`` can be a block; the splitters cover
``nn.Sequential`` (:func:`split_sequential`), torchvision-style ResNets (:func:`split_resnet`:
``conv1``/``bn1``/``relu``/``maxpool`` then ``layer1..layerN``) and transformer encoders
(:func:`split_transformer`: the layers of an ``nn.TransformerEncoder`` or any list of
``nn.TransformerEncoderLayer``, with an optional embedding in front).  A splitter returns plain
modules: the first block carries whatever comes before the first "real" block (stem, embedding).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


class Stack(nn.Module):
    """Blocks 1..B and heads 1..B.  ``heads`` is a list of B modules or a factory
    ``b -> head`` called once per block at construction (so every protocol starts from the
    same weights when the caller seeds the construction)."""

    def __init__(self, blocks: Sequence[nn.Module], heads: Sequence[nn.Module] | Callable[[int], nn.Module]):
        super().__init__()
        if len(blocks) == 0:
            raise ValueError("a Stack needs at least one block")
        self.blocks = nn.ModuleList(blocks)
        made = [heads(b) for b in range(1, len(blocks) + 1)] if callable(heads) else list(heads)
        if len(made) != len(blocks):
            raise ValueError(f"a Stack needs one head per block: {len(blocks)} blocks, {len(made)} heads")
        self.heads = nn.ModuleList(made)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def block(self, b: int) -> nn.Module:
        return self.blocks[b - 1]

    def head(self, b: int) -> nn.Module:
        return self.heads[b - 1]

    def block_params(self, b: int) -> list[nn.Parameter]:
        return list(self.block(b).parameters())

    def features(self, x: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """Outputs of blocks 1..depth (default all)."""
        depth = self.num_blocks if depth is None else depth
        out = []
        for b in range(1, depth + 1):
            x = self.block(b)(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """The prediction of the network truncated after block ``depth`` (default B), read by head ``depth``."""
        depth = self.num_blocks if depth is None else depth
        return self.head(depth)(self.features(x, depth)[-1])


def split_sequential(seq: nn.Sequential, ends: Sequence[int] | None = None) -> list[nn.Module]:
    """The children of ``seq`` as blocks: one child per block, or, with ``ends``, block i made of
    the children up to (exclusive) ``ends[i]`` from the previous end; the last end must be
    ``len(seq)`` (e.g. ``ends=[2, 4, 6]`` groups a Linear-ReLU stack into three blocks)."""
    children = list(seq.children())
    ends = list(range(1, len(children) + 1)) if ends is None else [int(e) for e in ends]
    if not ends or ends[-1] != len(children) or any(b <= a for a, b in zip([0] + ends, ends)):
        raise ValueError(f"split_sequential: ends must increase from >0 to {len(children)}, got {ends}")
    return [nn.Sequential(*children[a:b]) if b - a > 1 else children[a] for a, b in zip([0] + ends, ends)]


def split_resnet(model: nn.Module, layers: Sequence[str] | None = None) -> list[nn.Module]:
    """A torchvision-style ResNet's stages as blocks: the stem (``conv1``, ``bn1``, ``relu``,
    ``maxpool`` where present) joined to the first stage, then one block per stage
    (``layer1``, ``layer2``, ... by default every ``layer<i>`` attribute in order).  The model's
    own pooling and ``fc`` are left out: give heads for each stage's width instead."""
    stem = [getattr(model, n) for n in ("conv1", "bn1", "relu", "maxpool") if isinstance(getattr(model, n, None), nn.Module)]
    if not stem:
        raise ValueError("split_resnet: the model has no conv1/bn1/relu/maxpool stem")
    if layers is None:
        layers, i = [], 1
        while isinstance(getattr(model, f"layer{i}", None), nn.Module):
            layers.append(f"layer{i}")
            i += 1
    stages = [getattr(model, n) for n in layers]
    if not stages:
        raise ValueError("split_resnet: the model has no layer1, layer2, ... stages")
    return [nn.Sequential(*stem, stages[0])] + stages[1:]


def split_transformer(layers: nn.TransformerEncoder | Sequence[nn.Module],
                      embed: nn.Module | None = None) -> list[nn.Module]:
    """The encoder layers as blocks (one layer per block), ``embed`` (token + position
    embedding, say) in front of the first.  An ``nn.TransformerEncoder`` gives its ``layers``
    (its final ``norm``, if any, is left out)."""
    items = list(layers.layers) if isinstance(layers, nn.TransformerEncoder) else list(layers)
    if not items:
        raise ValueError("split_transformer: no layers")
    return ([nn.Sequential(embed, items[0])] if embed is not None else [items[0]]) + items[1:]
