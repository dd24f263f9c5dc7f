"""Figures of the image experiment, drawn from stored result files only (PAPER_NOTES §7.2
"Feature visualisation", §7.3 B "Metrics"), so that ``bfclab report`` can redraw them.

* :func:`plot_stem_filters`: the first-layer (stem) filters at the end of stage 1 (before the
  later stages) and at the end of training, plus their difference.
* :func:`plot_summary`: per method, mean test accuracy at every stage end, the relative weight
  change of each lower block by the end, and the linear-probe accuracy of each block at the
  end of its own stage vs at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plots import plt, save
from .summary import mean_std, stem_change


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


def plot_summary(groups: dict[str, list[dict]], path: Path, title: str) -> None:
    """Three panels over the methods in ``groups`` (method -> results of its seeds)."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    for i, (method, runs) in enumerate(groups.items()):
        color = f"C{i}"
        B = runs[0]["blocks"]
        stages = list(range(1, B + 1))
        acc = [mean_std([r["stage_acc"][b] for r in runs]) for b in stages]
        axes[0].errorbar(stages, [100 * m for m, _ in acc], [100 * s for _, s in acc], marker="o", capsize=3,
                         color=color, label=method)
        lower = list(range(1, B))
        wc = [mean_std([r["weight_change"][c][B] for r in runs]) for c in lower]
        width = 0.8 / len(groups)
        axes[1].bar(np.array(lower) + (i - (len(groups) - 1) / 2) * width, [m for m, _ in wc], width,
                    yerr=[s for _, s in wc], color=color, label=method, capsize=2)
        own = [mean_std([r["probe_own"][b] for r in runs])[0] for b in stages]
        fin = [mean_std([r["probe_final"][b] for r in runs])[0] for b in stages]
        axes[2].plot(stages, [100 * v for v in own], ls="--", marker="x", color=color)
        axes[2].plot(stages, [100 * v for v in fin], ls="-", marker="o", color=color, label=method)
    axes[0].set(xlabel="stage (end of)", ylabel="test accuracy (%)", title="accuracy at each stage end")
    axes[1].set(xlabel="lower block", ylabel="||W - W_ref|| / ||W_ref||",
                title="weight change after its own stage, by the end")
    axes[2].set(xlabel="block", ylabel="linear-probe test accuracy (%)",
                title="probe: end of own stage (dashed) vs end (solid)")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, path)
