"""The image-run config (PAPER_NOTES §7.3 B) and its per-dataset presets.

Same conventions as :mod:`bfclab.config`: small typed dataclasses whose fields carry their limits
(:func:`bfclab.config.opt`), overridden from a file or ``--section.key value`` pairs with
:func:`bfclab.config.set_key` / ``apply_mapping``, validated before anything is written
(``check_finite``, ``check_limits`` and the cross-field rules of :func:`validate`), and one-line
:class:`~bfclab.config.ConfigError` on bad input.

Every method gets the same budget, ``epochs_per_stage x blocks`` epochs: a stage-wise protocol
spends ``epochs_per_stage`` on each of the B stages, ``e2e`` spends all of it in one stage
(the ``steps_per_stage`` convention of :mod:`bfclab.training`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError, MethodAndSeed, apply_mapping, check_limits, opt
from ..methods import Method
from ..probe.config import MeasureConfig, TrainConfig
from ..probe.config import validate as validate_run

DATASETS = ("mnist1d", "digits", "cifar10", "cifar100")
AUGMENTS = ("auto", "none", "crop", "flip", "crop+flip")


@dataclass
class ImageDataConfig:
    """The data set (PAPER_NOTES §7.3 B "Data in CI"; §7.2 for CIFAR).

    ``name``: mnist1d (generated locally by ``mnist1d.data.make_dataset``), digits
    (scikit-learn's bundled ``load_digits``), cifar10 / cifar100 (the user's local copy in the
    python-pickle format, in ``data_dir``).  ``augment``: auto = crop+flip for CIFAR, none
    otherwise.  ``n_train`` / ``n_test``: keep a fixed subset (0 = all).  ``test_frac``: the
    held-out share of digits, which has no official split.
    """

    name: str = opt("mnist1d", choices=DATASETS)
    data_dir: str = ""
    augment: str = opt("auto", choices=AUGMENTS)
    pad: int = opt(4, ge=0)
    n_train: int = opt(0, ge=0)
    n_test: int = opt(0, ge=0)
    test_frac: float = opt(0.2, gt=0, lt=1)


@dataclass
class ResNetConfig:
    """The ResNet (PAPER_NOTES §7.3 B "Architecture"): a stem conv, then ``blocks`` residual
    blocks, one per growth stage.  Blocks listed in ``downsample`` (1-based) use stride 2 and
    double the channel count; the stem has ``width`` channels."""

    width: int = opt(32, gt=0)
    blocks: int = opt(4, gt=0)
    downsample: list = field(default_factory=lambda: [2, 3])
    kernel: int = opt(3, gt=0)  # odd (same padding): validate
    stem_kernel: int = opt(5, gt=0)


@dataclass
class ImageTrainConfig(TrainConfig):
    """Optimisation (PAPER_NOTES §7.3 B "Optional GPU path": SGD, lr 0.1, momentum 0.9, weight
    decay 5e-4; standard values, not the paper's): the probe's :class:`bfclab.probe.TrainConfig`
    plus the batch size of the shuffled, augmented training batches."""

    batch_size: int = opt(128, gt=0)


@dataclass
class ImageRunConfig(MethodAndSeed):
    """One image run: the growth protocols on a ResNet (PAPER_NOTES §5.3, §5.4)."""

    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: ResNetConfig = field(default_factory=ResNetConfig)
    train: ImageTrainConfig = field(default_factory=ImageTrainConfig)
    probe: MeasureConfig = field(default_factory=MeasureConfig)


# Per-dataset defaults.  mnist1d and digits are sized so that 5 methods x 3 seeds finish in
# under 15 minutes on 2 CPU cores (see docs/IMAGES.md for the measured wall time).
PRESETS: dict[str, dict] = {
    "mnist1d": {},
    "digits": {
        "model": {"width": 32, "blocks": 4, "downsample": [3], "kernel": 3, "stem_kernel": 3},
        "train": {"epochs_per_stage": 5, "batch_size": 64},
    },
    "cifar10": {
        "model": {"width": 64, "blocks": 4, "downsample": [2, 3, 4], "kernel": 3, "stem_kernel": 3},
        "train": {"epochs_per_stage": 15, "batch_size": 128},
    },
}
PRESETS["cifar100"] = PRESETS["cifar10"]


def preset(dataset: str) -> ImageRunConfig:
    """The default config of ``dataset`` (one-line error for an unknown name)."""
    cfg = ImageRunConfig()
    cfg.data.name = dataset
    check_limits(cfg.data, "data.")  # an unknown name, before its preset is looked up
    apply_mapping(cfg, PRESETS[dataset])
    return cfg


def validate(cfg: ImageRunConfig) -> Method:
    """Check the whole config before anything is written; return the parsed method.  Every
    field's limits and choices are in its metadata (checked by :func:`bfclab.probe.config.validate`);
    the rules that tie fields together are below."""
    method = validate_run(cfg)
    d, m = cfg.data, cfg.model
    if m.kernel % 2 == 0 or m.stem_kernel % 2 == 0:
        raise ConfigError("config keys 'model.kernel', 'model.stem_kernel': must be odd (same padding)")
    if not all(isinstance(b, int) and 1 <= b <= m.blocks for b in m.downsample):
        raise ConfigError(f"config key 'model.downsample': expected block numbers in 1..{m.blocks}, "
                          f"got {m.downsample!r}")
    if d.name.startswith("cifar") and not d.data_dir:
        raise ConfigError(f"config key 'data.data_dir': {d.name} is read from a local copy; give its directory")
    return method
