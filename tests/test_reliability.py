"""Nothing already written is lost (issue 8; the fault table of docs/RELIABILITY.md).

Each test tries one fault or bad input through the command line and checks: exit status 2, one
line on stderr naming the field or file (no traceback), and every file that existed before is
byte-identical afterwards.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bfclab import training as T
from bfclab.cli import main
from bfclab.results import read_json

TINY = ["--target.d", "6", "--target.widths", "[2]", "--target.mc_samples", "2000", "--target.var_samples", "20000",
        "--data.n_train", "256", "--data.n_test", "256", "--train.steps_per_stage", "20",
        "--train.batch_size", "32", "--train.log_every", "10"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def one_line_error(capsys, *needles: str, only: bool = True) -> str:
    """The error is one line; with ``only`` it is all of stderr, else (a fault in mid-run) it is
    the last line after the run's own progress lines."""
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert "Traceback" not in err and lines and lines[-1].startswith("bfclab: error:"), err
    assert len(lines) == 1 if only else all(not l.startswith("bfclab: error:") for l in lines[:-1]), err
    for n in needles:
        assert n in lines[-1], (n, err)
    return lines[-1]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "first"
    assert main(["train", "--out", str(out), *TINY]) == 0
    return out


def test_train_twice_keeps_the_first_run(finished_run, tmp_path, capsys):
    out = tmp_path / "r"
    shutil.copytree(finished_run, out)
    before = snapshot(out)
    assert main(["train", "--out", str(out), "--seed", "1", *TINY]) == 2
    one_line_error(capsys, str(out), "--resume", "--overwrite")
    assert snapshot(out) == before


def test_overwrite_replaces_the_run(finished_run, tmp_path, capsys):
    out = tmp_path / "r"
    shutil.copytree(finished_run, out)
    assert main(["train", "--out", str(out), "--seed", "1", "--overwrite", *TINY]) == 0
    assert read_json(out / "result.json")["seed"] == 1 and read_json(out / "config.json")["seed"] == 1


def test_resume_with_another_config_is_refused(finished_run, tmp_path, capsys):
    out = tmp_path / "r"
    shutil.copytree(finished_run, out)
    before = snapshot(out)
    assert main(["train", "--out", str(out), "--resume", "--train.lr", "0.003"]) == 2
    one_line_error(capsys, "train.lr", "--overwrite")
    assert snapshot(out) == before
    assert main(["train", "--out", str(out), "--resume"]) == 0  # same config: reported, nothing changes
    assert snapshot(out) == before


def test_resume_on_an_empty_folder_starts_afresh(tmp_path):
    assert main(["train", "--out", str(tmp_path / "new"), "--resume", *TINY]) == 0
    assert (tmp_path / "new" / "result.json").exists()


