"""Two-layer networks trained by SGD/Adam (PAPER_NOTES §6: "training a two-layer network" is not
known to be efficient for the class; §7.3 A.5: two-layer quadratic and ReLU nets).

The network (NTK parametrisation, every layer trained):

    f(x) = 1/sqrt(m) sum_{i=1}^m a_i sigma(w_i . x / sqrt(d) + beta b_i),   a_i, w_i, b_i ~ N(0, 1) at init,

with sigma(z) = z^2 (``quad``, the concept class's activation, PAPER_NOTES §2.2) or relu, and
beta = ``bias`` (0 removes the biases).  Its infinite-width NTK for relu is
:class:`bfclab.baselines.kernels.ReluNTK` (tested).  The estimator trains it on standardised
labels (mean 0, variance 1) with minibatch Adam or SGD (momentum), the learning rate following
``bfclab.methods.lr_factor`` (cosine by default), optional gradient clipping, and a tqdm progress
bar when stderr is a terminal.

Labels y are (n,) or (n, C).  With C columns (e.g. a one-hot class label) the network has C
outputs, f(x) = 1/sqrt(m) sigma(W x/sqrt(d) + beta b)^T A with A in R^{m x C} (a shared hidden
layer), each column is standardised on its own, the loss is the squared error averaged over
the columns, and ``predict`` returns (n, C).  With y (n,) the network is the scalar one above.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from .. import seeds
from ..methods import lr_factor
from .ridge import check_targets, resolve_dtype

ACTIVATIONS = ("quad", "relu")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")


class TwoLayerNet(nn.Module):
    """f(x) = 1/sqrt(m) sum_i a_i sigma(w_i . x/sqrt(d) + bias b_i) (module docstring).

    ``outputs``: None for a scalar output (``a`` of shape (m,), f(x) of shape (batch,)), or C
    for C outputs (``a`` of shape (m, C), f(x) of shape (batch, C))."""

    def __init__(self, d: int, width: int, activation: str = "relu", bias: float = 1.0,
                 generator: torch.Generator | None = None, outputs: int | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if outputs is not None and outputs < 1:
            raise ValueError(f"outputs must be None or >= 1, got {outputs}")
        self.d, self.width, self.activation, self.beta = d, width, activation, float(bias)
        self.outputs = outputs
        self.w = nn.Parameter(torch.randn(width, d, generator=generator))
        shape = (width,) if outputs is None else (width, outputs)
        self.a = nn.Parameter(torch.randn(shape, generator=generator))
        self.b = nn.Parameter(torch.randn(width, generator=generator)) if bias > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = x @ self.w.T / math.sqrt(self.d)
        if self.b is not None:
            pre = pre + self.beta * self.b
        h = pre * pre if self.activation == "quad" else torch.relu(pre)
        return h @ self.a / math.sqrt(self.width)


class TwoLayer:
    """A two-layer network estimator (module docstring); ``fit(x, y)``: y (n,) or (n, C), a network
    with C outputs for the latter, ``predict`` (n,) or (n, C) like y.  After ``fit``: ``net_``, ``history_``
    (training loss on standardised labels every ``log_every`` steps) and ``info``.  The options'
    limits are checked where they are parsed (``registry.TwoLayerOptions``), not here."""

    def __init__(self, activation: str = "relu", *, width: int = 1024, steps: int = 4000,
                 batch_size: int = 256, lr: float = 1e-2, optimizer: str = "adam", momentum: float = 0.9,
                 schedule: str = "cosine", min_lr_frac: float = 0.01, weight_decay: float = 0.0,
                 clip: float = 1.0, bias: float = 1.0, dtype: str = "float32",
                 device: str | torch.device = "cpu", seed: int = 0, progress: bool | None = None,
                 log_every: int = 100, name: str | None = None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.activation, self.width, self.steps, self.batch_size = activation, int(width), int(steps), int(batch_size)
        self.lr, self.optimizer, self.momentum, self.schedule = float(lr), optimizer, float(momentum), schedule
        self.min_lr_frac, self.weight_decay, self.clip, self.bias = float(min_lr_frac), float(weight_decay), float(clip), float(bias)
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.seed, self.progress, self.log_every = int(seed), progress, int(log_every)
        self.name = name or f"twolayer-{activation}"

    def _opt(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def _build_net(self, d: int, gen: torch.Generator, outputs: int | None) -> nn.Module:
        """The network trained by :meth:`fit`: f(x) of shape (batch,) or (batch, outputs)."""
        return TwoLayerNet(d, self.width, self.activation, self.bias, gen, outputs)

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "TwoLayer":
        outputs = check_targets(y, x.shape[0])
        gen = seeds.generator("baseline_init", self.seed)
        x = x.to(self.device, self.dtype)
        y = y.to(self.device, torch.float64)
        if outputs is None:
            self.y_mean_, self.y_std_ = float(y.mean()), float(y.std()) or 1.0
        else:  # per column, float64 (C,) tensors; a constant column is divided by 1
            std = y.std(0) if y.shape[0] > 1 else torch.zeros(outputs, dtype=torch.float64, device=self.device)
            self.y_mean_, self.y_std_ = y.mean(0), torch.where(std > 0, std, torch.ones_like(std))
        ys = ((y - self.y_mean_) / self.y_std_).to(self.dtype)
        self.outputs_ = outputs
        self.net_ = self._build_net(x.shape[1], gen, outputs).to(self.device, self.dtype)
        params = list(self.net_.parameters())
        opt = self._opt(params)
        show = sys.stderr.isatty() if self.progress is None else self.progress
        bar = None
        if show:
            from tqdm import tqdm

            bar = tqdm(total=self.steps, desc=self.name, leave=False, dynamic_ncols=True)
        self.history_: list[tuple[int, float]] = []
        n = x.shape[0]
        try:
            for step in range(self.steps):
                for g in opt.param_groups:
                    g["lr"] = self.lr * lr_factor(self.schedule, step, self.steps, self.min_lr_frac)
                idx = torch.randint(n, (min(self.batch_size, n),), generator=gen).to(self.device)
                loss = (self.net_(x[idx]) - ys[idx]).pow(2).mean()
                val = float(loss.detach())
                if not math.isfinite(val):
                    raise RuntimeError(f"{self.name}: training diverged at step {step} (loss {val}); lower lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, self.clip)
                opt.step()
                if step % self.log_every == 0 or step == self.steps - 1:
                    self.history_.append((step, val))
                if bar is not None:
                    bar.update(1)
                    if step % 50 == 0:
                        bar.set_postfix(loss=f"{val:.3e}")
        finally:
            if bar is not None:
                bar.close()
        return self

    @property
    def info(self) -> dict:
        """JSON-able diagnostics of the fit: the logged training losses (standardised labels)."""
        return {"history": [list(h) for h in self.history_], "params": sum(p.numel() for p in self.net_.parameters())}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        if len(x):
            out = torch.cat([self.net_(x[a:a + chunk]) for a in range(0, x.shape[0], chunk)])
        else:
            out = x.new_zeros((0,) if self.outputs_ is None else (0, self.outputs_))
        if isinstance(self.y_mean_, float):
            return out.double().cpu() * self.y_std_ + self.y_mean_
        return out.double().cpu() * self.y_std_.cpu() + self.y_mean_.cpu()
