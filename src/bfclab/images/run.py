"""One image run: a ResNet trained with one protocol, measured at every stage end
(PAPER_NOTES §5.4, §5.5, §7.3 B).

At the end of stage b (epoch b x ``epochs_per_stage``; for ``e2e`` the same epochs) the run
records the test accuracy of the current network, the relative weight change of every block
c < b since the end of its own stage c, and the linear-probe accuracy of block b's features.
At the end it also probes every block again, measures what reverting each lower block's
correction does (:func:`.measure.revert_effect`), and keeps the stem filters as they were at
the end of stage 1 and at the end.

The run directory gets ``config.json`` (resolved config), ``metrics.jsonl`` (one record per
epoch and per stage end) and ``result.json`` (``bfclab images`` adds ``filters.png``); every file is written whole
(:mod:`bfclab.results`).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import seeds
from ..config import to_dict
from ..device import resolve_device
from ..growth import Segment
from ..methods import DivergenceError, lr_factor
from ..results import append_jsonl, write_json
from . import augment, measure, probe, protocols
from .config import ImageRunConfig, validate
from .data import ImageData, load
from .resnet import ResNet


def build_model(cfg: ImageRunConfig, data: ImageData) -> ResNet:
    """The ResNet for ``data``, initialised from ``cfg.seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.seed_of("image_init", cfg.seed))
        return ResNet(data.dim, data.in_channels, data.num_classes, cfg.model)


