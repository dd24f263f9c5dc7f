"""The concept class: deep quadratic networks with an information gap (PAPER_NOTES §2).

For levels l = 2..L the ground-truth features are (PAPER_NOTES §2.3)

    pre_l(x)  = sum_{j in J_l, j>=2} W*_{l,j} sigma(S*_j(x)) + sum_{j in J_l, j in {0,1}} W*_{l,j} S*_j(x)
    S*_l(x)   = (pre_l(x) - mu_l) / s_l                      (frozen centring / standardisation)
    G*(x)     = sum_l alpha_l ||S*_l(x)||^2

with S*_0 = 1 (constant channel), S*_1 = x ~ N(0, I_d), sigma(z) = z^2.  S*_l has degree
2^(l-2) in x and G* has degree 2^(L-1) (PAPER_NOTES §2.4).

Choices made where the notes are [R]/[M-low] (documented in docs/DESIGN.md):
* W*_{l,j} = (random matrix with orthonormal rows or columns) x diag(s), s ~ U[1/kappa, 1]
  (PAPER_NOTES §2.6 recipe, condition number <= kappa).
* Centring and per-coordinate standardisation of every level are computed in float64 from a
  seeded Monte-Carlo sample of ``mc_samples`` inputs, bottom-up, and then frozen: afterwards the
  target is an exact fixed polynomial.  ``center=False`` keeps only the scaling (the target is
  then homogeneous when there are no input/constant skips).
* Classification labels are y = sign(G*(x) - median), the median frozen from the same sample.
* The population variance Var(G*), the normaliser of every test nMSE (issue 11), is estimated once
  from ``var_samples`` fresh inputs of its own stream and frozen with its standard error:
  the top levels are heavy-tailed (G* has degree 2^(L-1)), so a test set's own variance is a
  noisy and biased-low normaliser.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import seeds
from .config import ConfigError, TargetConfig, check_finite, check_limits, to_dict
from .results import atomic_write_bytes, load_torch_file

FORMAT = "bfclab-target-v1"

#: inputs evaluated at a time wherever a target or learner meets a large sample (memory bound)
CHUNK = 65_536


def chunks(n: int, size: int = CHUNK):
    """(start, stop) of consecutive slices of at most ``size`` covering range(n)."""
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def resolve_conn(cfg: TargetConfig) -> dict[int, list[int]]:
    """Connection sets J_l for l = 2..L, validated (PAPER_NOTES §2.3: l-1 in J_l, J_l below l)."""
    L = cfg.L
    spec = cfg.conn
    presets = {"chain": (), "chain+input": (1,), "chain+input+const": (1, 0), "chain+const": (0,)}
    conn: dict[int, list[int]] = {}
    if isinstance(spec, str):
        if spec not in presets:
            raise ConfigError(
                f"config key 'target.conn': unknown preset {spec!r}; accepted: "
                f"{', '.join(presets)} or a list of lists, one per level 2..L"
            )
        for l in range(2, L + 1):
            conn[l] = sorted({l - 1, *presets[spec]}, reverse=True)
        return conn
    if not isinstance(spec, (list, tuple)) or len(spec) != L - 1:
        raise ConfigError(
            f"config key 'target.conn': expected a preset name or a list of {L - 1} lists "
            f"(levels 2..{L}), got {spec!r}"
        )
    for l, js in zip(range(2, L + 1), spec):
        if not isinstance(js, (list, tuple)) or not all(isinstance(j, int) for j in js):
            raise ConfigError(f"config key 'target.conn': level {l} must be a list of integers")
        for j in js:
            if j >= l or j < 0:
                raise ConfigError(
                    f"config key 'target.conn': level {l} connects to {j}; "
                    f"accepted: levels 0..{l - 1} (0 = constant, 1 = input)"
                )
        if l - 1 not in js:
            raise ConfigError(
                f"config key 'target.conn': level {l} must contain {l - 1} (its level below)"
            )
        conn[l] = sorted(set(js), reverse=True)
    return conn


def resolve_widths(cfg: TargetConfig) -> dict[int, int]:
    w = cfg.widths if isinstance(cfg.widths, list) else [cfg.widths]
    if len(w) == 1:
        w = w * (cfg.L - 1)
    if len(w) != cfg.L - 1:
        raise ConfigError(
            f"config key 'target.widths': expected 1 or {cfg.L - 1} values (levels 2..{cfg.L}), "
            f"got {len(w)}"
        )
    out = {}
    for l, k in zip(range(2, cfg.L + 1), w):
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise ConfigError(f"config key 'target.widths': widths must be positive integers, got {k!r}")
        out[l] = k
    return out


def resolve_alphas(cfg: TargetConfig) -> dict[int, float]:
    """alpha_l for l = 2..L: the explicit vector if given, else rho^(l-2) (PAPER_NOTES §2.5)."""
    if cfg.alphas is not None:
        a = cfg.alphas if isinstance(cfg.alphas, list) else [cfg.alphas]
        if len(a) != cfg.L - 1:
            raise ConfigError(
                f"config key 'target.alphas': expected {cfg.L - 1} values (levels 2..{cfg.L}), got {len(a)}"
            )
        vals = a
        key = "target.alphas"
    else:
        vals = [cfg.rho ** (l - 2) for l in range(2, cfg.L + 1)]
        key = "target.rho"
    out = {}
    for l, v in zip(range(2, cfg.L + 1), vals):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"config key '{key}': alpha must be a positive number, got {v!r}")
        out[l] = float(v)
    return out


def validate(cfg: TargetConfig) -> None:
    """One-line errors for a bad target config: each field's limits (its ``opt`` metadata, the
    same check as every config), then what depends on several fields."""
    check_finite(cfg, prefix="target.")
    check_limits(cfg, prefix="target.")
    if cfg.kind != "quadratic":
        raise ConfigError(f"config key 'target.kind': bfclab.target.Target is the quadratic class; {cfg.kind!r} is "
                          f"built by bfclab.targets.make_target")
    if cfg.options:
        raise ConfigError(f"config key 'target.options': the quadratic class takes its settings from target.d, "
                          f"target.L, ... (options are for the other kinds), got {sorted(cfg.options)}")
    if cfg.alphas is None and not cfg.rho > 0:  # rho only matters without explicit alphas
        raise ConfigError(f"config key 'target.rho': must be a positive number, got {cfg.rho}")
    resolve_conn(cfg)
    resolve_widths(cfg)
    resolve_alphas(cfg)


def square(z: torch.Tensor) -> torch.Tensor:
    """sigma(z) = z^2 (PAPER_NOTES §2.2)."""
    return z * z


def _random_weight(rows: int, cols: int, kappa: float, gen: torch.Generator) -> torch.Tensor:
    """A rows x cols float64 matrix with orthonormal rows (or columns) scaled by U[1/kappa, 1]."""
    a = torch.randn(max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))  # a Haar-distributed orthonormal frame
    w = q if rows >= cols else q.T
    s = 1.0 / kappa + (1.0 - 1.0 / kappa) * torch.rand(rows, 1, generator=gen, dtype=torch.float64)
    return (w * s).contiguous()


@dataclass
class Target:
    """A frozen member of the concept class (PAPER_NOTES §2).  All tensors are float64 on the CPU.

    Attributes
    ----------
    d, L: input dimension and top level.
    widths: k_l for l = 2..L.  conn: J_l.  alphas: alpha_l.
    weights: W*_{l,j} as ``weights[l][j]`` (k_l x k_j, with k_1 = d, k_0 = 1).
    mu, scale: frozen centring and standardisation of each level.
    median: frozen median of G*, the classification threshold.
    g_std: frozen standard deviation of G*, the unit of regression label noise.
    var_g, var_g_se: the population variance of G* (``var_samples`` fresh inputs) and that
    estimate's standard error: the normaliser of test nMSE.
    """

    d: int
    L: int
    widths: dict
    conn: dict
    alphas: dict
    weights: dict
    mu: dict
    scale: dict
    median: float
    g_std: float
    config: dict
    var_g: float = math.nan
    var_g_se: float = math.nan
    #: samples drawn from this target, kept for the runs that share it (``bfclab.training.test_data``)
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: TargetConfig) -> "Target":
        validate(cfg)
        conn, widths, alphas = resolve_conn(cfg), resolve_widths(cfg), resolve_alphas(cfg)
        gen = seeds.generator("target", cfg.seed)
        dims = {0: 1, 1: cfg.d, **widths}
        weights = {
            l: {j: _random_weight(widths[l], dims[j], cfg.kappa, gen) for j in conn[l]}
            for l in range(2, cfg.L + 1)
        }
        t = cls(
            d=cfg.d, L=cfg.L, widths=widths, conn=conn, alphas=alphas, weights=weights,
            mu={}, scale={}, median=0.0, g_std=1.0, config=to_dict(cfg),
        )
        # Monte-Carlo normalisation, bottom-up, in float64 (PAPER_NOTES §2.6 recipe).
        x = torch.randn(cfg.mc_samples, cfg.d, generator=gen, dtype=torch.float64)
        feats: dict[int, torch.Tensor] = {}
        for l in range(2, cfg.L + 1):
            pre = t._pre(l, x, feats)
            mu = pre.mean(0) if cfg.center else torch.zeros(widths[l], dtype=torch.float64)
            sc = (pre - mu).pow(2).mean(0).sqrt()
            t.mu[l], t.scale[l] = mu, sc
            feats[l] = (pre - mu) / sc
        g = t._output(feats)
        t.median, t.g_std = float(g.median()), float(g.std())
        t.var_g, t.var_g_se = t.population_variance()
        return t

    def population_variance(self) -> tuple[float, float]:
        """Var(G*) over ``var_samples`` fresh inputs of the ``target_variance`` stream (float64,
        chunked, two passes) and its standard error sqrt((m4 - v^2) / n), m4 the fourth central
        moment."""
        n = int(self.config.get("var_samples", TargetConfig.var_samples))
        gen = seeds.generator("target_variance", int(self.config.get("seed", 0)))
        g = torch.cat([self(torch.randn(b - a, self.d, generator=gen, dtype=torch.float64)) for a, b in chunks(n)])
        c = g - g.mean()
        v = float(c.pow(2).mean())
        m4 = float(c.pow(4).mean())
        return v, math.sqrt(max(m4 - v * v, 0.0) / n)

    # ---- the function ------------------------------------------------------------------------
    def _pre(self, l: int, x: torch.Tensor, feats: dict) -> torch.Tensor:
        pre = torch.zeros(x.shape[0], self.widths[l], dtype=torch.float64)
        for j in self.conn[l]:
            w = self.weights[l][j]
            if j == 0:
                pre = pre + w[:, 0]
            elif j == 1:
                pre = pre + x @ w.T
            else:
                pre = pre + square(feats[j]) @ w.T
        return pre

    def _output(self, feats: dict) -> torch.Tensor:
        return sum(self.alphas[l] * square(feats[l]).sum(-1) for l in range(2, self.L + 1))

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Ground-truth hidden features S*_l(x) for l = 2..L (float64)."""
        x = x.to(torch.float64)
        feats: dict[int, torch.Tensor] = {}
        for l in range(2, self.L + 1):
            feats[l] = (self._pre(l, x, feats) - self.mu[l]) / self.scale[l]
        return feats

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """G*(x) = sum_l alpha_l ||S*_l(x)||^2 (float64)."""
        return self._output(self.features(x))

    def level_outputs(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The per-level terms alpha_l ||S*_l(x)||^2 whose sum is G*(x)."""
        return {l: self.alphas[l] * square(s).sum(-1) for l, s in self.features(x).items()}

    # ---- data --------------------------------------------------------------------------------
    def sample(self, n: int, seed: int, task: str = "regression", label_noise: float = 0.0):
        """Draw n inputs x ~ N(0, I_d) and labels from a seeded generator.

        Returns ``(x, y, g)``: inputs (float64), labels and the clean target values G*(x).
        Regression: y = G*(x) + label_noise * std(G*) * N(0,1), std(G*) frozen from the MC sample.
        Classification: y = sign(G*(x) - median) in {-1, +1} (flipped with prob. label_noise).
        """
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn(n, self.d, generator=gen, dtype=torch.float64)
        g = self(x)
        if task == "regression":
            noise = torch.randn(n, generator=gen, dtype=torch.float64)
            y = g + label_noise * self.g_std * noise if label_noise > 0 else g.clone()
        elif task == "classification":
            y = torch.where(g > self.median, 1.0, -1.0).to(torch.float64)
            if label_noise > 0:
                flip = torch.rand(n, generator=gen, dtype=torch.float64) < label_noise
                y = torch.where(flip, -y, y)
        else:
            raise ConfigError(f"config key 'data.task': unknown {task!r}; accepted: regression, classification")
        return x, y, g

    # ---- persistence -------------------------------------------------------------------------
    def state(self) -> dict:
        def keyed(dd):
            return {str(k): v for k, v in dd.items()}

        return {
            "format": FORMAT,
            "d": self.d, "L": self.L,
            "widths": keyed(self.widths),
            "conn": keyed(self.conn),
            "alphas": keyed(self.alphas),
            "weights": {str(l): keyed(ws) for l, ws in self.weights.items()},
            "mu": keyed(self.mu), "scale": keyed(self.scale),
            "median": self.median, "g_std": self.g_std,
            "var_g": self.var_g, "var_g_se": self.var_g_se,
            "config": self.config,
        }

    def save(self, path: str | Path) -> None:
        """Write the target atomically; ``Target.load`` gives back the same function bit for bit."""
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "Target":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"target file '{p}': not found")
        try:
            st = load_torch_file(p)
        except Exception as e:  # damaged: a CRC mismatch, a cut or mangled container, ...
            raise ConfigError(f"target file '{p}': not a bfclab target file (unreadable: {e})") from None
        return cls.from_state(st, str(p))

    @classmethod
    def from_state(cls, st: dict, where: str = "target") -> "Target":
        if not isinstance(st, dict) or st.get("format") != FORMAT:
            raise ConfigError(f"target file '{where}': field 'format' must be {FORMAT!r}")
        need = ["d", "L", "widths", "conn", "alphas", "weights", "mu", "scale", "median", "g_std", "config"]
        for k in need:
            if k not in st:
                raise ConfigError(f"target file '{where}': missing field '{k}'")
        try:
            L, d = int(st["L"]), int(st["d"])
            levels = range(2, L + 1)
            widths = {l: int(st["widths"][str(l)]) for l in levels}
            conn = {l: [int(j) for j in st["conn"][str(l)]] for l in levels}
            alphas = {l: float(st["alphas"][str(l)]) for l in levels}
            weights = {l: {j: st["weights"][str(l)][str(j)] for j in conn[l]} for l in levels}
            mu = {l: st["mu"][str(l)] for l in levels}
            scale = {l: st["scale"][str(l)] for l in levels}
            median, g_std = float(st["median"]), float(st["g_std"])
            if not isinstance(st["config"], dict):
                raise TypeError("'config' is not a mapping")
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise ConfigError(f"target file '{where}': malformed field ({e!s})") from None
        dims = {0: 1, 1: d, **widths}
        for l in levels:
            for j in conn[l]:
                w = weights[l][j]
                if not isinstance(w, torch.Tensor) or tuple(w.shape) != (widths[l], dims[j]):
                    raise ConfigError(f"target file '{where}': field 'weights.{l}.{j}' has the wrong shape")
            for name, v in (("mu", mu[l]), ("scale", scale[l])):
                if not isinstance(v, torch.Tensor) or tuple(v.shape) != (widths[l],):
                    raise ConfigError(f"target file '{where}': field '{name}.{l}' has the wrong shape")
        t = cls(d=d, L=L, widths=widths, conn=conn, alphas=alphas, weights=weights, mu=mu,
                scale=scale, median=median, g_std=g_std, config=st["config"])
        try:
            t.var_g, t.var_g_se = float(st["var_g"]), float(st["var_g_se"])
        except KeyError:  # a file written before the variance was frozen: estimate it as from_config does
            t.var_g, t.var_g_se = t.population_variance()
        except (TypeError, ValueError) as e:
            raise ConfigError(f"target file '{where}': malformed field ({e!s})") from None
        if not (math.isfinite(t.var_g) and t.var_g > 0 and math.isfinite(t.var_g_se) and t.var_g_se >= 0):
            raise ConfigError(f"target file '{where}': field 'var_g' must be a positive number")
        return t
