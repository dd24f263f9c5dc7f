"""What every synthetic experiment shares: a grid run through the sweep runner, results read
back from run directories, medians with spread, and small Markdown helpers.

An experiment module defines ``NAME``, ``COMMAND`` (how a user runs it), ``spec(quick) -> grid
mapping`` and ``summarize(root, figdir) -> Section``.  Tables and figures are computed only from
the stored files under ``root``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..results import read_json, read_jsonl
from ..sweep import Cell, Grid, expand, run_sweep

# A tiny version of the default target for --quick runs (CI): same structure, seconds per run.
QUICK_BASE = {
    "target": {"d": 8, "widths": [2], "mc_samples": 5000},
    "data": {"n_train": 1000, "n_test": 1000},
    "train": {"steps_per_stage": 200, "batch_size": 128, "log_every": 50},
}


@dataclass
class Section:
    """A report section: Markdown text and the figures it links (paths relative to the docs dir)."""

    title: str
    markdown: str
    figures: list[Path] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)


@dataclass
class CellRun:
    params: dict
    dir: Path
    result: dict

    def records(self) -> list[dict]:
        return read_jsonl(self.dir / "metrics.jsonl")


def run_grid(spec: dict, root: Path, workers: int = 2, progress: bool | None = None, threads: int = 1,
             overwrite: bool = False) -> Grid:
    grid = expand(spec, name=spec.get("name", root.name))
    run_sweep(grid, root, workers=workers, progress=progress, threads=threads, overwrite=overwrite)
    return grid


def load_cells(root: Path, spec: dict, diverged: bool = False) -> list[CellRun]:
    """The finished cells of ``spec`` under ``root`` (missing ones are left out); diverged runs
    only when ``diverged`` (see :func:`diverged_note`)."""
    grid = expand(spec)
    out = []
    for c in grid.cells:
        d = Path(root) / "cells" / c.id
        if c.finished(root):
            res = read_json(d / "result.json")
            if bool(res.get("diverged")) == diverged:
                out.append(CellRun(c.params, d, res))
    return out


def diverged_note(root: Path, spec: dict) -> str:
    """A sentence naming the runs that diverged (left out of every statistic), or ''."""
    bad = load_cells(root, spec, diverged=True)
    if not bad:
        return ""
    names = "; ".join(f"{c.params} ({c.result['diverged']})" for c in bad)
    return f"{len(bad)} run(s) diverged and are left out of the statistics: {names}."


def missing(root: Path, spec: dict) -> list[Cell]:
    return [c for c in expand(spec).cells if not c.finished(root)]


def med(values) -> float:
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def spread(values) -> str:
    """'median [min, max]' in scientific notation."""
    vals = [v for v in values if v == v]
    if not vals:
        return "n/a"
    return f"{statistics.median(vals):.2e} [{min(vals):.1e}, {max(vals):.1e}]"


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def stage_value(result: dict, stage: int, key: str, level: int | None = None):
    rec = result["stage_end"].get(str(stage))
    if rec is None:
        return float("nan")
    v = rec[key]
    return v.get(str(level), float("nan")) if level is not None else v


def err_key(result: dict) -> str:
    return "test_error" if "test_error" in result else "test_nmse"


def checks_md(checks: list[dict]) -> str:
    if not checks:
        return ""
    return table(["check", "result", "value"],
                 [[c["check"], "PASS" if c["pass"] else "FAIL", c["value"]] for c in checks])


def conditions(root: Path) -> str:
    """One sentence on how the last computing invocation of a sweep ran (from its sweep.json)."""
    f = Path(root) / "sweep.json"
    if not f.is_file():
        return ""
    s = read_json(f)
    return (f"Last computing run: {s['cells_run']} cells ({s['cells_skipped']} already there) in "
            f"{s['wall_seconds'] / 60:.1f} min with {s['workers']} worker(s); load average "
            f"{s['loadavg_start'][0]:.1f} at the start, {s['loadavg_end'][0]:.1f} at the end (2-core machine; "
            f"a load above 2 means other jobs shared it).")
