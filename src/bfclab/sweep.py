"""Declarative, resumable sweeps: methods x n x seeds x target overrides -> one tidy table.

A grid file (YAML or JSON) looks like::

    name: sample-complexity
    base:                      # any subset of the run config, applied to every cell
      train: {steps_per_stage: 8000}
    grid:                      # the cartesian product of these dotted keys is the set of cells
      method: [bfc, layerwise, krr-poly]
      data.n_train: [2000, 20000]
      seed: [0, 1, 2]
    baseline:                  # options of each non-deep method (bfclab.baselines.registry)
      krr-poly: {degree: 8}

``grid`` may also be a list of such mappings: the cells are then the union of their products.

Each cell runs into its own directory ``OUT/cells/<cell id>/``; a cell whose ``result.json``
exists is finished and skipped, and a cell is only ever finished by the atomic rename of that
file, so a sweep killed at any point resumes without losing or repeating a cell.  Cells are
independent and idempotent and run behind a small :class:`Executor` interface (``run(fn, jobs)``:
serial, a local process pool, or Ray, :class:`RayExecutor`, on a local instance or a cluster),
whose jobs are single cells and batched groups.  ``collect`` gathers every ``result.json`` into
one table, a row per cell: config columns and metrics.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import itertools
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
from tqdm import tqdm

from .baselines.fit import run_baseline
from .batched import group_key, train_many
from .baselines.registry import ESTIMATORS, check_applies, resolve_options
from .config import ConfigError, RunConfig, apply_mapping, load_file, set_key, to_dict
from .methods import METHODS, DivergenceError, is_deep, parse_method
from .results import Result, atomic_write_bytes, dumps, error_names, read_json_mapping, write_json
from .nets import NETS, train_net, validate_net
from .nets import check_applies as check_applies_net
from .target import Target
from .targets import Quadratic, make_target, validate_target
from .training import CHECKPOINT, load_checkpoint, train, validate

def uses_net(cfg: RunConfig) -> bool:
    """A deep cell trained as a generic net (:mod:`bfclab.nets`) rather than by the quadratic
    class's learner (:mod:`bfclab.training`)."""
    return cfg.learner.kind in NETS


def check_net(cfg: RunConfig) -> None:
    """A generic-net cell's config, and that its net can be built for its target (a ``cnn``
    needs a patch structure; one-line errors naming both)."""
    validate_net(cfg)
    if cfg.learner.kind == "cnn":
        quadratic = cfg.target.kind == "quadratic"  # its protocol view has no patch: no need to build it
        check_applies_net(Quadratic if quadratic else make_target(cfg.target, cfg.data), cfg.learner)


def check_method(method: str) -> None:
    """A deep training method (bfclab.training) or a baseline name (bfclab.baselines.registry)."""
    if is_deep(method):
        parse_method(method)
        return
    if method not in ESTIMATORS:
        raise ConfigError(f"grid key 'method': unknown {method!r}; accepted: {METHODS}, "
                          f"or a baseline: {', '.join(ESTIMATORS)}")


@dataclass(frozen=True)
class Cell:
    """One point of a grid: the overrides that make its config (dotted key -> value)."""

    overrides: tuple  # sorted (key, value) pairs; values JSON-able
    base: str = "{}"  # JSON of the grid's base mapping
    baseline: str = "{}"  # JSON of the baseline options of this cell's method

    @property
    def params(self) -> dict:
        return dict(self.overrides)

    @property
    def method(self) -> str:
        return str(self.params.get("method", "bfc"))

    @property
    def id(self) -> str:
        """Readable and unique: key=value parts plus a short hash of what defines the cell (its
        overrides, the grid's base and the baseline options)."""
        parts = [f"{k.split('.')[-1]}={v}" for k, v in self.overrides]
        slug = "_".join(parts).replace(":", "-").replace("/", "-").replace(" ", "")
        digest = hashlib.sha1(json.dumps([self.overrides, self.base, self.baseline]).encode()).hexdigest()[:8]
        return f"{slug[:80]}_{digest}"

    def finished(self, root: str | Path) -> bool:
        """True when the cell's result.json exists and was made with a compatible config: every key
        that both the stored config and today's resolved config have holds the same value (a
        newly added config field does not make a stored result stale)."""
        f = Path(root) / "cells" / self.id / "result.json"
        if not f.exists():
            return False
        return compatible(_stored_config(f), to_dict(self.config()))

    def conflict(self, root: str | Path) -> str | None:
        """When the cell's folder holds a result of a different config (say, a default changed
        since it ran): the first key that differs, as text; else None."""
        f = Path(root) / "cells" / self.id / "result.json"
        if not f.exists():
            return None
        stored, now = _stored_config(f), json.loads(dumps(to_dict(self.config())))
        diff = _shared_difference(stored, now)
        return None if diff is None else f"{self.id}: key {diff[0]} is {diff[1]!r} there, {diff[2]!r} now"

    def config(self) -> RunConfig:
        """The cell's run config (for a baseline, ``method`` is the baseline's name)."""
        cfg = RunConfig()
        apply_mapping(cfg, json.loads(self.base))
        for k, v in self.overrides:
            if k == "method":
                cfg.method = str(v)
            else:
                set_key(cfg, k, v)
        return cfg


