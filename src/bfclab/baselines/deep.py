"""The deep learner's training modes behind the same fit/predict interface as the baselines
(PAPER_NOTES §4-§5), so that one loop can compare every method on the same samples.

``DeepEstimator(method, target, cfg)`` trains the bfclab learner on the given samples with the
stage-wise schedule of ``method`` (bfc | layerwise | window:K | e2e); metrics during training are
measured on the target's standard test split (``bfclab.training.make_data``).
"""

from __future__ import annotations

import copy

import torch

from ..config import RunConfig, apply_mapping
from ..methods import parse_method
from ..training import Run, make_data


class DeepEstimator:
    def __init__(self, method: str, target, cfg: RunConfig | None = None, *, device: str = "cpu",
                 seed: int = 0, progress: bool | None = False):
        parse_method(method)
        if cfg is None:  # the default config, on this target
            cfg = RunConfig()
            apply_mapping(cfg, {"target": target.config})
        self.cfg = copy.deepcopy(cfg)
        self.cfg.method, self.cfg.seed, self.cfg.train.device = method, int(seed), device
        self.target = target
        self.name = method
        self.progress = progress
        self.run: Run | None = None
        self.info: dict = {}

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "DeepEstimator":
        _, _, xt, yt = make_data(self.target, self.cfg.data, self.cfg.seed)
        self.run = Run(self.cfg, target=self.target, progress=self.progress, log=lambda s: None,
                       data=(x.to(torch.float64).cpu(), y.to(torch.float64).cpu(), xt, yt))
        res = self.run.run()
        self.info = {**res.metrics, "feature_error": res.feature_error, "seconds": res.seconds}
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.run is None:
            raise RuntimeError("DeepEstimator.predict called before fit")
        m = self.run.model
        return m(x.to(self.run.device, torch.float32)).to(torch.float64).cpu()
