"""Experiments as commands: ``bfclab experiment NAME`` runs one, ``bfclab report`` all of them.

Every synthetic experiment is a grid run through the resumable sweep runner
(``bfclab.sweep``) plus a ``summarize`` that turns the stored run directories into Markdown and
figures.  The registry below is the single list the CLI and the report use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from . import correction, gap, sample_complexity, window


@dataclass(frozen=True)
class Experiment:
    name: str
    spec: Callable[..., dict]  # spec(quick) -> grid mapping
    summarize: Callable[..., object]  # summarize(root, figdir, quick=, command=) -> Section
    about: str
    workers: int | None = None  # None: the caller's choice
    threads: int = 1  # torch threads per cell


def registry() -> dict[str, Experiment]:
    exps = [
        Experiment("correction", correction.spec, correction.summarize,
                   "per-layer feature error vs step: bfc, layerwise, e2e (3 seeds)"),
        Experiment("window", window.spec, window.summarize,
                   "final error vs backward window k on a 4-hidden-level target"),
        Experiment("gap", gap.spec, gap.summarize, "bfc, layerwise, e2e as the gap ratio rho varies"),
        Experiment("classification", partial(correction.spec, task="classification"),
                   partial(correction.summarize, task="classification"),
                   "the correction experiment with sign labels and the logistic loss"),
    ]
    exps += [
        Experiment("kernel-limit", sample_complexity.limit_spec, sample_complexity.summarize_limit,
                   "kernels at the largest n that fits in memory (float32, one seed)", workers=1, threads=2),
        Experiment("sample-complexity", sample_complexity.spec, sample_complexity.summarize,
                   "test nMSE vs n: deep modes against kernels, NTK, random features, two-layer nets"),
    ]
    return {e.name: e for e in exps}
