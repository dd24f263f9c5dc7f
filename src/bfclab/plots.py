"""Figures drawn from stored metric records (never from live objects), so that every figure can be
regenerated from a run directory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .results import atomic_write_bytes, error_name  # noqa: E402


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
    """The records' headline error and its axis label."""
    key = error_name(records[0]) if records else "test_nmse"
    return key, "test classification error" if key == "test_error" else "test nMSE"


def plot_curves(records: list[dict], path: Path, title: str = "") -> None:
    """Test error and per-layer feature error against step, stage boundaries marked."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    key, label = error_key(records)
    steps = [r["step"] for r in records]
    axes[0].semilogy(steps, [max(r[key], 1e-12) for r in records], "k.-")
    axes[0].set_ylabel(label)
    levels = sorted({l for r in records for l in r["feature_error"]})
    for l in levels:
        pts = [(r["step"], r["feature_error"].get(l)) for r in records]
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
        pts = [(r["step"], r["feature_error"].get(level)) for r in recs]
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


def _band(ax, runs: list[list[tuple[int, float]]], label: str, color=None) -> None:
    """Median line and min-max band over runs that share their steps."""
    import numpy as np

    steps = sorted({s for run in runs for s, _ in run})
    vals = []
    for s in steps:
        vs = [v for run in runs for st, v in run if st == s and v == v]
        vals.append((np.median(vs), min(vs), max(vs)) if vs else (np.nan,) * 3)
    v = np.array(vals, dtype=float)
    line = ax.semilogy(steps, np.maximum(v[:, 0], 1e-12), ".-", ms=3, label=label, color=color)[0]
    ax.fill_between(steps, np.maximum(v[:, 1], 1e-12), np.maximum(v[:, 2], 1e-12), alpha=0.2,
                    color=line.get_color())


def plot_feature_curves(series: dict[str, list[list[dict]]], path: Path, title: str = "") -> None:
    """Per-layer feature error against step, one panel per layer, a line per method (median over
    seeds, band = min..max), plus the test error; stage boundaries marked."""
    any_recs = next(iter(series.values()))[0]
    levels = sorted({l for r in any_recs for l in r["feature_error"]})
    key, label = error_key(any_recs)
    fig, axes = plt.subplots(1, len(levels) + 1, figsize=(4 * (len(levels) + 1), 3.6), squeeze=False)
    axes = axes[0]
    for name, runs in series.items():
        _band(axes[0], [[(r["step"], r[key]) for r in recs] for recs in runs], name)
        for ax, l in zip(axes[1:], levels):
            _band(ax, [[(r["step"], r["feature_error"][l]) for r in recs if l in r["feature_error"]]
                       for recs in runs], name)
    axes[0].set_ylabel(label)
    for ax, l in zip(axes[1:], levels):
        ax.set_title(f"layer {l}: feature error (1 - R$^2$)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
        for s, _ in stage_boundaries(any_recs):
            ax.axvline(s, color="grey", ls="--", lw=0.8)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend()
    fig.suptitle(title)
    save(fig, path)


def plot_vs(panels: list[dict], path: Path, title: str = "") -> None:
    """Generic 'metric against a swept value' figure.

    ``panels``: one dict per panel with ``lines`` ({label: {x: [values over seeds]}}), ``xlabel``,
    ``ylabel`` and optional ``logx``, ``logy``, ``hlines`` ({label: y}) and ``xticks``.  Each line
    is the median over seeds with a min..max error bar.
    """
    import numpy as np

    many = max(len(p["lines"]) for p in panels) > 6
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + (2.5 if many else 0), 3.8),
                             squeeze=False)
    for ax, p in zip(axes[0], panels):
        colors = plt.cm.tab20(np.linspace(0, 1, 20))[::1] if len(p["lines"]) > 10 else [None] * len(p["lines"])
        for i, (label, pts) in enumerate(p["lines"].items()):
            xs = sorted(pts)
            med = np.array([np.nanmedian(pts[x]) for x in xs], dtype=float)
            lo = np.array([np.nanmin(pts[x]) for x in xs], dtype=float)
            hi = np.array([np.nanmax(pts[x]) for x in xs], dtype=float)
            ax.errorbar(xs, med, yerr=[med - lo, hi - med], marker="o", ms=4, capsize=3, label=label,
                        color=colors[i % len(colors)], ls=(p.get("styles") or {}).get(label, "-"))
        for label, y in (p.get("hlines") or {}).items():
            ax.axhline(y, color="grey", ls=":", lw=1)
            ax.annotate(label, (1.0, y), xycoords=("axes fraction", "data"), fontsize=7, ha="right", va="bottom")
        if p.get("logx"):
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            xs_all = sorted({x for pts in p["lines"].values() for x in pts})
            ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
            ax.xaxis.set_minor_formatter(NullFormatter())
        if p.get("logy", True):
            ax.set_yscale("log")
        if p.get("xticks"):
            ax.set_xticks(p["xticks"][0], p["xticks"][1])
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel(p["ylabel"])
        if p.get("title"):
            ax.set_title(p["title"], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if len(p["lines"]) > 6:
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
        else:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, path)


def plot_scaling(fits: dict, levels: list, path: Path) -> None:
    """n* against d, log-log, a panel per depth L: per method its points (a right-censored point as
    an upward triangle at its bound, a left-censored one as a downward triangle) and its fitted
    line with the slope in the legend.  ``fits``: {(method, L, ...): bootstrap_fit output}."""
    import numpy as np

    fig, axes = plt.subplots(1, len(levels), figsize=(4.6 * len(levels), 3.8), squeeze=False)
    methods = list(dict.fromkeys(k[0] for k in fits))
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for ax, L in zip(axes[0], levels):
        for i, m in enumerate(methods):
            f = next((v for k, v in fits.items() if k[0] == m and k[1] == L), None)
            if not f or not f["points"]:
                continue
            c = colors[i % 10]
            for d, n, kind in f["points"]:
                ax.plot(d, n, marker={"right": "^", "left": "v"}.get(kind, "o"), color=c, ms=6 if kind != "exact" else 4,
                        ls="none")
            ds = sorted({d for d, _, _ in f["points"]})
            if f["a"] == f["a"]:
                xs = np.array(ds, dtype=float)
                ax.plot(xs, np.exp(f["b"]) * xs ** f["a"], color=c, lw=1,
                        label=f"{m}: a = {f['a']:.2f} [{f['lo']:.2f}, {f['hi']:.2f}]")
            else:
                ax.plot([], [], color=c, label=f"{m}: no fit")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(f"levels 2..{L}", fontsize=10)
        ax.set_xlabel("d")
        ax.set_ylabel("n* (samples to eps)")
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:  # a depth without a finished search (a partial run)
            ax.text(0.5, 0.5, "no finished search", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("n*(eps) against d (^: censored above the method's budget, v: below the grid)")
    save(fig, path)


def plot_exponents(fits: dict, levels: list, refs: dict, path: Path) -> None:
    """The fitted exponent a (with its 95 % interval) against depth L for every method, and the
    kernels' degree-based reference exponent ``refs`` {L: a}."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    methods = list(dict.fromkeys(k[0] for k in fits))
    for i, m in enumerate(methods):
        ls = [L for L in levels if (m, L) in {k[:2] for k in fits}]
        f = [next(v for k, v in fits.items() if k[0] == m and k[1] == L) for L in ls]
        a = np.array([x["a"] for x in f], dtype=float)
        lo = np.array([x["lo"] for x in f], dtype=float)
        hi = np.array([x["hi"] for x in f], dtype=float)
        off = (i - len(methods) / 2) * 0.04
        ax.errorbar(np.array(ls) + off, a, yerr=[np.nan_to_num(a - lo), np.nan_to_num(hi - a)], marker="o",
                    capsize=3, label=m)
    ax.plot(list(refs), list(refs.values()), "k:", label="kernel reference: #monomials of degree 2^(L-1)")
    ax.set_xticks(levels)
    ax.set_xlabel("L (levels 2..L; degree 2^(L-1))")
    ax.set_ylabel("exponent a of n* ~ d^a")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)
