"""The target protocol (issue 16): the quadratic class through it, a user's own target, the data
split, generic nets on any target, and sweeps over target kinds with one-line errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bfclab import seeds
from bfclab.config import ConfigError, DataConfig, RunConfig, TargetConfig, apply_mapping, set_key
from bfclab.nets import NetRun, level_errors, train_net
from bfclab.sweep import collect, expand, run_sweep
from bfclab.target import Target
from bfclab.targets import load_target, make_target, save_target, validate_target
from bfclab.targets import protocol as P
from bfclab.training import make_data

ROOT = Path(__file__).resolve().parents[1]
OWN = "python:examples/own_target.py:make"


@pytest.fixture(autouse=True)
def _in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the python: target paths are relative to the repository root


def small_quadratic() -> TargetConfig:
    return TargetConfig(d=8, L=3, mc_samples=2000, var_samples=4000)


# ---- the quadratic class through the protocol ------------------------------------------------------

@pytest.mark.parametrize("noise", [0.0, 0.2])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_quadratic_gives_the_same_data_through_the_protocol(task, noise):
    """Label noise too: on the training labels only, the test labels clean, as make_data."""
    tc, data = small_quadratic(), DataConfig(n_train=300, n_test=200, task=task, label_noise=noise)
    target = Target.from_config(tc)
    x, y, xt, yt = make_data(target, data, seed=3)
    view = make_target(tc, data)
    P.check(view)
    px, py, pxt, pyt = P.split(view, data, 3, tc.seed)
    assert torch.equal(px, x) and torch.equal(pxt, xt)  # bit-identical inputs
    if task == "regression":
        assert torch.equal(py, y) and torch.equal(pyt, yt)
    else:  # the +-1 labels as classes 0/1, exactly
        assert torch.equal(py, (y > 0).long()) and torch.equal(pyt, (yt > 0).long())
    assert view.variance == target.var_g
    if noise:  # the noise is really there, on the training labels
        clean = target.sample(300, seed=seeds.seed_of("train_data", 3), task=task)[1]
        assert not torch.equal(y, clean)


# ---- configs -------------------------------------------------------------------------------------

def test_target_kind_and_options_are_config_keys():
    cfg = RunConfig()
    set_key(cfg, "target.kind", "rhm")
    set_key(cfg, "target.options.m", "3")
    set_key(cfg, "target.options", {"v": 6, "m": 2})
    set_key(cfg, "target.options.L", 2)
    assert cfg.target.options == {"v": 6, "m": 2, "L": 2}
    validate_target(cfg.target)
    with pytest.raises(ConfigError, match=r"^config key 'target.kind': unknown 'nope'; accepted: quadratic, rhm"):
        validate_target(TargetConfig(kind="nope"))
    with pytest.raises(ConfigError, match=r"^target 'rhm': unknown option 'q'; accepted: v, m, s, L, n_c"):
        validate_target(TargetConfig(kind="rhm", options={"q": 1}))
    with pytest.raises(ConfigError, match=r"^target 'rhm' option 'm': must be"):
        validate_target(TargetConfig(kind="rhm", options={"m": 0}))
    with pytest.raises(ConfigError, match=r"^config key 'target.kind': .* defines no function 'nothing'"):
        validate_target(TargetConfig(kind="python:examples/own_target.py:nothing"))
    with pytest.raises(ConfigError, match=r"^config key 'target.options': the quadratic class takes its settings"):
        validate_target(TargetConfig(options={"m": 3}))
    with pytest.raises(ConfigError, match=r"^config key 'target.kind': bfclab.target.Target is the quadratic class"):
        Target.from_config(TargetConfig(kind="rhm"))
    with pytest.raises(ConfigError, match=r"^config key 'target.kind': expected FILE.py"):
        validate_target(TargetConfig(kind="python:missing.py:make"))


# ---- a user's own target -----------------------------------------------------------------------------

def test_own_target_round_trips_through_save_and_load(tmp_path):
    t = make_target(TargetConfig(kind=OWN, options={"d": 8, "k": 3}, seed=5))
    P.check(t)
    assert t.config["options"] == {"d": 8, "k": 3} and t.kind == OWN
    save_target(t, tmp_path / "t.pt")
    back = load_target(tmp_path / "t.pt")
    x, y = t.sample(50, 1)
    bx, by = back.sample(50, 1)
    assert torch.equal(x, bx) and torch.equal(y, by)
    assert torch.equal(t.features(x)[1], back.features(x)[1])
    with pytest.raises(ConfigError, match=r"^config key 'target.options': .* takes \(seed, d, k\)"):
        make_target(TargetConfig(kind=OWN, options={"width": 3}))
    with pytest.raises(ConfigError, match=r"^config key 'target.options': .* takes \(seed, d, k\)"):
        validate_target(TargetConfig(kind=OWN, options={"width": 3}))  # before anything is built


USER_FILE = """from __future__ import annotations
import dataclasses, torch

