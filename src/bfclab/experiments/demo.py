"""``bfclab demo``: the main job on the embedded default target (PAPER_NOTES §5, §7.3 A).

Trains ``bfc``, ``layerwise`` and ``e2e`` on the same target, architecture and step budget,
prints a table (final nMSE; per-layer feature error at the end of each stage) and writes
``demo.png``: test nMSE and layer-2 feature error against step for the three methods.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..config import RunConfig
from ..plots import plot_methods
from ..results import read_jsonl, write_json
from ..train import train

METHODS = ("bfc", "layerwise", "e2e")


def run(base: RunConfig, out: Path, methods=METHODS, progress: bool | None = None,
        overwrite: bool = False) -> list[dict]:
    """Train each method from ``base`` (method replaced) into ``out/<method>``; return results.

    A method whose folder already holds a run of the same config is continued or, when it
    finished, reused (``--resume`` semantics); ``overwrite`` trains it again."""
    out = Path(out)
    results = []
    for method in methods:
        cfg = copy.deepcopy(base)
        cfg.method = method
        results.append(train(cfg, out / method.replace(":", "-"), resume=not overwrite, overwrite=overwrite,
                             progress=progress))
    write_json(out / "summary.json", {"results": [_brief(r) for r in results]})
    series = {r["method"]: read_jsonl(out / r["method"].replace(":", "-") / "metrics.jsonl") for r in results}
    plot_methods(series, out / "demo.png", title=f"default target, seed {base.seed}")
    return results


def _brief(r: dict) -> dict:
    keep = ("method", "seed", "test_nmse", "train_nmse", "test_error", "feature_error", "stage_end", "seconds")
    return {k: r[k] for k in keep if k in r}


def table(results: list[dict]) -> str:
    """A Markdown table: final error and, per stage, the feature error of every active layer."""
    stages = sorted({int(s) for r in results for s in r["stage_end"]})
    err = "test_error" if "test_error" in results[0] else "test_nmse"
    head = ["method", err.replace("_", " "), "train"] + [f"fe @ end of stage {s}" for s in stages] + ["s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["method"], f"{r[err]:.2e}", f"{r[err.replace('test', 'train')]:.2e}"]
        for s in stages:
            fe = r["stage_end"].get(str(s), r["stage_end"].get(s, {})).get("feature_error", {})
            cells.append(" ".join(f"L{l}:{v:.4f}" for l, v in sorted(fe.items(), key=lambda kv: int(kv[0]))))
        cells.append(f"{r['seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
