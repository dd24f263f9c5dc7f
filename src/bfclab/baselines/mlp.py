"""A deep ReLU network trained end to end (issue 12, part 1: "an end-to-end deep ReLU MLP, same
depth as the learner"; PAPER_NOTES §6: training all layers of a deep network at once, without the
learner's quadratic structure, is one of the simpler methods the paper's separation is against).

The network is the plain multilayer perceptron anyone would write, in the standard
parametrisation:

    h_0 = x,   h_l = relu(W_l h_{l-1} + b_l)  (l = 1..depth, width m),   f(x) = a . h_depth + c,

with He initialisation W_l ~ N(0, 2 / fan_in), a ~ N(0, 1 / m) and zero biases, drawn from the
``baseline_init`` stream (no global random state).  ``depth`` hidden layers default to one per
level the deep learner trains (:func:`bfclab.nets.depth_of`: L - 1 on a quadratic target), so the
two have the same number of trained layers.  Training is :class:`~bfclab.baselines.two_layer.TwoLayer`'s
loop (standardised labels, minibatch Adam or SGD, cosine schedule, clipping, the same options); only
the network differs.  With labels (n, C) the last layer has C outputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .two_layer import TwoLayer


class DeepReLUNet(nn.Module):
    """``depth`` fully connected ReLU layers of ``width`` units and a linear output (module docstring)."""

    def __init__(self, d: int, width: int, depth: int, generator: torch.Generator | None = None,
                 outputs: int | None = None):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.outputs = outputs
        dims = [d] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, outputs or 1)
        with torch.no_grad():
            for layer in self.hidden:
                fan_in = layer.weight.shape[1]
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                layer.bias.zero_()
            self.out.weight.copy_(torch.randn(self.out.weight.shape, generator=generator) / math.sqrt(width))
            self.out.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.hidden:
            h = torch.relu(layer(h))
        f = self.out(h)
        return f[:, 0] if self.outputs is None else f


class DeepMLP(TwoLayer):
    """A deep ReLU MLP estimator (module docstring): :class:`TwoLayer`'s options and training,
    plus ``depth`` hidden layers; ``fit(x, y)`` with y (n,) or (n, C)."""

    def __init__(self, *, depth: int = 3, name: str | None = None, **options):
        super().__init__("relu", name=name or "mlp-relu", **options)
        self.depth = int(depth)

    def _build_net(self, d: int, gen: torch.Generator, outputs: int | None) -> nn.Module:
        return DeepReLUNet(d, self.width, self.depth, gen, outputs)
