"""bfclab: an implementation of *Backward Feature Correction: How Deep Learning Performs Deep
(Hierarchical) Learning* (Allen-Zhu & Li, arXiv 2001.04413; notes: PAPER_NOTES.md).

What a researcher uses, importable from here::

    import bfclab
    cfg = bfclab.RunConfig(method="bfc")                 # config -> target -> learner -> train
    target = bfclab.Target.from_config(cfg.target)       # the concept class (§2)
    run = bfclab.train(cfg, target=target)               # stage-wise training (§4.2)
    run.result.error, run.result.feature_error, run.model

* configs: :class:`RunConfig` and its sections :class:`TargetConfig`, :class:`DataConfig`,
  :class:`LearnerConfig`, :class:`TrainConfig`; :func:`set_key` / :func:`apply_mapping` override
  keys; :class:`ConfigError` is every one-line input error;
* the concept class :class:`Target` (§2) and the learner :class:`Learner` (§3);
* training: :func:`train` (returns a :class:`Run` with ``.result`` and ``.model``),
  :func:`make_data` (the split every method sees), :func:`parse_method` / :class:`Method` and the
  growth plan :func:`plan` / :class:`Segment` (§4.2, §5.3, §5.4); :class:`Result` (§7.3);
* baselines (§6): :func:`make_estimator`, :func:`default_options`, ``ESTIMATORS``; :func:`nmse`
  scores any prediction as every bfclab run does;
* grids: :func:`expand`, :func:`load_grid`, :func:`run_sweep`;
* any hierarchical target (issue 16): :func:`make_target` (``target.kind``: quadratic, rhm,
  staircase, python:PATH:FUNC), the protocol :class:`HierarchicalTarget`, the built-in
  :class:`RHM` and :class:`Staircase`, and :func:`train_net` (a generic MLP / CNN grown by the
  same methods on any of them).
"""

from __future__ import annotations

from .baselines.registry import ESTIMATORS, default_options, make_estimator
from .config import (ConfigError, DataConfig, LearnerConfig, RunConfig, TargetConfig, TrainConfig, apply_mapping,
                     set_key)
from .growth import Segment, plan
from .learner import Learner
from .methods import Method, parse_method
from .metrics import nmse
from .nets import train_net
from .results import Result
from .sweep import expand, load_grid, run_sweep
from .target import Target
from .targets import RHM, HierarchicalTarget, Staircase, make_target
from .training import Run, make_data, train

__all__ = [
    "ConfigError", "DataConfig", "ESTIMATORS", "HierarchicalTarget", "Learner", "LearnerConfig", "Method", "Result", "Run", "RunConfig",
    "Segment", "Target", "TargetConfig", "TrainConfig", "apply_mapping", "default_options", "expand", "load_grid",
    "RHM", "Staircase", "make_data", "make_estimator", "make_target", "nmse", "parse_method", "plan", "run_sweep",
    "set_key", "train", "train_net",
]