#: what a damaged cell file's error tells the user to do
REMEDY = "delete the cell's folder or run with --overwrite"


def _stored_config(f: Path) -> dict:
    """The config stored in a cell's result.json (one-line error when the file is damaged)."""
    res = read_json_mapping(f, "result file", REMEDY)
    cfg = res.get("config", {})
    if not isinstance(cfg, dict):
        raise ConfigError(f"result file '{f}': field 'config' must be a mapping; {REMEDY}")
    try:  # everything the sweep's table and the reports will read of it
        Result.from_json(res)
    except ValueError as e:
        raise ConfigError(f"result file '{f}': {e}; {REMEDY}") from None
    return cfg


def _shared_difference(a, b, key: str = ""):
    """The first key shared by two nested mappings whose values differ: (key, a's, b's) or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a.keys() & b.keys():
            diff = _shared_difference(a[k], b[k], f"{key}.{k}" if key else k)
            if diff:
                return diff
        return None
    return None if dumps(a, indent=None) == dumps(b, indent=None) else (key, a, b)


def compatible(a, b) -> bool:
    """Equal on every key the two nested mappings share (values compared after a JSON round trip)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(compatible(a[k], b[k]) for k in a.keys() & b.keys())
    return dumps(a, indent=None) == dumps(b, indent=None)


@dataclass
class Grid:
    name: str
    cells: list[Cell] = field(default_factory=list)


