"""Which blocks train in which stage, and how the others are frozen (PAPER_NOTES §5.3, §5.4,
§7.3 B "Protocols").  The methods are parsed by :func:`bfclab.train.parse_method`:

* ``e2e``        one stage: all B blocks and head B train from the start;
* ``layerwise``  stage b trains block b and a fresh head b; blocks below are frozen;
* ``window:k``   stage b trains blocks b-k..b and head b; blocks further down are frozen;
* ``bfc``        stage b trains every block <= b and head b (full backward correction).

Stage-wise methods give each of the B stages ``epochs_per_stage`` epochs; ``e2e`` gets
``B x epochs_per_stage`` in its single stage and is measured at the same epochs as the others'
stage ends.  A frozen block has ``requires_grad=False`` and is kept in eval mode, so neither its
weights nor its batch-norm running statistics move.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..train import Method
from .resnet import ResNet


@dataclass(frozen=True)
class Stage:
    """Stage ``index`` trains the blocks in ``trainable`` of the network truncated after block
    ``depth`` (read by head ``depth``) for ``epochs`` epochs."""

    index: int
    depth: int
    trainable: tuple[int, ...]
    epochs: int


def plan(method: Method, blocks: int, epochs_per_stage: int) -> list[Stage]:
    """The stages of ``method`` on a ``blocks``-block network."""
    if method.name == "e2e":
        return [Stage(blocks, blocks, tuple(range(1, blocks + 1)), blocks * epochs_per_stage)]
    return [Stage(b, b, tuple(method.trainable(list(range(1, b + 1)), b)), epochs_per_stage)
            for b in range(1, blocks + 1)]


def trainable_params(model: ResNet, stage: Stage) -> list[nn.Parameter]:
    """Set ``requires_grad`` on every parameter for ``stage``; return the ones that train
    (the trainable blocks' and head ``stage.depth``'s)."""
    train_units = [p for b in stage.trainable for p in model.unit_params(b)]
    params = train_units + list(model.head(stage.depth).parameters())
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return params


def train_mode(model: ResNet, stage: Stage) -> None:
    """Training mode for the trainable blocks, eval mode (fixed BN statistics) for the rest."""
    model.eval()
    for b in stage.trainable:
        for m in model.unit(b):
            m.train()
    model.head(stage.depth).train()
