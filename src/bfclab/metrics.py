"""Measurements against the ground truth (PAPER_NOTES §7.3 "Metrics", §2.7).

Learned features are identifiable only up to a rotation (PAPER_NOTES §2.7), so every feature
metric here is invariant to an orthogonal transform of the learned features:

* ``feature_error``: 1 - R^2 of the least-squares affine map from the learned S_l to the true
  S*_l (summed over coordinates).  Invariant to any invertible linear map of S_l.
* ``procrustes_error``: sum ||S_l - U S*_l||^2 / sum ||S*_l||^2 with U the best orthogonal map
  (polar factor of sum S_l S*_l^T); only when the widths match.
* ``relative_change``: ||theta - theta_ref|| / ||theta_ref|| of a layer's weights.
"""

from __future__ import annotations

import math

import torch


def nmse(pred: torch.Tensor, y: torch.Tensor, var: float | None = None) -> float:
    """MSE / var: by default var = the labels' own variance; pass a target's population variance
    (``target.var_g``) to score as every bfclab test error is scored (issue 11)."""
    pred, y = pred.to(torch.float64), y.to(torch.float64)
    return float((pred - y).pow(2).mean() / (y.var(unbiased=False) if var is None else var))


def class_error(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of sign mistakes for labels in {-1, +1}."""
    return float((torch.sign(logits.to(torch.float64)) != y.to(torch.float64)).double().mean())


def feature_error(learned: torch.Tensor, true: torch.Tensor) -> float:
    """1 - R^2 of regressing the true features on [learned, 1] (least squares, float64)."""
    S = learned.detach().to(torch.float64)
    T = true.detach().to(torch.float64)
    X = torch.cat([S, torch.ones(S.shape[0], 1, dtype=torch.float64, device=S.device)], dim=1)
    T = T.to(S.device)
    coef = torch.linalg.lstsq(X.cpu(), T.cpu(), driver="gelsd").solution
    resid = T.cpu() - X.cpu() @ coef
    total = (T - T.mean(0)).pow(2).sum()
    return float(resid.pow(2).sum() / total)


def procrustes_error(learned: torch.Tensor, true: torch.Tensor) -> float:
    """Relative error after the best orthogonal alignment (requires equal widths)."""
    S = learned.detach().to(torch.float64).cpu()
    T = true.detach().to(torch.float64).cpu()
    if S.shape[1] != T.shape[1]:
        raise ValueError(f"Procrustes needs equal widths, got {S.shape[1]} and {T.shape[1]}")
    A, _, Bh = torch.linalg.svd(S.T @ T)
    U = A @ Bh  # maps true -> learned: S ~ T U^T
    return float((S - T @ U.T).pow(2).sum() / T.pow(2).sum())


def relative_change(params: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    """||theta - theta_ref||_F / ||theta_ref||_F over a layer's parameter tensors."""
    num = sum(float((p.detach() - r).pow(2).sum()) for p, r in zip(params, ref))
    den = sum(float(r.pow(2).sum()) for r in ref)
    return (num / den) ** 0.5 if den > 0 else float("nan")


# ---- measurement on a large test set, chunk by chunk (issue 11) ---------------------------------
#: independent blocks of the test set whose errors give a confidence interval (batch means)
BLOCKS = 20
#: two-sided 95 % quantiles of Student's t with (blocks - 1) degrees of freedom, for 2..20 blocks
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093}


def block_interval(values: torch.Tensor, weights: torch.Tensor,
                   bounds: tuple[float, float] = (-math.inf, math.inf)) -> list[float]:
    """95 % confidence interval of a mean from the means of independent blocks of the sample
    (``values`` = per-block sums, ``weights`` = per-block counts): the batch-means t-interval,
    mean +- t_{0.975, B-1} * sd(block means) / sqrt(B), cut to ``bounds``, the range the mean can
    take (a mean squared error is >= 0): on heavy-tailed errors the symmetric interval reaches
    below 0, and the cut interval covers the mean whenever the uncut one does.  With under two
    blocks: [nan, nan]."""
    keep = weights > 0
    means = values[keep] / weights[keep]
    B = int(means.numel())
    if B < 2:
        return [float("nan"), float("nan")]
    centre = float(values.sum() / weights.sum())
    half = _T975[B - 1] * float(means.std(unbiased=True)) / B ** 0.5
    return [max(centre - half, bounds[0]), min(centre + half, bounds[1])]


