"""Linear probes of block features (PAPER_NOTES §7.3 B "Metrics": linear-probe accuracy of
lower-block features before vs after backward correction).

A block's output (N, C, *spatial) is average-pooled to ``pool`` positions per spatial axis and
flattened, standardised with the probe-training set's statistics, and classified by a
logistic-regression or ridge classifier fitted on at most ``max_train`` training images
(a fixed subset, the same for every run) and scored on the whole test set.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .. import seeds
from .config import ProbeConfig
from .resnet import ResNet


@torch.no_grad()
def pooled_features(model: ResNet, x: torch.Tensor, depth: int, pool: int, device: torch.device,
                    batch: int = 1000) -> list[np.ndarray]:
    """Pooled, flattened outputs of blocks 1..depth (eval mode), one float64 array per block."""
    was_training = model.training
    model.eval()
    chunks: list[list[np.ndarray]] = [[] for _ in range(depth)]
    pool_fn = F.adaptive_avg_pool1d if model.dim == 1 else F.adaptive_avg_pool2d
    for i in range(0, x.shape[0], batch):
        for b, h in enumerate(model.features(x[i:i + batch].to(device), depth)):
            chunks[b].append(pool_fn(h.float(), pool).flatten(1).cpu().double().numpy())
    model.train(was_training)
    return [np.concatenate(c) for c in chunks]


def probe_subset(n: int, max_train: int) -> np.ndarray:
    """Indices of the probe-training images: a fixed permutation's first ``max_train``."""
    return np.sort(seeds.numpy_rng("image_probe").permutation(n)[:max_train])


def fit_probe(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
              cfg: ProbeConfig) -> float:
    """Test accuracy of a linear classifier fitted on standardised features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    a, b = scaler.transform(f_train), scaler.transform(f_test)
    if cfg.kind == "ridge":
        clf = RidgeClassifier(alpha=1.0 / cfg.C)
    else:
        clf = LogisticRegression(C=cfg.C, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(a, y_train)
    return float((clf.predict(b) == y_test).mean())
