"""One image run: a ResNet trained with one protocol by :mod:`bfclab.probe` and measured at every
stage end (PAPER_NOTES §5.4, §5.5, §7.3 B).

The ResNet's stem + block 1, block 2, ..., block B are the probe's blocks and its heads the
probe's heads (:meth:`ResNet.as_blocks`); the training batches are a shuffled
:class:`~bfclab.probe.TensorBatches` pass per epoch with the data set's augmentation; the linear
probes are fitted on a fixed subset of the training images (:func:`probe_subset`).  Everything
the probe measures is in the result (test accuracy per stage, weight and direction change of
every lower block, probes at the end of each block's own stage and at the end, CKA, the revert
test); the image run adds the stem filters after stage 1 and at the end.

The run directory gets ``config.json`` (resolved config), ``metrics.jsonl`` (one record per
epoch and per stage end) and ``result.json`` (``bfclab images`` adds ``filters.png``); every file
is written whole (:mod:`bfclab.results`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import seeds
from ..config import to_dict
from ..device import resolve_device
from ..probe import ProbeRun, Spec, Stack, TensorBatches
from ..probe.experiment import write_run
from . import augment
from .config import ImageRunConfig, validate
from .data import ImageData, load
from .resnet import ResNet


def build_model(cfg: ImageRunConfig, data: ImageData) -> ResNet:
    """The ResNet for ``data``, initialised from ``cfg.seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.seed_of("image_init", cfg.seed))
        return ResNet(data.dim, data.in_channels, data.num_classes, cfg.model)


def probe_subset(n: int, max_train: int) -> np.ndarray:
    """Indices of the probe-training images: a fixed permutation's first ``max_train``."""
    return np.sort(seeds.numpy_rng("image_probe").permutation(n)[:max_train])


def spec_of(cfg: ImageRunConfig, data: ImageData, stack: Stack, device: torch.device) -> Spec:
    """The probe spec of one image run: the ResNet's blocks and heads, the data set's batches
    (augmented, shuffled by the seed's ``image_batches`` stream, on ``device``) and the task."""
    crop, flip = augment.resolve(cfg.data.augment, cfg.data.name)
    pad = cfg.data.pad
    transform = (lambda x, gen: augment.augment(x, crop, flip, pad, gen)) if crop or flip else None
    train = TensorBatches(data.x_train.to(device), data.y_train.to(device), cfg.train.batch_size,
                          seed=cfg.seed, stream="image_batches", transform=transform)
    test = TensorBatches(data.x_test, data.y_test, 1000, shuffle=False, drop_last=False)
    idx = torch.as_tensor(probe_subset(data.x_train.shape[0], cfg.probe.max_train))
    return Spec(blocks=list(stack.blocks), heads=list(stack.heads), train=train, test=test, task="classification",
                probe_data=(data.x_train[idx], data.y_train[idx]), name=cfg.data.name)


class ImageRun:
    """A :class:`bfclab.probe.ProbeRun` of the ResNet on one data set; ``out`` (optional)
    receives metrics.jsonl."""

    def __init__(self, cfg: ImageRunConfig, out: Path | None = None, data: ImageData | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        validate(cfg)
        self.data = data if data is not None else load(cfg.data)
        self.model = build_model(cfg, self.data)
        stack = self.model.stack()
        spec = spec_of(cfg, self.data, stack, resolve_device(cfg.train.device))
        self.probe = ProbeRun(spec, cfg, out, model=stack, progress=progress, log=log, on_stage_end=self._stem)
        self.stem_after_stage1: list | None = None

    def _stem(self, run: ProbeRun, b: int) -> dict:
        if b == 1:
            self.stem_after_stage1 = self.model.stem_filters().detach().cpu().tolist()
        return {}

    def run(self) -> dict:
        res = self.probe.run()
        res.update({
            "experiment": "images",
            "dataset": self.cfg.data.name,
            "stem_filters": {"after_stage_1": self.stem_after_stage1,
                             "final": self.model.stem_filters().detach().cpu().tolist()},
        })
        return res


def train_images(cfg: ImageRunConfig, out: str | Path | None = None, *, data: ImageData | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run one configuration; with ``out`` write config.json, metrics.jsonl and result.json into
    that run directory (figures are the caller's: :func:`.figures.plot_stem_filters`)."""
    out_path = Path(out) if out is not None else None
    run = ImageRun(cfg, out_path, data=data, progress=progress, log=log)  # validates and loads the data first
    if out_path is None:
        res = run.run()
        res["config"] = to_dict(cfg)
        return res
    return write_run(out_path, cfg, run)
