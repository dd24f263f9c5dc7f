"""Protocols x seeds of one probe into an experiment folder, resumable (PAPER_NOTES §7.3 B).

Every (method, seed) run goes to ``OUT/<method>/seed<k>/`` (``window:1`` -> ``window-1``) with
``config.json`` (the resolved config), ``metrics.jsonl`` (one record per epoch, per stage end and
at the end) and ``result.json``; a run whose ``result.json`` already holds the same config is
kept, not trained again, and one holding a different config stops everything before any
training unless ``overwrite``.  The folder gets ``experiment.json`` (wall time and machine
conditions of the last invocation that trained), ``summary.md`` and ``probe.png``.

``bfclab images`` is a user of this runner (its own ``train_one``); ``bfclab probe SPEC`` loads
a spec factory from a Python file (:func:`load_factory`) and runs it here.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import ConfigError, to_dict
from ..methods import parse_method
from ..userfile import load_function
from ..results import atomic_write_bytes, dumps, read_json, read_json_mapping, write_json
from . import report
from .config import ProbeRunConfig, validate
from .train import ProbeRun, Spec


@dataclass
class SpecRunConfig(ProbeRunConfig):
    """A probe run of a spec file: ``spec`` is the ``FILE.py[:FUNC]`` it came from, ``tiny`` whether
    the factory was asked for its tiny size (``FUNC(seed, tiny=True)``, for smoke tests)."""

    spec: str = ""
    tiny: bool = False


def run_dir(out: Path, method: str, seed: int) -> Path:
    return Path(out) / method.replace(":", "-") / f"seed{seed}"


def stored_config(path: Path) -> dict | None:
    """The config in ``path/result.json`` (None when there is none; one-line error if damaged)."""
    f = path / "result.json"
    if not f.is_file():
        return None
    again = "use --overwrite to train it again"
    res = read_json_mapping(f, "result file", again)
    if not isinstance(res.get("config"), dict):
        raise ConfigError(f"result file '{f}': field 'config' must be a mapping; {again}")
    return res["config"]


def _as_json(cfg) -> dict:
    return json.loads(dumps(to_dict(cfg)))


def configs(base, methods: list[str], seeds: list[int]) -> list:
    """One copy of ``base`` per (method, seed), methods first."""
    out = []
    for method in methods:
        parse_method(method)
        for seed in seeds:
            cfg = copy.deepcopy(base)
            cfg.method, cfg.seed = method, seed
            out.append(cfg)
    return out


def missing_runs(base, methods: list[str], seeds: list[int], out: Path) -> list[tuple[str, int]]:
    """The (method, seed) runs without a result of their config under ``out``."""
    return [(c.method, c.seed) for c in configs(base, methods, seeds)
            if stored_config(run_dir(out, c.method, c.seed)) != _as_json(c)]


def run_all(base, methods: list[str], seeds: list[int], out: Path, train_one: Callable[[object, Path], dict],
            log: Callable[[str], None], overwrite: bool = False, prepare: Callable[[], None] | None = None) -> None:
    """Train every missing (method, seed) run with ``train_one(cfg, run_dir) -> result`` (which
    writes the run's files); keep the others.  ``prepare()`` runs after the config checks and
    before anything is written (say, loading the data, whose errors must stop everything)."""
    cfgs = configs(base, methods, seeds)
    for cfg in cfgs:
        stored = stored_config(run_dir(out, cfg.method, cfg.seed))
        if stored is not None and not overwrite and stored != _as_json(cfg):
            raise ConfigError(f"--out '{out}': {run_dir(out, cfg.method, cfg.seed)} holds a result of a different "
                              f"config; use --overwrite to replace it")
    if prepare is not None:
        prepare()
    t0, load0 = time.time(), os.getloadavg()
    trained = kept = 0
    for cfg in cfgs:
        path = run_dir(out, cfg.method, cfg.seed)
        if stored_config(path) == _as_json(cfg):
            kept += 1
            log(f"[{cfg.method} seed {cfg.seed}] kept {path / 'result.json'}")
            continue
        res = train_one(cfg, path)
        trained += 1
        metric = res.get("test_metric")
        log(f"[{cfg.method} seed {cfg.seed}] test={metric:.4f} ({res['seconds']:.1f}s) -> {path}")
    if trained:  # the timing of the last invocation that trained something
        write_json(Path(out) / "experiment.json", {
            "methods": methods, "seeds": seeds, "runs_trained": trained, "runs_kept": kept,
            "wall_seconds": time.time() - t0, "loadavg_start": list(load0), "loadavg_end": list(os.getloadavg()),
            "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "argv": sys.argv,
        })


def conditions(out: Path) -> str:
    """One sentence on the machine conditions of the last invocation that trained (or '')."""
    f = Path(out) / "experiment.json"
    if not f.is_file():
        return ""
    e = read_json(f)
    return (f"Last invocation that trained: {e['runs_trained']} runs trained, {e['runs_kept']} kept, wall time "
            f"{e['wall_seconds']:.0f} s ({e['wall_seconds'] / 60:.1f} min); {e['cpu_count']} CPUs, "
            f"OMP_NUM_THREADS={e['omp_num_threads']}, load average (1/5/15 min) "
            f"{'/'.join(f'{v:.2f}' for v in e['loadavg_start'])} at the start, "
            f"{'/'.join(f'{v:.2f}' for v in e['loadavg_end'])} at the end.")


def write_run(path: Path, cfg, run) -> dict:
    """Train ``run`` (a :class:`ProbeRun` or one with the same ``run()``) into ``path``:
    config.json first, metrics.jsonl as it goes, result.json (with the config) at the end."""
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "config.json", to_dict(cfg))
    (path / "metrics.jsonl").unlink(missing_ok=True)
    res = run.run()
    res["config"] = to_dict(cfg)
    write_json(path / "result.json", res)
    return res


# ---- spec files -----------------------------------------------------------------------------------

def load_factory(spec: str) -> Callable[..., Spec]:
    """``FILE.py[:FUNC]`` -> the function FUNC (default ``make``) of that file, which takes the seed
    (and optionally ``tiny=``) and returns a :class:`Spec`.  One-line errors."""
    path, _, func = spec.partition(":")
    func = func or "make"
    return load_function(path, func, "SPEC", f"{func}(seed) -> bfclab.probe.Spec")


def make_spec(factory: Callable[..., Spec], seed: int, tiny: bool) -> Spec:
    """Call the factory for ``seed`` (with ``tiny=`` when it takes it); check it returned a Spec."""
    takes_tiny = "tiny" in inspect.signature(factory).parameters
    if tiny and not takes_tiny:
        raise ConfigError("--tiny: the spec's factory takes no 'tiny' argument")
    try:
        spec = factory(seed, tiny=tiny) if takes_tiny else factory(seed)
    except Exception as e:  # the user's code: which call and why, in one line
        name = getattr(factory, "__name__", "factory")
        raise ConfigError(f"SPEC: {name}(seed={seed}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(spec, Spec):
        raise ConfigError(f"SPEC: the factory returned a {type(spec).__name__}, expected bfclab.probe.Spec")
    spec.check()
    return spec


def run_spec(factory: Callable[..., Spec], base: SpecRunConfig, methods: list[str], seeds: list[int], out: Path,
             progress: bool | None = None, log: Callable[[str], None] | None = None, overwrite: bool = False) -> str:
    """Every (method, seed) run of a spec factory into ``out``; returns the summary (also written
    to ``out/summary.md``, with ``out/probe.png``)."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    validate(base)

    def train_one(cfg, path: Path) -> dict:
        spec = make_spec(factory, cfg.seed, cfg.tiny)
        return write_run(path, cfg, ProbeRun(spec, cfg, path, progress=progress, log=log))

    run_all(base, methods, seeds, out, train_one, log, overwrite=overwrite,
            prepare=lambda: make_spec(factory, seeds[0], base.tiny))  # a broken spec stops before any file
    return summarize(out)


def markdown(out: Path, figdir: Path | None = None, experiment: str = "probe", prefix: str = "probe") -> str:
    """The probe's tables and figure for the runs under ``out`` (figure next to the results, or in
    ``figdir`` linked by bare file name, the ``bfclab report`` convention)."""
    runs = report.collect(out, experiment)
    if not runs:
        return f"No probe results under `{out}`.\n"
    name = f"{prefix}.png"
    target = (Path(figdir) if figdir is not None else Path(out)) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    first = next(iter(runs.values()))[0]
    report.plot(runs, target, title=f"{first.get('name', 'model')}: mean ± std over seeds")
    link = name if figdir is not None else str(target)
    parts = ["**Test metric** at the end and at each stage end (mean ± sample std over seeds)", report.metric_table(runs),
             "**Per block**: linear probe at the end of the block's own stage → at the end (gain ± std); relative "
             "weight change from the end of its own stage to the end; linear CKA of its features between those two "
             "points; the final network's loss of test metric when the block is put back to its end-of-own-stage "
             "state (revert cost) and, as a control, when it gets a random change of the same norm instead",
             report.block_table(runs), f"![probe]({link})"]
    cond = conditions(out)
    return "\n\n".join(parts + ([cond] if cond else [])) + "\n"


def summarize(out: Path) -> str:
    text = markdown(out)
    if Path(out).is_dir():
        atomic_write_bytes(Path(out) / "summary.md", text.encode())
    return text
