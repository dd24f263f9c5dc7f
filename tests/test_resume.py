"""Training survives a kill: checkpoints, ``--resume``, bit-identical continuation (issue 8;
docs/RELIABILITY.md).

Same machine, same build, same thread count: a run killed anywhere and resumed writes the same
``metrics.jsonl`` bytes and the same ``result.json`` (all but its wall time) as a run that was
never interrupted.  The comparisons are exact on purpose: both runs execute the same operations
in the same order on the same machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bfclab import training as T
from bfclab.config import ConfigError
from bfclab.results import dumps, read_json

TINY = ["--target.d", "8", "--target.widths", "[2]", "--target.mc_samples", "4000", "--target.var_samples", "20000", "--data.n_train", "512",
        "--data.n_test", "512", "--train.batch_size", "64", "--train.log_every", "20"]


def result_without_time(d: Path) -> dict:
    res = read_json(d / "result.json")
    res.pop("seconds")
    return res


def same_run(a: Path, b: Path) -> None:
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
    assert json.dumps(result_without_time(a)) == json.dumps(result_without_time(b))
    sa = torch.load(a / "stage4.pt", weights_only=True)["model"]
    sb = torch.load(b / "stage4.pt", weights_only=True)["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Killed(BaseException):
    """Stands in for SIGKILL inside the test process: nothing after it runs."""


def kill_after_checkpoint(monkeypatch, when):
    orig = T.Run.checkpoint

    def checkpoint(self, position, opt, seconds):
        orig(self, position, opt, seconds)
        if when(tuple(position)):
            raise Killed(position)

    monkeypatch.setattr(T.Run, "checkpoint", checkpoint)


CASES = {
    "bfc": {},
    "layerwise": {"method": "layerwise"},
    "window:1": {"method": "window:1"},
    "e2e": {"method": "e2e"},  # one stage, boundaries faked inside it
    "paper-mid-warm-start": {"learner.kind": "paper", "learner.m": 8, "train.warm_start_frac": 0.5},
    "classification": {"data.task": "classification", "data.label_noise": 0.1},
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_in_process_matches_uninterrupted(tiny, tmp_path, monkeypatch, case):
    over = dict(CASES[case])
    method = over.pop("method", "bfc")
    cfg = tiny(**{"train.checkpoint_every": 7, **over})
    cfg.method = method
    T.train(cfg, tmp_path / "a", progress=False, log=lambda s: None)
    # killed after the 3rd mid-stage checkpoint of the second stage (e2e: of its only stage)
    stage = 0 if method == "e2e" else 1
    with monkeypatch.context() as mp:
        kill_after_checkpoint(mp, lambda pos: pos == (stage, 21))
        with pytest.raises(Killed):
            T.train(cfg, tmp_path / "b", progress=False, log=lambda s: None)
    assert not (tmp_path / "b" / "result.json").exists()
    st = torch.load(tmp_path / "b" / T.CHECKPOINT, weights_only=True)
    assert st["position"] == [stage, 21]
    T.train(cfg, tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    same_run(tmp_path / "a", tmp_path / "b")


def test_resume_twice_and_at_a_stage_boundary(tiny, tmp_path, monkeypatch):
    cfg = tiny(**{"train.checkpoint_every": 10})
    T.train(cfg, tmp_path / "a", progress=False, log=lambda s: None)
    for pos in [(0, 10), (1, 0), (2, 30)]:  # three kills, one at a boundary (stage 2 done, 3 not begun)
        with monkeypatch.context() as mp:
            kill_after_checkpoint(mp, lambda p, pos=pos: p == pos)
            with pytest.raises(Killed):
                T.train(cfg, tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    T.train(cfg, tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    same_run(tmp_path / "a", tmp_path / "b")
    # resuming a finished run returns its result and changes nothing
    before = {f.name: f.read_bytes() for f in (tmp_path / "b").iterdir()}
    run = T.train(cfg, tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    stored = (tmp_path / "b" / "result.json").read_text()
    assert json.loads(dumps(run.result.to_json())) == json.loads(stored)  # nothing lost in the round trip
    assert run.model.active == [2, 3, 4] and run.step == run.result.steps  # the final learner, from its checkpoint
    assert before == {f.name: f.read_bytes() for f in (tmp_path / "b").iterdir()}


def test_resume_refuses_another_config(tiny, tmp_path, monkeypatch):
    cfg = tiny(**{"train.checkpoint_every": 10})
    with monkeypatch.context() as mp:
        kill_after_checkpoint(mp, lambda p: p == (0, 20))
        with pytest.raises(Killed):
            T.train(cfg, tmp_path / "b", progress=False, log=lambda s: None)
    before = {f.name: f.read_bytes() for f in (tmp_path / "b").iterdir()}
    with pytest.raises(ConfigError) as e:
        T.train(tiny(**{"train.checkpoint_every": 10, "train.lr": 3e-3}), tmp_path / "b", resume=True)
    assert "train.lr" in str(e.value) and "--overwrite" in str(e.value)
    assert before == {f.name: f.read_bytes() for f in (tmp_path / "b").iterdir()}


# ---- real processes, real SIGKILL ------------------------------------------------------------------

def bfclab(*args: str, **kw) -> list[str]:
    return [sys.executable, "-m", "bfclab.cli", "train", *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def test_sigkill_mid_stage_then_resume_is_bit_identical(tmp_path):
    """SIGKILL from outside while the run is in a stage, ``bfclab train --resume``, compare."""
    args = TINY + ["--train.steps_per_stage", "1500", "--train.checkpoint_every", "50"]
    ref = subprocess.run(bfclab("--out", str(tmp_path / "a"), *args), env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "b"
    p = subprocess.Popen(bfclab("--out", str(out), *args), env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # wait for a checkpoint inside the second stage
            try:
                pos = torch.load(out / T.CHECKPOINT, weights_only=True)["position"]
            except (FileNotFoundError, RuntimeError, EOFError):
                pos = [0, 0]
            if pos[0] == 1 and pos[1] > 0:
                break
            time.sleep(0.005)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not (out / "result.json").exists(), "the run finished before it could be killed"
    pos = torch.load(out / T.CHECKPOINT, weights_only=True)["position"]
    assert pos[0] == 1 and 0 < pos[1] < 1500
    again = subprocess.run(bfclab("--out", str(out), *args), env=ENV, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    res = subprocess.run(bfclab("--resume", "--out", str(out)), env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    same_run(tmp_path / "a", out)


# The kill lands inside the checkpoint write: after the temporary file is (partly or wholly)
# written, before the rename that would publish it.
KILL_IN_WRITE = r"""
import os, signal, sys
import bfclab.results as R
mode, target_pos = sys.argv[1], int(sys.argv[2])
seen = {"n": 0}
orig_replace, orig_fdopen = os.replace, os.fdopen

