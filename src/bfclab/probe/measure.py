"""What the probe measures on a :class:`~.stack.Stack` (PAPER_NOTES §5.5, §7.3 B "Metrics").

* :func:`evaluate`: the test metric of the network truncated after block ``depth``, higher is
  better: accuracy for classification, R^2 = 1 - SSE/SST for regression.
* :func:`weight_change`: ||W - W_ref|| / ||W_ref|| over a block's weight matrices and filters
  (parameters with more than one axis; biases and norm scales left out), W_ref its weights at the
  end of its own stage (``bfclab.metrics.relative_change``); :func:`direction_change`, its
  scale-free part (RMS over output rows of the change of the unit-normalised row).
* :func:`revert_effect`: in the final network put one lower block back to its end-of-own-stage
  state (parameters and buffers) and measure the metric; as a control, add instead a random
  change of the same norm, tensor by tensor.  The cost is the final metric minus that one: 0
  exactly when the block did not move.
* :func:`block_features`, :func:`fit_probe`: linear probes on pooled block features;
  :func:`linear_cka`: linear CKA (Kornblith et al. 2019) between two feature matrices.
"""

from __future__ import annotations

import copy
import warnings
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from ..metrics import relative_change
from .stack import Stack

TASKS = ("classification", "regression")
Featurize = Callable[[torch.Tensor], torch.Tensor]