class ImageRun:
    """Training loop and measurements of one run; ``out`` (optional) receives metrics.jsonl."""

    def __init__(self, cfg: ImageRunConfig, out: Path | None = None, data: ImageData | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.method = validate(cfg)
        self.device = resolve_device(cfg.train.device)
        self.out = Path(out) if out is not None else None
        self.data = data if data is not None else load(cfg.data)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.model = build_model(cfg, self.data).to(self.device)
        self.gen = seeds.generator("image_batches", cfg.seed)
        self.crop, self.flip = augment.resolve(cfg.data.augment, cfg.data.name)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.segments = protocols.plan(self.method, cfg.model.blocks, cfg.train.epochs_per_stage)
        self.x_train = self.data.x_train.to(self.device)
        self.y_train = self.data.y_train.to(self.device)
        n = self.data.x_train.shape[0]
        self.probe_idx = torch.as_tensor(probe.probe_subset(n, cfg.probe.max_train))
        self.refs: dict[int, list[dict]] = {}  # block -> its state at the end of its own stage
        self.stage_ends: dict[int, dict] = {}
        self.stem_after_stage1: list | None = None
        self.epoch = 0

    # ---- bookkeeping ----------------------------------------------------------------------------
    def record(self, rec: dict) -> None:
        if self.out is not None:
            append_jsonl(self.out / "metrics.jsonl", rec)

    def say(self, line: str) -> None:
        if self.progress:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            self.log(line)

    def test_acc(self, depth: int) -> float:
        return measure.accuracy(self.model, self.data.x_test, self.data.y_test, depth, self.device)

    def probe_blocks(self, depth: int, blocks: list[int]) -> dict[int, float]:
        """Linear-probe test accuracy of the given blocks' features (network up to ``depth``)."""
        p, d = self.cfg.probe, self.data
        f_tr = probe.pooled_features(self.model, d.x_train[self.probe_idx], depth, p.pool, self.device)
        f_te = probe.pooled_features(self.model, d.x_test, depth, p.pool, self.device)
        y_tr, y_te = d.y_train[self.probe_idx].numpy(), d.y_test.numpy()
        return {b: probe.fit_probe(f_tr[b - 1], y_tr, f_te[b - 1], y_te, p) for b in blocks}

    # ---- the loop -------------------------------------------------------------------------------
    def _optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        t = self.cfg.train
        if t.optimizer == "adam":
            return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                               nesterov=t.momentum > 0)

    def batches_per_epoch(self) -> int:
        return max(1, self.x_train.shape[0] // self.cfg.train.batch_size)

    def run(self) -> dict:
        t0 = time.time()
        bar = None
        if self.progress:
            from tqdm import tqdm

            total = sum(s.length for s in self.segments) * self.batches_per_epoch()
            bar = tqdm(total=total, desc=f"{self.cfg.method} s{self.cfg.seed}", leave=False, dynamic_ncols=True)
        try:
            for seg in self.segments:
                self._run_stage(seg, bar)
        finally:
            if bar is not None:
                bar.close()
        train_seconds = time.time() - t0
        final = self._final()
        return self.result(final, train_seconds, time.time() - t0)

    def _run_stage(self, seg: Segment, bar) -> None:
        """Train one segment of the growth plan (``seg.length`` epochs), measuring at its stage ends."""
        t, m = self.cfg.train, self.model
        params = protocols.trainable_params(m, seg)
        opt = self._optimizer(params)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        nb, n, bs = self.batches_per_epoch(), self.x_train.shape[0], min(t.batch_size, self.x_train.shape[0])
        steps = seg.length * nb
        step = 0
        label = seg.first_stage  # the stage under way
        for e in range(seg.length):
            protocols.train_mode(m, seg)
            perm = torch.randperm(n, generator=self.gen).to(self.device)
            loss_sum = 0.0
            for i in range(nb):
                for g in opt.param_groups:
                    g["lr"] = t.lr * lr_factor(t.schedule, step, steps, t.min_lr_frac)
                idx = perm[i * bs:(i + 1) * bs]
                x = augment.augment(self.x_train[idx], self.crop, self.flip, self.cfg.data.pad, self.gen)
                ctx = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()
                with ctx:
                    loss = F.cross_entropy(m(x, seg.top), self.y_train[idx])
                val = float(loss.detach())
                if not math.isfinite(val):
                    raise DivergenceError(label, self.epoch * nb + i, val)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                loss_sum += val
                step += 1
                if bar is not None:
                    bar.update(1)
            self.epoch += 1
            self.record({"event": "epoch", "epoch": self.epoch, "stage": label, "lr": opt.param_groups[0]["lr"],
                         "train_loss": loss_sum / nb, "test_acc": self.test_acc(seg.top)})
            if bar is not None:
                bar.set_postfix(stage=label, loss=f"{loss_sum / nb:.3f}")
            ended = seg.end_at(e + 1)
            if ended is not None:
                self._stage_end(ended, seg.top)
                label = seg.stage_after(ended)

    def _stage_end(self, b: int, depth: int) -> None:
        """Measurements at the end of stage ``b`` (``depth``: the network's current depth)."""
        m = self.model
        self.refs[b] = measure.unit_state(m, b)
        if b == 1:
            self.stem_after_stage1 = m.stem_filters().detach().cpu().tolist()
        rec = {
            "event": "stage_end", "epoch": self.epoch, "stage": b, "depth": depth,
            "test_acc": self.test_acc(depth),
            "train_acc": measure.accuracy(m, self.data.x_train, self.data.y_train, depth, self.device),
            "weight_change": {c: measure.weight_change(m, c, self.refs[c]) for c in range(1, b)},
            "direction_change": {c: measure.direction_change(m, c, self.refs[c]) for c in range(1, b)},
            "probe": self.probe_blocks(b, [b]),
        }
        self.record(rec)
        self.stage_ends[b] = rec
        wc = " ".join(f"dW{c}={v:.3f}" for c, v in rec["weight_change"].items())
        self.say(f"[{self.cfg.method} seed {self.cfg.seed}] stage {b}/{self.cfg.model.blocks} epoch {self.epoch}: "
                 f"test_acc={rec['test_acc']:.4f} probe{b}={rec['probe'][b]:.4f} {wc}".rstrip())

    def _final(self) -> dict:
        m, B = self.model, self.cfg.model.blocks
        d = self.data
        rec = {
            "event": "final", "epoch": self.epoch, "test_acc": self.stage_ends[B]["test_acc"],
            "train_acc": self.stage_ends[B]["train_acc"],
            "probe": self.probe_blocks(B, list(range(1, B + 1))),
            "revert": measure.revert_effect(m, self.refs, d.x_test, d.y_test, self.device, seed=seeds.seed_of("image_revert", self.cfg.seed)),
        }
        self.record(rec)
        return rec

    def result(self, final: dict, train_seconds: float, seconds: float) -> dict:
        B = self.cfg.model.blocks
        ends = self.stage_ends
        return {
            "experiment": "images",
            "method": self.cfg.method,
            "seed": self.cfg.seed,
            "dataset": self.cfg.data.name,
            "blocks": B,
            "epochs": self.epoch,
            "test_acc": final["test_acc"],
            "train_acc": final["train_acc"],
            "stage_acc": {b: ends[b]["test_acc"] for b in ends},
            # weight_change[c][b]: block c's relative change from the end of stage c to the end of stage b > c
            "weight_change": self._by_block("weight_change"),
            "direction_change": self._by_block("direction_change"),
            "probe_own": {b: ends[b]["probe"][b] for b in ends},
            "probe_final": final["probe"],
            "revert": final["revert"],
            "stem_filters": {"after_stage_1": self.stem_after_stage1,
                             "final": self.model.stem_filters().detach().cpu().tolist()},
            "train_seconds": train_seconds,
            "seconds": seconds,
            "device": str(self.device),
            "amp": self.amp,
            "torch_threads": torch.get_num_threads(),
            "config": to_dict(self.cfg),
        }


    def _by_block(self, key: str) -> dict[int, dict[int, float]]:
        """Stage-end measurements ``key`` regrouped as {lower block c: {stage b > c: value}}."""
        B = self.cfg.model.blocks
        return {c: {b: self.stage_ends[b][key][c] for b in range(c + 1, B + 1)} for c in range(1, B)}


def train_images(cfg: ImageRunConfig, out: str | Path | None = None, *, data: ImageData | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run one configuration; with ``out`` write config.json, metrics.jsonl and result.json into
    that run directory (figures are the caller's: :func:`.figures.plot_stem_filters`)."""
    out_path = Path(out) if out is not None else None
    run = ImageRun(cfg, out_path, data=data, progress=progress, log=log)  # validates and loads the data first
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
        write_json(out_path / "config.json", to_dict(cfg))
        (out_path / "metrics.jsonl").unlink(missing_ok=True)
    res = run.run()
    if out_path is not None:
        write_json(out_path / "result.json", res)
    return res