@dataclasses.dataclass
class Sum:  # a dataclass with string annotations: its module must be in sys.modules
    d: int
    shape: tuple = ()
    kind: str = "sum"
    task: str = "regression"
    input: str = "continuous"
    vocab: int = 0
    n_classes: int = 0
    config: dict = dataclasses.field(default_factory=dict)

    def sample(self, n, seed):
        x = torch.randn(n, self.d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return x, x.sum(1)

def make(seed, d=4, shape=None):
    if d < 1:
        raise ValueError("d must be positive")
    return Sum(d, (d,) if shape is None else shape)
"""


def test_a_users_factory_and_fields_give_one_line_errors(tmp_path):
    f = tmp_path / "user.py"
    f.write_text(USER_FILE)
    kind = f"python:{f}:make"
    t = make_target(TargetConfig(kind=kind, options={"d": 3}))
    assert P.checked_sample(t, 5, 0)[0].shape == (5, 3)
    with pytest.raises(ConfigError, match=r"^target 'python:.*': make\(seed=.*\) with options \{'d': 0\} raised "
                                          r"ValueError: d must be positive \(at user.py:\d+\)$"):
        make_target(TargetConfig(kind=kind, options={"d": 0}))
    for shape in ([], (3, 0), (3.0,), "3"):
        with pytest.raises(ConfigError, match=r"^target 'python:.*': field 'shape' must be a tuple of positive"):
            make_target(TargetConfig(kind=kind, options={"d": 3, "shape": shape}))


def test_builtin_targets_round_trip(tmp_path):
    for tc in (TargetConfig(kind="rhm", options={"v": 4, "m": 2, "L": 2, "n_c": 3}, seed=2),
               TargetConfig(kind="staircase", options={"d": 10, "k": 3}, seed=1)):
        t = make_target(tc)
        save_target(t, tmp_path / "t.pt")
        back = load_target(tmp_path / "t.pt")
        a, b = t.sample(64, 9), back.sample(64, 9)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    quad = Target.from_config(small_quadratic())
    quad.save(tmp_path / "q.pt")
    assert torch.equal(load_target(tmp_path / "q.pt").sample(10, 1)[0], quad.sample(10, 1)[0])


def test_finite_targets_get_distinct_disjoint_splits():
    t = make_target(TargetConfig(kind="rhm", options={"v": 3, "m": 2, "s": 2, "L": 2, "n_c": 3}))
    assert t.size == 3 * 2 ** 3
    x, y, xt, yt = P.split(t, DataConfig(n_train=6, n_test=6), seed=0, target_seed=0)
    rows = lambda a: {tuple(r) for r in a.tolist()}  # noqa: E731
    assert len(rows(x)) == 6 and len(rows(xt)) == 6 and not rows(x) & rows(xt)
    with pytest.raises(ConfigError, match=r"^config key 'data.n_test': target 'rhm' has 24 distinct inputs"):
        P.split(t, DataConfig(n_train=8, n_test=6), seed=0, target_seed=0)


def test_the_staircase_keeps_test_points_out_of_training_when_they_would_repeat():
    """2^d points: at d = 10, 100 x 100 draws would share ~10 points, so the split is disjoint; at
    d = 30 (under one expected coincidence) the draws are the plain ones of the seeds' streams."""
    small = make_target(TargetConfig(kind="staircase", options={"d": 10, "k": 3}))
    x, _, xt, _ = P.split(small, DataConfig(n_train=100, n_test=100), seed=0, target_seed=0)
    rows = lambda a: {tuple(r) for r in a.tolist()}  # noqa: E731
    assert len(rows(x)) == 100 and len(rows(xt)) == 100 and not rows(x) & rows(xt)
    big = make_target(TargetConfig(kind="staircase", options={"d": 30, "k": 3}))
    x, _, xt, _ = P.split(big, DataConfig(n_train=100, n_test=100), seed=0, target_seed=0)
    assert torch.equal(x, big.sample(100, seeds.seed_of("train_data", 0))[0])
    assert torch.equal(xt, big.sample(100, seeds.seed_of("test_data", 0))[0])


# ---- generic nets ----------------------------------------------------------------------------------

def test_level_errors_are_zero_for_affine_features_and_one_for_noise():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(600, 5, generator=g, dtype=torch.float64)
    truth = {1: f[:, :2] @ torch.randn(2, 3, generator=g, dtype=torch.float64) + 1.0,
             2: torch.randn(600, 2, generator=g, dtype=torch.float64)}
    errs = level_errors(f[:400], f[400:], {k: v[:400] for k, v in truth.items()}, {k: v[400:] for k, v in truth.items()})
    assert errs[1] < 1e-8
    assert errs[2] > 0.9


def tiny_net(kind: str, target: dict, method: str = "bfc") -> RunConfig:
    cfg = RunConfig(method=method)
    apply_mapping(cfg, {"target": target, "learner": {"kind": kind, "width": 16},
                        "data": {"n_train": 256, "n_test": 128, "n_monitor": 128},
                        "train": {"steps_per_stage": 20, "log_every": 10, "lr": 3e-3}})
    return cfg


def test_a_cnn_learns_the_rhm_levels_and_layerwise_keeps_lower_blocks(tmp_path):
    rhm = {"kind": "rhm", "options": {"v": 4, "m": 3, "s": 2, "L": 3, "n_c": 4}}
    runs = {}
    for method in ("bfc", "layerwise"):
        run = NetRun(tiny_net("cnn", rhm, method), tmp_path / method)
        runs[method] = (run, run.run())
    res = runs["bfc"][1]
    assert set(res.stage_end) == {1, 2, 3} and 0 <= res.error <= 1
    assert set(res.extra["level_error"][1]) == {1, 2}  # every block measured against every hidden level
    lw = runs["layerwise"][1]
    assert all(v == 0.0 for v in lw.extra["blocks"]["weight_change"][1].values())  # frozen below: block 1 never moves
    assert all(v > 0 for v in res.extra["blocks"]["weight_change"][1].values())
    files = {p.name for p in (tmp_path / "bfc").iterdir()}
    assert {"config.json", "metrics.jsonl", "result.json", "target.pt"} <= files


def test_nets_that_do_not_apply_say_so_naming_both():
    with pytest.raises(ConfigError, match=r"^config key 'learner.kind': 'cnn' needs a target with a patch structure "
                                          r"\(field 'patch'\); target.kind 'staircase' has none"):
        NetRun(tiny_net("cnn", {"kind": "staircase", "options": {"d": 8, "k": 3}}))
    cfg = tiny_net("mlp", {"kind": "staircase", "options": {"d": 8, "k": 3}})
    cfg.learner.kind = "simple"
    from bfclab.training import validate

    with pytest.raises(ConfigError, match=r"^config key 'learner.kind': the 'simple' learner learns the quadratic "
                                          r"class only, not target.kind 'staircase'; accepted for it: mlp, cnn"):
        validate(cfg)


def test_an_mlp_runs_on_the_quadratic_class():
    cfg = tiny_net("mlp", {"d": 8, "L": 3, "mc_samples": 2000, "var_samples": 4000}, "e2e")
    res = train_net(cfg, log=lambda s: None)
    assert res.error_name == "test_nmse" and 0 < res.error < 1  # better than predicting 0 (nMSE >= 1); 0.76 seen
    assert all(0 <= e <= 1 for block in res.extra["level_error"].values() for e in block.values())
    assert set(res.extra["level_error"][2]) == {2, 3}


# ---- sweeps over target kinds ------------------------------------------------------------------------

def grid_for(target: dict, methods: list[str], learner: str = "mlp") -> dict:
    return {"name": "kinds",
            "base": {"target": target, "learner": {"kind": learner, "width": 16},
                     "data": {"n_test": 200, "n_monitor": 200},
                     "train": {"steps_per_stage": 10, "log_every": 10}},
            "grid": {"method": methods, "data.n_train": [200], "seed": [0]},
            "baseline": {m: ({"n_features": 64} if m.startswith("rf") else {"steps": 20, "width": 16}
                             if m.startswith("twolayer") else {}) for m in methods if m not in ("bfc", "e2e",
                                                                                                 "layerwise")}}


@pytest.mark.parametrize("target,learner", [
    ({"kind": "rhm", "options": {"v": 4, "m": 3, "s": 2, "L": 3, "n_c": 4}}, "cnn"),
    ({"kind": OWN, "options": {"d": 8, "k": 3}}, "mlp"),
])
def test_sweep_runs_every_method_on_another_target_kind(tmp_path, target, learner):
    methods = ["bfc", "layerwise", "e2e", "krr-rbf", "nystrom-rbf", "rf-relu", "twolayer-relu"]
    rows = run_sweep(expand(grid_for(target, methods, learner)), tmp_path, progress=False)
    assert sorted(r["method"] for r in rows) == sorted(methods)
    name = "test_error" if target["kind"] == "rhm" else "test_nmse"
    err = {r["method"]: float(r[name]) for r in rows}
    if name == "test_error":  # 0-1 errors over the 200 test points
        assert all(0 <= e <= 1 and abs(e * 200 - round(e * 200)) < 1e-9 for e in err.values()), err
    assert all(math.isfinite(e) and e >= 0 for e in err.values()), err
    trivial = 1 - 1 / 4 if name == "test_error" else 1.0  # chance over 4 classes; nMSE of predicting 0 is >= 1
    assert err["krr-rbf"] < trivial and err["nystrom-rbf"] < trivial, err  # a kernel learns something at n = 200
    assert (tmp_path / "table.csv").exists()
    assert len(collect(tmp_path)) == len(methods)


def test_a_diverged_net_on_a_classification_target_records_its_tasks_errors(tmp_path):
    grid = grid_for({"kind": "rhm", "options": {"v": 4, "m": 3, "s": 2, "L": 3, "n_c": 4}}, ["bfc"], "cnn")
    grid["base"]["train"].update(optimizer="sgd", clip=0.0, lr=1e12)
    rows = run_sweep(expand(grid), tmp_path, progress=False)
    assert len(rows) == 1 and rows[0].get("diverged")
    assert math.isnan(float(rows[0]["test_error"])) and "test_nmse" not in rows[0]


def test_a_baseline_that_does_not_apply_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"^estimator 'seqkernel': applies to target.kind 'quadratic' only .* not "
                                          r"target.kind 'rhm'"):
        expand(grid_for({"kind": "rhm"}, ["seqkernel"]))
    with pytest.raises(ConfigError, match=r"^config key 'learner.kind': the 'simple' learner learns the quadratic"):
        expand(grid_for({"kind": "rhm"}, ["bfc"], learner="simple"))


