"""Many runs of one growth plan trained as one stacked program (issue 10; PAPER_NOTES §4.2).

Runs that share their growth plan and every parameter shape (the same method, target shape and
learner, the same optimiser settings) differ only in values: seeds, training samples, label
noise, the target's weights.  :class:`BatchedRuns` keeps one :class:`~bfclab.training.Run` per
member (its data, learner, batch generator, records and output folder, exactly as when it runs
alone) and replaces only the step loop: the members' parameters are stacked along a leading axis
and the learner's own ``forward``/``regulariser`` (written for any leading axes) evaluate all of
them in one call through ``torch.func.functional_call``.

What stays per member, so that a member's run is the one it would be alone up to floating-point
rounding: its mini-batch indices (drawn from its own generator, in the same order), its level
initialisation, its gradient-norm clipping, its loss normalisation, its divergence (a member
that diverges stops; the others go on), its records and checkpoints at segment ends.  Adam's
update is elementwise, so one Adam over the stacked tensors is E independent Adams.  The
learning-rate schedule is shared (members of a group have the same ``train`` config).

Why not ``torch.vmap``: the learner's forward is a handful of matmuls that broadcast over a
leading axis as they stand, so ``functional_call`` with stacked tensors is the whole trick, and it
keeps one code path for one model and for many (``bench/throughput.py`` measures it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch
from torch.func import functional_call

from .config import RunConfig, to_dict
from .growth import Segment
from .methods import DivergenceError, DivergenceWatch, lr_factor
from .results import Result, dumps, write_json
from .target import Target
from .training import Run, prepare_out, validate

#: config keys in which members of one batched group may differ (values only, never shapes)
MEMBER_KEYS = ("seed", "data.n_train", "data.n_test", "data.label_noise", "target.seed", "target.rho",
               "target.alphas", "target.kappa", "target.mc_samples", "target.center")


def group_key(cfg: RunConfig) -> str:
    """Runs with equal keys can train as one batched group: the config without ``MEMBER_KEYS``."""
    d = json.loads(dumps(to_dict(cfg)))
    for key in MEMBER_KEYS:
        *path, last = key.split(".")
        node = d
        for part in path:
            node = node[part]
        node.pop(last, None)
    return json.dumps(d, sort_keys=True)


class _Objective(torch.nn.Module):
    """The training objective of one learner as a module, so that ``functional_call`` can swap in
    the stacked parameters of many: per-member fit (and fit + regulariser) for a batch."""

    def __init__(self, model: torch.nn.Module, classify: bool, levels: list[int], lam: tuple[float, float, float]):
        super().__init__()
        self.model, self.classify, self.levels, self.lam = model, classify, levels, lam

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_scale: torch.Tensor):
        out = self.model(x)
        if self.classify:
            fit = torch.nn.functional.softplus(-y * out).mean(-1)
        else:
            fit = (out - y).pow(2).mean(-1) / y_scale
        return fit, fit + self.model.regulariser(*self.lam, levels=self.levels)


class BatchedRuns:
    """E runs of one growth plan trained together (see the module docstring).  ``runs`` are fresh
    :class:`Run` objects (not started) whose configs have equal :func:`group_key`."""

    def __init__(self, runs: list[Run]):
        if not runs:
            raise ValueError("BatchedRuns needs at least one run")
        keys = {group_key(r.cfg) for r in runs}
        if len(keys) > 1:
            raise ValueError("runs of one batched group must agree on every config key but "
                             f"{', '.join(MEMBER_KEYS)}")
        shapes = {tuple((k, tuple(v.shape)) for k, v in r.model.state_dict().items()) for r in runs}
        if len(shapes) > 1:
            raise ValueError("runs of one batched group must have the same parameter shapes")
        self.runs = runs
        self.cfg = runs[0].cfg
        self.device = runs[0].device
        self.errors: dict[int, DivergenceError] = {}  # member -> why it stopped

    @property
    def alive(self) -> list[int]:
        return [e for e in range(len(self.runs)) if e not in self.errors]

    # ---- stacking ----------------------------------------------------------------------------
    def _stack(self, members: list[int], trainable: set[str]) -> dict[str, torch.Tensor]:
        """The members' parameters and buffers stacked along a new leading axis; the names in
        ``trainable`` as fresh leaves that require grad."""
        params = [dict(self.runs[e].model.named_parameters()) for e in members]
        buffers = [dict(self.runs[e].model.named_buffers()) for e in members]
        out = {name: torch.stack([p[name].detach() for p in params]).requires_grad_(name in trainable)
               for name in params[0]}
        out.update({name: torch.stack([b[name] for b in buffers]) for name in buffers[0]})
        return out

    @torch.no_grad()
    def _unstack(self, members: list[int], stacked: dict[str, torch.Tensor], names: list[str]) -> None:
        """Copy the stacked values of ``names`` back into the members' own learners."""
        for i, e in enumerate(members):
            own = dict(self.runs[e].model.named_parameters())
            for name in names:
                own[name].copy_(stacked[name][i])

    @torch.no_grad()
    def _restack(self, members: list[int], stacked: dict[str, torch.Tensor], names: list[str]) -> None:
        """The members' learners changed (a warm start): copy them into the stacked tensors."""
        for i, e in enumerate(members):
            own = dict(self.runs[e].model.named_parameters())
            for name in names:
                stacked[name][i].copy_(own[name])

    # ---- the loop ------------------------------------------------------------------------------
    def run(self, bar=None) -> list[Result | DivergenceError]:
        """Train every member through the whole plan; return each member's result (or the
        :class:`DivergenceError` that stopped it)."""
        t0 = time.time()
        lead = self.runs[0]
        for seg in lead.plan():
            members = self.alive
            if not members:
                break
            for e in members:
                self.runs[e].begin_segment(seg)
            self._run_segment(seg, members, bar, t0)
        out: list[Result | DivergenceError] = []
        for e, r in enumerate(self.runs):
            if e in self.errors:
                out.append(self.errors[e])
                continue
            r.polish()  # each member alone (full-batch L-BFGS; train.polish_iters)
            final = r.record("final")
            r.result = r.result_of(final, time.time() - t0)
            out.append(r.result)
        return out

    def _run_segment(self, seg: Segment, members: list[int], bar, t0: float) -> None:
        t, lead = self.cfg.train, self.runs[members[0]]
        for e in members:  # freezing masks (the same for every member: one plan)
            self.runs[e].segment_params(seg)
        trainable = {n for n, p in lead.model.named_parameters() if p.requires_grad}
        names = [n for n, _ in lead.model.named_parameters() if n in trainable]
        stacked = self._stack(members, trainable)
        params = [stacked[n] for n in names]
        opt = lead._optimizer(params)
        objective = _Objective(lead.model, lead.classify, list(seg.trainable), (t.lam_kw, t.lam_k, t.lam_w))
        prefixed = {f"model.{k}": v for k, v in stacked.items()}
        ns = torch.tensor([self.runs[e].x_tr.shape[0] for e in members])
        # every member's training sample in one flat table: member k's row j is row offset[k] + j
        x_all = torch.cat([self.runs[e].x_tr for e in members])
        y_all = torch.cat([self.runs[e].y_tr for e in members])
        offset = (torch.cumsum(ns, 0) - ns).to(self.device)[:, None]
        y_scale = torch.tensor([self.runs[e].y_scale for e in members], device=self.device)
        E, B = len(members), t.batch_size
        alive = torch.ones(len(members), dtype=torch.bool, device=self.device)
        watch = DivergenceWatch(len(members), t.diverge_factor)
        for i in range(seg.length):
            for g in opt.param_groups:
                g["lr"] = t.lr * lr_factor(t.schedule, i, seg.length, t.min_lr_frac)
            idx = torch.stack([torch.randint(int(ns[k]), (t.batch_size,), generator=self.runs[e].gen)
                               for k, e in enumerate(members)]).to(self.device)
            flat = (idx + offset).flatten()
            xb = x_all.index_select(0, flat).view(E, B, -1)
            fit, loss = functional_call(objective, prefixed, (xb, y_all.index_select(0, flat).view(E, B), y_scale))
            vals = fit.detach()
            bad = alive & watch.bad(vals, loss).to(alive.device)
            if bad.any():
                for k in bad.nonzero().flatten().tolist():
                    r = self.runs[members[k]]
                    self.errors[members[k]] = DivergenceError(r.stage, r.step, float(vals[k]))
                alive &= ~bad
                if not bool(alive.any()):  # every member of the group stopped
                    break
            opt.zero_grad(set_to_none=True)
            torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()
            if t.clip > 0:
                clip_per_member(params, t.clip)
            opt.step()
            for e in members:
                self.runs[e].step += 1
            if bar is not None:
                bar.update(1)
            if lead.has_event(seg, i):
                self._unstack(members, stacked, names)
                for k, e in enumerate(members):
                    if bool(alive[k]):
                        self.runs[e].after_step(seg, i)
                self._restack(members, stacked, names)
                if not bool(alive[0]) and bool(alive.any()):  # the objective follows a live member's
                    objective.model = self.runs[members[int(alive.nonzero()[0])]].model  # warm set
        self._unstack(members, stacked, names)
        for k, e in enumerate(members):
            r = self.runs[e]
            if not bool(alive[k]):
                continue
            r._end_of_stage(seg.ends[-1][1], seg)
            if r.out is not None:
                r.checkpoint((seg.index + 1, 0), None, time.time() - t0)


