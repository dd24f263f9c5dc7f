"""Generic deep networks grown by bfclab's methods on any target (issue 16; the growth protocols of
PAPER_NOTES §4.2, §5.3-§5.4 applied to a plain deep ReLU network, §7.3 for the measurements).

``learner.kind: mlp`` is a stack of ``blocks`` fully connected ReLU blocks of ``width`` units;
``learner.kind: cnn`` a stack of 1-d convolutions with kernel = stride = the target's ``patch``
(for tree-structured inputs such as the RHM, whose level l then is the output of block l).  A
discrete input enters through an embedding of ``embed`` dimensions per symbol (the MLP flattens
it; the CNN reads it as channels).  Every block has its own linear head (the CNN's after a mean
over positions), so the network truncated after block b is a predictor and the methods are the
same growth plan as everywhere in bfclab (:mod:`bfclab.growth`): ``bfc``, ``layerwise``,
``window:k``, ``e2e`` on one step budget, ``train.steps_per_stage`` x blocks.

Training and the block measurements are :class:`bfclab.probe.ProbeRun`'s (fresh optimiser and
schedule per stage, weight change, linear probes, CKA, revert test).  What this module adds: the
data of the target protocol (:func:`bfclab.targets.protocol.split`, the same examples for every
method), regression labels standardised by the target's population variance (so the training
loss is the nMSE), the final error on the whole test set with its interval, and, for a target
that exposes its levels' ground truth (``features``), each block's *level error*: 1 - R^2 of the
best affine map from the block's output to the true features of each level (fitted on training
examples, scored on test examples), at every stage end and at the end.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import metrics as M
from . import seeds
from .config import ConfigError, LearnerConfig, RunConfig, check_finite, check_limits, to_dict
from .device import resolve_device
from .methods import DivergenceError, parse_method
from .probe.config import MeasureConfig, ProbeRunConfig
from .probe.config import TrainConfig as ProbeTrainConfig
from .probe.data import TensorBatches
from .probe.stack import Stack
from .probe.train import ProbeRun, Spec
from .results import Result, error_names, write_json
from .targets import describe, make_target, validate_target
from .targets import protocol as P

NETS = ("mlp", "cnn")
#: examples the level errors and linear probes are fitted on, and test examples they are scored on
LEVEL_FIT, LEVEL_TEST = 4000, 4000


def depth_of(t: Any) -> int:
    """The target's natural number of blocks: its ``depth`` if given, else log_patch(length) for
    a tree-structured input, else one block per level (at least 2)."""
    d = getattr(t, "depth", None)
    if d:
        return int(d)
    patch = getattr(t, "patch", None)
    if patch:
        return max(1, round(math.log(math.prod(t.shape)) / math.log(patch)))
    return max(2, len(P.levels_of(t)))


def check_applies(t: Any, lc: LearnerConfig) -> None:
    """One-line error when ``lc`` cannot be built for target ``t`` (naming both)."""
    if lc.kind not in NETS:
        raise ConfigError(f"config key 'learner.kind': {lc.kind!r} learns the quadratic class only, not target.kind "
                          f"{t.kind!r}; accepted for it: {', '.join(NETS)}")
    if lc.kind == "cnn":
        patch = getattr(t, "patch", None)
        if not patch:
            raise ConfigError(f"config key 'learner.kind': 'cnn' needs a target with a patch structure (field "
                              f"'patch'); target.kind {t.kind!r} has none; accepted for it: mlp")
        length = math.prod(t.shape)
        blocks = lc.blocks or depth_of(t)
        if patch ** blocks > length or length % (patch ** blocks):
            raise ConfigError(f"config key 'learner.blocks': {blocks} convolutions of stride {patch} do not fit an "
                              f"input of length {length} (target.kind {t.kind!r}); accepted: at most {depth_of(t)}")


class Embed(nn.Module):
    """Discrete symbols (N, T) -> (N, T, embed) vectors, or continuous (N, ...) -> float as is."""

    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim) if vocab else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x) if self.emb is not None else x.float()


class Channels(nn.Module):
    """(N, T, C) -> (N, C, T) for the convolutions; a continuous (N, T) input -> (N, 1, T)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.unsqueeze(1) if h.dim() == 2 else h.transpose(1, 2)


class MeanHead(nn.Module):
    """A CNN block's head: the mean over positions, then a linear map."""

    def __init__(self, width: int, out: int):
        super().__init__()
        self.linear = nn.Linear(width, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h.mean(-1))


