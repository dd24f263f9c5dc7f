"""The resumable sweep: grid expansion, idempotent cells, kill-and-resume."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from bfclab.config import ConfigError
from bfclab.sweep import expand, run_sweep

TINY_BASE = {
    "target": {"d": 6, "widths": [2], "mc_samples": 2000, "var_samples": 20000},
    "data": {"n_train": 256, "n_test": 256},
    "train": {"steps_per_stage": 30, "batch_size": 32, "log_every": 30},
}


def test_expand_is_the_cartesian_product():
    g = expand({"base": TINY_BASE, "grid": {"method": ["bfc", "layerwise"], "seed": [0, 1, 2]}})
    assert len(g.cells) == 6
    assert len({c.id for c in g.cells}) == 6
    assert {(c.params["method"], c.params["seed"]) for c in g.cells} == {
        (m, s) for m in ("bfc", "layerwise") for s in (0, 1, 2)}
    cfg = g.cells[0].config()
    assert cfg.target.d == 6 and cfg.train.steps_per_stage == 30


@pytest.mark.parametrize("spec, needle", [
    ({"grid": {"train.nope": [1]}}, "train.nope"),
    ({"grid": {}}, "grid"),
    ({"grid": {"seed": [0]}, "extra": 1}, "extra"),
    ({"base": 1.0, "grid": [{"method": None}]}, "'base' must be a mapping"),  # found by tests/test_fuzz.py
    ({"base": {"train": {"lr": "x"}}, "grid": {"seed": [0]}}, "train.lr"),
    ({"grid": {"method": ["window:x"]}}, "method"),
    ({"grid": {"seed": [0, 0]}}, "seed"),
    ({"grid": {"data.n_train": [-5]}}, "data.n_train"),
    ({"grid": {"method": ["krr-poly"]}, "baseline": {"krr-ply": {}}}, "krr-ply"),
    ({"grid": {"method": ["krr-poly"]}, "baseline": {"krr-poly": {"degre": 2}}}, "degre"),
])
def test_bad_grid(spec, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        g = expand(spec)
        for c in g.cells:
            c.config()


def test_finished_cells_are_skipped(tmp_path):
    g = expand({"base": TINY_BASE, "grid": {"method": ["bfc"], "seed": [0, 1]}})
    rows = run_sweep(g, tmp_path, workers=1, progress=False)
    assert len(rows) == 2
    stamps = {c.id: os.stat(tmp_path / "cells" / c.id / "result.json").st_mtime_ns for c in g.cells}
    rows2 = run_sweep(g, tmp_path, workers=1, progress=False)
    assert [r["cell"] for r in rows2] == [r["cell"] for r in rows]
    for c in g.cells:
        assert os.stat(tmp_path / "cells" / c.id / "result.json").st_mtime_ns == stamps[c.id]


def test_killed_sweep_resumes_without_losing_or_repeating_a_cell(tmp_path):
    grid = {"name": "kill", "base": TINY_BASE,
            "grid": {"method": ["bfc", "layerwise", "e2e"], "seed": [0, 1], "train.lr": [0.01]}}
    gfile = tmp_path / "grid.yaml"
    gfile.write_text(yaml.safe_dump(grid))
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "bfclab.cli", "sweep", str(gfile), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        done = list(out.glob("cells/*/result.json"))
        if len(done) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, mid-sweep
    proc.wait()
    first = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    assert 2 <= len(first) < 6, "the kill must land mid-way"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert len({r["cell"] for r in rows}) == 6
    assert sorted((r["method"], r["seed"]) for r in rows) == sorted(
        (m, str(s)) for m in ("bfc", "layerwise", "e2e") for s in (0, 1))
    for cid, stamp in first.items():  # cells finished before the kill were not run again
        assert (out / "cells" / cid / "result.json").stat().st_mtime_ns == stamp


def test_example_grid_expands():
    from pathlib import Path

    from bfclab.sweep import load_grid

    g = load_grid(Path(__file__).parents[1] / "examples" / "grid.yaml")
    assert len(g.cells) == 16
    krr = [c for c in g.cells if c.method == "krr-poly"]
    assert krr and all('"degree": 4' in c.baseline for c in krr)


def test_a_diverged_cell_is_a_result_and_summaries_leave_it_out(tmp_path):
    import math

    from bfclab.experiments.common import diverged_note, load_cells, spread
    from bfclab.results import read_json

    spec = {"base": {**TINY_BASE, "train": {**TINY_BASE["train"], "optimizer": "sgd", "clip": 0.0}},
            "grid": {"method": ["bfc"], "train.lr": [0.01, 1e8]}}
    rows = run_sweep(expand(spec), tmp_path, workers=1, progress=False)
    assert len(rows) == 2
    bad = [r for r in rows if r.get("diverged")]
    assert len(bad) == 1 and math.isnan(float(bad[0]["test_nmse"]))
    ok = load_cells(tmp_path, spec)
    assert len(ok) == 1 and ok[0].params["train.lr"] == 0.01
    assert "diverged" in diverged_note(tmp_path, spec)
    res = read_json(next(tmp_path.glob("cells/*lr=1*/result.json")))
    assert math.isnan(res["test_nmse"]) and res["stage_end"] == {}
    assert spread([1e-3, float("nan")]) == spread([1e-3])

    # --rerun-diverged (clear_diverged): only the diverged cell is removed, and the next sweep trains
    # it (alone) again; the finished good cell is kept as it was
    from bfclab.sweep import clear_diverged

    good = ok[0].dir / "result.json"
    before = good.read_bytes()
    gone = clear_diverged(expand(spec), tmp_path)
    assert gone == [c.id for c in expand(spec).cells if c.params["train.lr"] == 1e8]
    assert not (tmp_path / "cells" / gone[0]).exists() and good.read_bytes() == before
    assert len(load_cells(tmp_path, spec, diverged=True)) == 0
    run_sweep(expand(spec), tmp_path, workers=1, progress=False)
    assert read_json(tmp_path / "sweep.json")["cells_run"] == 1 and good.read_bytes() == before
    assert clear_diverged(expand({**spec, "grid": {"method": ["bfc"], "train.lr": [0.01]}}), tmp_path) == []


def test_stored_results_hold_only_finished_cells():
    """Every cell folder kept in the repository's results/ has its result.json, kept with it.  The
    repository ships results/ (the sweeps behind docs/RESULTS.md), so finding no cells is a failure."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).parents[1]
    try:
        r = subprocess.run(["git", "ls-files", "-z", "results"], cwd=repo, capture_output=True, text=True)
        in_git = r.returncode == 0
    except FileNotFoundError:  # no git on this machine
        in_git = False
    if in_git:
        files = {p for p in r.stdout.split("\0") if p}
    else:  # a source archive, not a checkout: the files as they lie
        files = {p.relative_to(repo).as_posix() for p in (repo / "results").rglob("*") if p.is_file()}
    cells = set()
    for p in files:
        parts = Path(p).parts
        if "cells" in parts and len(parts) > parts.index("cells") + 2:
            cells.add(Path(*parts[: parts.index("cells") + 2]).as_posix())
    assert cells, f"no sweep cells under {repo / 'results'} ({'git ls-files' if in_git else 'on disk'})"
    missing = sorted(c for c in cells if f"{c}/result.json" not in files or not (repo / c / "result.json").is_file())
    assert not missing, f"{len(missing)} of {len(cells)} stored cells lack result.json: {missing[:5]}"