def replace(src, dst):
    if str(dst).endswith("checkpoint.pt") and mode == "before-rename":
        seen["n"] += 1
        if seen["n"] == target_pos and mode == "before-rename":
            os.kill(os.getpid(), signal.SIGKILL)
    return orig_replace(src, dst)

class Half:
    def __init__(self, f): self.f = f
    def write(self, data):
        self.f.write(data[: len(data) // 2]); self.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    def __enter__(self): return self
    def __exit__(self, *a): self.f.close()

def fdopen(fd, *a, **k):
    f = orig_fdopen(fd, *a, **k)
    if mode == "half-written" and ".checkpoint.pt." in os.readlink(f"/proc/self/fd/{fd}"):
        seen["n"] += 1
        if seen["n"] == target_pos:
            return Half(f)
    return f

os.replace, os.fdopen = replace, fdopen
from bfclab.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("mode", ["before-rename", "half-written"])
def test_sigkill_during_checkpoint_write_then_resume(tmp_path, mode):
    args = TINY + ["--train.steps_per_stage", "60", "--train.checkpoint_every", "10"]
    ref = subprocess.run(bfclab("--out", str(tmp_path / "a"), *args), env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "b"
    p = subprocess.run([sys.executable, "-c", KILL_IN_WRITE, mode, "9", "train", "--out", str(out), *args],
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr
    tmp = list(out.glob(".checkpoint.pt.*.tmp"))
    assert tmp, "the kill did not land inside the checkpoint write"
    # the published checkpoint is the previous, complete one: the 8th write, 20 steps into the
    # second stage (5 mid-stage writes and one at the boundary in the first stage)
    st = torch.load(out / T.CHECKPOINT, weights_only=True)
    assert st["position"] == [1, 20]
    res = subprocess.run(bfclab("--resume", "--out", str(out)), env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert not list(out.glob(".*.tmp"))
    same_run(tmp_path / "a", out)