def expand(spec: dict, name: str = "sweep") -> Grid:
    """A grid mapping -> its cells (validated: every key must be a config key).  The experiments
    of PAPER_NOTES §7.3 are such grids."""
    if not isinstance(spec, dict):
        raise ConfigError("grid file: expected a mapping with 'grid' (and optionally 'base', 'baseline', 'name')")
    unknown = set(spec) - {"name", "base", "grid", "baseline"}
    if unknown:
        raise ConfigError(f"grid file: unknown section '{sorted(map(str, unknown))[0]}'; accepted: name, base, grid, "
                          f"baseline")
    grids = spec.get("grid") or {}
    grids = grids if isinstance(grids, list) else [grids]
    if not grids or not all(isinstance(g, dict) and g for g in grids):
        raise ConfigError("grid file: 'grid' must map config keys to lists of values (or be a list of such maps)")
    for g in grids:
        bad = next((k for k in g if not isinstance(k, str)), None)
        if bad is not None:
            raise ConfigError(f"grid key {bad!r}: keys are config keys (strings like 'data.n_train')")
        for k, v in g.items():
            try:
                json.dumps(v, sort_keys=True, allow_nan=True)
            except (TypeError, ValueError):
                raise ConfigError(f"grid key '{k}': values must be numbers, strings, lists or mappings "
                                  f"(with string keys)") from None
    base = spec.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"grid file: 'base' must be a mapping of config keys, got {type(base).__name__}")
    baseline = spec.get("baseline") or {}
    if not isinstance(baseline, dict) or not all(isinstance(v, dict) for v in baseline.values() if v is not None):
        raise ConfigError("grid file: 'baseline' must map baseline method names to mappings of their options")
    for section, value in (("base", base), ("baseline", baseline)):
        try:  # each cell stores them as JSON (its id is a hash of that text)
            json.dumps(value, sort_keys=True)
        except (TypeError, ValueError):
            raise ConfigError(f"grid file: '{section}' must hold numbers, strings, lists and mappings with string "
                              f"keys") from None
    probe = RunConfig()
    apply_mapping(probe, base)  # validates the base keys
    methods = {str(m) for g in grids for m in _as_list(g.get("method", "bfc"))}
    for bname in baseline:
        if bname not in methods or is_deep(bname):
            raise ConfigError(f"grid file: 'baseline.{bname}' names no baseline method of the grid; "
                              f"the grid's baselines: {', '.join(sorted(m for m in methods if not is_deep(m))) or 'none'}")
    cells: list[Cell] = []
    for grid in grids:
        cells += _product(grid, base, baseline, probe)
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError("grid file: the sub-grids list the same cell twice")
    return Grid(str(spec.get("name", name)), cells)


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def _product(grid: dict, base: dict, baseline: dict, probe: RunConfig) -> list[Cell]:
    """The cells of one cartesian grid, each validated (config keys and values, method names,
    baseline options)."""
    keys = sorted(grid)
    values = [_as_list(grid[k]) for k in keys]
    for k, vals in zip(keys, values):
        if len({json.dumps(v, sort_keys=True) for v in vals}) != len(vals):
            raise ConfigError(f"grid key '{k}': a value is listed twice")
    cells = []
    for combo in itertools.product(*values):
        ov = tuple(zip(keys, combo))
        method = str(dict(ov).get("method", "bfc"))
        check_method(method)
        test = copy.deepcopy(probe)
        for k, v in ov:
            if k != "method":
                set_key(test, k, v)
        opts = baseline.get(method, {}) if not is_deep(method) else {}
        if is_deep(method):
            test.method = method
            if uses_net(test):
                check_net(test)
            else:
                validate(test)
        else:
            check_applies(method, test.target.kind)
            validate_target(test.target)
            resolve_options(method, opts)
        cells.append(Cell(ov, json.dumps(base, sort_keys=True), json.dumps(opts, sort_keys=True)))
    return cells


def load_grid(path: str | Path) -> Grid:
    """The grid of a YAML/JSON grid file (see :func:`expand`; PAPER_NOTES §7.3)."""
    return expand(load_file(path), name=Path(path).stem)


# ---- running one cell ----------------------------------------------------------------------


def run_cell(cell: Cell, root: str | Path, threads: int = 1) -> str:
    """Run one cell into ``root/cells/<id>`` unless it is finished; return its directory.

    Idempotent: a leftover directory without ``result.json`` (a killed run) continues from its
    checkpoint when it has a valid one for this config, and is cleared and rerun otherwise.
    ``threads``: torch threads for this cell (1 when cells run side by side).
    """
    d = Path(root) / "cells" / cell.id
    if cell.finished(root):
        return str(d)
    with cell_lock(cell, root):
        if cell.finished(root):  # finished while we waited for the lock
            return str(d)
        _run_cell_locked(cell, d, threads)
    return str(d)


class CellBusy(RuntimeError):
    """The cell is being run by another process."""


@contextlib.contextmanager
def cell_lock(cell: Cell, root: str | Path):
    """Hold the cell's file lock (CellBusy when another sweep process on this folder holds it)."""
    import fcntl  # POSIX only: here, so that `import bfclab` works everywhere

    lock_dir = Path(root) / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{cell.id}.lock", "w") as lock:
        try:  # another sweep process on the same folder is running this cell: leave it alone
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CellBusy(cell.id) from None
        yield


def _fresh_cell_dir(cell: Cell, d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "cell.json", {"overrides": dict(cell.overrides), "base": json.loads(cell.base),
                                 "baseline": json.loads(cell.baseline)})


#: the most members of one batched group (memory: each holds its training sample)
MAX_MEMBERS = 64


