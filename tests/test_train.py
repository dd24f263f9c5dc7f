"""Training modes (PAPER_NOTES §4-§5): freezing, correction bookkeeping, divergence handling."""

import math

import pytest
import torch

from bfclab.config import ConfigError
from bfclab.results import read_jsonl
from bfclab.target import Target
from bfclab.methods import DivergenceError, lr_factor, parse_method
from bfclab.training import Run, make_data, train


@pytest.mark.parametrize("kind", ["simple", "paper"])
def test_layerwise_freezes_lower_layers_bfc_changes_them(tiny, kind):
    for method, frozen in (("layerwise", True), ("bfc", False)):
        cfg = tiny(method=method, **{"learner.kind": kind, "learner.m": 8})
        run = Run(cfg, progress=False, log=lambda s: None)
        run.run()
        for level in (2, 3):  # ref = weights at the end of the level's own stage (after warm start)
            now = run.model.weights(level)
            assert len(now) == len(run.ref[level]) == (2 if kind == "paper" else 1)  # K (and W)
            same = all(torch.equal(a, b) for a, b in zip(now, run.ref[level]))
            assert same == frozen, (method, level)
        fe2 = [r["feature_error"]["2"] if "2" in r["feature_error"] else r["feature_error"][2]
               for r in run.records if r["event"] == "stage_end"]
        assert len(fe2) == 3  # at the ends of stages 2, 3, 4
        # the same frozen weights on the same test points give the same number, bit for bit;
        # bfc trains level 2 again in stages 3 and 4, so its feature error moves
        assert len(set(fe2)) == (1 if frozen else 3), (method, fe2)
        wc = run.records[-1]["weight_change"]
        assert (wc[2] == 0.0) == frozen


def test_window_trains_only_the_window():
    m = parse_method("window:1")
    assert m.trainable([2, 3, 4, 5], 5) == [4, 5]
    assert parse_method("window:0").trainable([2, 3, 4], 4) == [4]
    assert parse_method("layerwise").trainable([2, 3, 4], 4) == [4]
    assert parse_method("bfc").trainable([2, 3, 4], 4) == [2, 3, 4]
    assert parse_method("window:5").trainable([2, 3, 4], 4) == [2, 3, 4]


@pytest.mark.parametrize("bad", ["bfcx", "window:", "window:-1", "window:a", ""])
def test_bad_method(bad):
    with pytest.raises(ConfigError, match="method"):
        parse_method(bad)


def test_window_run_freezes_below_window(tiny):
    cfg = tiny(method="window:1")
    run = Run(cfg, progress=False, log=lambda s: None)
    run.run()
    # in stage 4, level 3 (in the window) trains; level 2 (below it) was last trained in stage 3
    wc = run.records[-1]["weight_change"]
    assert wc[3] > 0 and wc[2] > 0
    s3 = next(r for r in run.records if r["event"] == "stage_end" and r["stage"] == 3)
    assert wc[2] == pytest.approx(s3["weight_change"][2])


def test_e2e_logs_at_the_same_boundaries_and_budget(tiny):
    results = {}
    for method in ("e2e", "bfc"):
        run = Run(tiny(method=method), progress=False, log=lambda s: None)
        run.run()
        results[method] = run
    steps = {m: [r["step"] for r in run.records if r["event"] == "stage_end"] for m, run in results.items()}
    assert steps["e2e"] == steps["bfc"] == [40, 80, 120]
    assert results["e2e"].step == results["bfc"].step == 120


def test_lr_schedule():
    assert lr_factor("constant", 5, 10, 0.01) == 1.0
    assert lr_factor("cosine", 0, 10, 0.01) == pytest.approx(1.0)
    assert lr_factor("cosine", 9, 10, 0.01) == pytest.approx(0.01)
    assert lr_factor("linear", 9, 10, 0.1) == pytest.approx(0.1)


def test_divergence_names_stage_and_step_and_keeps_last_good(tiny, tmp_path):
    cfg = tiny(**{"train.lr": 1e6, "train.clip": 0.0, "train.optimizer": "sgd"})
    with pytest.raises(DivergenceError) as e:
        train(cfg, tmp_path / "run")
    assert "stage" in str(e.value) and "step" in str(e.value)
    assert (tmp_path / "run" / "last_good.pt").exists()
    assert (tmp_path / "run" / "divergence.json").exists()
    state = torch.load(tmp_path / "run" / "last_good.pt", weights_only=True)
    assert state["model"] and all(torch.isfinite(v).all() for v in state["model"].values())