@pytest.mark.parametrize("target", [{"kind": OWN, "options": {"d": 8, "k": 3}},
                                    {"kind": "rhm", "options": {"v": 4, "m": 3, "s": 2, "L": 3, "n_c": 4}}])
def test_cli_sweep_on_a_grid_file_with_another_target_kind(tmp_path, target):
    grid = grid_for(target, ["bfc", "krr-rbf"])
    (tmp_path / "g.json").write_text(json.dumps(grid))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-c", "import sys; from bfclab.cli import main; sys.argv[0] = 'bfclab'; sys.exit(main())"]
    p = subprocess.run(cmd + ["sweep", str(tmp_path / "g.json"), "--out", str(tmp_path / "s")], cwd=ROOT,
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "s" / "table.csv").read_text().count("\n") == 3
    bad = subprocess.run(cmd + ["train", "--target.kind", "rhm", "--out", str(tmp_path / "t")], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "learner.kind" in bad.stderr
    assert not (tmp_path / "t").exists()


def test_own_target_example_runs_through_the_sweep_cli_grid_file(tmp_path):
    """examples/own_target.yaml parses into cells of every listed method (running it is the
    sweep test above, on a tiny grid)."""
    from bfclab.sweep import load_grid

    cells = load_grid(ROOT / "examples" / "own_target.yaml").cells
    assert {c.method for c in cells} == {"bfc", "layerwise", "e2e", "krr-rbf", "twolayer-relu"}
    rhm = load_grid(ROOT / "examples" / "rhm.yaml").cells
    assert {c.method for c in rhm} == {"bfc", "layerwise", "e2e", "krr-rbf", "rf-relu", "twolayer-relu"}
    assert seeds.seed_of("user_target", 3) == 3
