"""The staircase function on the hypercube (issue 16's built-in ``staircase`` target).

Abbe, Boix-Adsera, Brennan, Bresler, Nagaraj, "The staircase property: how hierarchical structure
can guide deep learning", NeurIPS 2021; Abbe, Boix-Adsera, Misiakiewicz, "The merged-staircase
property: a necessary and nearly sufficient condition for SGD learning of sparse functions on
two-layer neural networks", COLT 2022.

Definition.  Inputs are uniform on the hypercube, ``x ~ Unif{-1, +1}^d``, and for a support
``i_1, ..., i_k`` of ``k`` distinct coordinates

    f(x) = c_1 x_{i_1} + c_2 x_{i_1} x_{i_2} + ... + c_k x_{i_1} ... x_{i_k},

a staircase of ``k`` steps: each monomial adds one new coordinate to the previous one (a leap of
1).  Level ``l`` (1..k) is the monomial ``chi_l(x) = x_{i_1} ... x_{i_l}`` of the first ``l``
support coordinates; these are the hidden levels of the hierarchy.  The monomials are the Walsh
characters of the sets ``{i_1..i_l}``, orthonormal under the uniform measure, so the Fourier
coefficients of ``f`` are exactly ``c_l`` on those sets and 0 elsewhere, ``E f = 0``,
``Var f = sum_l c_l^2`` (Parseval), and the best polynomial of degree <= p (the L2 projection
onto the characters of degree <= p) keeps the first ``p`` steps, leaving the normalised error
``sum_{l > p} c_l^2 / sum_l c_l^2``.

Choices made here: the coefficients default to all 1 (the papers' staircase); the support is the
first ``k`` coordinates, or with ``shuffle`` ``k`` distinct coordinates in random order drawn from
the ``staircase_support`` stream of the target seed (the first drawn is ``i_1``); ``noise`` adds
independent Gaussian label noise of that standard deviation to every sampled label.  ``variance``
and the floors are those of the clean ``f``; with noise a test nMSE measured on noisy labels
adds ``noise^2 / variance`` (the ``bayes`` floor).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from .. import seeds
from ..config import ConfigError, Keys, apply_mapping, check_finite, check_limits, opt

KIND = "staircase"

_KEYS = Keys(name=f"target '{KIND}' option '{{key}}'",
             unknown_in=f"target '{KIND}': unknown option '{{key}}'; accepted: {{accepted}}",
             unknown_why=f"target '{KIND}': unknown option '{{key}}' ({{where}})", sort=False)


@dataclass
class StaircaseOptions:
    """The staircase's parameters: dimension ``d``, ``k`` steps, a shuffled support or the first
    ``k`` coordinates, the ``k`` monomials' ``coefficients`` (None: all 1) and the standard
    deviation ``noise`` of Gaussian label noise."""

    d: int = opt(30, gt=0)
    k: int = opt(4, ge=1)
    shuffle: bool = False
    coefficients: list[float] | None = opt(None)
    noise: float = opt(0.0, ge=0)


def _error(option: str, accepted: str, got: Any) -> ConfigError:
    return ConfigError(f"{_KEYS.key(option)}: must be {accepted}, got {got}")


def validate_options(o: StaircaseOptions) -> None:
    """The field limits and the cross-field ones (one-line :class:`ConfigError` naming the
    option): ``k <= d``; ``coefficients`` a list of ``k`` finite numbers, not all 0."""
    check_finite(o, keys=_KEYS)
    check_limits(o, keys=_KEYS)
    if o.k > o.d:
        raise _error("k", f"<= d = {o.d}", o.k)
    c = o.coefficients
    if c is not None:
        if not isinstance(c, (list, tuple)) or len(c) != o.k:
            raise _error("coefficients", f"a list of k = {o.k} numbers", c)
        if not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in c):
            raise _error("coefficients", "finite numbers", list(c))
        if not any(a != 0 for a in c):
            raise _error("coefficients", "a list with a nonzero entry (f would be constant)", list(c))


class Staircase:
    """The staircase function (module docstring) as a protocol target: ``sample`` draws
    (x in {-1, +1}^d, f(x) + noise); ``features`` gives each level's monomial; ``fourier`` and
    ``floors`` are exact."""

    kind = KIND
    task = "regression"
    input = "continuous"
    vocab = 0
    n_classes = 0

    def __init__(self, options: StaircaseOptions, seed: int = 0):
        validate_options(options)
        if options.shuffle:
            g = seeds.generator("staircase_support", seed)
            support = torch.randperm(options.d, generator=g)[: options.k].tolist()
        else:
            support = list(range(options.k))
        self._setup(options, seed, support)

    def _setup(self, options: StaircaseOptions, seed: int, support: list[int]) -> None:
        o = options
        self.options, self.seed = options, int(seed)
        self.shape = (o.d,)
        self.size = 2 ** o.d  # the hypercube's points (protocol.split keeps test points out of training)
        self.levels = list(range(1, o.k + 1))
        self.support = [int(i) for i in support]
        self.coefficients = [float(a) for a in o.coefficients] if o.coefficients is not None else [1.0] * o.k
        self.variance = math.fsum(a * a for a in self.coefficients)
        self.config = {"kind": KIND, "seed": self.seed, "options": dataclasses.asdict(options)}
        self._support = torch.tensor(self.support, dtype=torch.int64)
        self._coef = torch.tensor(self.coefficients, dtype=torch.float64)

    # ---- drawing ----------------------------------------------------------------------------

    def _monomials(self, x: torch.Tensor) -> torch.Tensor:
        """(n, k) float64: column l-1 is the monomial of the first l support coordinates."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.shape[0]:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"staircase: inputs must be a tensor of shape (n, {self.shape[0]}), got {got}")
        return torch.cumprod(x.to(torch.float64)[:, self._support], dim=1)

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """The clean f(x), float64 (n,)."""
        return self._monomials(x) @ self._coef

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` examples from a generator seeded by ``seed``: x float64 uniform on {-1, +1}^d
        (n, d), then y = f(x) (+ noise * N(0, 1) when ``noise`` > 0), float64 (n,)."""
        g = torch.Generator().manual_seed(int(seed))
        x = (2 * torch.randint(2, (n, self.shape[0]), generator=g) - 1).to(torch.float64)
        y = self.value(x)
        if self.options.noise > 0:
            y = y + self.options.noise * torch.randn(n, generator=g, dtype=torch.float64)
        return x, y

    # ---- ground truth -----------------------------------------------------------------------

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Level ``l`` -> its monomial ``x_{i_1} ... x_{i_l}``, float64 (n, 1)."""
        mono = self._monomials(x)
        return {level: mono[:, level - 1:level] for level in self.levels}

    def fourier(self) -> dict[tuple, float]:
        """The exact nonzero Fourier-Walsh coefficients: sorted support prefix -> coefficient."""
        return {tuple(sorted(self.support[:level])): c for level, c in zip(self.levels, self.coefficients) if c != 0}

    def floors(self) -> dict[str, float]:
        """Exact nMSE floors (Parseval): ``degree<=p`` for p = 0..k-1, the error of the best
        polynomial of degree <= p relative to ``variance``; ``bayes``, the label noise's share
        ``noise^2 / variance`` (0 without noise)."""
        c2 = [a * a for a in self.coefficients]
        out = {f"degree<={p}": math.fsum(c2[p:]) / self.variance for p in range(self.options.k)}
        out["bayes"] = self.options.noise**2 / self.variance
        return out

    # ---- persistence ------------------------------------------------------------------------

    def state(self) -> dict:
        return {"support": list(self.support)}

    @classmethod
    def from_state(cls, config: dict, state: dict) -> Staircase:
        """The target of ``config`` with the stored ``state``'s support (checked: k distinct
        coordinates of 0..d-1)."""
        o = StaircaseOptions()
        apply_mapping(o, dict(config.get("options", {})), keys=_KEYS)
        validate_options(o)
        support = state.get("support") if isinstance(state, dict) else None
        ok = (isinstance(support, (list, tuple)) and len(support) == o.k
              and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < o.d for i in support)
              and len(set(support)) == o.k)
        if not ok:
            raise ConfigError(f"target '{KIND}': stored support must be k = {o.k} distinct coordinates of "
                              f"0..{o.d - 1}, got {support!r}")
        obj = cls.__new__(cls)
        obj._setup(o, int(config.get("seed", 0)), list(support))
        return obj
