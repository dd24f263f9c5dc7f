"""The training methods and their learning-rate schedule (PAPER_NOTES §4.2, §5.3, §5.4).

* ``bfc``        stage-wise growth; every active unit keeps training (backward feature correction);
* ``layerwise``  stage-wise growth; only the new unit trains, the ones below are frozen;
* ``window:k``   stage-wise growth; the new unit and the k below it train;
* ``e2e``        every unit active and training from the start, for the same total budget.

A *unit* is a level of the learner (synthetic targets) or a block of a ResNet (images); the
growth plan that turns a method into explicit segments is :mod:`bfclab.growth`.  Anything else
in a sweep's ``method`` axis names a baseline (:mod:`bfclab.baselines.registry`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import ConfigError

METHODS = "bfc, layerwise, window:K (K >= 0), e2e"


@dataclass(frozen=True)
class Method:
    """A parsed training method (PAPER_NOTES §4.2, §5.3, §5.4).  ``window`` is the number of lower units that keep training
    with the new one (None = all of them)."""

    name: str
    window: int | None

    @property
    def stage_wise(self) -> bool:
        """True for the methods that grow the network one unit per stage (all but ``e2e``)."""
        return self.name != "e2e"

    def trainable(self, active: list[int], new: int) -> list[int]:
        """Units whose parameters train during the stage that activates unit ``new``."""
        if self.window is None:
            return list(active)
        return [u for u in active if new - self.window <= u <= new]


def parse_method(text: str) -> Method:
    """'bfc' | 'layerwise' | 'window:K' | 'e2e' -> Method (one-line error otherwise; PAPER_NOTES §4.2, §5.4)."""
    t = str(text).strip().lower()
    if t in ("bfc", "e2e"):
        return Method(t, None)
    if t == "layerwise":
        return Method(t, 0)
    if t.startswith("window:"):
        k = t.split(":", 1)[1]
        try:  # isdigit() also holds for digits int() refuses ('²'), and int() stops at 4300 digits
            window = int(k) if k.isdigit() else None
        except ValueError:
            window = None
        if window is not None:
            return Method(f"window:{window}", window)
    raise ConfigError(f"config key 'method': unknown {text!r}; accepted: {METHODS}")


def is_deep(method: str) -> bool:
    """True for the names of the deep training methods (as written, case-sensitive), False for a
    baseline's name."""
    return method in ("bfc", "e2e", "layerwise") or str(method).startswith("window:")


def lr_factor(schedule: str, step: int, total: int, min_frac: float) -> float:
    """Multiplier of the base learning rate at ``step`` of a segment of ``total`` steps
    (PAPER_NOTES §4.4: cosine by default, restarted at every stage)."""
    if schedule == "constant" or total <= 1:
        return 1.0
    frac = step / (total - 1)
    if schedule == "linear":
        return 1.0 - (1.0 - min_frac) * frac
    return min_frac + (1.0 - min_frac) * 0.5 * (1.0 + math.cos(math.pi * frac))


#: batches whose median fit loss must exceed ``train.diverge_factor`` before a run counts as diverged
DIVERGE_WINDOW = 25


class DivergenceWatch:
    """The divergence rule of the synthetic trainers, for E models at once (E = 1 for one run).

    A model has diverged when its loss is not finite, or when the *median* of its fit loss over
    the last :data:`DIVERGE_WINDOW` batches exceeds ``factor`` (the loss is normalised: predicting
    the mean gives 1).  A median, not a single batch: at depth 5-6 the target is so heavy-tailed
    (docs/bench_robustness.md) that one batch holding a rare large point gives a fit loss of 1e4
    and more while the run is healthy; a run that explodes exceeds it on every batch.  The window
    restarts with every segment of the growth plan; :meth:`state` / :meth:`load` carry it through
    a mid-segment checkpoint so that a resumed run decides exactly as an uninterrupted one."""

    def __init__(self, models: int, factor: float, window: int = DIVERGE_WINDOW):
        self.factor = float(factor)
        self.recent = torch.zeros((models, window), dtype=torch.float64)
        self.count = 0

    def bad(self, fit: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """Record this batch's fit losses (shape (E,), or a scalar for one model) and return which
        models have diverged (a bool tensor of shape (E,))."""
        fit = fit.detach().reshape(-1).to("cpu", torch.float64)
        self.recent[:, self.count % self.recent.shape[1]] = fit
        self.count += 1
        finite = torch.isfinite(loss.detach().reshape(-1).to("cpu")) & torch.isfinite(fit)
        if self.count < self.recent.shape[1]:  # the median needs a full window
            return ~finite
        return ~finite | (self.recent.median(dim=1).values > self.factor)

    def state(self) -> dict:
        return {"recent": self.recent.clone(), "count": self.count}

    def load(self, st: dict) -> None:
        self.recent.copy_(st["recent"])
        self.count = int(st["count"])


class DivergenceError(RuntimeError):
    """Training produced a non-finite or exploding loss."""

    def __init__(self, stage: int, step: int, value: float):
        super().__init__(f"training diverged in stage {stage} at step {step} (loss {value:.3g})")
        self.stage, self.step, self.value = stage, step, value
