"""One probe run: a :class:`~.stack.Stack` grown and trained with one protocol, measured at every
stage end (PAPER_NOTES §4.2, §5.3-§5.5, §7.3 B).

The protocols are the growth plan of :mod:`bfclab.growth` over blocks 1..B (``bfclab.methods``):

* ``e2e``        one segment: all B blocks and head B train from the start;
* ``layerwise``  stage b trains block b and head b; the blocks below are frozen;
* ``window:k``   stage b trains blocks b-k..b and head b; the blocks further down are frozen;
* ``bfc``        stage b trains every block <= b and head b (full backward feature correction).

A frozen block has ``requires_grad=False`` and is kept in eval mode, so neither its weights nor
its batch-norm running statistics move.  Each segment gets a fresh optimiser and schedule; blocks
that already had their own stage train at ``lower_lr_mult x lr``.

At the end of stage b the run records the test metric of the current network, the train metric
(when the train data has a plain view, :func:`.data.plain`), the relative weight and direction
change of every block c < b since the end of its own stage c, and the linear-probe quality of
block b's features.  At the end it probes every block again, measures the linear CKA of each
block's features between the end of its own stage and the end, and the revert test
(:func:`.measure.revert_effect`).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from .. import seeds
from ..config import ConfigError
from ..device import resolve_device
from ..growth import Segment, plan
from ..methods import DivergenceError, lr_factor
from ..results import append_jsonl
from . import measure
from .config import ProbeRunConfig, validate
from .data import gather, plain
from .stack import Stack


@dataclass
class Spec:
    """What the user gives the probe: the model as blocks plus a head per block, the data and
    the task.  ``train``: a re-iterable of ``(x, y)`` batches, one pass per epoch;
    ``test``: the same, for every measurement; ``task``: classification | regression;
    ``loss``: ``loss(output, y)`` (default cross-entropy / MSE); ``featurize``: block output ->
    (N, features) for the probes and CKA (default :func:`.measure.pooled` with the config's
    ``pool``); ``probe_data``: ``(x, y)`` tensors to fit the linear probes on (default the first
    ``max_train`` examples of the train data's plain view, else of ``train``);
    ``name``: a label for tables."""

    blocks: list
    heads: object  # a list of modules or a factory b -> module
    train: Iterable
    test: Iterable
    task: str = "classification"
    loss: Callable | None = None
    featurize: Callable | None = None
    probe_data: tuple | None = None
    name: str = "model"

    def check(self) -> None:
        if self.task not in measure.TASKS:
            raise ConfigError(f"probe spec field 'task': unknown {self.task!r}; accepted: {', '.join(measure.TASKS)}")
        if not self.blocks:
            raise ConfigError("probe spec field 'blocks': needs at least one block")


def build_stack(spec: Spec, seed: int) -> Stack:
    """The stack of ``spec``; heads made by a factory are drawn from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.seed_of("probe_heads", seed))
        return Stack(spec.blocks, spec.heads)


def trainable_params(model: Stack, seg: Segment) -> tuple[list, list]:
    """Set ``requires_grad`` for ``seg``; return its trainable parameters (the trainable blocks'
    in block order, then head ``seg.top``'s) and the subset of them that belongs to blocks which
    already had their own stage (for ``lower_lr_mult``)."""
    params = [p for b in seg.trainable for p in model.block_params(b)] + list(model.head(seg.top).parameters())
    lower = [p for b in seg.trainable if b not in seg.activate for p in model.block_params(b)]
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return params, lower


def train_mode(model: Stack, seg: Segment) -> None:
    """Training mode for the trainable blocks, eval mode (fixed BN statistics) for the rest."""
    model.eval()
    for b in seg.trainable:
        model.block(b).train()
    model.head(seg.top).train()