@pytest.mark.parametrize("make", ["under-a-file", "is-a-file", "proc"])
def test_unwritable_out_is_one_line(tmp_path, capsys, make):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("keep me\n")
    out = {"under-a-file": blocker / "run", "is-a-file": blocker, "proc": Path("/proc/bfclab-run")}[make]
    before = snapshot(tmp_path)
    assert main(["train", "--out", str(out), *TINY]) == 2
    one_line_error(capsys, str(out))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("key, value", [
    ("train.lr", "inf"), ("train.lr", "nan"), ("train.lr", "-inf"), ("target.rho", "nan"), ("target.rho", "inf"),
    ("target.alphas", "[1, Infinity, 0.1]"), ("target.alphas", "[1, NaN, 0.1]"), ("data.label_noise", "nan"),
    ("train.clip", "inf"), ("train.init_std", "nan"), ("train.lam_w", "inf"), ("learner.B", "nan"),
    ("train.diverge_factor", "inf"), ("train.momentum", "nan"),
])
def test_non_finite_values_are_refused(key, value, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x"), f"--{key}", value, *TINY]) == 2
    one_line_error(capsys, key)
    assert not (tmp_path / "x").exists()


def test_inf_where_it_means_something(capsys):
    """``learner.B = inf`` is the plain square (no truncation): accepted."""
    assert main(["train", "--print-config", "--learner.B", "inf"]) == 0
    assert json.loads(capsys.readouterr().out)["learner"]["B"] == "inf"


def test_disk_full_mocked(tmp_path, capsys, monkeypatch, finished_run):
    """A write error (ENOSPC) in the middle of a run: one line naming the file, exit 2; the run's
    last checkpoint stays valid and another run's folder is untouched; --resume finishes it."""
    other = tmp_path / "other"
    shutil.copytree(finished_run, other)
    before = snapshot(other)
    out = tmp_path / "r"
    calls = {"n": 0}
    real = T.append_jsonl

    def full(path, record):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, record)

    with monkeypatch.context() as mp:
        mp.setattr(T, "append_jsonl", full)
        assert main(["train", "--out", str(out), "--train.checkpoint_every", "5", *TINY]) == 2
    one_line_error(capsys, "metrics.jsonl", "No space left", only=False)
    assert snapshot(other) == before and not (out / "result.json").exists()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    ref = tmp_path / "ref"
    assert main(["train", "--out", str(ref), "--train.checkpoint_every", "5", *TINY]) == 0
    assert (ref / "metrics.jsonl").read_bytes() == (out / "metrics.jsonl").read_bytes()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_disk_full_real_tmpfs(tmp_path, capsys):
    """The same on a real 160 KiB file system that fills up (where this machine lets us mount one)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "160k"):
        pytest.skip("mounting a tmpfs is not permitted here; test_disk_full_mocked covers the path")
    try:
        small = disk / "small"
        assert main(["train", "--out", str(small), *TINY]) == 0
        before = snapshot(small)
        out = disk / "big"
        rc = main(["train", "--out", str(out), "--train.steps_per_stage", "200", "--train.log_every", "2",
                   "--train.checkpoint_every", "10", *TINY[:-4]])
        assert rc == 2
        one_line_error(capsys, "No space left", only=False)
        assert snapshot(small) == before
        assert not (out / "result.json").exists()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_images_refuses_a_folder_with_another_config(tmp_path, capsys):
    """``bfclab images`` stops before loading data when a run folder holds another config's result."""
    run = tmp_path / "exp" / "bfc" / "seed0"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"config": {"method": "bfc", "seed": 0, "other": 1}}))
    before = snapshot(tmp_path)
    assert main(["images", "--dataset", "digits", "--methods", "bfc", "--seeds", "0", "--out",
                 str(tmp_path / "exp")]) == 2
    one_line_error(capsys, "--overwrite", "seed0")
    assert snapshot(tmp_path) == before


def test_sweep_resumes_a_killed_cell_from_its_checkpoint(tmp_path, monkeypatch):
    """A sweep cell killed mid-stage continues from its checkpoint (not from scratch) and ends
    with the same metrics as an uninterrupted cell."""
    from bfclab.sweep import expand, run_sweep

    base = {"target": {"d": 6, "widths": [2], "mc_samples": 2000, "var_samples": 20000}, "data": {"n_train": 256, "n_test": 256},
            "train": {"steps_per_stage": 30, "batch_size": 32, "log_every": 10, "checkpoint_every": 10}}
    g = expand({"base": base, "grid": {"method": ["bfc"], "seed": [0]}})
    run_sweep(g, tmp_path / "a", progress=False)

    class Killed(BaseException):
        pass

    orig = T.Run.checkpoint

    def dying(self, position, opt, seconds):
        orig(self, position, opt, seconds)
        if tuple(position) == (1, 20):
            raise Killed()

    with monkeypatch.context() as mp:
        mp.setattr(T.Run, "checkpoint", dying)
        with pytest.raises(Killed):
            run_sweep(g, tmp_path / "b", progress=False)
    restored = []
    orig_restore = T.Run._restore
    monkeypatch.setattr(T.Run, "_restore", lambda self, st: restored.append(st["position"]) or orig_restore(self, st))
    run_sweep(g, tmp_path / "b", progress=False)
    assert restored == [[1, 20]]
    cell = g.cells[0].id
    a, b = tmp_path / "a" / "cells" / cell, tmp_path / "b" / "cells" / cell
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
