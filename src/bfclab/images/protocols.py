"""Which blocks train in which stage, and how the others are frozen (PAPER_NOTES §5.3, §5.4,
§7.3 B "Protocols").  The stages are the growth plan of :mod:`bfclab.growth` over blocks 1..B:

* ``e2e``        one segment: all B blocks and head B train from the start;
* ``layerwise``  stage b trains block b and a fresh head b; blocks below are frozen;
* ``window:k``   stage b trains blocks b-k..b and head b; blocks further down are frozen;
* ``bfc``        stage b trains every block <= b and head b (full backward correction).

Stage-wise methods give each of the B stages ``epochs_per_stage`` epochs; ``e2e`` gets
``B x epochs_per_stage`` in its single segment and is measured at the same epochs as the others'
stage ends.  A frozen block has ``requires_grad=False`` and is kept in eval mode, so neither its
weights nor its batch-norm running statistics move.
"""

from __future__ import annotations

from torch import nn

from .. import growth
from ..growth import Segment
from ..methods import Method
from .resnet import ResNet


def plan(method: Method, blocks: int, epochs_per_stage: int) -> list[Segment]:
    """The segments of ``method`` on a ``blocks``-block network (``length`` in epochs; the
    network of a segment is read out by head ``segment.top``)."""
    return growth.plan(method, range(1, blocks + 1), epochs_per_stage)


def trainable_params(model: ResNet, seg: Segment) -> list[nn.Parameter]:
    """Set ``requires_grad`` on every parameter for ``seg``; return the ones that train
    (the trainable blocks' and head ``seg.top``'s)."""
    train_units = [p for b in seg.trainable for p in model.unit_params(b)]
    params = train_units + list(model.head(seg.top).parameters())
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return params


def train_mode(model: ResNet, seg: Segment) -> None:
    """Training mode for the trainable blocks, eval mode (fixed BN statistics) for the rest."""
    model.eval()
    for b in seg.trainable:
        for m in model.unit(b):
            m.train()
    model.head(seg.top).train()