def make_stack(t: Any, lc: LearnerConfig, out_dim: int, seed: int) -> Stack:
    """The blocks and heads of ``lc`` for target ``t`` (weights drawn from the ``net_init`` stream;
    the global RNG is left as it was)."""
    check_applies(t, lc)
    blocks, w = lc.blocks or depth_of(t), lc.width
    discrete = t.input == "discrete"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.seed_of("net_init", seed))
        embed = Embed(t.vocab if discrete else 0, lc.embed)
        if lc.kind == "mlp":
            fan_in = math.prod(t.shape) * (lc.embed if discrete else 1)
            layers = [nn.Sequential(embed, nn.Flatten(1), nn.Linear(fan_in, w), nn.ReLU())]
            layers += [nn.Sequential(nn.Linear(w, w), nn.ReLU()) for _ in range(blocks - 1)]
            heads = [nn.Linear(w, out_dim) for _ in range(blocks)]
        else:
            p, c_in = t.patch, (lc.embed if discrete else 1)
            layers = [nn.Sequential(embed, Channels(), nn.Conv1d(c_in, w, p, stride=p), nn.ReLU())]
            layers += [nn.Sequential(nn.Conv1d(w, w, p, stride=p), nn.ReLU()) for _ in range(blocks - 1)]
            heads = [MeanHead(w, out_dim) for _ in range(blocks)]
        return Stack(layers, heads)


def flat(h: torch.Tensor) -> torch.Tensor:
    return h.flatten(1)


@torch.no_grad()
def level_errors(f_fit: torch.Tensor, f_test: torch.Tensor, truth_fit: dict, truth_test: dict) -> dict:
    """{level: 1 - R^2} of the affine least-squares map from features to each level's true
    features (fitted on the fit rows, scored on the test rows; float64, a tiny ridge for
    collinear features), R^2 pooled over the level's coordinates."""
    a = torch.cat([f_fit.double(), torch.ones(f_fit.shape[0], 1, dtype=torch.float64)], 1)
    b = torch.cat([f_test.double(), torch.ones(f_test.shape[0], 1, dtype=torch.float64)], 1)
    mu, sd = a[:, :-1].mean(0), a[:, :-1].std(0).clamp_min(1e-12)
    a[:, :-1], b[:, :-1] = (a[:, :-1] - mu) / sd, (b[:, :-1] - mu) / sd
    gram = a.T @ a + 1e-6 * a.shape[0] * torch.eye(a.shape[1], dtype=torch.float64)
    out = {}
    for level, tf in truth_fit.items():
        coef = torch.linalg.solve(gram, a.T @ tf.double())
        tt = truth_test[level].double()
        sst = float((tt - tt.mean(0)).pow(2).sum())
        out[int(level)] = float((b @ coef - tt).pow(2).sum()) / sst if sst > 0 else math.nan
    return out


def validate_net(cfg: RunConfig) -> None:
    """The run config of a generic net, checked before anything is written (one-line errors)."""
    parse_method(cfg.method)
    check_finite(cfg)
    check_limits(cfg)
    validate_target(cfg.target)
    resolve_device(cfg.train.device)
    if cfg.learner.kind not in NETS:
        raise ConfigError(f"config key 'learner.kind': {cfg.learner.kind!r} is not a generic net; accepted: "
                          f"{', '.join(NETS)}")


