"""Every learner behind one fit/predict interface (PAPER_NOTES §6: the methods the paper argues
against, plus the deep modes of ``bfclab.training`` wrapped the same way).

An estimator is any object with

    fit(x, y) -> self          x: (n, d) float tensor, y: (n,) float tensor (regression labels)
    predict(x) -> (n,) tensor

and a ``name``.  Inputs are CPU or device tensors; estimators move them to their own ``device``.
``bfclab.baselines.registry`` builds one from a method name and options.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Estimator(Protocol):
    name: str

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "Estimator": ...

    def predict(self, x: torch.Tensor) -> torch.Tensor: ...


# The registry comes after the Protocol: ``make_estimator(name, options, device=, seed=, target=)``.
from .registry import ESTIMATORS, default_options, make_estimator  # noqa: E402

__all__ = ["Estimator", "ESTIMATORS", "default_options", "make_estimator"]