def test_metrics_series_has_boundary_events(tiny, tmp_path):
    train(tiny(), tmp_path / "r")
    recs = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    events = [(r["event"], r["stage"]) for r in recs if r["event"] != "periodic"]
    assert events == [("stage_start", 2), ("stage_end", 2), ("stage_start", 3), ("stage_end", 3),
                      ("stage_start", 4), ("stage_end", 4), ("final", 4)]
    assert any(r["event"] == "periodic" for r in recs)


def test_classification_learns(tiny, tmp_path):
    """The classification task trains to a test error well below what a constant predictor gets."""
    cfg = tiny(**{"data.task": "classification"})
    res = train(cfg, tmp_path / "c").result
    assert res.error_name == "test_error" and set(res.metrics) == {"test_error", "train_error", "test_loss", "train_loss"}
    _, _, _, yt = make_data(Target.from_config(cfg.target), cfg.data, cfg.seed)  # the run's test labels
    assert set(yt.unique().tolist()) == {-1.0, 1.0}
    # the best constant predictor errs on every test point of the minority label
    p = float((yt > 0).double().mean())
    constant = min(p, 1 - p)
    # a predictor independent of x errs at least as often up to sampling noise: 5 standard errors
    # of a test error near `constant` on n_test points (~0.11 here) is beyond its reach
    margin = 5 * math.sqrt(constant * (1 - constant) / len(yt))
    assert res.error < constant - margin, (res.error, constant, margin)
    assert res.error < res.stage_end[2]["test_error"]  # and the later stages add to it


def test_bfc_learns_the_tiny_target_better_than_layerwise(tiny):
    """A short but real run: stage-wise bfc must beat the frozen layerwise variant."""
    over = {"target.d": 8, "target.widths": [2], "data.n_train": 4000, "data.n_test": 2000,
            "train.steps_per_stage": 600, "train.batch_size": 256, "train.lr": 1e-2, "train.log_every": 600}
    res = {m: Run(tiny(method=m, **over), progress=False, log=lambda s: None).run() for m in ("bfc", "layerwise")}
    assert res["bfc"].error < 0.5 * res["layerwise"].error
    assert res["bfc"].feature_error[2] < res["bfc"].stage_value(2, "feature_error", 2)


def test_overwrite_into_the_same_folder_starts_clean(tiny, tmp_path):
    out = tmp_path / "r"
    train(tiny(), out)
    assert (out / "result.json").exists() and (out / "target.pt").exists()
    with pytest.raises(DivergenceError):
        train(tiny(**{"train.lr": 1e8, "train.clip": 0.0, "train.optimizer": "sgd"}), out, overwrite=True)
    assert not (out / "result.json").exists()  # the old result does not sit beside the new config
    assert (out / "divergence.json").exists()
    train(tiny(), out, overwrite=True)
    assert (out / "result.json").exists() and not (out / "divergence.json").exists()


def test_mid_stage_warm_start(tiny):
    """warm_start_frac = 0.5: K_l is warm-started from W_l half-way through stage l (step 20 of its
    40), not at its end as with 1.0, and the second half of the stage trains with K tied to W."""
    runs, starts = {}, {}
    for frac in (0.5, 1.0):
        run = Run(tiny(**{"learner.kind": "paper", "learner.m": 8, "train.warm_start_frac": frac}),
                  progress=False, log=lambda s: None)
        starts[frac] = []
        warm_start = run.model.svd_warm_start

        def spy(level, run=run, log=starts[frac], warm_start=warm_start):
            log.append((level, run.step))
            return warm_start(level)

        run.model.svd_warm_start = spy
        run.run()
        assert run.model.warm == {2, 3, 4}
        runs[frac] = run
    assert starts[0.5] == [(2, 20), (3, 60), (4, 100)]
    assert starts[1.0] == [(2, 40), (3, 80), (4, 120)]
    # same seed: both runs agree bit for bit up to the first warm start (stage_start at step 0) and
    # part at it: the record at step 20 comes after the warm start in the 0.5 run only
    at = {f: {r["step"]: r for r in runs[f].records if r["stage"] == 2 and r["event"] != "stage_end"} for f in runs}
    assert at[0.5][0]["feature_error"] == at[1.0][0]["feature_error"]
    assert at[0.5][20]["feature_error"][2] != at[1.0][20]["feature_error"][2]
    assert runs[0.5].stage_end[4]["feature_error"] != runs[1.0].stage_end[4]["feature_error"]


