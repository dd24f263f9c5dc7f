"""Stage-wise training: backward feature correction and its ablations (PAPER_NOTES §4, §5).

Stage l (l = 2..L) activates level l.  The methods differ only in which active levels train:

* ``bfc``        every active level keeps training (the paper's algorithm, §4.2: "crucially,
                 lower layers are not frozen");
* ``layerwise``  only the new level trains; the levels below are frozen (§5.3);
* ``window:k``   the new level and the k levels right below it train (BFC-k, §5.4);
* ``e2e``        every level is active and trains from step 0 (plain end-to-end).

Every method gets the same budget, ``steps_per_stage x (L-1)`` steps; ``e2e`` spends it as one
stage, and its metrics are still logged at the other methods' stage boundaries.  With the
``paper`` learner, K_l is warm-started from W_l by SVD at the end of stage l (§4.3), after which
the K-W consistency term ties them.  Each stage gets a fresh optimiser and learning-rate schedule.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from . import metrics as M
from . import seeds
from .config import ConfigError, DataConfig, RunConfig, apply_mapping, check_finite, check_limits, to_dict
from .device import resolve_device
from .growth import Segment, plan
from .learner import Learner
from .learner import validate as validate_learner
from .methods import DIVERGE_WINDOW, DivergenceError, DivergenceWatch, Method, lr_factor, parse_method
from .results import (Result, append_jsonl, atomic_write_bytes, dumps, error_name, error_names, load_torch_file,
                      read_json_mapping, read_records, write_json)
from .target import Target, chunks, resolve_alphas, resolve_conn, resolve_widths
from .target import validate as validate_target

CHECKPOINT = "checkpoint.pt"
#: the record events scored on the whole test set (the others on its first ``data.n_monitor`` points)
FULL_EVENTS = ("stage_end", "final")
CHECKPOINT_FORMAT = "bfclab-checkpoint-1"


#: the learners of :mod:`bfclab.learner` (the quadratic class only); mlp / cnn are bfclab.nets'
QUADRATIC_LEARNERS = ("simple", "paper")


def validate(cfg: RunConfig) -> Method:
    """Check the whole run config before anything is written (one-line ConfigError): finite
    numbers and every field's limits and choices (the ``opt`` metadata of :mod:`bfclab.config`),
    then what one field cannot say alone."""
    method = parse_method(cfg.method)
    check_finite(cfg)  # learner.B may be inf (opt(..., inf=True))
    check_limits(cfg)
    if cfg.learner.kind not in QUADRATIC_LEARNERS:
        raise ConfigError(f"config key 'learner.kind': {cfg.learner.kind!r} is a generic network, trained by "
                          f"bfclab.nets (bfclab.train_net; the CLI and sweeps choose it themselves)")
    if cfg.target.kind != "quadratic":
        raise ConfigError(f"config key 'learner.kind': the {cfg.learner.kind!r} learner learns the quadratic class "
                          f"only, not target.kind {cfg.target.kind!r}; accepted for it: mlp, cnn")
    validate_target(cfg.target)
    validate_learner(cfg.learner)
    resolve_device(cfg.train.device)
    d = cfg.data
    if d.task == "classification" and d.label_noise > 0.5:
        raise ConfigError(f"config key 'data.label_noise': a flip probability, at most 0.5, got {d.label_noise}")
    return method


def make_data(target: Target, data: DataConfig, seed: int):
    """The train/test split every method sees (float64 CPU tensors ``x, y, x_test, y_test``;
    inputs and labels as PAPER_NOTES §2.1 and §2.8 define them).

    The training sample depends on the run seed; the test sample only on the target's seed, so
    all runs on one target are scored on the same test points (:func:`test_data`, drawn once per
    target object).  Baselines use this too.
    """
    x, y, _ = target.sample(data.n_train, seed=seeds.seed_of("train_data", seed), task=data.task, label_noise=data.label_noise)
    xt, yt = test_data(target, data.n_test, data.task)
    return x, y, xt, yt


def test_data(target: Target, n: int, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's test sample of size ``n`` (float64 inputs and clean labels), drawn from the
    ``test_data`` stream of the target's seed and kept in ``target.cache``: the runs of a sweep or
    a batched group that share one :class:`Target` share these tensors."""
    key = ("test", n, task)
    if key not in target.cache:
        xt, yt, _ = target.sample(n, seed=seeds.seed_of("test_data", target.config.get("seed", 0)), task=task)
        target.cache[key] = (xt, yt)
    return target.cache[key]


def truth(target: Target, n: int, task: str) -> tuple[dict, dict]:
    """The true features S*_l and output terms alpha_l |S*_l|^2 of :func:`test_data` (float64,
    computed chunk by chunk, kept in ``target.cache``)."""
    key = ("truth", n, task)
    if key not in target.cache:
        xt = test_data(target, n, task)[0]
        parts = [target.features(xt[a:b]) for a, b in chunks(n)]
        feats = {l: torch.cat([p[l] for p in parts]) for l in parts[0]}
        target.cache[key] = (feats, {l: target.alphas[l] * s.pow(2).sum(-1) for l, s in feats.items()})
    return target.cache[key]


