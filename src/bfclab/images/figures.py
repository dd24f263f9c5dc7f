"""Figures of the image experiment, drawn from stored result files only (PAPER_NOTES §7.2
"Feature visualisation", §7.3 B "Metrics"), so that ``bfclab report`` can redraw them.

* :func:`plot_stem_filters`: the first-layer (stem) filters at the end of stage 1 (before the
  later stages) and at the end of training, plus their difference.

The summary figure is the probe's diagnostic figure (:func:`bfclab.probe.report.plot`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plots import plt, save
from .summary import stem_change


def _tile(filters: np.ndarray, cols: int, scale: np.ndarray) -> np.ndarray:
    """(n, c, k, k) filters -> one (rows*(k+1), cols*(k+1), 3) image, each filter divided by
    its own ``scale`` and mapped from [-1, 1] to [0, 1]; grey (c = 1) or RGB (first 3 channels)."""
    n, c, k, _ = filters.shape
    rows = -(-n // cols)
    img = np.ones((rows * (k + 1) - 1, cols * (k + 1) - 1, 3))
    for i, f in enumerate(filters):
        f = f[:3] if c >= 3 else np.repeat(f[:1], 3, axis=0)
        r, q = divmod(i, cols)
        img[r * (k + 1):r * (k + 1) + k, q * (k + 1):q * (k + 1) + k] = 0.5 + 0.5 * f.transpose(1, 2, 0) / scale[i]
    return img.clip(0, 1)


def plot_stem_filters(result: dict, path: Path) -> None:
    """Stem filters after stage 1 vs at the end (from ``result['stem_filters']``)."""
    before = np.asarray(result["stem_filters"]["after_stage_1"], dtype=float)
    after = np.asarray(result["stem_filters"]["final"], dtype=float)
    change = stem_change(result)
    title = (f"{result['dataset']} {result['method']} seed {result['seed']}: stem filters after stage 1 vs "
             f"at the end (||dW||/||W|| = {change:.3f})")
    n = before.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    if before.ndim == 3:  # 1-D: one curve per filter, input channel 0
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.1 * rows), sharex=True, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.set_xticks([]), ax.set_yticks([])
            if i < n:
                ax.plot(before[i, 0], color="0.6", ls="--", lw=1)
                ax.plot(after[i, 0], color="C3", lw=1.2)
        fig.legend(["after stage 1", "end of training"], loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.04))
    else:  # 2-D: filter mosaics with one scale per filter, shared by both panels
        scale = np.maximum(np.abs(before).reshape(n, -1).max(1), np.abs(after).reshape(n, -1).max(1)) + 1e-12
        diff = after - before
        dscale = np.full(n, np.abs(diff).max() + 1e-12)
        fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
        panels = [(before, scale, "after stage 1"), (after, scale, "end of training"),
                  (diff, dscale, "difference (own scale)")]
        for ax, (f, s, name) in zip(axes, panels):
            ax.imshow(_tile(f, cols, s), interpolation="nearest")
            ax.set_title(name), ax.axis("off")
    fig.suptitle(title, fontsize=10)
    save(fig, path)
