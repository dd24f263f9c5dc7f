"""Kernels for the non-hierarchical baselines (PAPER_NOTES §6: "any kernel method, neural
tangent kernels"; §7.3 A.5: polynomial KRR of degree 2^(L-1), RBF KRR, two-layer-ReLU-NTK KRR).

A kernel maps float tensors x (n x d) and z (m x d) to the n x m matrix k(x_i, z_j), in the
dtype and on the device of its inputs.  Every kernel works in two steps, so that the Gram matrix
of KRR can be filled block by block without ever holding more than one block of temporaries:

    prep = kernel.prepare(x)                # per-row data, a tuple of (n, ...) tensors
    kernel.block(rows(prep_x, a, b), prep_z) # one (b - a) x m block of k

``kernel(x, z)`` does both, in row blocks of ``block_size``.  The kernels (u = x / sqrt(d)):

* :class:`Polynomial`   k(x, x') = (c + <x, x'>/d)^p.  The default target is a degree-2^(L-1)
  polynomial (PAPER_NOTES §2.4), so p = 8 at L = 4.
* :class:`RBF`          k(x, x') = exp(-||x - x'||^2 / (2 l^2 d)).
* :class:`ReluNTK`      the neural tangent kernel of the two-layer ReLU network

      f(x) = 1/sqrt(m) sum_i a_i relu(w_i . x / sqrt(d) + beta b_i),   a_i, w_i, b_i ~ N(0, 1),

  with a, w and b all trained (``beta`` = ``bias``; beta = 0 is the bias-free network), in the
  limit m -> infinity.  With u~ = [x/sqrt(d), beta] and theta the angle between u~ and v~,

      Theta(x, x') = kappa_1(u~, v~) + <u~, v~> kappa_0(u~, v~),
      kappa_1 = |u~||v~| (sin theta + (pi - theta) cos theta) / (2 pi)   (arc-cosine, order 1:
                E_w relu(w.u~) relu(w.v~), the gradient in a),
      kappa_0 = (pi - theta) / (2 pi)                                  (arc-cosine, order 0:
                E_w 1[w.u~ > 0] 1[w.v~ > 0], times E a^2 = 1: the gradient in w and b).

  This is the parametrisation of :class:`bfclab.baselines.two_layer.TwoLayerNet`, whose
  empirical NTK converges to it (tested).
* :class:`EmpiricalNTK` Theta(x, x') = <grad_theta f(x), grad_theta f(x')> for any module f
  (n x d -> n), its Jacobian rows computed with torch.func (functional_call + vmap + jacrev) in
  chunks of samples.  :func:`learner_entk` builds it for the bfclab learner
  (:class:`bfclab.learner.Learner`, PAPER_NOTES §3) with every level activated at init std 1.0:
  the learner's stage-wise init is tiny (§3.3), and at tiny weights the kernel is degenerate
  (the squares' gradients vanish).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .. import seeds
from ..config import LearnerConfig
from ..learner import Learner

Prepared = tuple  # of tensors, each with the rows of x as its leading dimension

# The kernels' parameters are checked where the estimator options are parsed (the kernel option
# classes of ``bfclab.baselines.registry``: degree > 0, c >= 0, lengthscale > 0, bias >= 0,
# init_std > 0), not in the constructors below.


def rows(prep: Prepared, a: int, b: int) -> Prepared:
    """Rows a:b of every tensor of a prepared tuple."""
    return tuple(t[a:b] for t in prep)


class Kernel:
    """Base class: ``prepare`` per-row data once, then ``block`` computes any block of k."""

    name = "kernel"

    def prepare(self, x: torch.Tensor) -> Prepared:
        raise NotImplementedError

    def block(self, a: Prepared, b: Prepared) -> torch.Tensor:
        raise NotImplementedError

    def prepared_width(self, d: int) -> int:
        """Floats per row that ``prepare`` keeps (for memory estimates)."""
        return d + 1

    def block_temporaries(self) -> int:
        """How many block-sized temporaries ``block`` holds at once (for memory estimates)."""
        return 2

    def diag(self, x: torch.Tensor) -> torch.Tensor:
        """k(x_i, x_i) for every row."""
        return self.diag_prepared(self.prepare(x))

    def diag_prepared(self, prep: Prepared, block_size: int = 1024) -> torch.Tensor:
        """k(x_i, x_i) from prepared rows (the base version takes diagonals of diagonal blocks)."""
        n = prep[0].shape[0]
        out = [torch.diagonal(self.block(rows(prep, a, a + block_size), rows(prep, a, a + block_size))).clone()
               for a in range(0, n, block_size)]
        return torch.cat(out) if out else prep[0].new_zeros(0)

    def __call__(self, x: torch.Tensor, z: torch.Tensor, block_size: int = 2048) -> torch.Tensor:
        """The n x m matrix k(x_i, z_j), computed in row blocks of ``block_size``."""
        px, pz = self.prepare(x), self.prepare(z)
        out = x.new_empty(x.shape[0], z.shape[0])
        for a in range(0, x.shape[0], block_size):
            b = min(x.shape[0], a + block_size)
            out[a:b] = self.block(rows(px, a, b), pz)
        return out

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Polynomial(Kernel):
    """k(x, x') = (c + <x, x'>/d)^degree (PAPER_NOTES §6: polynomial kernel of degree 2^(L-1))."""

    name = "poly"

    def __init__(self, degree: int = 8, c: float = 1.0):
        self.degree, self.c = int(degree), float(c)

    def prepare(self, x: torch.Tensor) -> Prepared:
        return (x / math.sqrt(x.shape[1]),)

    def prepared_width(self, d: int) -> int:
        return d

    def block(self, a: Prepared, b: Prepared) -> torch.Tensor:
        k = a[0] @ b[0].T
        return k.add_(self.c).pow_(self.degree)

    def diag_prepared(self, prep: Prepared) -> torch.Tensor:
        return (self.c + prep[0].pow(2).sum(1)).pow(self.degree)


class RBF(Kernel):
    """k(x, x') = exp(-||x - x'||^2 / (2 lengthscale^2 d)) (PAPER_NOTES §7.3 A.5: RBF KRR)."""

    name = "rbf"

    def __init__(self, lengthscale: float = 1.0):
        self.lengthscale = float(lengthscale)

    def prepare(self, x: torch.Tensor) -> Prepared:
        u = x / (self.lengthscale * math.sqrt(x.shape[1]))
        return (u, u.pow(2).sum(1))

    def block(self, a: Prepared, b: Prepared) -> torch.Tensor:
        k = a[0] @ b[0].T  # <u, v>
        k.mul_(2.0).sub_(a[1][:, None]).sub_(b[1][None, :])  # -||u - v||^2
        return k.clamp_(max=0.0).mul_(0.5).exp_()

    def diag_prepared(self, prep: Prepared) -> torch.Tensor:
        return prep[1].new_ones(prep[1].shape[0])


def _angles(a: Prepared, b: Prepared) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(<u, v>, |u||v|, cos theta) for prepared rows (u, |u|)."""
    dot = a[0] @ b[0].T
    norms = a[1][:, None] * b[1][None, :]
    cos = (dot / norms.clamp_min(torch.finfo(dot.dtype).tiny)).clamp_(-1.0, 1.0)
    return dot, norms, cos