class Run:
    """One training run (PAPER_NOTES §4.2, §5): data, learner, the growth plan's loop and its
    measurements.  After :meth:`run`: ``result`` (a :class:`~bfclab.results.Result`), ``model``
    (the trained learner), ``records`` (the metrics series), ``target``.

    ``data`` (optional) = (x, y, x_test, y_test) replaces the run's own sample of the target.
    ``out`` (optional) receives ``metrics.jsonl`` as the run goes and ``last_good.pt`` (the
    latest state whose loss was finite) at every log event.
    """

    def __init__(self, cfg: RunConfig, out: Path | None = None, target: Target | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = None,
                 data: tuple | None = None):
        self.cfg = cfg
        self.method = validate(cfg)
        self.device = resolve_device(cfg.train.device)
        self.out = Path(out) if out is not None else None
        if target is not None:
            check_target(target, cfg)
        self.target = target if target is not None else Target.from_config(cfg.target)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.records: list[dict] = []
        self.gen = seeds.generator("batches", cfg.seed)
        self._data(data)
        self.model = Learner.for_target(self.target, cfg.learner, seed=cfg.seed).to(self.device)
        self.classify = cfg.data.task == "classification"
        self.model.offset.requires_grad_(self.classify)
        self.ref: dict[int, list[torch.Tensor]] = {}  # level -> weights at the end of its own stage
        self.stage_end: dict[int, dict] = {}  # stage -> record at its end
        self.step = 0
        self.stage = 0
        self._watch: DivergenceWatch | None = None  # the divergence rule of the segment under way
        self._watch_state: dict | None = None  # a resumed checkpoint's watch
        self.polish_info: dict | None = None  # set by polish()
        self.result: Result | None = None  # set by run()

    # ---- data --------------------------------------------------------------------------------
    def _data(self, data: tuple | None) -> None:
        """``data`` = (x, y, x_test, y_test) to train on given samples; else ``make_data``."""
        x, y, xt, yt = data if data is not None else make_data(self.target, self.cfg.data, self.cfg.seed)
        dev = self.device
        n_val = int(round(self.cfg.train.polish_val_frac * x.shape[0])) if self.cfg.train.polish_iters else 0
        if n_val and not 0 < n_val < x.shape[0]:
            raise ConfigError(f"config key 'train.polish_val_frac': {self.cfg.train.polish_val_frac} of "
                              f"{x.shape[0]} training points leaves no split; accepted: a fraction that holds out "
                              f"at least one point and keeps at least one")
        # the sample is i.i.d., so its last n_val points are a random held-out split (the polish's stop)
        self.x_val, self.y_val = x[x.shape[0] - n_val:].float().to(dev), y[y.shape[0] - n_val:].float().to(dev)
        x, y = x[: x.shape[0] - n_val], y[: y.shape[0] - n_val]
        self.x_tr, self.y_tr = x.float().to(dev), y.float().to(dev)
        if data is None:  # the target's shared test set (one float32 copy per device for all its runs)
            key = ("test32", self.cfg.data.n_test, self.cfg.data.task, str(dev))
            if key not in self.target.cache:
                self.target.cache[key] = (xt.float().to(dev), yt.float().to(dev))
            self.x_te, self.y_te = self.target.cache[key]
            self.true_te, self.true_terms = truth(self.target, self.cfg.data.n_test, self.cfg.data.task)
        else:
            self.x_te, self.y_te = xt.float().to(dev), yt.float().to(dev)
            self.true_te = self.target.features(xt)
            self.true_terms = {l: self.target.alphas[l] * s.pow(2).sum(-1) for l, s in self.true_te.items()}
        self.y_scale = float(y.var()) if self.cfg.data.task == "regression" else 1.0

    # ---- loss ------------------------------------------------------------------------------
    def task_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Regression: MSE / Var(y_train) (predicting the mean gives 1).  Classification: logistic."""
        if self.classify:
            return torch.nn.functional.softplus(-y * out).mean()
        return (out - y).pow(2).mean() / self.y_scale

    # ---- measurement ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, event: str) -> dict:
        """One record: the test errors on the whole test set (chunk by chunk, :class:`metrics.Score`,
        nMSE normalised by the target's population variance, with its 95 % interval), the training
        error, and per active level the feature, Procrustes and output-term errors, the weight
        change since the level's own stage and its output scale.  Stage ends and the final record
        score every test point; the other records the first ``data.n_monitor`` (``test_points``)."""
        m = self.model
        n = self.x_te.shape[0]
        if event not in FULL_EVENTS:
            n = min(n, self.cfg.data.n_monitor)
        score = M.Score(n, self.target.var_g, self.classify)
        for a, b in chunks(n):
            feats, wide, out = m.forward_all(self.x_te[a:b])
            score.add(a, out, self.y_te[a:b], feats, {l: self.true_te[l][a:b] for l in feats},
                      m.terms(feats, wide), {l: self.true_terms[l][a:b] for l in feats})
        out_tr = torch.cat([m(self.x_tr[a:b]) for a, b in chunks(self.x_tr.shape[0])])
        rec: dict = {"step": self.step, "stage": self.stage, "event": event,
                     "active": list(m.active), "test_points": n}
        if self.classify:
            rec["test_error"], rec["test_error_ci"] = score.error(), score.interval()
            rec["train_error"] = M.class_error(out_tr, self.y_tr)
            rec["test_loss"] = score.loss()
            rec["train_loss"] = float(self.task_loss(out_tr, self.y_tr))
        else:
            rec["test_nmse"], rec["test_nmse_ci"] = score.error(), score.interval()
            rec["train_nmse"] = M.nmse(out_tr, self.y_tr)
        rec["feature_error"] = {l: score.feature_error(l) for l in m.active}
        rec["procrustes_error"] = {l: v for l in m.active if (v := score.procrustes_error(l)) is not None}
        rec["term_error"] = {l: score.term_error(l) for l in m.active}
        rec["weight_change"] = {
            l: M.relative_change(m.weights(l), self.ref[l]) for l in m.active if l in self.ref
        }
        rec["scales"] = {l: float(m.layer(l).scale) for l in m.active}
        return rec

    def record(self, event: str) -> dict:
        rec = self.evaluate(event)
        self.records.append(rec)
        if self.out is not None:
            append_jsonl(self.out / "metrics.jsonl", rec)
            err = rec["test_loss" if self.classify else "test_nmse"]
            if math.isfinite(err):
                self.save_state(self.out / "last_good.pt")
        return rec

    def save_state(self, path: Path) -> None:
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "active": list(self.model.active),
                    "warm": sorted(self.model.warm), "step": self.step, "stage": self.stage}, buf)
        atomic_write_bytes(path, buf.getvalue())

    # ---- the loop ------------------------------------------------------------------------------
    def plan(self) -> list[Segment]:
        """This run's growth plan (:mod:`bfclab.growth`): one segment per stage, or one for e2e."""
        return plan(self.method, self.model.levels, self.cfg.train.steps_per_stage)

    def _optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        t = self.cfg.train
        if t.optimizer == "adam":
            return torch.optim.Adam(params, lr=t.lr)
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum)

    def run(self, resume: dict | None = None) -> Result:
        """Train every stage (from a :meth:`checkpoint` state when ``resume`` is given); return
        the result.  A resumed run continues bit for bit where the checkpoint was taken."""
        t, m = self.cfg.train, self.model
        t0 = time.time()
        position, opt_state, done = (0, 0), None, 0.0
        if resume is not None:
            position, opt_state, done = self._restore(resume)
        bar = None
        total = t.steps_per_stage * len(m.levels)
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.step, desc=self.cfg.method, leave=False, dynamic_ncols=True)
        try:
            for seg in self.plan():
                if seg.index < position[0]:
                    continue
                resumed = seg.index == position[0]
                self._run_segment(seg, bar, position[1] if resumed else 0, opt_state if resumed else None,
                                  done + time.time() - t0)
        finally:
            if bar is not None:
                bar.close()
        self.polish()
        final = self.record("final")
        self.result = self.result_of(final, done + time.time() - t0)
        return self.result

    # ---- checkpoints (docs/RELIABILITY.md) -----------------------------------------------------
    def checkpoint_every(self) -> int:
        t = self.cfg.train
        return t.checkpoint_every if t.checkpoint_every > 0 else max(1, t.steps_per_stage // 4)

    def checkpoint(self, position: tuple[int, int], opt: torch.optim.Optimizer | None, seconds: float) -> None:
        """Everything needed to continue exactly here: learner, optimiser, the batch generator's
        state, stage and step, the records so far.  ``position`` = (stage index, steps of it done).
        Written atomically to ``checkpoint.pt``; loaded with ``weights_only=True``."""
        m = self.model
        state = {
            "format": CHECKPOINT_FORMAT, "config": to_dict(self.cfg), "position": list(position),
            "step": self.step, "stage": self.stage, "seconds": seconds,
            "model": m.state_dict(), "active": list(m.active), "warm": sorted(m.warm),
            "gen": self.gen.get_state(), "optimizer": None if opt is None else opt.state_dict(),
            "ref": {l: list(ws) for l, ws in self.ref.items()}, "stage_end": self.stage_end,
            "records": self.records,
            "watch": None if opt is None or self._watch is None else self._watch.state(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.out / CHECKPOINT, buf.getvalue())

    def _restore(self, st: dict, rewrite_metrics: bool = True) -> tuple[tuple[int, int], dict | None, float]:
        m = self.model
        m.load_state_dict(st["model"])
        m.active = [int(l) for l in st["active"]]
        m.warm = {int(l) for l in st["warm"]}
        self.gen.set_state(st["gen"])
        self.step, self.stage = int(st["step"]), int(st["stage"])
        self.ref = {int(l): [w.to(self.device) for w in ws] for l, ws in st["ref"].items()}
        self.stage_end = dict(st["stage_end"])
        self.records = list(st["records"])
        self._watch_state = st.get("watch")  # absent in checkpoints written before the median rule
        if self.out is not None and rewrite_metrics:  # the series as it stood at the checkpoint; later lines are redone
            text = "".join(dumps(r, indent=None) + "\n" for r in self.records)
            atomic_write_bytes(self.out / "metrics.jsonl", text.encode())
        pos = st["position"]
        return (int(pos[0]), int(pos[1])), st["optimizer"], float(st["seconds"])

    def _run_segment(self, seg: Segment, bar, first: int = 0, opt_state: dict | None = None,
                     seconds: float = 0.0) -> None:
        """Train one segment of the growth plan from its step ``first`` (0, or where a checkpoint
        was taken, with that optimiser state), measuring where its stages end."""
        t, m = self.cfg.train, self.model
        t0 = time.time() - seconds
        if first == 0:  # a resumed segment was set up before its checkpoint
            self.begin_segment(seg)
        params = self.segment_params(seg)
        opt = self._optimizer(params)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        every = self.checkpoint_every()
        n = self.x_tr.shape[0]
        watch = DivergenceWatch(1, t.diverge_factor)
        if first and self._watch_state is not None:
            watch.load(self._watch_state)
        self._watch = watch
        for i in range(first, seg.length):
            for g in opt.param_groups:
                g["lr"] = t.lr * lr_factor(t.schedule, i, seg.length, t.min_lr_frac)
            idx = torch.randint(n, (t.batch_size,), generator=self.gen).to(self.device)
            out = m(self.x_tr[idx])
            fit = self.task_loss(out, self.y_tr[idx])
            loss = fit + m.regulariser(t.lam_kw, t.lam_k, t.lam_w, levels=list(seg.trainable))
            val = float(fit.detach())
            if bool(watch.bad(fit, loss)[0]):
                raise DivergenceError(self.stage, self.step, val)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, t.clip)
            opt.step()
            self.step += 1
            if bar is not None:
                bar.update(1)
                if self.step % 50 == 0:
                    bar.set_postfix(stage=self.stage, loss=f"{val:.2e}")
            self.after_step(seg, i)
            if self.out is not None and (i + 1) % every == 0 and i < seg.length - 1:
                self.checkpoint((seg.index, i + 1), opt, time.time() - t0)
        self._end_of_stage(seg.ends[-1][1], seg)
        if self.out is not None:
            self.checkpoint((seg.index + 1, 0), None, time.time() - t0)

    # ---- the final polish (PAPER_NOTES §4.2: "after stage L, optionally fine-tune") -------------
    def polish(self) -> None:
        """At most ``train.polish_iters`` L-BFGS iterations (strong-Wolfe line search) on the whole
        training objective, fit plus regulariser, over the last segment's trainable levels (bfc
        and e2e: every level; layerwise: the top one), stopped when the error on the held-out
        ``train.polish_val_frac`` of the sample has not improved for ``polish_patience`` checks
        (one every ``polish_every`` iterations); the iterate with the lowest held-out error is
        kept (the one before the polish included).  The objective is summed chunk by chunk, so
        memory does not grow with the training set.  ``self.polish_info`` says what happened (in
        the result's ``extra``).  Deterministic: a resumed run polishes as an uninterrupted one."""
        t, m = self.cfg.train, self.model
        if not t.polish_iters or not m.active:
            return
        t0 = time.time()
        seg = self.plan()[-1]
        params = self.segment_params(seg)
        n = self.x_tr.shape[0]

        def objective(grad: bool) -> float:
            total = 0.0
            with torch.set_grad_enabled(grad):
                for a, b in chunks(n):
                    part = self.task_loss(m(self.x_tr[a:b]), self.y_tr[a:b]) * ((b - a) / n)
                    if grad:
                        part.backward()
                    total += float(part.detach())
                reg = m.regulariser(t.lam_kw, t.lam_k, t.lam_w, levels=list(seg.trainable))
                if grad and reg.requires_grad:
                    reg.backward()
                return total + float(reg.detach())

        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=t.polish_every, history_size=50, tolerance_grad=1e-9,
                                tolerance_change=1e-12, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad(set_to_none=False)
            return torch.tensor(objective(True))

        before, best = objective(False), self.held_out_error()
        start = best
        saved, best_iter, done, stale = [p.detach().clone() for p in params], 0, 0, 0
        while done < t.polish_iters and stale < t.polish_patience:
            group = opt.param_groups[0]
            group["max_iter"] = min(t.polish_every, t.polish_iters - done)
            group["max_eval"] = 4 * group["max_iter"]
            state = opt.state[params[0]]
            n_iter, evals = state.get("n_iter", 0), state.get("func_evals", 0)
            opt.step(closure)
            state = opt.state[params[0]]
            ran, used = state["n_iter"] - n_iter, state["func_evals"] - evals
            done += max(ran, 1)
            v = self.held_out_error()
            if math.isfinite(v) and v < best:
                best, best_iter, stale = v, done, 0
                saved = [p.detach().clone() for p in params]
            else:
                stale += 1
            if ran < group["max_iter"] and used < group["max_eval"]:  # L-BFGS converged (its tolerances)
                break
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)
        self.polish_info = {"iters": t.polish_iters, "iterations": done, "kept_iteration": best_iter,
                            "objective_before": before, "objective_after": objective(False),
                            "held_out_before": start, "held_out_after": best, "held_out_points": self.x_val.shape[0],
                            "seconds": time.time() - t0}
        self.log(f"[{self.cfg.method}] polish ({done} L-BFGS iterations, {time.time() - t0:.0f} s): held-out "
                 f"error {start:.3e} -> {best:.3e} (iteration {best_iter} kept)")

    @torch.no_grad()
    def held_out_error(self) -> float:
        """The task loss on the polish's held-out training points (regression: normalised MSE)."""
        nv = self.x_val.shape[0]
        return sum(float(self.task_loss(self.model(self.x_val[a:b]), self.y_val[a:b])) * (b - a) / nv
                   for a, b in chunks(nv))

    # ---- the pieces of a segment, shared with the batched trainer (bfclab.batched) -------------
    def begin_segment(self, seg: Segment) -> None:
        """Switch the segment's new levels on (from this run's generator) and record 'stage_start'."""
        self.stage = seg.first_stage
        for l in seg.activate:
            self.model.activate(l, self.cfg.train.init_std, self.gen, tied=not seg.warm_start)
        self.record("stage_start")

    def segment_params(self, seg: Segment) -> list[torch.nn.Parameter]:
        """Freeze every level outside ``seg.trainable``; the parameters that train, in a fixed order."""
        m = self.model
        for l in m.levels:
            for p in m.layer_params(l):
                p.requires_grad_(l in seg.trainable)
        params = [p for l in seg.trainable for p in m.layer_params(l)]
        return params + [m.offset] if self.classify else params

    def warm_at(self, seg: Segment) -> int | None:
        """The step of ``seg`` after which the new level's K is warm-started from its W (paper
        learner, PAPER_NOTES §4.2 step 3; ``warm_start_frac`` 1.0 = at the stage's end, see
        :meth:`_end_of_stage`), or None."""
        t = self.cfg.train
        if seg.warm_start and t.warm_start and t.warm_start_frac < 1 and self.model.layer(seg.activate[-1]).W is not None:
            return max(1, int(round(t.warm_start_frac * seg.length)))
        return None

    def has_event(self, seg: Segment, i: int) -> bool:
        """Whether :meth:`after_step` does anything after step ``i`` of ``seg``."""
        return (i + 1 == self.warm_at(seg) or (seg.end_at(i + 1) is not None and i + 1 < seg.length)
                or (self.step % self.cfg.train.log_every == 0 and i < seg.length - 1))

    def after_step(self, seg: Segment, i: int) -> None:
        """What follows step ``i`` of ``seg``: a mid-stage warm start, a stage ending inside the
        segment (e2e), or a periodic record."""
        if i + 1 == self.warm_at(seg):
            self.model.svd_warm_start(seg.activate[-1])  # then the K-W term ties K to W for the rest of the stage
        ended = seg.end_at(i + 1)
        if ended is not None and i + 1 < seg.length:  # a stage ending inside the segment (e2e)
            self._end_of_stage(ended, seg)
            self.stage = seg.stage_after(ended)
        elif self.step % self.cfg.train.log_every == 0 and i < seg.length - 1:
            self.record("periodic")

    def _end_of_stage(self, level: int, seg: Segment) -> None:
        """Warm start (stage-wise paper learner), snapshot the level's weights, log 'stage_end'."""
        m = self.model
        if seg.warm_start and self.cfg.train.warm_start and level not in m.warm:
            m.svd_warm_start(level)
        self.ref[level] = [p.detach().clone() for p in m.weights(level)]
        saved_stage, self.stage = self.stage, level
        rec = self.record("stage_end")
        if self.out is not None:  # the learner as it stands at each boundary, for later analysis
            self.save_state(self.out / f"stage{level}.pt")
        self.stage = saved_stage
        self.stage_end[level] = rec
        line = f"[{self.cfg.method}] stage {level}/{m.levels[-1]} step {self.step}: " + _summary(rec)
        if self.progress:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
        else:
            self.log(line)

    def result_of(self, final: dict, seconds: float) -> Result:
        """The run's :class:`~bfclab.results.Result` from its final record and its stage ends."""
        err = error_name(final)
        if self.classify:
            metrics = {k: final[k] for k in ("test_error", "train_error", "test_loss", "train_loss")}
        else:
            metrics = {k: final[k] for k in ("test_nmse", "train_nmse")}
        stage_end = {s: {"feature_error": r["feature_error"], "term_error": r["term_error"],
                         "weight_change": r["weight_change"], err: r[err], f"{err}_ci": r[f"{err}_ci"]}
                     for s, r in self.stage_end.items()}
        return Result(method=self.cfg.method, seed=self.cfg.seed, config=to_dict(self.cfg), seconds=seconds,
                      metrics=metrics, feature_error=final["feature_error"],
                      procrustes_error=final["procrustes_error"], weight_change=final["weight_change"],
                      term_error=final["term_error"], intervals={err: final[f"{err}_ci"]},
                      stage_end=stage_end, steps=self.step,
                      extra={"normaliser": {"var_g": self.target.var_g, "var_g_se": self.target.var_g_se},
                             **({"polish": self.polish_info} if self.polish_info else {})})


