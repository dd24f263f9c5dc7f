"""What every synthetic experiment shares: a grid run through the sweep runner, results read
back from run directories, medians with spread, and small Markdown helpers.

An experiment module defines ``spec(quick) -> grid mapping`` and ``summarize(root, figdir, quick=,
command=) -> Section`` (``command``: how a user computes its runs, printed in the section); the
registry in :mod:`bfclab.experiments` lists them.  Tables and figures are computed only from the
stored files under ``root``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..results import Result, read_json, read_records
from ..sweep import Cell, Grid, expand, run_sweep
from ..tables import markdown_table as table
from ..tables import CI_NOTE, med, spread, spread_ci  # noqa: F401 (the experiments' summary statistics)

# A tiny version of the default target for --quick runs (CI): same structure, seconds per run.
QUICK_BASE = {
    "target": {"d": 8, "widths": [2], "mc_samples": 5000, "var_samples": 20000},
    "data": {"n_train": 1000, "n_test": 1000},
    "train": {"steps_per_stage": 200, "batch_size": 128, "log_every": 50},
}


@dataclass
class Section:
    """A report section: Markdown text (figures linked by bare file name) and the document of
    ``docs/`` it goes to."""

    title: str
    markdown: str
    doc: str = "RESULTS.md"


@dataclass
class CellRun:
    params: dict
    dir: Path
    result: Result

    def records(self) -> list[dict]:
        """The run's metrics series (int level keys)."""
        return read_records(self.dir / "metrics.jsonl")


def run_grid(spec: dict, root: Path, workers: int = 2, progress: bool | None = None, threads: int = 1,
             overwrite: bool = False, batched: bool = True, executor: str = "process",
             address: str | None = None) -> Grid:
    grid = expand(spec, name=spec.get("name", root.name))
    run_sweep(grid, root, workers=workers, progress=progress, threads=threads, overwrite=overwrite, batched=batched,
              executor=executor, address=address)
    return grid


def load_cells(root: Path, spec: dict, diverged: bool = False) -> list[CellRun]:
    """The finished cells of ``spec`` under ``root`` (missing ones are left out); diverged runs
    only when ``diverged`` (see :func:`diverged_note`)."""
    grid = expand(spec)
    out = []
    for c in grid.cells:
        d = Path(root) / "cells" / c.id
        if c.finished(root):
            res = Result.read(d / "result.json")
            if bool(res.diverged) == diverged:
                out.append(CellRun(c.params, d, res))
    return out


def final_pairs(cells: list[CellRun]) -> list[tuple[float, list | None]]:
    """(final error, its 95 % test-set interval) of each cell, for :func:`spread_ci`."""
    return [(c.result.error, c.result.intervals.get(c.result.error_name)) for c in cells]


def stage_pairs(cells: list[CellRun], stage: int) -> list[tuple[float, list | None]]:
    """(error, interval) of each cell at the end of ``stage``, for :func:`spread_ci`."""
    out = []
    for c in cells:
        ek = c.result.error_name
        out.append((c.result.stage_value(stage, ek), c.result.stage_end.get(stage, {}).get(f"{ek}_ci")))
    return out


def diverged_note(root: Path, spec: dict, counted: bool = False) -> str:
    """A sentence naming the runs that diverged, or ''.  They are left out of every statistic,
    except where the summary ``counted`` them as failures (error inf) in its medians and
    thresholds (then they are left out of the spreads only)."""
    bad = load_cells(root, spec, diverged=True)
    if not bad:
        return ""
    names = "; ".join(f"{c.params} ({c.result.diverged})" for c in bad)
    how = ("count as failures (error inf) in the medians and smallest n, and are left out of the spreads"
           if counted else "are left out of the statistics")
    return f"{len(bad)} run(s) diverged and {how}: {names}."


def missing(root: Path, spec: dict) -> list[Cell]:
    return [c for c in expand(spec).cells if not c.finished(root)]


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
    cpus = s.get("cpus")
    machine = (f"{cpus} CPUs; a load above {cpus} means other jobs shared it" if cpus
               else "the machine's CPU count was not recorded")
    return (f"Last computing run: {s['cells_run']} cells ({s['cells_skipped']} already there) in "
            f"{s['wall_seconds'] / 60:.1f} min"
            + (f" ({s['rounds']} rounds of sweeps)" if s.get("rounds", 1) > 1 else "")
            + f" with {s['workers']} worker(s); load average "
            f"{s['loadavg_start'][0]:.1f} at the start, {s['loadavg_end'][0]:.1f} at the end ({machine}).")