class NetRun:
    """One generic-net run on a protocol target (module docstring).  ``run()`` -> :class:`Result`."""

    def __init__(self, cfg: RunConfig, out: Path | None = None, target: Any = None, progress: bool | None = None,
                 log: Callable[[str], None] | None = None):
        validate_net(cfg)
        self.cfg, self.out = cfg, (Path(out) if out is not None else None)
        self.target = target if target is not None else make_target(cfg.target, cfg.data)
        check_applies(self.target, cfg.learner)
        t, d = self.target, cfg.data
        self.task = t.task
        x, y, xt, yt = P.split(t, d, cfg.seed, cfg.target.seed)
        raw_fit, raw_test = x[:LEVEL_FIT], xt[:LEVEL_TEST]  # as the target gives them, for its features()
        if t.task == "regression":
            self.mean, self.scale = float(y.mean()), math.sqrt(P.variance_of(t))
            y, yt = ((y - self.mean) / self.scale).float(), ((yt - self.mean) / self.scale).float()
        if t.input == "continuous":
            x, xt = x.float(), xt.float()
        self.x, self.y, self.xt, self.yt = x, y, xt, yt
        tr = cfg.train
        per_pass = min(tr.log_every, tr.steps_per_stage)
        self.passes = max(1, -(-tr.steps_per_stage // per_pass))
        mon = min(d.n_monitor, xt.shape[0])
        out_dim = t.n_classes if t.task == "classification" else 1
        self.spec = Spec(
            blocks=[], heads=[], task=t.task, featurize=flat, name=t.kind,
            train=TensorBatches(x, y, tr.batch_size, seed=cfg.seed, stream="net_batches", steps=per_pass),
            test=TensorBatches(xt[:mon], yt[:mon], 4096, shuffle=False, drop_last=False),
            probe_data=(x[:LEVEL_FIT], y[:LEVEL_FIT]))
        self.model = make_stack(t, cfg.learner, out_dim, cfg.seed)
        self.spec.blocks = list(self.model.blocks)
        self.pcfg = ProbeRunConfig(
            method=cfg.method, seed=cfg.seed,
            train=ProbeTrainConfig(epochs_per_stage=self.passes, optimizer=tr.optimizer, lr=tr.lr, momentum=tr.momentum,
                                   weight_decay=tr.weight_decay, schedule=tr.schedule, min_lr_frac=tr.min_lr_frac,
                                   device=tr.device, amp=False, eval_every_epoch=True),
            probe=MeasureConfig(kind="logistic", max_train=LEVEL_FIT, cka_points=2000))
        self.levels = P.levels_of(t) if P.has_features(t) else []
        if self.levels:
            self.truth_fit, self.truth_test = t.features(raw_fit), t.features(raw_test)
        self.probe = ProbeRun(self.spec, self.pcfg, out=self.out, model=self.model, progress=progress, log=log,
                              on_stage_end=self._on_stage_end)

    def _level_errors(self, b: int) -> dict:
        if not self.levels:
            return {}
        run = self.probe
        n = min(LEVEL_TEST, self.xt.shape[0])
        fit = run.features(self.x[:LEVEL_FIT], b)[b - 1]
        test = run.features(self.xt[:n], b)[b - 1]
        return level_errors(torch.as_tensor(fit), torch.as_tensor(test), self.truth_fit, self.truth_test)

    def _on_stage_end(self, run: ProbeRun, b: int) -> dict:
        return {"level_error": {b: self._level_errors(b)}} if self.levels else {}

    @torch.no_grad()
    def score(self, x: torch.Tensor, y: torch.Tensor) -> M.Score:
        """The whole set scored in chunks: nMSE (labels standardised: var 1) or the 0-1 error."""
        m, dev = self.model, self.probe.device
        m.eval()
        score = M.Score(x.shape[0], 1.0, classify=self.task == "classification")
        for a in range(0, x.shape[0], 8192):
            out = m(x[a:a + 8192].to(dev)).cpu()
            yy = y[a:a + 8192]
            if self.task == "classification":
                score.add_points(a, (out.argmax(1) != yy).double(),
                                 torch.nn.functional.cross_entropy(out.double(), yy, reduction="none"))
            else:
                score.add_points(a, (out.squeeze(-1).double() - yy.double()).pow(2))
        return score

    def run(self) -> Result:
        t0 = time.time()
        cfg = self.cfg
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", to_dict(cfg))
            P.save_target(self.target, self.out / "target.pt")
        try:
            pres = self.probe.run()
        except DivergenceError as e:
            if self.out is not None:
                write_json(self.out / "divergence.json", {"stage": e.stage, "step": e.step, "loss": e.value})
            raise
        test, train = self.score(self.xt, self.yt), self.score(self.x, self.y)
        test_name, train_name = error_names(self.task)
        metrics = {test_name: test.error(), train_name: train.error()}
        if self.task == "classification":
            metrics.update(test_loss=test.loss(), train_loss=train.loss())
        stage_end = {b: {"test_metric": self.probe.stage_ends[b]["test_metric"],
                         **({"level_error": self.probe.stage_ends[b]["level_error"][b]} if self.levels else {})}
                     for b in self.probe.stage_ends}
        B = self.model.num_blocks
        final_levels = {b: self._level_errors(b) for b in range(1, B + 1)} if self.levels else {}
        res = Result(
            method=cfg.method, seed=cfg.seed, config=to_dict(cfg), seconds=time.time() - t0, metrics=metrics,
            stage_end=stage_end, steps=self.passes * len(self.spec.train) * B,
            intervals={test_name: test.interval()},
            extra={"target": describe(self.target), "net": {"kind": cfg.learner.kind, "blocks": B},
                   "level_error": final_levels, "normaliser": ({"variance": self.scale ** 2, "mean": self.mean}
                                                              if self.task == "regression" else None),
                   # the probe's block measurements (bfclab.probe.train): {block: ...} per key
                   "blocks": {k: pres[k] for k in ("weight_change", "direction_change", "probe_own", "probe_final",
                                                   "cka", "revert")}})
        if self.out is not None:
            write_json(self.out / "result.json", res.to_json())
        return res


def train_net(cfg: RunConfig, out: str | Path | None = None, *, target: Any = None, progress: bool | None = None,
              log: Callable[[str], None] | None = None) -> Result:
    """Train a generic deep net (``learner.kind`` mlp | cnn) by ``cfg.method`` on ``cfg.target``
    (any kind, :mod:`bfclab.targets`); with ``out``, write config.json, target.pt, metrics.jsonl
    and result.json there.  Returns the :class:`~bfclab.results.Result`."""
    return NetRun(cfg, out, target=target, progress=progress,
                  log=log or (lambda s: print(s, file=sys.stderr, flush=True))).run()
