"""Kernel ridge on the *true* lower-level features (issue 12, part 2; PAPER_NOTES §2.3, §2.4, §6):
the structural-knowledge baseline, the best a sequential method could do were its lower levels
perfect.

Given the target's S*_2(x), ..., S*_{L-1}(x) (and x itself where the top level reads the input,
1 in J_L), every term of G*(x) = sum_l alpha_l ||S*_l(x)||^2 is a polynomial of low degree in them:
the lower terms alpha_l ||S*_l||^2 are of degree 2, and the top level's
S*_L = sum_{j in J_L} W*_{L,j} sigma(S*_j) (+ W*_{L,1} x + W*_{L,0}) is of degree 2, so
alpha_L ||S*_L||^2 of degree 4.  A polynomial kernel of degree 4 (2 when L = 2, where the only
input is x) on these inputs therefore holds the target exactly, and its sample need is that of a
degree-4 problem in d + sum_l k_l variables instead of a degree-2^(L-1) one in d.  Comparing it
with bfc separates "knows the hierarchy's features" from "learns them".

Why a wrapper and not a new kernel: the inputs are a fixed feature map of x (computed from the
target, an oracle no learner has), after which any estimator of the registry applies; the exact
KRR (its ridge chosen on validation data as everywhere) is the one used here.
"""

from __future__ import annotations

import torch

from ..config import ConfigError


def oracle_levels(target) -> tuple[list[int], bool]:
    """(the hidden levels whose true features are given, whether x is given too): levels 2..L-1,
    and x when the top level reads the input (or when there is no hidden level below the top)."""
    t = getattr(target, "target", target)  # a protocol view wraps the quadratic class
    if t is None or not (hasattr(t, "conn") and hasattr(t, "features")):
        raise ConfigError("estimator 'krr-oracle': needs the quadratic class's target (its true features)")
    lower = list(range(2, t.L))
    return lower, (1 in t.conn[t.L]) or not lower


def oracle_inputs(target, x: torch.Tensor) -> torch.Tensor:
    """[S*_2(x), ..., S*_{L-1}(x), (x)] as float64 rows (module docstring)."""
    lower, with_x = oracle_levels(target)
    t = getattr(target, "target", target)
    feats = t.features(x.to(torch.float64).cpu())
    cols = [feats[l] for l in lower] + ([x.to(torch.float64).cpu()] if with_x else [])
    return torch.cat(cols, dim=1)


class OracleFeatures:
    """An estimator fitted on :func:`oracle_inputs` of x instead of x (module docstring)."""

    def __init__(self, inner, target, name: str = "krr-oracle"):
        oracle_levels(target)  # one-line error now, not at fit
        self.inner, self.target, self.name = inner, target, name

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "OracleFeatures":
        u = oracle_inputs(self.target, x)
        self.inner.fit(u, y)
        lower, with_x = oracle_levels(self.target)
        self.info = {"levels": lower, "with_x": with_x, "input_width": int(u.shape[1]),
                     "ridge": float(getattr(self.inner, "ridge_", float("nan"))),
                     "selection": getattr(self.inner, "selection_", None)}
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.predict(oracle_inputs(self.target, x))
