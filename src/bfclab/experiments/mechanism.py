"""How much, and which part, of the lower-level features backward correction changes
(PAPER_NOTES §5.2, §5.5; the talks' "how much" and "which part of the lower-level features").

Both analyses read the stage-end checkpoints (``stage<l>.pt``) of the ``correction`` runs.

* **How much.**  For every lower level j and every later stage s > j, the relative weight change
  of (K_j, W_j) during that stage, ||theta_j(end s) - theta_j(end s-1)|| / ||theta_j(end j)||.
* **Which part.**  Level 2's read-out error is the function
      e(x) = c_2 Sum(sigma~(read-out_2(x))) - alpha_2 ||S*_2(x)||^2
  (learned minus true level-2 term).  §5.2 predicts that at the end of stage 2 this error is the
  higher-level signal h(x) = sum_{l>2} alpha_l ||S*_l(x)||^2 projected onto what level 2 can
  express, P_2 h (least-squares projection onto the span of {1, x_i, x_i x_j}: the degree-<=2
  polynomials, which contain every function level 2 can produce), and that the correction removes
  exactly that component.  We report, per seed, the share of e's energy along P_2 h,
  <e, P_2h>^2 / (||e||^2 ||P_2h||^2), and ||e|| relative to ||P_2 h||, before (end of stage 2)
  and after (end of training) the correction.  [R: the notes state the mechanism, not a metric;
  this is bfclab's operationalisation.]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import RunConfig, from_dict
from ..learner import Learner, trunc_square
from ..results import load_torch_file
from ..target import Target
from ..training import make_data
from .common import CellRun, Section, load_cells, med, table
from .correction import spec as correction_spec


def load_learner(run_dir: Path, stage: int, cfg: RunConfig, target: Target) -> Learner:
    st = load_torch_file(run_dir / f"stage{stage}.pt")
    m = Learner.for_target(target, cfg.learner, seed=cfg.seed)
    m.load_state_dict(st["model"])
    m.active = list(st["active"])
    m.warm = set(st["warm"])
    return m.double()


def level_term(m: Learner, x: torch.Tensor, level: int) -> torch.Tensor:
    """c_l Sum(sigma~(read-out_l(x))): level l's additive contribution to the learner's output."""
    with torch.no_grad():
        feats, wide, _ = m.forward_all(x, levels=[l for l in m.levels if l <= level])
        head = wide.get(level, feats[level])
        return m.layer(level).scale * trunc_square(head, m.cfg.B).sum(-1)


def degree2_basis(x: torch.Tensor) -> torch.Tensor:
    """[1, x_i, x_i x_j (i <= j)]: a basis of the polynomials of degree <= 2."""
    iu = torch.triu_indices(x.shape[1], x.shape[1])
    return torch.cat([torch.ones(x.shape[0], 1, dtype=x.dtype), x, x[:, iu[0]] * x[:, iu[1]]], dim=1)


def project(features: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    coef = torch.linalg.lstsq(features, h[:, None], driver="gelsd").solution
    return (features @ coef)[:, 0]


def share(e: torch.Tensor, p: torch.Tensor) -> float:
    return float((e @ p) ** 2 / ((e @ e) * (p @ p)))


def which_part(run: CellRun, n_eval: int = 20000) -> dict:
    cfg = from_dict(RunConfig, json.loads((run.dir / "config.json").read_text()))
    saved = run.dir / "target.pt"  # runs store their target; older runs are rebuilt from the config
    target = Target.load(saved) if saved.exists() else Target.from_config(cfg.target)
    _, _, xt, _ = make_data(target, cfg.data, cfg.seed)
    x = xt[:n_eval].to(torch.float64)
    true = target.level_outputs(x)
    h = sum(v for l, v in true.items() if l > 2)
    p = project(degree2_basis(x), h)
    last = target.L
    out = {}
    for when, stage in (("before", 2), ("after", last)):
        m = load_learner(run.dir, stage, cfg, target)
        e = level_term(m, x, 2) - true[2]
        out[when] = {"share_along_P2h": share(e, p), "norm_rel_P2h": float(e.norm() / p.norm())}
    return out


def how_much(run: CellRun) -> dict:
    """{level: {stage: relative change of (K, W) during that stage}} from the checkpoints."""
    L = max(run.result.stage_end)
    states = {s: load_torch_file(run.dir / f"stage{s}.pt")["model"]
              for s in range(2, L + 1)}
    out: dict = {}
    for j in range(2, L):
        keys = [k for k in states[j] if k.startswith(f"layers.{j}.") and k.split(".")[-1] in ("K", "W")]
        ref = sum(float(states[j][k].pow(2).sum()) for k in keys) ** 0.5
        out[j] = {}
        for s in range(j + 1, L + 1):
            diff = sum(float((states[s][k] - states[s - 1][k]).pow(2).sum()) for k in keys) ** 0.5
            out[j][s] = diff / ref
    return out


def summarize(root: Path, figdir: Path, quick: bool = False,
              command: str = "bfclab experiment correction") -> Section:
    cells = [c for c in load_cells(root, correction_spec(quick)) if c.params["method"] in ("bfc", "layerwise")]
    if not cells:
        return Section("mechanism", f"No `correction` results under `{root}`: run `{command}`.")
    parts = [f"Computed from the stage-end checkpoints of the `correction` runs (`{command}`; "
             f"then `bfclab report`)."]
    # how much
    L = max(cells[0].result.stage_end)
    rows = []
    for c in sorted(cells, key=lambda c: (c.params["method"], c.params["seed"])):
        for j, per in how_much(c).items():
            rows.append([c.params["method"], c.params["seed"], j] +
                        [f"{per[s]:.4f}" if s in per else "" for s in range(3, L + 1)])
    parts += ["**How much.** Relative weight change ‖Δθ_j‖/‖θ_j(end of stage j)‖ of each lower level j "
              "during each later stage:",
              table(["method", "seed", "level j"] + [f"during stage {s}" for s in range(3, L + 1)], rows)]
    # which part
    wrows, checks_vals = [], []
    for c in sorted(cells, key=lambda c: (c.params["method"], c.params["seed"])):
        wp = which_part(c)
        wrows.append([c.params["method"], c.params["seed"],
                      f"{wp['before']['share_along_P2h']:.3f}", f"{wp['after']['share_along_P2h']:.3f}",
                      f"{wp['before']['norm_rel_P2h']:.3f}", f"{wp['after']['norm_rel_P2h']:.3f}"])
        checks_vals.append((c.params["method"], wp))
    parts += ["**Which part.** Level 2's read-out error e = (learned − true level-2 term) against P₂h, the "
              "projection of the higher-level signal onto the degree-≤2 polynomials (what level 2 can "
              "express): the share of ‖e‖² along P₂h, and ‖e‖/‖P₂h‖, at the end of stage 2 (before) and at "
              "the end of training (after):",
              table(["method", "seed", "share before", "share after", "‖e‖/‖P₂h‖ before", "‖e‖/‖P₂h‖ after"], wrows)]
    bfc = [wp for m, wp in checks_vals if m == "bfc"]
    if bfc:
        parts.append(
            f"Under bfc the error at the end of stage 2 lies along P₂h (median share "
            f"{med(w['before']['share_along_P2h'] for w in bfc):.3f}); after the correction its size relative "
            f"to P₂h falls from {med(w['before']['norm_rel_P2h'] for w in bfc):.3f} to "
            f"{med(w['after']['norm_rel_P2h'] for w in bfc):.3f} (medians over seeds)."
        )
    return Section("mechanism", "\n\n".join(parts))