class Score:
    """Everything a record reports about a test set, accumulated chunk by chunk so that a test set
    of any size is scored in bounded memory (issue 11; PAPER_NOTES §7.3 for the metrics).

    Regression: ``nmse`` = mean squared error / ``var`` (the target's frozen population variance)
    with a 95 % interval over ``BLOCKS`` contiguous blocks of the test points (independent draws).
    Classification: the 0-1 error and the logistic loss, the error with the same kind of interval.
    Per level: ``feature_error`` (1 - R^2 of the affine least-squares map learned -> true, from the
    accumulated normal equations in float64), ``procrustes_error`` (from S^T T: the best orthogonal
    alignment's error is (|S|^2 + |T|^2 - 2 ||S^T T||_*) / |T|^2) and ``term_error``, the error of
    the level's contribution to the output, E[(c_l sum sigma(S_l) - alpha_l |S*_l|^2)^2] / var,
    rotation-invariant by construction.  The one-shot functions above are the reference the
    accumulated values are tested against.
    """

    def __init__(self, n: int, var: float, classify: bool = False, blocks: int = BLOCKS):
        self.n, self.var, self.classify = n, float(var), classify
        self.B = max(1, min(blocks, n))
        self.block_sum = torch.zeros(self.B, dtype=torch.float64)
        self.block_count = torch.zeros(self.B, dtype=torch.float64)
        self.loss_sum = 0.0
        self.levels: dict[int, dict[str, torch.Tensor]] = {}

    def _blocks(self, start: int, stop: int) -> torch.Tensor:
        return torch.div(torch.arange(start, stop, dtype=torch.int64) * self.B, self.n, rounding_mode="floor")

    @torch.no_grad()
    def add_points(self, start: int, point: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        """Points ``start .. start + len(point)``: their errors as given (e.g. a multi-class 0-1
        error, ``argmax != y``) and optionally their losses."""
        point = point.detach().to(torch.float64).cpu()
        idx = self._blocks(start, start + point.shape[0])
        self.block_sum.index_add_(0, idx, point)
        self.block_count.index_add_(0, idx, torch.ones_like(point))
        if loss is not None:
            self.loss_sum += float(loss.detach().to(torch.float64).sum())

    @torch.no_grad()
    def add(self, start: int, pred: torch.Tensor, y: torch.Tensor, feats: dict | None = None,
            true: dict | None = None, terms: dict | None = None, true_terms: dict | None = None) -> None:
        """Points ``start .. start + len(pred)`` of the test set: predictions, labels and, per
        level, learned and true features and output terms (any of the per-level dicts may be None)."""
        pred, y = pred.detach().to(torch.float64).cpu(), y.detach().to(torch.float64).cpu()
        idx = self._blocks(start, start + pred.shape[0])
        if self.classify:
            point = (torch.sign(pred) != y).to(torch.float64)
            self.loss_sum += float(torch.nn.functional.softplus(-y * pred).sum())
        else:
            point = (pred - y).pow(2)
        self.block_sum.index_add_(0, idx, point)
        self.block_count.index_add_(0, idx, torch.ones_like(point))
        for l, s in (feats or {}).items():
            S = s.detach().to(torch.float64).cpu()
            T = true[l].detach().to(torch.float64).cpu()
            X = torch.cat([S, torch.ones(S.shape[0], 1, dtype=torch.float64)], dim=1)
            acc = self.levels.setdefault(l, {})
            parts = {"XX": X.T @ X, "XT": X.T @ T, "TT": T.pow(2).sum(0), "Tsum": T.sum(0),
                     "SS": S.pow(2).sum(), "ST": S.T @ T}
            if terms is not None and l in terms:
                parts["term"] = (terms[l].detach().to(torch.float64).cpu() - true_terms[l].to(torch.float64).cpu()).pow(2).sum()
            for k, v in parts.items():
                acc[k] = acc[k] + v if k in acc else v

    def error(self) -> float:
        """The headline error: nMSE (regression) or the 0-1 error (classification)."""
        total = float(self.block_sum.sum() / self.block_count.sum())
        return total if self.classify else total / self.var

    def interval(self) -> list[float]:
        """95 % interval of :meth:`error` over the blocks, within the error's range ([0, 1] for a
        0-1 error, [0, inf) for an nMSE; the normaliser's own uncertainty is the target's
        ``var_g_se``, reported beside it)."""
        lo, hi = block_interval(self.block_sum, self.block_count, (0.0, 1.0 if self.classify else math.inf))
        return [lo, hi] if self.classify else [lo / self.var, hi / self.var]

    def loss(self) -> float:
        return self.loss_sum / float(self.block_count.sum())

    def feature_error(self, l: int) -> float:
        a = self.levels[l]
        coef = torch.linalg.lstsq(a["XX"], a["XT"], driver="gelsd").solution
        resid = a["TT"].sum() - 2 * (coef * a["XT"]).sum() + (coef * (a["XX"] @ coef)).sum()
        n = float(self.block_count.sum())
        total = (a["TT"] - a["Tsum"].pow(2) / n).sum()
        return float(resid.clamp(min=0) / total)

    def procrustes_error(self, l: int) -> float | None:
        a = self.levels[l]
        if a["ST"].shape[0] != a["ST"].shape[1]:
            return None
        nuclear = torch.linalg.svdvals(a["ST"]).sum()
        return float((a["SS"] + a["TT"].sum() - 2 * nuclear) / a["TT"].sum())

    def term_error(self, l: int) -> float | None:
        a = self.levels[l]
        return float(a["term"] / float(self.block_count.sum()) / self.var) if "term" in a else None
