"""The command line: a tiny end-to-end run, config files, and one-line errors on bad input."""

import json
import subprocess
import sys

import pytest

from bfclab.cli import main
from bfclab.config import RunConfig, from_dict, to_dict
from bfclab.results import dumps

TINY = ["--target.d", "6", "--target.widths", "[2]", "--target.mc_samples", "2000", "--target.var_samples", "20000",
        "--data.n_train", "256", "--data.n_test", "256", "--train.steps_per_stage", "20",
        "--train.batch_size", "32", "--train.log_every", "10"]


def test_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("learner:\n  kind: paper\n  m: 8\ntrain:\n  lr: 0.005\n")
    rc = main(["train", "--method", "window:1", "--seed", "3", "--out", str(out), "--config", str(cfg_file), *TINY])
    assert rc == 0
    for name in ("config.json", "metrics.jsonl", "result.json", "curves.png"):
        assert (out / name).stat().st_size > 0
    res = json.loads((out / "result.json").read_text())
    for key in ("method", "seed", "test_nmse", "train_nmse", "feature_error", "seconds", "config"):
        assert key in res
    assert res["method"] == "window:1" and res["seed"] == 3
    assert set(res["feature_error"]) == {"2", "3", "4"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["learner"]["kind"] == "paper" and cfg["train"]["lr"] == 0.005 and cfg["target"]["d"] == 6
    # the resolved config.json is itself a valid --config file that reproduces the config
    assert json.loads(dumps(to_dict(from_dict(RunConfig, cfg)))) == cfg


def test_cli_as_subprocess(tmp_path):
    """The installed entry point, as a user runs it."""
    r = subprocess.run([sys.executable, "-m", "bfclab.cli", "train", "--out", str(tmp_path / "r"), *TINY],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "test_nmse" in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--out", "X", "--train.lr", "abc"], "train.lr"),
        (["train", "--out", "X", "--train.nosuch", "1"], "train.nosuch"),
        (["train", "--out", "X", "--method", "deep"], "method"),
        (["train", "--out", "X", "--target.conn", "[[1],[1],[3]]"], "target.conn"),
        (["train", "--out", "X", "--target.widths", "[0]"], "target.widths"),
        (["train", "--out", "X", "--target.d", "-3"], "target.d"),
        (["train", "--out", "X", "--learner.kind", "huge"], "learner.kind"),
        (["train", "--out", "X", "--train.optimizer", "lion"], "train.optimizer"),
        (["train", "--out", "X", "--config", "/nonexistent.yaml"], "nonexistent.yaml"),
        (["train", "--out", "X", "--train.lr"], "train.lr"),
        (["train", "--seed", "x", "--out", "X"], "seed"),
        (["train", "--out", "X", "--target.kappa", "nan"], "target.kappa"),
        (["train", "--out", "X", "--data.n_train", "1"], "data.n_train"),
        (["train", "--out", "X", "--data.n_test", "1"], "data.n_test"),
        (["train", "--out", "X", "--train.min_lr_frac", "-5"], "train.min_lr_frac"),
        (["train", "--out", "X", "--train.momentum", "-3"], "train.momentum"),
        (["train", "--out", "X", "--train.batch_size", "1e12"], "train.batch_size"),
        (["train", "--out", "X", "--target.L", "1e9"], "target.L"),
        (["train", "--out", "X", "--data.task", "classification", "--data.label_noise", "3"], "data.label_noise"),
        (["train", "--out", "X", "--train.warm_start_frac", "0"], "train.warm_start_frac"),
        (["train"], "--out"),
        (["experiment", "gap", "--quick", "--executor", "nope"], "--executor"),
        (["experiment", "gap", "--quick", "--address", "127.0.0.1:6379"], "--address"),
        (["experiment", "gap", "--quick", "--workers", "0"], "--workers"),
        (["experiment", "probe-mlp-mnist1d", "--quick", "--rerun-diverged"], "--rerun-diverged"),
        (["experiment", "scaling", "--quick", "--rerun-diverged"], "accepted: correction"),
        (["experiment", "scaling", "--quick", "--only", "L=2;width=4"], "KEY one of method, L, d"),
        (["experiment", "scaling", "--quick", "--only", "L=7"], "accepted: 2, 3"),
        (["experiment", "scaling", "--quick", "--only", "method=bfc,svm"], "accepted: bfc, krr-poly"),
        (["experiment", "gap", "--quick", "--only", "L=2"], "accepted: scaling"),
        (["train", "--out", "X", "--target.kind", "rhm"], "learner.kind"),
        (["train", "--out", "X", "--target.kind", "rhm", "--learner.kind", "cnn", "--target.options.m", "99"],
         "target 'rhm' option 'm'"),
        (["train", "--out", "X", "--target.kind", "staircase", "--learner.kind", "cnn"], "learner.kind"),
    ],
)
def test_bad_input_one_line_error(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "\n" not in err and needle in err and "Traceback" not in err
    assert not (tmp_path / "X").exists()  # nothing written on bad input


def test_bad_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    assert main(["train", "--out", str(tmp_path / "o"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.yaml" in err and "\n" not in err
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"train": {"lr": "fast"}}))
    assert main(["train", "--out", str(tmp_path / "o"), "--config", str(wrong)]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_a_scaling_round_left_unfinished_is_one_line_not_a_traceback(capsys, tmp_path, monkeypatch):
    """Two processes on one scaling folder: the one whose round ends first finds cells the other
    holds, and says so in one line (exit 1) instead of a traceback."""
    from bfclab.experiments import scaling

    def busy(*a, **k):
        raise scaling.Missing(3)

    monkeypatch.setattr(scaling, "drive", busy)
    rc = main(["experiment", "scaling", "--quick", "--results", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "3 cells of this round" in err and "Traceback" not in err