class ProbeRun:
    """Training loop and measurements of one run.  ``model``: a prebuilt :class:`Stack` (default
    :func:`build_stack`); ``out``: a folder that receives ``metrics.jsonl``;
    ``on_stage_end(run, b)``: extra fields for the stage-end record of block ``b``."""

    def __init__(self, spec: Spec, cfg: ProbeRunConfig, out: Path | None = None, model: Stack | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = None,
                 on_stage_end: Callable[["ProbeRun", int], dict] | None = None):
        spec.check()
        self.spec, self.cfg = spec, cfg
        self.method = validate(cfg)
        self.device = resolve_device(cfg.train.device)
        self.out = Path(out) if out is not None else None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.on_stage_end = on_stage_end
        self.model = (model if model is not None else build_stack(spec, cfg.seed)).to(self.device)
        self.loss_fn = spec.loss or measure.default_loss(spec.task)
        self.featurize = spec.featurize or measure.pooled(cfg.probe.pool)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.segments = plan(self.method, range(1, self.model.num_blocks + 1), cfg.train.epochs_per_stage)
        self.train_eval = plain(spec.train)
        if spec.probe_data is not None:
            self.probe_x, self.probe_y = spec.probe_data[0][:cfg.probe.max_train], spec.probe_data[1][:cfg.probe.max_train]
        else:
            self.probe_x, self.probe_y = gather(self.train_eval or spec.train, cfg.probe.max_train)
        self.test_x, self.test_y = gather(spec.test)
        self.refs: dict[int, dict] = {}  # block -> its state at the end of its own stage
        self.own_features: dict = {}     # block -> its test features at the end of its own stage (for CKA)
        self.stage_ends: dict[int, dict] = {}
        self.epoch = 0

    # ---- measurements ---------------------------------------------------------------------------
    def record(self, rec: dict) -> None:
        if self.out is not None:
            append_jsonl(self.out / "metrics.jsonl", rec)

    def say(self, line: str) -> None:
        if self.progress:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            self.log(line)

    def test_metric(self, depth: int) -> float:
        return measure.evaluate(self.model, self.spec.test, depth, self.spec.task, self.device)

    def features(self, x: torch.Tensor, depth: int) -> list:
        return measure.block_features(self.model, x, depth, self.featurize, self.device)

    def probe_blocks(self, depth: int, blocks: list[int]) -> tuple[dict[int, float], list]:
        """Linear-probe test quality of the given blocks' features (network up to ``depth``) and
        every block's test features."""
        p = self.cfg.probe
        f_tr, f_te = self.features(self.probe_x, depth), self.features(self.test_x, depth)
        y_tr, y_te = self.probe_y.numpy(), self.test_y.numpy()
        return {b: measure.fit_probe(f_tr[b - 1], y_tr, f_te[b - 1], y_te, self.spec.task, p.kind, p.C)
                for b in blocks}, f_te

    # ---- the loop -------------------------------------------------------------------------------
    def _optimizer(self, params: list, lower: list) -> torch.optim.Optimizer:
        """A fresh optimiser: one parameter group, or two when ``lower_lr_mult`` != 1 (the lower
        blocks' group has that learning-rate multiplier)."""
        t = self.cfg.train
        low = {id(p) for p in lower}
        if t.lower_lr_mult == 1.0 or not lower:
            groups = [{"params": params, "lr_mult": 1.0}]
        else:
            groups = [{"params": [p for p in params if id(p) not in low], "lr_mult": 1.0},
                      {"params": lower, "lr_mult": t.lower_lr_mult}]
        if t.optimizer == "adam":
            return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                               nesterov=t.momentum > 0)

    def run(self) -> dict:
        t0 = time.time()
        bar = None
        if self.progress:
            from tqdm import tqdm

            total = sum(s.length for s in self.segments) * len(self.spec.train)
            bar = tqdm(total=total, desc=f"{self.spec.name} {self.cfg.method} s{self.cfg.seed}", leave=False,
                       dynamic_ncols=True)
        try:
            for seg in self.segments:
                self._run_segment(seg, bar)
        finally:
            if bar is not None:
                bar.close()
        train_seconds = time.time() - t0
        final = self._final()
        return self.result(final, train_seconds, time.time() - t0)

    def _run_segment(self, seg: Segment, bar) -> None:
        """Train one segment of the growth plan (``seg.length`` epochs), measuring at its stage ends."""
        t, m = self.cfg.train, self.model
        opt = self._optimizer(*trainable_params(m, seg))
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        steps = seg.length * len(self.spec.train)
        step = 0
        label = seg.first_stage  # the stage under way
        for e in range(seg.length):
            train_mode(m, seg)
            loss_sum, nb = 0.0, 0
            for x, y in self.spec.train:
                for g in opt.param_groups:
                    g["lr"] = t.lr * g["lr_mult"] * lr_factor(t.schedule, step, steps, t.min_lr_frac)
                x, y = x.to(self.device), y.to(self.device)
                ctx = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()
                with ctx:
                    loss = self.loss_fn(m(x, seg.top), y)
                val = float(loss.detach())
                if not math.isfinite(val):
                    raise DivergenceError(label, step, val)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                loss_sum += val
                nb += 1
                step += 1
                if bar is not None:
                    bar.update(1)
            self.epoch += 1
            rec = {"event": "epoch", "epoch": self.epoch, "stage": label, "lr": opt.param_groups[0]["lr"],
                   "train_loss": loss_sum / max(1, nb)}
            if t.eval_every_epoch:
                rec["test_metric"] = self.test_metric(seg.top)
            self.record(rec)
            if bar is not None:
                bar.set_postfix(stage=label, loss=f"{loss_sum / max(1, nb):.3f}")
            ended = seg.end_at(e + 1)
            if ended is not None:
                self._stage_end(ended, seg.top)
                label = seg.stage_after(ended)

    def _stage_end(self, b: int, depth: int) -> None:
        """Measurements at the end of stage ``b`` (``depth``: the network's current depth)."""
        m, task = self.model, self.spec.task
        self.refs[b] = measure.block_state(m, b)
        probes, f_te = self.probe_blocks(b, [b])
        self.own_features[b] = f_te[b - 1][:self.cfg.probe.cka_points]
        rec = {
            "event": "stage_end", "epoch": self.epoch, "stage": b, "depth": depth,
            "test_metric": self.test_metric(depth),
            "train_metric": (measure.evaluate(m, self.train_eval, depth, task, self.device)
                             if self.train_eval is not None else None),
            "weight_change": {c: measure.weight_change(m, c, self.refs[c]) for c in range(1, b)},
            "direction_change": {c: measure.direction_change(m, c, self.refs[c]) for c in range(1, b)},
            "probe": probes,
        }
        if self.on_stage_end is not None:
            rec.update(self.on_stage_end(self, b))
        self.record(rec)
        self.stage_ends[b] = rec
        wc = " ".join(f"dW{c}={v:.3f}" for c, v in rec["weight_change"].items())
        self.say(f"[{self.spec.name} {self.cfg.method} seed {self.cfg.seed}] stage {b}/{m.num_blocks} epoch "
                 f"{self.epoch}: test={rec['test_metric']:.4f} probe{b}={probes[b]:.4f} {wc}".rstrip())

    def _final(self) -> dict:
        m, B = self.model, self.model.num_blocks
        probes, f_te = self.probe_blocks(B, list(range(1, B + 1)))
        n = self.cfg.probe.cka_points
        last = self.stage_ends[B]
        rec = {
            "event": "final", "epoch": self.epoch, "test_metric": last["test_metric"],
            "train_metric": last["train_metric"], "probe": probes,
            "cka": {b: measure.linear_cka(self.own_features[b], f_te[b - 1][:n]) for b in range(1, B + 1)},
            "revert": measure.revert_effect(m, self.refs, self.spec.test, self.spec.task, self.device,
                                            seed=seeds.seed_of("probe_revert", self.cfg.seed),
                                            final=last["test_metric"]),
        }
        self.record(rec)
        return rec

    def result(self, final: dict, train_seconds: float, seconds: float) -> dict:
        ends = self.stage_ends
        return {
            "experiment": "probe",
            "name": self.spec.name,
            "task": self.spec.task,
            "method": self.cfg.method,
            "seed": self.cfg.seed,
            "blocks": self.model.num_blocks,
            "epochs": self.epoch,
            "test_metric": final["test_metric"],
            "train_metric": final["train_metric"],
            "stage_metric": {b: ends[b]["test_metric"] for b in ends},
            # weight_change[c][b]: block c's relative change from the end of stage c to the end of stage b > c
            "weight_change": self._by_block("weight_change"),
            "direction_change": self._by_block("direction_change"),
            "probe_own": {b: ends[b]["probe"][b] for b in ends},
            "probe_final": final["probe"],
            "cka": final["cka"],
            "revert": final["revert"],
            "train_seconds": train_seconds,
            "seconds": seconds,
            "device": str(self.device),
            "amp": self.amp,
            "torch_threads": torch.get_num_threads(),
        }

    def _by_block(self, key: str) -> dict[int, dict[int, float]]:
        """Stage-end measurements ``key`` regrouped as {lower block c: {stage b > c: value}}."""
        B = self.model.num_blocks
        return {c: {b: self.stage_ends[b][key][c] for b in range(c + 1, B + 1)} for c in range(1, B)}
