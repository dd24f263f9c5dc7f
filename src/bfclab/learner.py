"""The learner network (PAPER_NOTES §3) and its stage-wise bookkeeping.

For every level l = 2..L of the target the learner has (PAPER_NOTES §3.1)

    phi_0 = 1,  phi_1(x) = x,  phi_j(x) = sigma(R_j S_j(x))   for j >= 2     (fixed random lift)
    z_l(x)  = concat_{j in J_l} phi_j(x)                                       (q_l entries)
    S_l(x)  = K_l z_l(x)        in R^{k_l}   narrow features, passed upward
    F_l(x)  = W_l z_l(x)        in R^m       wide branch, read out      ("paper" learner only)

and the output F(x) = sum_l c_l * Sum(sigma~_B(F_l(x))) + b, with per-level scales c_l fixed at
alpha_l (learnable as an option) and an offset b (used by the classification loss; 0 and frozen
for regression).  The ``simple`` variant has no wide branch: F(x) = sum_l c_l Sum(sigma~_B(S_l)).

Choices where the notes are [R]/[M-low] (see docs/DESIGN.md):
* R_j has p_j = k_j(k_j+1)/2 rows by default, i.i.d. Gaussian rows normalised to unit length
  (generic, so the lift spans every quadratic form of S_j, PAPER_NOTES §3.1 [D]).
* A constant channel is in every z_l (``bias``), because the target's frozen centring makes each
  level an affine function of the squares below.
* sigma~_B(z) = z^2 for |z| <= B, B(2|z| - B) beyond (C^1, PAPER_NOTES §3.1 [R]).
* ``lift_center``: the lift is used as sigma(R_j S_j) - 1 (a fixed shift, the Hermite-style
  centring for unit-variance inputs; absorbed by the constant channel), which conditions the
  optimisation much better.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import seeds
from .config import LearnerConfig, check_finite, check_limits


def trunc_square(z: torch.Tensor, B: float) -> torch.Tensor:
    """sigma~_B(z): z^2 on |z| <= B and the tangent line B(2|z| - B) beyond (PAPER_NOTES §3.1)."""
    if math.isinf(B):
        return z * z
    a = z.abs()
    return torch.where(a <= B, z * z, B * (2 * a - B))


def lift_matrix(k: int, p: int, gen: torch.Generator) -> torch.Tensor:
    """A fixed random lift R (p x k) with unit-norm Gaussian rows (PAPER_NOTES §3.1)."""
    r = torch.randn(p, k, generator=gen, dtype=torch.float64)
    return (r / r.norm(dim=1, keepdim=True)).to(torch.float32)


def quadratic_basis(R: torch.Tensor) -> torch.Tensor:
    """Rows vech(r_i r_i^T) of the lift: coordinates (R s)_i^2 = <vech(r_i r_i^T), vech-ish(ss^T)>.

    Returned as a p x k(k+1)/2 matrix in the basis s_a s_b (a <= b), so that its rank tells
    whether sigma(R s) spans all quadratic forms of s.
    """
    k = R.shape[1]
    iu = torch.triu_indices(k, k)
    outer = R[:, :, None] * R[:, None, :]  # p x k x k
    mult = torch.where(iu[0] == iu[1], 1.0, 2.0).to(R.dtype)
    return outer[:, iu[0], iu[1]] * mult


def validate(cfg: LearnerConfig) -> None:
    """One-line errors for a bad learner config: each field's limits (its ``opt`` metadata; B may
    be inf, the plain square), the same check as every config."""
    check_finite(cfg, prefix="learner.")
    check_limits(cfg, prefix="learner.")


class Level(nn.Module):
    """One level's weights: the narrow K (k x q), for the paper learner the wide W (m x q), and the
    output scale c_l (initialised at alpha_l; a parameter only when learnable)."""

    def __init__(self, k: int, q: int, m: int | None, alpha: float, learn_scale: bool):
        super().__init__()
        self.K = nn.Parameter(torch.zeros(k, q))
        self.W = nn.Parameter(torch.zeros(m, q)) if m else None
        if learn_scale:
            self.scale = nn.Parameter(torch.tensor(float(alpha)))
        else:
            self.register_buffer("scale", torch.tensor(float(alpha)))


class Learner(nn.Module):
    """The paper's learner mirroring the target's connection graph (PAPER_NOTES §3).

    ``widths`` (k_l), ``conn`` (J_l) and ``alphas`` come from the target (the learner knows the
    connection sets, PAPER_NOTES §2.3 [M-low]).  Only levels in ``self.active`` contribute.
    """

    @classmethod
    def for_target(cls, target, cfg: LearnerConfig | None = None, seed: int = 0) -> "Learner":
        """The learner whose levels, widths, connections and alphas are those of ``target``
        (a :class:`bfclab.target.Target`, PAPER_NOTES §3.1)."""
        return cls(target.d, target.widths, target.conn, target.alphas, cfg or LearnerConfig(), seed=seed)

    def __init__(self, d: int, widths: dict, conn: dict, alphas: dict, cfg: LearnerConfig, seed: int = 0):
        super().__init__()
        validate(cfg)
        self.cfg = cfg
        self.d = d
        self.levels = sorted(widths)
        self.L = max(self.levels)
        self.widths = dict(widths)
        self.conn = {l: list(conn[l]) for l in self.levels}
        gen = seeds.generator("learner_init", seed)
        self.lift_rows = {}
        for j in self.levels[:-1]:
            p = cfg.lift if cfg.lift is not None else widths[j] * (widths[j] + 1) // 2
            self.register_buffer(f"R_{j}", lift_matrix(widths[j], p, gen))
            self.lift_rows[j] = p
        self.q = {l: self._q(l) for l in self.levels}
        m = cfg.m if cfg.kind == "paper" else None
        self.layers = nn.ModuleDict(
            {str(l): Level(widths[l], self.q[l], m, alphas[l], cfg.learn_scales) for l in self.levels}
        )
        # Global read-out offset b: trained only by the classification loss (threshold of the logit).
        self.offset = nn.Parameter(torch.zeros(()), requires_grad=False)
        self.active: list[int] = []
        self.warm: set[int] = set()  # levels whose K has been warm-started from W (K-W term on)

    # ---- structure ---------------------------------------------------------------------------
    def _dim(self, j: int) -> int:
        return 1 if j == 0 else self.d if j == 1 else self.lift_rows[j]

    def _q(self, l: int) -> int:
        return int(self.cfg.bias) + sum(self._dim(j) for j in self.conn[l] if not (j == 0 and self.cfg.bias))

    def R(self, j: int) -> torch.Tensor:
        return getattr(self, f"R_{j}")

    def layer(self, l: int) -> Level:
        return self.layers[str(l)]

    def weights(self, l: int) -> list[nn.Parameter]:
        """Level l's weight matrices (K, and W for the paper learner): what weight change measures."""
        lv = self.layer(l)
        return [lv.K] + ([lv.W] if lv.W is not None else [])

    def layer_params(self, l: int) -> list[nn.Parameter]:
        """Every trainable parameter of level l: its weights and, when learnable, its output scale."""
        lv = self.layer(l)
        return self.weights(l) + ([lv.scale] if isinstance(lv.scale, nn.Parameter) else [])

    # ---- forward -----------------------------------------------------------------------------
    def lift(self, j: int, sT: torch.Tensor) -> torch.Tensor:
        """phi_j = sigma(R_j S_j) (optionally truncated), feature-major: ``sT`` is (..., k_j, n)."""
        u = self.R(j) @ sT
        phi = trunc_square(u, self.cfg.B) if self.cfg.trunc_lift else u * u
        return phi - 1.0 if self.cfg.lift_center else phi

    def _mix(self, M: torch.Tensor, l: int, chans: dict) -> torch.Tensor:
        """M z_l(x) for a weight M (..., r, q_l) of level l, feature-major (..., r, n); ``chans``
        holds the channels, feature-major: x^T under 1 and phi_j under each lifted j in J_l.

        z_l is the concatenation of the channels in J_l (constant first when ``bias``); it is never
        built: each channel meets its own block of M's columns (one small matmul each), which on
        CPU is several times faster than a concatenation and one matmul (``bench/throughput.py``).
        """
        out = M[..., :1] if self.cfg.bias else None  # the constant channel, broadcast over n
        col = int(self.cfg.bias)
        for j in self.conn[l]:
            if j == 0:
                if not self.cfg.bias:
                    out = M[..., col:col + 1] if out is None else out + M[..., col:col + 1]
                    col += 1
                continue
            inp = chans[j]
            term = M[..., col:col + inp.shape[-2]] @ inp
            col += inp.shape[-2]
            out = term if out is None else out + term
        return out.expand(*out.shape[:-1], chans[1].shape[-1])

    def forward_all(self, x: torch.Tensor, levels: list[int] | None = None):
        """Features S_l (..., n, k_l), wide pre-activations F_l and the output F(x) (..., n) for the
        given levels.  Computed feature-major (the batch axis last: one x^T copy, then every matmul
        is a short-and-wide product, the shape CPU kernels run fastest); features are returned as
        transposed views."""
        levels = self.active if levels is None else levels
        chans = {1: x.mT.contiguous()}  # x^T and each phi_j, computed once, used by every level
        featsT: dict[int, torch.Tensor] = {}
        wide: dict[int, torch.Tensor] = {}
        out = self.offset[..., None].expand(x.shape[:-1])
        for l in levels:
            lv = self.layer(l)
            for j in self.conn[l]:
                if j >= 2 and j not in chans:
                    chans[j] = self.lift(j, featsT[j])
            featsT[l] = self._mix(lv.K, l, chans)
            head = featsT[l] if lv.W is None else self._mix(lv.W, l, chans)
            if lv.W is not None:
                wide[l] = head.mT
            out = out + lv.scale[..., None] * trunc_square(head, self.cfg.B).sum(-2)
        return {l: f.mT for l, f in featsT.items()}, wide, out

    def terms(self, feats: dict, wide: dict) -> dict[int, torch.Tensor]:
        """Each level's contribution c_l Sum(sigma~_B(head_l)) to the output, from
        :meth:`forward_all`'s features and wide pre-activations (head = F_l, or S_l for ``simple``)."""
        return {l: self.layer(l).scale[..., None] * trunc_square(wide.get(l, s), self.cfg.B).sum(-1)
                for l, s in feats.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) for x of shape (n, d); with parameters and buffers stacked along a leading axis of
        E models (``torch.func.functional_call``) and x of shape (E, n, d), all E at once."""
        return self.forward_all(x)[2]

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Learned S_l(x) for the active levels."""
        return self.forward_all(x)[0]

    # ---- stage-wise bookkeeping (PAPER_NOTES §3.3, §4) ---------------------------------------
    @torch.no_grad()
    def activate(self, l: int, init_std: float, gen: torch.Generator, tied: bool = False) -> None:
        """Switch level l on, from small Gaussian noise (never exact zero: a saddle, §9.2).
        ``tied``: the K-W consistency term is on from the start (no warm start, e.g. ``e2e``)."""
        if l in self.active:
            return
        if self.active and l != max(self.active) + 1:
            raise ValueError(f"levels are activated in order; got {l} after {self.active}")
        lv = self.layer(l)
        for p in (lv.K, lv.W):
            if p is not None:
                p.copy_(torch.randn(p.shape, generator=gen) * init_std / math.sqrt(p.shape[1]))
        self.active.append(l)
        if tied:
            self.warm.add(l)

    @torch.no_grad()
    def svd_warm_start(self, l: int) -> None:
        """K_l <- Lambda_k^(1/2) V_k^T from W_l^T W_l = V Lambda V^T (PAPER_NOTES §4.3).

        Afterwards K_l^T K_l is the best rank-k_l approximation of W_l^T W_l.
        """
        lv = self.layer(l)
        if lv.W is None:
            return
        lv.K.copy_(rank_k_factor(lv.W, lv.K.shape[0]))
        self.warm.add(l)

    def regulariser(self, lam_kw: float, lam_k: float, lam_w: float, levels: list[int] | None = None) -> torch.Tensor:
        """sum_l lam_kw ||K^T K - W^T W||_F^2 + lam_k ||K||_F^2 + lam_w ||W||_F^2 (PAPER_NOTES §4.1).

        The K-W consistency term of a level is switched on once its K has been warm-started
        from W (PAPER_NOTES §4.2 step 3); before that K carries nothing upward.  ``levels``
        restricts the sum to the levels being trained (for a frozen level it is a constant).
        With parameters stacked along a leading axis (:mod:`bfclab.batched`) it is one value per model.
        """
        reg = self.offset.new_zeros(self.offset.shape)
        for l in self.active if levels is None else levels:
            lv = self.layer(l)
            if lam_k:
                reg = reg + lam_k * lv.K.pow(2).sum((-2, -1))
            if lv.W is not None:
                if lam_kw and l in self.warm:
                    reg = reg + lam_kw * (lv.K.mT @ lv.K - lv.W.mT @ lv.W).pow(2).sum((-2, -1))
                if lam_w:
                    reg = reg + lam_w * lv.W.pow(2).sum((-2, -1))
        return reg

    # ---- the ground truth as a learner (for tests and diagnostics) ----------------------------
    @torch.no_grad()
    def set_to_target(self, target) -> None:
        """Set K_l (and W_l) so that S_l = S*_l exactly and the output equals G* (PAPER_NOTES §9.6).

        The square sigma(S*_j)_i = s_i^2 is written in the lift's basis by solving
        sum_r A_ir (r_r . s)^2 = s_i^2, possible because the lift spans all quadratic forms.
        """
        self.active = list(self.levels)
        for l in self.levels:
            cols = []
            mu, sc = target.mu[l].to(torch.float64), target.scale[l].to(torch.float64)
            const = -mu.clone()
            for j in self.conn[l]:
                w = target.weights[l][j].to(torch.float64)
                if j == 0:
                    const = const + w[:, 0]
                    if not self.cfg.bias:
                        cols.append(torch.zeros(w.shape[0], 1, dtype=torch.float64))
                elif j == 1:
                    cols.append(w)
                else:
                    Q = quadratic_basis(self.R(j).to(torch.float64))  # p x k(k+1)/2
                    k = self.widths[j]
                    iu = torch.triu_indices(k, k)
                    E = (iu[0] == iu[1]).to(torch.float64)[None, :].expand(k, -1).clone()
                    E = E * (iu[0][None, :] == torch.arange(k)[:, None])  # e_i e_i^T in the basis
                    A = torch.linalg.lstsq(Q.T, E.T).solution.T  # k x p: A Q = E
                    cols.append(w @ A)
                    if self.cfg.lift_center:  # phi = sigma(R s) - 1: give the 1 back via the constant
                        const = const + (w @ A).sum(1)
            K = torch.cat(([const[:, None]] if self.cfg.bias else []) + cols, dim=1) / sc[:, None]
            lv = self.layer(l)
            lv.K.copy_(K.to(lv.K.dtype))
            if lv.W is not None:
                lv.W.zero_()
                lv.W[: K.shape[0]] = K.to(lv.W.dtype)


def rank_k_factor(W: torch.Tensor, k: int) -> torch.Tensor:
    """Return a k x q factor F with F^T F the best rank-k approximation of W^T W (§4.3)."""
    _, S, Vh = torch.linalg.svd(W.detach().to(torch.float64), full_matrices=False)
    kk = min(k, S.shape[0])
    F = torch.zeros(k, W.shape[1], dtype=torch.float64)
    F[:kk] = S[:kk, None] * Vh[:kk]
    return F.to(W.dtype)
