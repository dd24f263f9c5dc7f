"""A baseline run: fit a non-hierarchical estimator on the split every method sees and write its
result folder (PAPER_NOTES §6, §7.3 A.5) — what :func:`bfclab.training.train` is for the deep methods."""

from __future__ import annotations

import time
from pathlib import Path

from .. import metrics as M
from ..config import RunConfig, to_dict
from ..device import resolve_device
from ..results import Result, write_json
from ..target import Target
from ..training import make_data
from .registry import make_estimator


def run_baseline(method: str, options: dict, cfg: RunConfig, out: Path) -> Result:
    """Fit baseline ``method`` (with ``options``) on ``make_data``'s split of ``cfg``'s target;
    write ``config.json`` and ``result.json`` into ``out``; return the result."""
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
