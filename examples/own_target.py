"""Bring your own target (issue 16): any object with ``sample(n, seed) -> (x, y)`` and a few fields
runs through every bfclab method.  This one composes two levels of Gaussian features,
y = ||W2 tanh(2 W1 x)||^2, and exposes both levels so the deep nets' blocks are measured against them.

    bfclab sweep examples/own_target.yaml --out runs/own-target
"""
import torch


class Composed:
    kind, task, input, vocab, n_classes = "composed", "regression", "continuous", 0, 0

    def __init__(self, seed: int, d: int = 16, k: int = 4):
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(k, d, generator=g, dtype=torch.float64) / d ** 0.5
        self.w2 = torch.randn(k, k, generator=g, dtype=torch.float64) / k ** 0.5
        self.shape, self.levels, self.config = (d,), [1, 2], {"d": d, "k": k}

    def features(self, x):  # optional: the ground truth of each level, for the per-level measurements
        h1 = torch.tanh(2 * x @ self.w1.T)
        return {1: h1, 2: h1 @ self.w2.T}

    def sample(self, n, seed):
        x = torch.randn(n, self.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return x, self.features(x)[2].pow(2).sum(1)


def make(seed, d=16, k=4):  # target.kind: python:examples/own_target.py:make; target.options: {d: .., k: ..}
    return Composed(seed, d, k)