def test_changed_default_stops_the_sweep_new_field_does_not(tmp_path):
    import json

    g = expand({"base": TINY_BASE, "grid": {"method": ["bfc"], "seed": [0]}})
    run_sweep(g, tmp_path, workers=1, progress=False)
    cell = g.cells[0]
    f = tmp_path / "cells" / cell.id / "result.json"
    res = json.loads(f.read_text())
    del res["config"]["train"]["lr"]  # a field the stored run did not know yet: still compatible
    f.write_text(json.dumps(res))
    assert cell.finished(tmp_path)
    res["config"]["train"]["momentum"] = 0.5  # a value that differs from today's resolved config
    f.write_text(json.dumps(res))
    assert not cell.finished(tmp_path)
    before = f.read_bytes()
    with pytest.raises(ConfigError) as e:  # never replaced silently
        run_sweep(g, tmp_path, workers=1, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "--overwrite" in msg and "train.momentum" in msg and cell.id in msg
    assert f.read_bytes() == before
    run_sweep(g, tmp_path, workers=1, progress=False, overwrite=True)  # the stale cell is run again
    assert cell.finished(tmp_path)


@pytest.mark.parametrize("extra, needle", [
    (["--executor", "dask"], "--executor: unknown 'dask'; accepted: process, ray"),
    (["--address", "10.0.0.1:6379"], "--address: only with --executor ray"),
])
def test_bad_executor_one_line(tmp_path, capsys, extra, needle):
    from bfclab.cli import main

    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"base": TINY_BASE, "grid": {"method": ["bfc"], "seed": [0]}}))
    assert main(["sweep", str(grid), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(needle) and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_a_cell_held_by_another_sweep_is_left_to_it_not_failed(tmp_path, capsys):
    """A cell whose lock another sweep process holds is skipped and reported as busy: in
    sweep.json under "busy", not under "errors"; the other cells run."""
    from bfclab.results import read_json
    from bfclab.sweep import cell_lock

    g = expand({"base": TINY_BASE, "grid": {"method": ["bfc"], "seed": [0, 1]}})
    held = g.cells[0]
    with cell_lock(held, tmp_path):  # a second open file description: flock refuses it
        rows = run_sweep(g, tmp_path, workers=1, progress=False, batched=False)
    s = read_json(tmp_path / "sweep.json")
    assert s["busy"] == [held.id] and s["errors"] == []
    assert len(rows) == 1 and not held.finished(tmp_path) and g.cells[1].finished(tmp_path)
    err = capsys.readouterr().err
    assert f"BUSY {held.id}" in err and "FAILED" not in err