def _summary(rec: dict) -> str:
    name = error_name(rec)
    err = f"test_err={rec[name]:.4f}" if name == "test_error" else f"test_nmse={rec[name]:.3e}"
    fe = " ".join(f"fe{l}={v:.3f}" for l, v in rec["feature_error"].items())
    return f"{err} {fe}"


RUN_FILES = ("config.json", "metrics.jsonl", "result.json", "divergence.json", "curves.png", "last_good.pt",
             "stage*.pt", "target.pt", CHECKPOINT, ".*.tmp")
#: files whose presence means a folder holds a run (the first one found is named in errors)
RUN_MARKERS = ("result.json", CHECKPOINT, "config.json", "metrics.jsonl")


def holds_run(out: Path) -> str | None:
    """The name of a file that shows ``out`` holds a bfclab run, or None."""
    return next((f for f in RUN_MARKERS if (Path(out) / f).exists()), None)


def first_difference(a, b, key: str = "") -> tuple[str, object, object] | None:
    """The first dotted key where two nested mappings differ (after a JSON round trip)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return (f"{key}.{k}" if key else k, a.get(k, "(absent)"), b.get(k, "(absent)"))
            diff = first_difference(a[k], b[k], f"{key}.{k}" if key else k)
            if diff:
                return diff
        return None
    return None if dumps(a, indent=None) == dumps(b, indent=None) else (key, a, b)


#: what a damaged run file's error tells the user to do
AGAIN = "use --overwrite to start the run again"


def read_stored_config(out: Path) -> dict:
    """``out/config.json`` as a mapping of a valid run config (one-line error naming the file if it
    is damaged: unreadable, not a mapping, an unknown key or a bad value)."""
    f = Path(out) / "config.json"
    data = read_json_mapping(f, "run file", AGAIN)
    try:
        probe = RunConfig()
        apply_mapping(probe, data)
        validate(probe)
    except ConfigError as e:
        raise ConfigError(f"run file '{f}': {e}; {AGAIN}") from None
    return data


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_stored_result(out: Path, cfg: RunConfig) -> Result:
    """``out/result.json`` of a finished run of ``cfg``, with the numbers a report prints (one-line
    error naming the file if it is damaged or made for another config)."""
    f = Path(out) / "result.json"
    res = read_json_mapping(f, "run file", AGAIN)
    try:
        result = Result.from_json(res)
    except ValueError as e:
        raise ConfigError(f"run file '{f}': {e}; {AGAIN}") from None
    if "config" not in res:
        raise ConfigError(f"run file '{f}': field 'config' must be a mapping; {AGAIN}")
    diff = first_difference(res["config"], json.loads(dumps(to_dict(cfg))))
    if diff:
        raise ConfigError(f"run file '{f}': made for another config (key {diff[0]}: {diff[1]!r} there, "
                          f"{diff[2]!r} now); {AGAIN}")
    err = error_names(cfg.data.task)[0]
    for key, kind in ((err, "a number"), ("seconds", "a number"), ("feature_error", "a mapping of levels to numbers")):
        if key not in res:  # (present ones were type-checked by Result.from_json)
            raise ConfigError(f"run file '{f}': field '{key}' must be {kind}; {AGAIN}")
    return result


def _checkpoint_problem(st: dict, cfg: RunConfig) -> str | None:
    """The first field of a loaded checkpoint that :meth:`Run._restore` could not use, or None."""
    def ints(v) -> bool:
        return isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)

    levels = set(range(2, cfg.target.L + 1))
    pos = st["position"]
    if not (ints(pos) and len(pos) == 2 and min(pos) >= 0):
        return "position"
    for key in ("step", "stage"):
        if not (isinstance(st[key], int) and not isinstance(st[key], bool) and st[key] >= 0):
            return key
    if not (_number(st["seconds"]) and math.isfinite(st["seconds"])):
        return "seconds"
    for key in ("active", "warm"):
        if not (ints(st[key]) and set(st[key]) <= levels):
            return key
    gen = st["gen"]
    if not (isinstance(gen, torch.Tensor) and gen.dtype == torch.uint8
            and gen.shape == torch.Generator().get_state().shape):
        return "gen"
    t = cfg.target
    want = Learner(t.d, resolve_widths(t), resolve_conn(t), resolve_alphas(t), cfg.learner, seed=cfg.seed).state_dict()
    model = st["model"]
    if not (isinstance(model, dict) and set(model) == set(want) and all(
            isinstance(model[k], torch.Tensor) and model[k].shape == w.shape and model[k].dtype == w.dtype
            for k, w in want.items())):
        return "model"
    opt = st["optimizer"]
    if opt is not None and not (isinstance(opt, dict) and isinstance(opt.get("state"), dict)
                                and isinstance(opt.get("param_groups"), list)):
        return "optimizer"
    ref = st["ref"]
    if not (isinstance(ref, dict) and all(isinstance(l, int) and l in levels and isinstance(ws, list)
                                          and all(isinstance(w, torch.Tensor) for w in ws) for l, ws in ref.items())):
        return "ref"
    err = error_names(cfg.data.task)[0]

    def record_ok(r) -> bool:  # what result_of() and plot_curves read of a record
        return (isinstance(r, dict) and _number(r.get(err)) and isinstance(r.get("feature_error"), dict)
                and all(_number(v) for v in r["feature_error"].values()) and isinstance(r.get("weight_change"), dict)
                and ints([r.get("step"), r.get("stage")]) and isinstance(r.get("event"), str))

    if not (isinstance(st["stage_end"], dict) and all(record_ok(r) for r in st["stage_end"].values())):
        return "stage_end"
    if not (isinstance(st["records"], list) and all(record_ok(r) for r in st["records"])):
        return "records"
    watch = st.get("watch")
    if watch is not None and not (
            isinstance(watch, dict) and isinstance(watch.get("recent"), torch.Tensor)
            and watch["recent"].dtype == torch.float64 and watch["recent"].shape == (1, DIVERGE_WINDOW)
            and isinstance(watch.get("count"), int) and not isinstance(watch["count"], bool) and watch["count"] >= 0):
        return "watch"
    return None


def load_checkpoint(path: Path, cfg: RunConfig) -> dict:
    """A checkpoint written by :meth:`Run.checkpoint` for this very config (one-line errors)."""
    try:
        st = load_torch_file(path)  # every member checked against its CRC first
    except Exception as e:  # torch raises many kinds of error on a damaged file
        why = f"{type(e).__name__}: {e}" if isinstance(e, ValueError) else type(e).__name__
        raise ConfigError(f"checkpoint '{path}': damaged or not a bfclab checkpoint ({why}); "
                          f"use --overwrite to start the run again") from None
    need = ("format", "config", "position", "step", "stage", "seconds", "model", "active", "warm", "gen",
            "optimizer", "ref", "stage_end", "records")
    if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT or any(k not in st for k in need):
        raise ConfigError(f"checkpoint '{path}': not a {CHECKPOINT_FORMAT} file; use --overwrite to start again")
    diff = first_difference(st["config"], json.loads(dumps(to_dict(cfg))))
    if diff:
        raise ConfigError(f"checkpoint '{path}': made for another config (key {diff[0]}: {diff[1]!r} there, "
                          f"{diff[2]!r} now); use --overwrite to start again")
    bad = _checkpoint_problem(st, cfg)
    if bad:
        raise ConfigError(f"checkpoint '{path}': field '{bad}' is malformed; use --overwrite to start again")
    return st


def check_stored_target(path: Path, cfg: RunConfig) -> None:
    """``path`` (a run's target.pt) loads and was made from ``cfg.target`` (one-line errors)."""
    stored = Target.load(path).config
    diff = first_difference(json.loads(dumps(stored)), json.loads(dumps(to_dict(cfg.target))))
    if diff:
        raise ConfigError(f"target file '{path}': made for another config (key target.{diff[0]}: {diff[1]!r} "
                          f"there, {diff[2]!r} now); use --overwrite to start again")


def prepare_out(out: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> dict | str | None:
    """Get ``out`` ready for a run of ``cfg`` without losing anything already written.

    Returns a checkpoint state to continue from, "finished" when ``out`` already holds the
    finished run of this config (``resume``), or None for a fresh start.  A folder that holds a
    run is only replaced with ``overwrite`` and only continued with ``resume`` (same config).
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}': exists and is not a directory")
    found = holds_run(out) if out.is_dir() else None
    if found and not (resume or overwrite):
        raise ConfigError(f"--out '{out}': already holds a run ({found}); use --resume to continue it "
                          f"or --overwrite to replace it")
    state = None
    if found and resume and not overwrite:
        if (out / "config.json").exists():
            diff = first_difference(read_stored_config(out), json.loads(dumps(to_dict(cfg))))
            if diff:
                raise ConfigError(f"--resume: '{out / 'config.json'}' holds a run of another config (key {diff[0]}: "
                                  f"{diff[1]!r} there, {diff[2]!r} now); use --overwrite to replace it")
        if (out / "result.json").exists():
            read_stored_result(out, cfg)
            return "finished"
        if (out / CHECKPOINT).exists():
            state = load_checkpoint(out / CHECKPOINT, cfg)
            if (out / "target.pt").exists():  # checked before anything is cleaned up
                check_stored_target(out / "target.pt", cfg)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"--out '{out}': cannot write there ({e.strerror or type(e).__name__})") from None
    if state is None:  # a fresh start (overwrite, or a resume with no checkpoint yet)
        for stale in RUN_FILES:
            for f in out.glob(stale):
                f.unlink()
    else:
        for f in out.glob(".*.tmp"):  # a write cut short by the kill
            f.unlink()
    return state


def check_target(target: Target, cfg: RunConfig) -> None:
    """A target given to a run must be the one ``cfg.target`` describes (one-line error)."""
    diff = first_difference(json.loads(dumps(target.config)), json.loads(dumps(to_dict(cfg.target))))
    if diff:
        raise ConfigError(f"target: the given target differs from the config (key target.{diff[0]}: "
                          f"{diff[1]!r} in the target, {diff[2]!r} in the config)")


def train(cfg: RunConfig, out: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
          target: Target | None = None, data: tuple | None = None, progress: bool | None = None,
          log: Callable[[str], None] | None = None) -> Run:
    """Run one configuration (PAPER_NOTES §4.2) and return the :class:`Run`: ``run.result`` (a
    :class:`~bfclab.results.Result`), ``run.model`` (the trained :class:`~bfclab.learner.Learner`),
    ``run.records`` (the metrics series) and ``run.target``.

    ``target``: the :class:`~bfclab.target.Target` to learn (default: built from ``cfg.target``;
    a given one must agree with ``cfg.target``).  ``data``: ``(x, y, x_test, y_test)`` instead of
    :func:`make_data`'s sample.  ``progress``: a tqdm bar (default: when stderr is a terminal);
    ``log``: where stage summaries go otherwise (default: stderr).

    With ``out``, write config.json, metrics.jsonl, target.pt, checkpoint.pt (every
    ``train.checkpoint_every`` steps), stage*.pt and result.json.  A folder that already holds a
    run is never overwritten silently: ``resume=True`` continues it from its last checkpoint (or,
    if it finished, loads its result and the learner its last checkpoint holds: the final one, or
    None for a run stored without checkpoints), ``overwrite=True`` replaces it, and
    otherwise a :class:`ConfigError` names both options.  Figures are the caller's
    (:func:`bfclab.plots.plot_curves`).
    """
    out_path = Path(out) if out is not None else None
    validate(cfg)  # before anything is written
    if target is not None:
        check_target(target, cfg)  # (Run checks it too; here before anything is written)
    state = None
    if out_path is not None:
        state = prepare_out(out_path, cfg, resume, overwrite)
        if state is None:
            write_json(out_path / "config.json", to_dict(cfg))
    if state is not None and target is None and (out_path / "target.pt").exists():
        check_stored_target(out_path / "target.pt", cfg)
        target = Target.load(out_path / "target.pt")
    run = Run(cfg, out_path, target=target, data=data, progress=progress, log=log)
    if state == "finished":  # the stored result, and the learner as its last checkpoint holds it
        if (out_path / CHECKPOINT).exists():
            run._restore(load_checkpoint(out_path / CHECKPOINT, cfg), rewrite_metrics=False)
        else:  # a run stored before checkpoints existed: its result only
            run.model = None
        run.records = read_records(out_path / "metrics.jsonl") if (out_path / "metrics.jsonl").exists() else []
        run.result = Result.read(out_path / "result.json")
        return run
    if out_path is not None and state is None:
        run.target.save(out_path / "target.pt")
    try:
        run.run(resume=state)
    except DivergenceError as e:
        if out_path is not None:
            write_json(out_path / "divergence.json", {"stage": e.stage, "step": e.step, "loss": e.value,
                                                       "last_good": "last_good.pt"})
        raise
    if out_path is not None:
        write_json(out_path / "result.json", run.result.to_json())
    return run