def test_the_divergence_rule_ignores_one_heavy_batch_and_stops_a_sustained_one():
    """DivergenceWatch (docs/DESIGN.md "Divergence"): a non-finite loss stops at once; one batch
    far above the factor does not (the heavy-tailed targets of depth 5-6 give such batches in
    healthy runs); a loss above it on most of the window does."""
    from bfclab.methods import DIVERGE_WINDOW, DivergenceWatch

    w = DivergenceWatch(2, factor=10.0)
    one = torch.tensor(1.0)
    for i in range(3 * DIVERGE_WINDOW):  # member 0 sees a 1e6 batch every 5th step, member 1 is calm
        fit = torch.tensor([1e6 if i % 5 == 0 else 0.5, 0.5])
        assert not w.bad(fit, fit).any(), i
    assert w.bad(torch.tensor([0.5, math.nan]), torch.tensor([0.5, math.nan])).tolist() == [False, True]
    w = DivergenceWatch(1, factor=10.0)
    flagged = [bool(w.bad(torch.tensor([1e6]), one)[0]) for _ in range(DIVERGE_WINDOW)]
    assert flagged[-1] and not any(flagged[:-1])  # a full window of exploding batches
    assert DivergenceWatch(1, factor=10.0).bad(torch.tensor([0.5]), torch.tensor(math.inf)).tolist() == [True]


def test_a_run_with_one_extreme_training_point_is_not_stopped(tiny):
    """A training set with one point 300 standard deviations out: the batches that hold it have
    fit loss ~ 8 (above diverge_factor 5; ~12 % of the batches of 64 out of 512 hold it) while the run is healthy; it trains to the end (the
    single-batch rule stopped it at the first such batch)."""
    cfg = tiny(**{"train.diverge_factor": 5.0, "data.n_test": 2000})
    target = Target.from_config(cfg.target)
    x, y, xt, yt = make_data(target, cfg.data, cfg.seed)
    n = x.shape[0]
    y = y.clone()
    y[0] = y.mean() + 300 * y.std()
    assert (y[0] - y.mean()) ** 2 / y.var() / cfg.train.batch_size > cfg.train.diverge_factor  # such a batch exceeds it
    res = Run(cfg, target=target, data=(x, y, xt, yt), progress=False, log=lambda s: None).run()
    assert res.steps == cfg.train.steps_per_stage * 3 and math.isfinite(res.error), n


def test_the_polish_lowers_the_error_and_keeps_frozen_levels(tiny):
    """train.polish_iters (PAPER_NOTES §4.2's final fine-tuning): full-batch L-BFGS after the last
    stage, stopped on held-out training points, lowers their error; the run trains on the rest
    only; under layerwise the polish trains the top level only."""
    base = {"train.steps_per_stage": 60, "data.n_train": 2000, "train.polish_iters": 40, "train.polish_every": 5}
    for method in ("bfc", "layerwise"):
        run = Run(tiny(method=method, **base), progress=False, log=lambda s: None)
        assert run.x_tr.shape[0] == 1800 and run.x_val.shape[0] == 200  # polish_val_frac 0.1 held out
        res = run.run()
        info = res.extra["polish"]
        assert info["held_out_after"] < info["held_out_before"], info
        assert 0 < info["kept_iteration"] <= info["iterations"] <= 40 and info["held_out_points"] == 200
        if method == "layerwise":
            for l in (2, 3):  # frozen under layerwise: unchanged by the polish
                for w, ref in zip(run.model.weights(l), run.ref[l]):
                    assert torch.equal(w, ref)
    plain = Run(tiny(**{**base, "train.polish_iters": 0}), progress=False, log=lambda s: None)
    assert plain.x_tr.shape[0] == 2000 and "polish" not in plain.run().extra


def test_the_polish_keeps_the_best_held_out_iterate(tiny, monkeypatch):
    """The iterate with the lowest held-out error is kept, the state before the polish included,
    and the polish stops after polish_patience checks without improvement."""
    cfg = tiny(**{"train.steps_per_stage": 60, "data.n_train": 2000, "train.polish_iters": 100,
                  "train.polish_every": 2, "train.polish_patience": 3})
    run = Run(cfg, progress=False, log=lambda s: None)
    errors = iter([1.0, 2.0, 0.5, 3.0, 3.0, 3.0, 3.0])  # before, then after each check: best at the 2nd
    monkeypatch.setattr(run, "held_out_error", lambda: next(errors))
    states = []
    real_step = torch.optim.LBFGS.step

    def step(self, closure):
        out = real_step(self, closure)
        states.append([p.detach().clone() for p in run.model.parameters()])
        return out

    monkeypatch.setattr(torch.optim.LBFGS, "step", step)
    res = run.run()
    info = res.extra["polish"]
    assert len(states) == 5 and info["held_out_after"] == 0.5 and info["kept_iteration"] == 4
    assert all(torch.equal(p, q) for p, q in zip(run.model.parameters(), states[1]))
