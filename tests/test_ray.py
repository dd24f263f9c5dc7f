"""The Ray executor (``bfclab sweep --executor ray``) on a local Ray instance: the same cells, the
same table as the process executor, and a killed worker's cell rerun exactly once."""

import csv
import os
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from bfclab.sweep import RayExecutor, cell_lock, expand, run_cell, run_sweep  # noqa: E402

TINY_BASE = {
    "target": {"d": 6, "widths": [2], "mc_samples": 2000, "var_samples": 20000},
    "data": {"n_train": 256, "n_test": 256},
    "train": {"steps_per_stage": 30, "batch_size": 32, "log_every": 30},
}
GRID = {"name": "quick", "base": TINY_BASE, "grid": {"method": ["bfc", "layerwise", "krr-poly"], "seed": [0, 1]},
        "baseline": {"krr-poly": {"degree": 2, "select_n": 200}}}
TIMING = {"seconds", "dir"}  # columns that differ between two runs of the same cell


@pytest.fixture(scope="module")
def local_ray():
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def table(path: Path) -> list[dict]:
    with open(path) as f:
        return sorted(({k: v for k, v in r.items() if k not in TIMING and not k.startswith("timings")}
                       for r in csv.DictReader(f)), key=lambda r: r["cell"])


ERRORS = {"test_nmse", "train_nmse"}


def assert_same_tables(a: list[dict], b: list[dict]) -> None:
    """Same cells, same columns, same values; the errors to float64 round-off amplified by a
    kernel solve (rel 1e-9): a worker's BLAS may run another thread count, so another summation
    order, than the driver's (CI saw 1e-14 relative differences on krr-rbf)."""
    assert [r["cell"] for r in a] == [r["cell"] for r in b]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for k in ra:
            if k in ERRORS:
                assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-9), (ra["cell"], k)
            else:
                assert ra[k] == rb[k], (ra["cell"], k)


def test_ray_gives_the_process_executors_table(tmp_path, local_ray):
    g = expand(GRID)
    run_sweep(g, tmp_path / "process", workers=2, progress=False)
    run_sweep(g, tmp_path / "ray", workers=2, progress=False, executor="ray")
    a, b = table(tmp_path / "process" / "table.csv"), table(tmp_path / "ray" / "table.csv")
    assert len(a) == len(g.cells) == 6
    assert_same_tables(a, b)
    # idempotent: a second Ray sweep finds every cell finished
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("result.json")}
    run_sweep(g, tmp_path / "ray", workers=2, progress=False, executor="ray")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("result.json")} == stamps


def kill_first_attempt(cell, root: str, log: str) -> str:
    """Run the cell, except on its first attempt: take its lock, then kill this worker process."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    if len(Path(log).read_text().split()) == 1:
        with cell_lock(cell, root):
            os._exit(1)  # the worker dies holding the lock
    return run_cell(cell, root)


def test_a_killed_workers_cell_is_rerun_exactly_once(tmp_path, local_ray):
    cell = expand({"base": TINY_BASE, "grid": {"method": ["bfc"], "seed": [0]}}).cells[0]
    log = tmp_path / "attempts.txt"
    from functools import partial

    out = list(RayExecutor(workers=2, retries=1).run(partial(kill_first_attempt, root=str(tmp_path), log=str(log)),
                                                   [cell]))
    assert len(out) == 1 and out[0][2] is None
    pids = log.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]  # two attempts in two worker processes
    assert cell.finished(tmp_path)


def test_a_cell_that_raises_is_not_retried(tmp_path, local_ray):
    log = tmp_path / "attempts.txt"

    def fail(job):
        with open(log, "a") as f:
            f.write("x\n")
        raise ValueError(f"bad cell {job}")

    out = list(RayExecutor(workers=2, retries=1).run(fail, ["a"]))
    assert isinstance(out[0][2], ValueError) and "bad cell a" in str(out[0][2])
    assert log.read_text().split() == ["x"]


def test_experiments_and_other_target_kinds_run_on_ray(tmp_path, local_ray, monkeypatch):
    """`bfclab experiment NAME --executor ray`: a generic-net grid on a user's own target (a path
    relative to the working directory) through Ray workers gives the process executor's table."""
    from bfclab.experiments.common import run_grid

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    spec = {"name": "own", "base": {"target": {"kind": "python:examples/own_target.py:make", "options": {"d": 6}},
                                    "learner": {"kind": "mlp", "width": 8},
                                    "data": {"n_train": 128, "n_test": 128, "n_monitor": 128},
                                    "train": {"steps_per_stage": 10, "log_every": 10}},
            "grid": {"method": ["bfc", "krr-rbf"], "seed": [0, 1]}}
    run_grid(spec, tmp_path / "ray", workers=2, progress=False, executor="ray")
    run_grid(spec, tmp_path / "process", workers=1, progress=False)
    assert_same_tables(table(tmp_path / "ray" / "table.csv"), table(tmp_path / "process" / "table.csv"))
