"""The probe's typed config (PAPER_NOTES §5.3-§5.5, §7.3 B): how each growth stage is trained
and how blocks are measured.  Same conventions as :mod:`bfclab.config`: fields carry their
limits (:func:`bfclab.config.opt`), overrides by ``--section.key value``, one-line
:class:`~bfclab.config.ConfigError` on bad input, all checked by :func:`validate` before anything
is written.

Every protocol gets the same budget, ``epochs_per_stage x B`` epochs: a stage-wise protocol
spends ``epochs_per_stage`` on each of the B stages, ``e2e`` all of it in one stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import MethodAndSeed, check_finite, check_limits, opt
from ..device import resolve_device
from ..methods import Method, parse_method


@dataclass
class TrainConfig:
    """Optimisation of each growth stage: a fresh optimiser and learning-rate schedule per stage
    (SGD with Nesterov momentum, or ``adam`` = AdamW).  ``lower_lr_mult``: the learning rate of
    blocks that already had their own stage, relative to ``lr`` (1 = the paper's protocols; 0.1
    asks whether a small correction carries a large effect, PAPER_NOTES §5.5).  ``amp``: mixed
    precision on CUDA only (bfloat16 where supported, else float16 with loss scaling).
    ``eval_every_epoch``: record the test metric after every epoch (else at stage ends only)."""

    epochs_per_stage: int = opt(5, gt=0)
    optimizer: str = opt("sgd", choices=("sgd", "adam"))
    lr: float = opt(0.1, gt=0)
    momentum: float = opt(0.9, ge=0)
    weight_decay: float = opt(5e-4, ge=0)
    schedule: str = opt("cosine", choices=("cosine", "linear", "constant"))
    min_lr_frac: float = opt(0.0, ge=0)
    lower_lr_mult: float = opt(1.0, ge=0)
    device: str = "auto"
    amp: bool = True
    eval_every_epoch: bool = True


@dataclass
class MeasureConfig:
    """Block measurements (PAPER_NOTES §7.3 B "Metrics").  Linear probes: each block's features
    (pooled to ``pool`` positions per spatial axis by the default featuriser) are standardised
    and fitted by a ``logistic`` regression (inverse regularisation ``C``) or a ``ridge``
    classifier / regression (``alpha = 1/C``) on at most ``max_train`` training examples, scored on
    the test set.  CKA (linear) between a block's features at the end of its own stage and at the
    end, on the first ``cka_points`` test examples."""

    kind: str = opt("logistic", choices=("logistic", "ridge"))
    pool: int = opt(2, gt=0)
    C: float = opt(1.0, gt=0)
    max_train: int = opt(4000, gt=0)
    cka_points: int = opt(2000, gt=1)


@dataclass
class ProbeRunConfig(MethodAndSeed):
    """One probe run: a growth protocol (``e2e``, ``layerwise``, ``window:k``, ``bfc``) and a seed."""

    train: TrainConfig = field(default_factory=TrainConfig)
    probe: MeasureConfig = field(default_factory=MeasureConfig)


def validate(cfg: MethodAndSeed) -> Method:
    """Check a run config (a :class:`ProbeRunConfig` or one that extends it) before anything is
    written; return the parsed method."""
    method = parse_method(cfg.method)
    check_finite(cfg)
    check_limits(cfg)
    resolve_device(cfg.train.device)
    return method
