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
from ..results import Result, read_records, write_json
from ..tables import markdown_table
from ..training import train

METHODS = ("bfc", "layerwise", "e2e")


def run(base: RunConfig, out: Path, methods=METHODS, progress: bool | None = None,
        overwrite: bool = False) -> list[Result]:
    """Train each method from ``base`` (method replaced) into ``out/<method>``; return results.

    A method whose folder already holds a run of the same config is continued or, when it
    finished, reused (``--resume`` semantics); ``overwrite`` trains it again."""
    out = Path(out)
    results = []
    for method in methods:
        cfg = copy.deepcopy(base)
        cfg.method = method
        results.append(train(cfg, out / method.replace(":", "-"), resume=not overwrite, overwrite=overwrite,
                             progress=progress).result)
    write_json(out / "summary.json", {"results": [_brief(r) for r in results]})
    series = {r.method: read_records(out / r.method.replace(":", "-") / "metrics.jsonl") for r in results}
    plot_methods(series, out / "demo.png", title=f"default target, seed {base.seed}")
    return results


def _brief(r: Result) -> dict:
    keep = ("method", "seed", "test_nmse", "train_nmse", "test_error", "feature_error", "stage_end", "seconds")
    return {k: v for k, v in r.to_json().items() if k in keep}


def table(results: list[Result]) -> str:
    """A Markdown table: final error and, per stage, the feature error of every active layer."""
    stages = sorted({s for r in results for s in r.stage_end})
    err = results[0].error_name
    head = ["method", err.replace("_", " "), "train"] + [f"fe @ end of stage {s}" for s in stages] + ["s"]
    rows = []
    for r in results:
        cells = [r.method, f"{r.metrics[err]:.2e}", f"{r.metrics[err.replace('test', 'train')]:.2e}"]
        for s in stages:
            fe = r.stage_end.get(s, {}).get("feature_error", {})
            cells.append(" ".join(f"L{l}:{v:.4f}" for l, v in sorted(fe.items())))
        cells.append(f"{r.seconds:.0f}")
        rows.append(cells)
    return markdown_table(head, rows)