def pooled(pool: int) -> Featurize:
    """The default featuriser: a (N, D) output as it is; (N, C, *spatial) with one or two
    spatial axes average-pooled to ``pool`` positions per axis, then flattened."""
    def featurize(h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 3:
            h = F.adaptive_avg_pool1d(h, pool)
        elif h.dim() == 4:
            h = F.adaptive_avg_pool2d(h, pool)
        return h.flatten(1)
    return featurize


def tokens_mean(h: torch.Tensor) -> torch.Tensor:
    """A featuriser for (N, T, D) token sequences (batch-first transformers): the mean over tokens."""
    return h.mean(1)


def _squeeze(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A (N, 1) regression output against (N,) targets -> (N,)."""
    return out.squeeze(-1) if out.dim() == y.dim() + 1 and out.shape[-1] == 1 else out


def default_loss(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy for classification, mean squared error for regression."""
    if task == "classification":
        return F.cross_entropy
    return lambda out, y: F.mse_loss(_squeeze(out, y).float(), y.float())


@torch.no_grad()
def evaluate(model: Stack, batches: Iterable, depth: int, task: str, device: torch.device) -> float:
    """Accuracy (classification) or R^2 (regression) of the network truncated after ``depth``
    over ``batches`` (eval mode; the model's mode is restored)."""
    was = model.training
    model.eval()
    correct = n = 0
    sse = s1 = s2 = 0.0
    for x, y in batches:
        out = model(x.to(device), depth)
        y = y.to(out.device)
        if task == "classification":
            correct += int((out.argmax(1) == y).sum())
        else:
            yd = y.double()
            sse += float((_squeeze(out, y).double() - yd).pow(2).sum())
            s1, s2 = s1 + float(yd.sum()), s2 + float(yd.pow(2).sum())
        n += y.shape[0]
    model.train(was)
    if task == "classification":
        return correct / max(1, n)
    sst = s2 - s1 * s1 / max(1, n)
    return 1.0 - sse / sst if sst > 0 else float("nan")


def block_state(model: Stack, b: int) -> dict[str, torch.Tensor]:
    """A detached copy of block ``b``'s state (parameters and buffers)."""
    return {k: v.detach().clone() for k, v in model.block(b).state_dict().items()}


def _weight_pairs(model: Stack, b: int, ref: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(current, reference) weights of block ``b`` with more than one axis, matched by name."""
    return [(p.detach(), ref[name]) for name, p in model.block(b).named_parameters() if p.dim() > 1]


def weight_change(model: Stack, b: int, ref: dict) -> float:
    """||W - W_ref|| / ||W_ref|| over block ``b``'s weights with more than one axis."""
    pairs = _weight_pairs(model, b, ref)
    if not pairs:
        return 0.0
    return relative_change([p for p, _ in pairs], [r for _, r in pairs])


def direction_change(model: Stack, b: int, ref: dict) -> float:
    """Scale-free change of block ``b``'s weights: the RMS over output rows (filters) of
    ||w/||w|| - w_ref/||w_ref|||| (0 for a pure rescaling, sqrt(2) for orthogonal rows).  Where a
    batch norm follows, a row's scale is irrelevant and this separates turning from shrinking."""
    sq, count = 0.0, 0
    for p, r in _weight_pairs(model, b, ref):
        u = F.normalize(p.reshape(p.shape[0], -1).double(), dim=1)
        v = F.normalize(r.reshape(r.shape[0], -1).double(), dim=1)
        sq += float((u - v).pow(2).sum())
        count += p.shape[0]
    return (sq / count) ** 0.5 if count else 0.0


def _with_block(model: Stack, b: int, state: dict) -> Stack:
    other = copy.deepcopy(model)
    other.block(b).load_state_dict(state)
    return other


def _perturbed(now: dict, ref: dict, gen: torch.Generator) -> dict:
    """``now`` with every tensor of more than one axis moved by a random direction of the norm of
    its change since ``ref`` (other tensors unchanged)."""
    out = dict(now)
    for k, v in now.items():
        if v.dim() > 1:
            noise = torch.randn(v.shape, generator=gen).to(v.device, v.dtype)
            out[k] = v + noise * ((v - ref[k]).norm() / noise.norm())
    return out


def revert_effect(model: Stack, refs: dict[int, dict], batches: Iterable, task: str, device: torch.device,
                  seed: int, final: float | None = None) -> dict[int, dict]:
    """For every lower block b < B: the metric of the final network with block b reverted to
    ``refs[b]`` and with a random change of equal norm instead, and their costs (final minus
    each).  ``final``: the final network's metric, if already known."""
    depth = model.num_blocks
    final = evaluate(model, batches, depth, task, device) if final is None else final
    gen = torch.Generator().manual_seed(seed)
    out: dict[int, dict] = {}
    for b in range(1, depth):
        now = block_state(model, b)
        reverted = evaluate(_with_block(model, b, refs[b]), batches, depth, task, device)
        random = evaluate(_with_block(model, b, _perturbed(now, refs[b], gen)), batches, depth, task, device)
        out[b] = {"reverted": reverted, "random": random, "cost": final - reverted, "random_cost": final - random}
    return out


@torch.no_grad()
def block_features(model: Stack, x: torch.Tensor, depth: int, featurize: Featurize, device: torch.device,
                   batch: int = 1000) -> list[np.ndarray]:
    """Featurised outputs of blocks 1..depth (eval mode), one float64 array per block."""
    was = model.training
    model.eval()
    chunks: list[list[np.ndarray]] = [[] for _ in range(depth)]
    for i in range(0, x.shape[0], batch):
        for b, h in enumerate(model.features(x[i:i + batch].to(device), depth)):
            chunks[b].append(featurize(h.float()).cpu().double().numpy())
    model.train(was)
    return [np.concatenate(c) for c in chunks]


def fit_probe(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
              task: str, kind: str = "logistic", C: float = 1.0) -> float:
    """Test accuracy (classification) or R^2 (regression: ridge) of a linear model fitted on
    standardised features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    a, b = scaler.transform(f_train), scaler.transform(f_test)
    if task == "regression":
        return float(Ridge(alpha=1.0 / C).fit(a, y_train).score(b, y_test))
    clf = RidgeClassifier(alpha=1.0 / C) if kind == "ridge" else LogisticRegression(C=C, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(a, y_train)
    return float((clf.predict(b) == y_test).mean())


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA of two feature matrices over the same n examples: ||B_c^T A_c||_F^2 /
    (||A_c^T A_c||_F ||B_c^T B_c||_F) with column-centred A_c, B_c; 1 for features equal up to a
    rotation and isotropic scaling, invariant to both."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    num = np.linalg.norm(b.T @ a) ** 2
    den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(num / den) if den > 0 else float("nan")
