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

import torch


def nmse(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Test error normalised by the label variance: MSE / Var(y)."""
    pred, y = pred.to(torch.float64), y.to(torch.float64)
    return float((pred - y).pow(2).mean() / y.var(unbiased=False))


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
