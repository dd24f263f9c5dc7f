"""Summary tables of an image experiment, built from the stored ``result.json`` files only
(PAPER_NOTES §5.4 "how deep", §5.5 "how much", §7.3 B "Metrics").

Tables, one row per method, mean ± sample standard deviation over seeds:

* accuracy: final test accuracy, accuracy at each stage end, and the share of the layerwise gap
  (acc(e2e) - acc(layerwise)) that the method recovers;
* weight change: ||W - W_ref|| / ||W_ref|| of each lower block from the end of its own stage to
  the end of training;
* the stem filters' own change;
* wall time per run.

The per-block probe / CKA / revert table and the figure are the probe's
(:func:`bfclab.probe.report.block_table`, :func:`bfclab.probe.report.plot`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..probe.report import block_keys, mean_std, method_order, pm
from ..results import read_json
from ..tables import markdown_table as table


def collect(out_dir: Path) -> dict[str, dict[str, list[dict]]]:
    """dataset -> method -> results (sorted by seed) of every image ``result.json`` under ``out_dir``."""
    found: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(Path(out_dir).rglob("result.json")):
        res = block_keys(read_json(path))
        if res.get("experiment") != "images":
            continue
        res["_dir"] = str(path.parent)
        found[res["dataset"]][res["method"]].append(res)
    return {ds: {m: sorted(runs, key=lambda r: r["seed"]) for m, runs in sorted(by.items(), key=lambda kv: method_order(kv[0]))}
            for ds, by in sorted(found.items())}


def pct(values) -> str:
    return pm(values, 100, 1)


def gap_recovery(by_method: dict[str, list[dict]]) -> dict[str, float] | None:
    """Share of the layerwise gap each method recovers, from seed means:
    (acc(m) - acc(layerwise)) / (acc(e2e) - acc(layerwise)); None without both references."""
    if "e2e" not in by_method or "layerwise" not in by_method:
        return None
    e2e = mean_std(r["test_metric"] for r in by_method["e2e"])[0]
    lw = mean_std(r["test_metric"] for r in by_method["layerwise"])[0]
    if e2e == lw:
        return None
    return {m: (mean_std(r["test_metric"] for r in runs)[0] - lw) / (e2e - lw) for m, runs in by_method.items()}


def accuracy_table(by_method: dict[str, list[dict]]) -> str:
    B = next(iter(by_method.values()))[0]["blocks"]
    rec = gap_recovery(by_method)
    head = ["method", "seeds", "final test acc (%)"] + [f"stage {b} (%)" for b in range(1, B + 1)]
    head += ["e2e − method, paired by seed (pp)", "layerwise gap recovered"]
    rows = []
    for m, runs in by_method.items():
        row = [m, str(len(runs)), pct(r["test_metric"] for r in runs)]
        row += [pct(r["stage_metric"][b] for r in runs) for b in range(1, B + 1)]
        gap = paired_gap(by_method, m)
        row.append(f"{100 * gap[0]:+.1f} ± {100 * gap[1]:.1f}" if gap is not None else "–")
        row.append(f"{100 * rec[m]:.0f}%" if rec is not None else "–")
        rows.append(row)
    return table(head, rows)


def paired_gap(by_method: dict[str, list[dict]], method: str) -> tuple[float, float] | None:
    """acc(e2e) - acc(method) per shared seed, mean ± std (seeds share init and batch order)."""
    if "e2e" not in by_method or method not in by_method:
        return None
    e2e = {r["seed"]: r["test_metric"] for r in by_method["e2e"]}
    diffs = [e2e[r["seed"]] - r["test_metric"] for r in by_method[method] if r["seed"] in e2e]
    return mean_std(diffs) if diffs else None


def weight_change_table(by_method: dict[str, list[dict]], key: str = "weight_change") -> str:
    """``key``: weight_change (relative) or direction_change (scale-free) of each lower block c,
    from the end of its own stage to the end of every later stage (seed means, → separated;
    ± is the std over seeds of the value at the end)."""
    B = next(iter(by_method.values()))[0]["blocks"]
    head = ["method"] + [f"block {c}{' (+stem)' if c == 1 else ''}: end of stage "
                         f"{' → '.join(str(b) for b in range(c + 1, B + 1))}" for c in range(1, B)]
    rows = []
    for m, runs in by_method.items():
        cells = []
        for c in range(1, B):
            path = [mean_std(r[key][c][b] for r in runs)[0] for b in range(c + 1, B + 1)]
            last = mean_std(r[key][c][B] for r in runs)[1]
            cells.append(" → ".join(f"{v:.3f}" for v in path) + f" (± {last:.3f})")
        rows.append([m] + cells)
    return table(head, rows)


def stem_change(result: dict) -> float:
    """||W - W_ref|| / ||W_ref|| of the stem filters alone, end of stage 1 -> end (from the
    filters stored in the result)."""
    before = np.asarray(result["stem_filters"]["after_stage_1"], dtype=float)
    after = np.asarray(result["stem_filters"]["final"], dtype=float)
    return float(np.linalg.norm(after - before) / np.linalg.norm(before))


def stem_table(by_method: dict[str, list[dict]]) -> str:
    rows = [[m, pm(stem_change(r) for r in runs)] for m, runs in by_method.items()]
    return table(["method", "stem filters: end of stage 1 → end"], rows)


def time_table(by_method: dict[str, list[dict]]) -> str:
    head = ["method", "runs", "seconds per run (mean ± std)", "device", "torch threads"]
    rows = [[m, str(len(runs)), pm((r["seconds"] for r in runs), digits=1), runs[0]["device"],
             str(runs[0]["torch_threads"])] for m, runs in by_method.items()]
    total = sum(r["seconds"] for runs in by_method.values() for r in runs)
    return table(head, rows) + f"\n\nSum of the runs' own times: {total:.0f} s ({total / 60:.1f} min)."