def batch_groups(cells: list[Cell], root: str | Path) -> tuple[list[list[Cell]], list[Cell]]:
    """The deep cells that start afresh, grouped for :mod:`bfclab.batched` (equal
    :func:`~bfclab.batched.group_key`, at most ``MAX_MEMBERS`` a group, two or more), and the
    cells left to run one by one (baselines, cells with a checkpoint to continue, singletons)."""
    groups: dict[str, list[Cell]] = {}
    rest = []
    for c in cells:
        if is_deep(c.method) and not uses_net(c.config()) and not (Path(root) / "cells" / c.id / CHECKPOINT).exists():
            groups.setdefault(group_key(c.config()), []).append(c)
        else:
            rest.append(c)
    chunks = [g[i:i + MAX_MEMBERS] for g in groups.values() for i in range(0, len(g), MAX_MEMBERS)]
    rest += [c for g in chunks if len(g) == 1 for c in g]
    return [g for g in chunks if len(g) > 1], rest


#: a group is not split below this many members to balance the workers (the step cost per member
#: rises steeply below it: docs/bench_throughput.md, "One training step")
MIN_SPLIT = 4


def balance(groups: list[list[Cell]], workers: int) -> list[list[Cell]]:
    """Split the largest groups in halves until the workers can take equal numbers of them (or a
    half would fall below ``MIN_SPLIT``), largest first, so that no worker ends with one more
    group than the others: three groups of 12 on two workers become 12, 12, 6, 6."""
    groups = sorted(groups, key=len, reverse=True)
    while workers > 1 and len(groups) % workers and len(groups[0]) >= 2 * MIN_SPLIT:
        big = groups.pop(0)
        groups += [big[: len(big) // 2], big[len(big) // 2:]]
        groups.sort(key=len, reverse=True)
    return groups


def _group_job(cells: list[Cell], root: str, threads: int) -> list[tuple[str, str | None]]:
    """:func:`run_group` in a worker process: (cell id, error) for each cell."""
    if threads > 0:
        torch.set_num_threads(int(threads))
    outcome: list[tuple[str, str | None]] = []
    run_group(cells, root, lambda c, err: outcome.append((c.id, err)))
    return outcome


def run_groups(groups: list[list[Cell]], root: str | Path, executor: "Executor", threads: int,
               done: Callable[[Cell, str | None], None]) -> None:
    """Every batched group as one job of ``executor`` (``threads`` torch threads each in a worker;
    the caller's setting in this process)."""
    by_id = {c.id: c for g in groups for c in g}
    for group, outcome, err in executor.run(partial(_group_job, root=str(root), threads=threads), groups):
        if err is not None:
            for c in group:
                done(c, f"{type(err).__name__}: {err}")
            continue
        for cid, cell_err in outcome:
            done(by_id[cid], cell_err)


def run_group(cells: list[Cell], root: str | Path, done: Callable[[Cell, str | None], None]) -> None:
    """Run a batched group of cells into their own folders (as :func:`run_cell` would one by
    one): busy cells are left to the process that holds them; a member that diverges gets the
    usual diverged result.json."""
    with contextlib.ExitStack() as stack:
        mine = []
        for c in cells:
            try:
                stack.enter_context(cell_lock(c, root))
                mine.append(c)
            except CellBusy as e:
                done(c, f"CellBusy: {e}")
        mine = [c for c in mine if not c.finished(root)]
        dirs = [Path(root) / "cells" / c.id for c in mine]
        try:
            for c, d in zip(mine, dirs):
                _fresh_cell_dir(c, d)
            cfgs = [c.config() for c in mine]
            shared: dict[str, Target] = {}  # members on one target share it (its Monte-Carlo normalisation)
            for cfg in cfgs:
                key = dumps(to_dict(cfg.target))
                if key not in shared:
                    shared[key] = Target.from_config(cfg.target)
            targets = [shared[dumps(to_dict(cfg.target))] for cfg in cfgs]
            outcome = train_many(cfgs, dirs, targets=targets)
        except Exception as e:  # noqa: BLE001 - the group's cells fail together, the sweep goes on
            for c in mine:
                done(c, f"{type(e).__name__}: {e}")
            return
        for c, d, res in zip(mine, dirs, outcome):
            if isinstance(res, DivergenceError):
                write_json(d / "result.json", diverged_result(c.config(), str(res)))
            done(c, None)


def _run_cell_locked(cell: Cell, d: Path, threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(int(threads))
    cfg = cell.config()
    resume = False
    if is_deep(cell.method) and not uses_net(cfg) and (d / CHECKPOINT).exists() and not (d / "result.json").exists():
        try:  # a killed cell: continue it where its checkpoint stands
            load_checkpoint(d / CHECKPOINT, cfg)
            resume = True
        except ConfigError:  # damaged, or made for another config: start the cell again
            resume = False
    if not resume:
        _fresh_cell_dir(cell, d)
    else:
        write_json(d / "cell.json", {"overrides": dict(cell.overrides), "base": json.loads(cell.base),
                                     "baseline": json.loads(cell.baseline)})
    if is_deep(cell.method) and uses_net(cfg):
        try:
            train_net(cfg, d, progress=False, log=lambda s: None)
        except DivergenceError as e:  # the metric names of the target's own task
            write_json(d / "result.json", diverged_result(cfg, str(e), make_target(cfg.target, cfg.data).task))
    elif is_deep(cell.method):
        try:
            train(cfg, d, resume=resume, progress=False, log=lambda s: None)
        except DivergenceError as e:  # a diverged cell is a result too, recorded as such
            write_json(d / "result.json", diverged_result(cfg, str(e)))
    else:
        run_baseline(cell.method, json.loads(cell.baseline), cfg, d)


def diverged_result(cfg: RunConfig, why: str, task: str | None = None) -> dict:
    """A result.json of the usual shape for a run that diverged (its errors are nan); ``task``
    is the target's (``cfg.data.task`` for the quadratic class)."""
    nan = float("nan")
    return Result(method=cfg.method, seed=cfg.seed, config=to_dict(cfg), seconds=nan,
                  metrics={k: nan for k in error_names(task or cfg.data.task)}, extra={"diverged": why}).to_json()


# ---- executors --------------------------------------------------------------------------------


class Executor(Protocol):
    """Runs independent, idempotent jobs (cells or batched groups): ``run(fn, jobs)`` yields
    ``(job, fn(job), None)`` or ``(job, None, exception)`` for each job as it ends."""

    def run(self, fn: Callable[[Any], Any], jobs: list) -> Iterator[tuple[Any, Any, BaseException | None]]: ...


class SerialExecutor:
    """In this process, one job after another."""

    def run(self, fn, jobs):
        for j in jobs:
            try:
                out = fn(j)
            except Exception as e:  # noqa: BLE001 - one bad job must not stop the sweep
                yield j, None, e
                continue
            yield j, out, None


class ProcessExecutor:
    """A local pool of worker processes (one torch thread each by default)."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))

    def run(self, fn, jobs):
        if not jobs:
            return
        with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as pool:
            pending = {pool.submit(fn, j): j for j in jobs}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    j = pending.pop(fut)
                    err = fut.exception()
                    yield j, (fut.result() if err is None else None), err


class RayExecutor:
    """Jobs as Ray tasks (``pip install bfclab[ray]``): on a local Ray instance of ``workers``
    CPUs started for the sweep (and shut down after it), or on the cluster at ``address``
    (``ray start --head``; every node needs bfclab installed and the sweep folder on a shared
    filesystem).  A task whose worker process dies is retried ``retries`` times (the cell's file
    lock dies with it, and the rerun continues from the cell's checkpoint); an exception raised
    by the cell itself is not retried, it is the cell's error.  Each task asks for ``threads``
    CPUs."""

    def __init__(self, workers: int = 2, address: str | None = None, retries: int = 1, threads: int = 1):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray: Ray is not installed (pip install 'bfclab[ray]'); "
                              "accepted without it: process") from None
        self.workers, self.address, self.retries, self.threads = max(1, int(workers)), address, int(retries), threads

    @contextlib.contextmanager
    def session(self):
        import ray

        started = False
        if not ray.is_initialized():
            kw = {"address": self.address} if self.address else {"num_cpus": self.workers}
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kw)
            started = True
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()

    def run(self, fn, jobs):
        if not jobs:
            return
        with self.session() as ray:
            task = ray.remote(_call).options(max_retries=self.retries, retry_exceptions=False,
                                             num_cpus=max(1, int(self.threads)))
            pending = {task.remote(fn, j): j for j in jobs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    j = pending.pop(ref)
                    try:
                        yield j, ray.get(ref), None
                    except ray.exceptions.RayTaskError as e:  # the job's own exception
                        yield j, None, e.as_instanceof_cause()
                    except ray.exceptions.RayError as e:  # the worker died more often than retried
                        yield j, None, e


def _call(fn, job):
    return fn(job)


EXECUTORS = ("process", "ray")


def make_executor(name: str, workers: int, address: str | None = None, threads: int = 1) -> Executor:
    """``process``: this process (``workers`` <= 1) or a local pool; ``ray``: :class:`RayExecutor`."""
    if name == "ray":
        return RayExecutor(workers, address, threads=threads)
    if name != "process":
        raise ConfigError(f"--executor: unknown {name!r}; accepted: {', '.join(EXECUTORS)}")
    if address is not None:
        raise ConfigError("--address: only with --executor ray")
    return ProcessExecutor(workers) if workers > 1 else SerialExecutor()


def clear_diverged(grid: Grid, root: str | Path) -> list[str]:
    """Remove the folders of ``grid``'s finished cells whose result says the run diverged, so that
    the next sweep trains them afresh (after a change of the divergence rule, say); return their
    ids.  Nothing else is touched: finished runs that did not diverge and unfinished cells stay."""
    root, gone = Path(root), []
    for c in grid.cells:
        d = root / "cells" / c.id
        if c.finished(root) and Result.read(d / "result.json").diverged:
            shutil.rmtree(d)
            gone.append(c.id)
    return gone


def run_sweep(grid: Grid, root: str | Path, workers: int = 1, progress: bool | None = None,
              threads: int = 1, overwrite: bool = False, batched: bool = True, executor: str = "process",
              address: str | None = None) -> list[dict]:
    """Run every unfinished cell of ``grid`` into ``root`` (``threads`` torch threads per cell);
    return the collected rows (the PAPER_NOTES §7.3 experiments are run this way).

    ``batched``: deep cells that start afresh and share a growth plan and shapes train together
    (:func:`batch_groups`, :mod:`bfclab.batched`), a group per job; the other cells run one per
    job.  ``executor``: ``process`` (this process when ``workers`` <= 1, else a local pool of
    ``workers``) or ``ray`` (:class:`RayExecutor`: a local instance of ``workers`` CPUs, or the
    cluster at ``address``).

    A cell whose folder holds the result of a different config is never replaced silently: the
    sweep stops before running anything, naming the cell and the key, unless ``overwrite``.
    """
    root = Path(root)
    pool = make_executor(executor, workers, address, threads)
    conflicts = [c for c in (cell.conflict(root) for cell in grid.cells) if c]
    if conflicts and not overwrite:
        raise ConfigError(f"sweep folder '{root}': {len(conflicts)} cell(s) hold results of a different config "
                          f"(first: {conflicts[0]}); use --overwrite to replace them")
    for name in ("grid.json", "sweep.json", "table.csv"):  # what the sweep (re)writes at its top level
        f = root / name
        if f.exists() and not f.is_file():
            raise ConfigError(f"sweep file '{f}': not a regular file (the sweep writes it); move it away")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out '{root}': cannot create the sweep folder ({e.strerror or type(e).__name__})") from None
    write_json(root / "grid.json", {"name": grid.name, "cells": [c.id for c in grid.cells]})
    todo = [c for c in grid.cells if not c.finished(root)]
    skipped = len(grid.cells) - len(todo)
    progress = sys.stderr.isatty() if progress is None else progress
    bar = None
    if progress:
        bar = tqdm(total=len(grid.cells), initial=skipped, desc=grid.name, dynamic_ncols=True)
    else:
        print(f"[{grid.name}] {len(grid.cells)} cells, {skipped} already finished", file=sys.stderr, flush=True)
    errors: list[str] = []
    busy: list[str] = []

    def done(cell: Cell, err: str | None) -> None:
        if err and err.startswith("CellBusy"):  # not a failure: another sweep holds the cell's lock
            busy.append(cell.id)
            tag, err = "BUSY ", "running in another process; left to it"
        else:
            tag = "FAILED " if err else ""
            if err:
                errors.append(f"{cell.id}: {err}")
        if bar is not None:
            bar.update(1)
        else:
            print(f"[{grid.name}] {tag}{cell.id}" + (f" ({err})" if err else ""), file=sys.stderr, flush=True)

    t0, load0 = time.time(), os.getloadavg()
    groups, single = batch_groups(todo, root) if batched else ([], todo)
    groups = balance(groups, workers)
    # worker processes run `threads` torch threads each; in-process jobs leave the caller's setting
    threads_in_job = 0 if isinstance(pool, SerialExecutor) else threads
    if isinstance(pool, RayExecutor):
        with pool.session():  # one Ray instance for the groups and the single cells
            _run_jobs(pool, groups, single, root, threads_in_job, done)
    else:
        _run_jobs(pool, groups, single, root, threads_in_job, done)
    if bar is not None:
        bar.close()
    if todo:  # conditions of the last invocation that ran something
        write_json(root / "sweep.json", {"cells_run": len(todo), "cells_skipped": skipped, "workers": workers,
                                         "executor": executor,
                                         "batched_groups": [len(g) for g in groups],
                                         "threads_per_cell": threads, "wall_seconds": time.time() - t0,
                                         "loadavg_start": list(load0), "loadavg_end": list(os.getloadavg()),
                                         **machine(),
                                         "errors": errors, "busy": busy})
    rows = collect(root, grid)
    write_table(rows, root / "table.csv")
    if errors:
        print(f"[{grid.name}] {len(errors)} cell(s) failed; first: {errors[0]}", file=sys.stderr)
    return rows


def _run_jobs(pool: Executor, groups: list[list[Cell]], single: list[Cell], root: Path, threads: int,
              done: Callable[[Cell, str | None], None]) -> None:
    run_groups(groups, root, pool, threads, done)
    for cell, _, err in pool.run(partial(run_cell, root=str(root), threads=threads), single):
        done(cell, None if err is None else f"{type(err).__name__}: {err}")


def machine() -> dict:
    """What the reports quote of the machine a sweep ran on: CPUs and total RAM (bytes)."""
    try:
        with open("/proc/meminfo") as f:
            mem = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mem = None
    return {"cpus": os.cpu_count(), "mem_total_bytes": mem}


# ---- the tidy table ------------------------------------------------------------------------------


def flatten(prefix: str, obj, out: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj


def row_of(result: Result, overrides: dict) -> dict:
    """A table row: the grid's keys, then scalar metrics and per-layer errors."""
    row = {k: v for k, v in overrides.items()}
    row.setdefault("method", result.method)
    row.setdefault("seed", result.seed)
    for key in ("test_nmse", "train_nmse", "test_error", "train_error"):
        if key in result.metrics:
            row[key] = result.metrics[key]
    row["seconds"] = result.seconds
    if result.diverged:
        row["diverged"] = result.diverged
    for key in ("feature_error", "weight_change"):
        for l, v in getattr(result, key).items():
            row[f"{key}.L{l}"] = v
    data = result.config.get("data")
    row.setdefault("data.n_train", data.get("n_train") if isinstance(data, dict) else None)
    return row


def collect(root: str | Path, grid: Grid | None = None) -> list[dict]:
    """One row per finished cell (of ``grid`` if given, else of every cell directory)."""
    root = Path(root)
    rows = []
    if grid is not None:  # the grid itself says what each cell's overrides are
        cells = [(c.id, c.params) for c in grid.cells if c.finished(root)]
    else:
        cells = [(p.parent.name, None) for p in sorted((root / "cells").glob("*/result.json"))]
    for cid, ov in cells:
        d = root / "cells" / cid
        stored_result = _read_cell_file(d / "result.json")
        try:
            res = Result.from_json(stored_result)
        except ValueError as e:
            raise ConfigError(f"cell file '{d / 'result.json'}': {e}; {REMEDY}") from None
        if ov is None:
            stored = _read_cell_file(d / "cell.json") if (d / "cell.json").exists() else {}
            ov = stored.get("overrides", {})
            if not isinstance(ov, dict):
                raise ConfigError(f"cell file '{d / 'cell.json'}': field 'overrides' must be a mapping")
        rows.append({"cell": cid, **row_of(res, ov)})
    return rows


def _read_cell_file(f: Path) -> dict:
    """A cell's JSON file as a mapping (one-line error naming the file when it is damaged)."""
    return read_json_mapping(f, "cell file", REMEDY)


def write_table(rows: list[dict], path: Path) -> None:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_bytes(Path(path), buf.getvalue().encode())
