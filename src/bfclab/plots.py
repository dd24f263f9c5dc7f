"""Figures drawn from stored metric records (never from live objects), so that every figure can be
regenerated from a run directory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import atomic_write_bytes  # noqa: E402


def save(fig, path: Path) -> None:
    """Save a figure atomically as PNG and close it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def stage_boundaries(records: list[dict]) -> list[tuple[int, int]]:
    """(step, level) of every 'stage_end' event except the last."""
    ends = [(r["step"], r["stage"]) for r in records if r["event"] == "stage_end"]
    return ends[:-1]


def error_key(records: list[dict]) -> tuple[str, str]:
    if records and "test_error" in records[0]:
        return "test_error", "test classification error"
    return "test_nmse", "test nMSE"


def plot_curves(records: list[dict], path: Path, title: str = "") -> None:
    """Test error and per-layer feature error against step, stage boundaries marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    key, label = error_key(records)
    steps = [r["step"] for r in records]
    axes[0].semilogy(steps, [max(r[key], 1e-12) for r in records], "k.-")
    axes[0].set_ylabel(label)
    levels = sorted({int(l) for r in records for l in r["feature_error"]})
    for l in levels:
        pts = [(r["step"], r["feature_error"][str(l)] if str(l) in r["feature_error"] else r["feature_error"].get(l))
               for r in records]
        pts = [(s, v) for s, v in pts if v is not None]
        axes[1].semilogy([s for s, _ in pts], [max(v, 1e-12) for _, v in pts], ".-", label=f"layer {l}")
    axes[1].set_ylabel("feature error (1 - R$^2$)")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel("step")
        for s, l in stage_boundaries(records):
            ax.axvline(s, color="grey", ls="--", lw=0.8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    save(fig, path)


def plot_methods(series: dict[str, list[dict]], path: Path, title: str = "", level: int = 2) -> None:
    """Several methods on one figure: test error, and layer-``level`` feature error, vs step."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    first = next(iter(series.values()))
    key, label = error_key(first)
    for name, recs in series.items():
        axes[0].semilogy([r["step"] for r in recs], [max(r[key], 1e-12) for r in recs], ".-", label=name)
        pts = [(r["step"], r["feature_error"].get(str(level))) for r in recs]
        pts = [(s, v) for s, v in pts if v is not None]
        axes[1].semilogy([s for s, _ in pts], [max(v, 1e-12) for _, v in pts], ".-", label=name)
    axes[0].set_ylabel(label)
    axes[1].set_ylabel(f"layer-{level} feature error (1 - R$^2$)")
    for ax in axes:
        ax.set_xlabel("step")
        for s, _ in stage_boundaries(first):
            ax.axvline(s, color="grey", ls="--", lw=0.8)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(title)
    save(fig, path)
