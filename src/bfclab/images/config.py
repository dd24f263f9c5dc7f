"""The image-run config (PAPER_NOTES §7.3 B) and its per-dataset presets.

Same conventions as :mod:`bfclab.config`: small typed dataclasses, overridden from a file or
``--section.key value`` pairs with :func:`bfclab.config.set_key` / ``apply_mapping``, validated
before anything is written, and one-line :class:`~bfclab.config.ConfigError` on bad input.

Every method gets the same budget, ``epochs_per_stage x blocks`` epochs: a stage-wise protocol
spends ``epochs_per_stage`` on each of the B stages, ``e2e`` spends all of it in one stage
(the ``steps_per_stage`` convention of :mod:`bfclab.train`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError, apply_mapping, check_finite
from ..train import Method, parse_method, resolve_device

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

    name: str = "mnist1d"
    data_dir: str = ""
    augment: str = "auto"
    pad: int = 4
    n_train: int = 0
    n_test: int = 0
    test_frac: float = 0.2


@dataclass
class ResNetConfig:
    """The ResNet (PAPER_NOTES §7.3 B "Architecture"): a stem conv, then ``blocks`` residual
    blocks, one per growth stage.  Blocks listed in ``downsample`` (1-based) use stride 2 and
    double the channel count; the stem has ``width`` channels."""

    width: int = 32
    blocks: int = 4
    downsample: list = field(default_factory=lambda: [2, 3])
    kernel: int = 3
    stem_kernel: int = 5


@dataclass
class ImageTrainConfig:
    """Optimisation (PAPER_NOTES §7.3 B "Optional GPU path": SGD, lr 0.1, momentum 0.9, weight
    decay 5e-4; standard values, not the paper's).  SGD uses Nesterov momentum, ``adam`` means
    AdamW.  Each stage gets a fresh optimiser and learning-rate schedule.  ``amp``: mixed
    precision (bfloat16 where supported, else float16 with loss scaling), used on CUDA only."""

    epochs_per_stage: int = 5
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    min_lr_frac: float = 0.0
    device: str = "auto"
    amp: bool = True


@dataclass
class ProbeConfig:
    """Linear probes on pooled block features (PAPER_NOTES §7.3 B "Metrics").

    Features are average-pooled to ``pool`` positions per spatial axis and standardised; a
    ``logistic`` regression (inverse regularisation ``C``) or a ``ridge`` classifier
    (``alpha = 1/C``) is fitted on at most ``max_train`` training images and scored on the test
    set."""

    kind: str = "logistic"
    pool: int = 2
    C: float = 1.0
    max_train: int = 4000


@dataclass
class ImageRunConfig:
    """One image run: ``method`` is e2e | layerwise | window:K | bfc (PAPER_NOTES §5.3, §5.4)."""

    method: str = "bfc"
    seed: int = 0
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: ResNetConfig = field(default_factory=ResNetConfig)
    train: ImageTrainConfig = field(default_factory=ImageTrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


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
    if dataset not in DATASETS:
        raise ConfigError(f"config key 'data.name': unknown {dataset!r}; accepted: {', '.join(DATASETS)}")
    cfg = ImageRunConfig()
    cfg.data.name = dataset
    apply_mapping(cfg, PRESETS[dataset])
    return cfg


def validate(cfg: ImageRunConfig) -> Method:
    """Check the whole config before anything is written; return the parsed method."""
    method = parse_method(cfg.method)
    check_finite(cfg)
    resolve_device(cfg.train.device)
    d, m, t, p = cfg.data, cfg.model, cfg.train, cfg.probe
    choices = {
        "data.name": (d.name, DATASETS),
        "data.augment": (d.augment, AUGMENTS),
        "train.optimizer": (t.optimizer, ("sgd", "adam")),
        "train.schedule": (t.schedule, ("cosine", "linear", "constant")),
        "probe.kind": (p.kind, ("logistic", "ridge")),
    }
    for key, (val, ok) in choices.items():
        if val not in ok:
            raise ConfigError(f"config key '{key}': unknown {val!r}; accepted: {', '.join(ok)}")
    positive = {
        "model.width": m.width, "model.blocks": m.blocks, "model.kernel": m.kernel,
        "model.stem_kernel": m.stem_kernel, "train.epochs_per_stage": t.epochs_per_stage,
        "train.batch_size": t.batch_size, "train.lr": t.lr, "probe.pool": p.pool, "probe.C": p.C,
        "probe.max_train": p.max_train,
    }
    for key, val in positive.items():
        if not val > 0:
            raise ConfigError(f"config key '{key}': must be positive, got {val}")
    nonneg = {"data.pad": d.pad, "data.n_train": d.n_train, "data.n_test": d.n_test,
              "train.momentum": t.momentum, "train.weight_decay": t.weight_decay,
              "train.min_lr_frac": t.min_lr_frac}
    for key, val in nonneg.items():
        if not val >= 0:
            raise ConfigError(f"config key '{key}': must be >= 0, got {val}")
    if not 0 < d.test_frac < 1:
        raise ConfigError(f"config key 'data.test_frac': must be in (0, 1), got {d.test_frac}")
    if m.kernel % 2 == 0 or m.stem_kernel % 2 == 0:
        raise ConfigError("config keys 'model.kernel', 'model.stem_kernel': must be odd (same padding)")
    if not all(isinstance(b, int) and 1 <= b <= m.blocks for b in m.downsample):
        raise ConfigError(f"config key 'model.downsample': expected block numbers in 1..{m.blocks}, "
                          f"got {m.downsample!r}")
    if d.name.startswith("cifar") and not d.data_dir:
        raise ConfigError(f"config key 'data.data_dir': {d.name} is read from a local copy; give its directory")
    return method
