"""A baseline run: fit a non-hierarchical estimator on the split every method sees and write its
result folder (PAPER_NOTES §6, §7.3 A.5) — what :func:`bfclab.training.train` is for the deep methods."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import metrics as M
from ..config import RunConfig, to_dict
from ..device import resolve_device
from ..results import Result, write_json
from ..target import Target
from ..training import make_data
from ..targets import make_target, validate_target
from ..targets import protocol as P
from .registry import check_applies, make_estimator


def run_baseline(method: str, options: dict, cfg: RunConfig, out: Path) -> Result:
    """Fit baseline ``method`` (with ``options``) on ``make_data``'s split of ``cfg``'s target
    (any kind: :func:`run_on_target`); write ``config.json`` and ``result.json`` into ``out``;
    return the result."""
    check_applies(method, cfg.target.kind)
    if cfg.target.kind != "quadratic":
        validate_target(cfg.target)
        write_json(out / "config.json", {**to_dict(cfg), "baseline": options})
        return run_on_target(method, options, cfg, out)
    write_json(out / "config.json", {**to_dict(cfg), "baseline": options})
    target = Target.from_config(cfg.target)
    x, y, xt, yt = make_data(target, cfg.data, cfg.seed)
    t0 = time.time()
    est = make_estimator(method, options, device=str(resolve_device(cfg.train.device)), seed=cfg.seed, target=target)
    est.fit(x, y)
    extra = {"baseline": options, **{a: getattr(est, a) for a in ("chosen", "info") if hasattr(est, a)}}
    score = M.Score(xt.shape[0], target.var_g)  # nMSE over the target's population variance (issue 11)
    score.add(0, est.predict(xt).cpu(), yt)
    metrics = {"test_nmse": score.error(), "train_nmse": M.nmse(est.predict(x).cpu(), y)}
    res = Result(method=method, seed=cfg.seed, config=to_dict(cfg), seconds=time.time() - t0, metrics=metrics,
                 intervals={"test_nmse": score.interval()},
                 extra={**extra, "normaliser": {"var_g": target.var_g, "var_g_se": target.var_g_se}})
    write_json(out / "result.json", res.to_json())
    return res


def labels_for(t, y: torch.Tensor) -> torch.Tensor:
    """What a regression-type estimator fits: y itself (regression), +-1 (two classes, as the
    quadratic class's labels), or the one-hot matrix (n, C) (more classes)."""
    if t.task == "regression":
        return y
    if t.n_classes == 2:
        return y.to(torch.float64) * 2 - 1
    return torch.nn.functional.one_hot(y, t.n_classes).to(torch.float64)


def predicted_class(t, out: torch.Tensor) -> torch.Tensor:
    return (out > 0).to(torch.int64) if t.n_classes == 2 else out.argmax(1)


def run_on_target(method: str, options: dict, cfg: RunConfig, out: Path) -> Result:
    """A baseline on any protocol target (issue 16): inputs encoded as float rows
    (:func:`bfclab.targets.protocol.encode`: discrete symbols one-hot), classes fitted as +-1 or
    one-hot regression and predicted by sign / argmax; nMSE over the target's population variance."""
    t = make_target(cfg.target, cfg.data)
    x, y, xt, yt = P.split(t, cfg.data, cfg.seed, cfg.target.seed)
    X, Xt = P.encode(t, x), P.encode(t, xt)
    t0 = time.time()
    est = make_estimator(method, options, device=str(resolve_device(cfg.train.device)), seed=cfg.seed, target=t)
    est.fit(X, labels_for(t, y))
    extra = {"baseline": options, **{a: getattr(est, a) for a in ("chosen", "info") if hasattr(est, a)}}
    if t.task == "regression":
        var = P.variance_of(t)
        score = M.Score(Xt.shape[0], var)
        score.add(0, est.predict(Xt).cpu(), yt)
        metrics = {"test_nmse": score.error(), "train_nmse": float((est.predict(X).cpu() - y).pow(2).mean()) / var}
        name, extra["normaliser"] = "test_nmse", {"variance": var}
    else:
        score = M.Score(Xt.shape[0], 1.0, classify=True)
        score.add_points(0, (predicted_class(t, est.predict(Xt).cpu()) != yt).double())
        metrics = {"test_error": score.error(),
                   "train_error": float((predicted_class(t, est.predict(X).cpu()) != y).double().mean())}
        name = "test_error"
    res = Result(method=method, seed=cfg.seed, config=to_dict(cfg), seconds=time.time() - t0, metrics=metrics,
                 intervals={name: score.interval()}, extra=extra)
    write_json(out / "result.json", res.to_json())
    return res