def arccos0(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Arc-cosine kernel of order 0: E_w 1[w.u > 0] 1[w.v > 0] = (pi - theta)/(2 pi), w ~ N(0, I)."""
    _, _, cos = _angles((u, u.norm(dim=1)), (v, v.norm(dim=1)))
    return (math.pi - torch.arccos(cos)) / (2 * math.pi)


def arccos1(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Arc-cosine kernel of order 1: E_w relu(w.u) relu(w.v)
    = |u||v| (sin theta + (pi - theta) cos theta) / (2 pi), w ~ N(0, I)."""
    _, norms, cos = _angles((u, u.norm(dim=1)), (v, v.norm(dim=1)))
    sin = torch.sqrt((1 - cos * cos).clamp_min(0))
    return norms * (sin + (math.pi - torch.arccos(cos)) * cos) / (2 * math.pi)


class ReluNTK(Kernel):
    """NTK of the two-layer ReLU network f(x) = 1/sqrt(m) sum_i a_i relu(w_i.x/sqrt(d) + bias b_i)
    with every layer trained, infinite width (PAPER_NOTES §6: neural tangent kernels).  Closed form
    in the module docstring: kappa_1(u~, v~) + <u~, v~> kappa_0(u~, v~), u~ = [x/sqrt(d), bias]."""

    name = "ntk-relu"

    def __init__(self, bias: float = 1.0):
        self.bias = float(bias)

    def prepare(self, x: torch.Tensor) -> Prepared:
        u = x / math.sqrt(x.shape[1])
        if self.bias:
            u = torch.cat([u, u.new_full((x.shape[0], 1), self.bias)], dim=1)
        return (u, u.norm(dim=1))

    def block_temporaries(self) -> int:
        return 5

    def block(self, a: Prepared, b: Prepared) -> torch.Tensor:
        dot, norms, cos = _angles(a, b)
        sin = torch.sqrt((1 - cos * cos).clamp_min_(0))
        pt = torch.arccos(cos).neg_().add_(math.pi)  # pi - theta
        # 2 pi Theta = |u||v| (sin + (pi - theta) cos) + <u, v> (pi - theta), computed in place
        k = norms.mul_(sin.add_(cos.mul_(pt))).add_(dot.mul_(pt))
        return k.div_(2 * math.pi)

    def diag_prepared(self, prep: Prepared) -> torch.Tensor:
        return prep[1].pow(2)  # theta = 0: kappa_1 = |u~|^2 / 2 and <u~, u~> kappa_0 = |u~|^2 / 2


class EmpiricalNTK(Kernel):
    """Theta(x, x') = <J(x), J(x')> with J(x) = d f(x) / d theta over the module's trainable
    parameters (PAPER_NOTES §6: NTK of the network itself).

    ``prepare`` computes the Jacobian rows with torch.func (functional_call + vmap + jacrev),
    ``chunk`` samples at a time; ``block`` is then a plain inner product.  ``module`` maps an
    (n, d) tensor to (n,) outputs; it is moved to the inputs' dtype and device (it is owned by the
    kernel: pass a copy if it is used elsewhere).  ``params``: names of the parameters to
    differentiate (default: every parameter with ``requires_grad``).
    """

    name = "entk"

    def __init__(self, module: nn.Module, params: Sequence[str] | None = None, chunk: int = 256):
        self.module = module
        names = [n for n, p in module.named_parameters() if p.requires_grad] if params is None else list(params)
        known = dict(module.named_parameters())
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"unknown parameter(s) {missing}; the module has {sorted(known)}")
        if not names:
            raise ValueError("the module has no trainable parameters to differentiate")
        self.params = names
        self.chunk = int(chunk)
        self.n_params = sum(known[n].numel() for n in names)

    def prepared_width(self, d: int) -> int:
        return self.n_params

    def block_temporaries(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"EmpiricalNTK({type(self.module).__name__}, n_params={self.n_params})"

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """The n x P matrix of per-sample gradients of f, batched with vmap(jacrev)."""
        from torch.func import functional_call, jacrev, vmap

        m = self.module.to(device=x.device, dtype=x.dtype)
        all_params = dict(m.named_parameters())
        fixed = {n: p.detach() for n, p in all_params.items() if n not in self.params}
        fixed.update({n: b for n, b in m.named_buffers()})
        diff = {n: all_params[n].detach() for n in self.params}

        def f(p: dict, xi: torch.Tensor) -> torch.Tensor:
            return functional_call(m, ({**fixed, **p},), (xi[None],)).reshape(())

        jac = vmap(jacrev(f), in_dims=(None, 0))
        out = x.new_empty(x.shape[0], self.n_params)
        for a in range(0, x.shape[0], self.chunk):
            b = min(x.shape[0], a + self.chunk)
            j = jac(diff, x[a:b])
            out[a:b] = torch.cat([j[n].reshape(b - a, -1) for n in self.params], dim=1)
        return out

    def prepare(self, x: torch.Tensor) -> Prepared:
        return (self.jacobian(x),)

    def block(self, a: Prepared, b: Prepared) -> torch.Tensor:
        return a[0] @ b[0].T

    def diag_prepared(self, prep: Prepared) -> torch.Tensor:
        return prep[0].pow(2).sum(1)


def learner_entk(target, *, kind: str = "simple", m: int = 64, init_std: float = 1.0,
                 seed: int = 0, chunk: int = 256) -> EmpiricalNTK:
    """The empirical NTK of the bfclab learner (PAPER_NOTES §3) at initialisation.

    The learner mirrors ``target`` (its widths k_l, connection sets J_l and alphas); every level
    2..L is activated (``Learner.activate``) with Gaussian weights of std ``init_std``/sqrt(q_l).
    ``kind`` is the learner kind ("simple" or "paper", width ``m`` for the wide branch).
    """
    model = Learner.for_target(target, LearnerConfig(kind=kind, m=m), seed=seed)
    gen = seeds.generator("entk_init", seed)
    for lev in model.levels:
        model.activate(lev, init_std, gen)
    return EmpiricalNTK(model, chunk=chunk)