@torch.no_grad()
def clip_per_member(params: list[torch.Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` for each member (leading axis) on its own: the norm of
    a member's gradient over all its parameters, scaled down to ``max_norm`` where larger."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    sq = sum(g.pow(2).reshape(g.shape[0], -1).sum(1) for g in grads)
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(-1, *([1] * (g.dim() - 1))))


def train_many(cfgs: list[RunConfig], outs: list[str | Path | None] | None = None, *,
               targets: list[Target | None] | None = None, progress: bool | None = False,
               log: Callable[[str], None] | None = None) -> list[Run | DivergenceError]:
    """:func:`bfclab.training.train` for many configs of one batched group at once: each member
    gets the folder a single run would write (config.json, metrics.jsonl, target.pt, stage*.pt,
    checkpoint.pt at every segment end, result.json; divergence.json for a member that diverged).
    Folders must be new (or hold no run); a member that stops with a divergence is returned as
    its :class:`DivergenceError`, the others as their :class:`Run`."""
    outs = list(outs) if outs is not None else [None] * len(cfgs)
    targets = list(targets) if targets is not None else [None] * len(cfgs)
    for cfg in cfgs:
        validate(cfg)
    for cfg, out in zip(cfgs, outs):
        if out is not None:
            prepare_out(Path(out), cfg, resume=False, overwrite=False)
            write_json(Path(out) / "config.json", to_dict(cfg))
    quiet = log or (lambda s: None)
    runs = [Run(cfg, out, target=tg, progress=False, log=quiet) for cfg, out, tg in zip(cfgs, outs, targets)]
    for r in runs:
        if r.out is not None:
            r.target.save(r.out / "target.pt")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(s.length for s in runs[0].plan()), desc=f"{cfgs[0].method} x{len(runs)}", leave=False)
    try:
        results = BatchedRuns(runs).run(bar)
    finally:
        if bar is not None:
            bar.close()
    out: list[Run | DivergenceError] = []
    for r, res in zip(runs, results):
        if isinstance(res, DivergenceError):
            if r.out is not None:
                write_json(r.out / "divergence.json", {"stage": res.stage, "step": res.step, "loss": res.value,
                                                       "last_good": "last_good.pt"})
            out.append(res)
        else:
            if r.out is not None:
                write_json(r.out / "result.json", res.to_json())
            out.append(r)
    return out

