"""Build a non-hierarchical baseline (PAPER_NOTES §6, §7.3 A.5) from a name and an options dict.

    est = make_estimator("krr-poly", {"degree": 8}, device="cpu", seed=0, target=target)
    est.fit(x, y).predict(x_test)

Names (see ``ESTIMATORS``; ``default_options(name)`` lists every option with its default):

==================  ==============================================================================
krr-poly            exact KRR, polynomial kernel (c + <x,x'>/d)^degree, degree = 2^(L-1) of the target
krr-rbf             exact KRR, RBF kernel
krr-ntk-relu        exact KRR, closed-form NTK of a two-layer ReLU network
krr-entk            exact KRR, empirical NTK of the bfclab learner at init (needs ``target=``)
rf-quad / rf-relu   random quadratic / ReLU features, last layer fitted by ridge
twolayer-quad/-relu two-layer network trained by Adam/SGD
seqkernel           degree-2 kernel regression applied level by level on residuals
==================  ==============================================================================

Defaults that depend on the target (degree, L, k) are taken from ``target`` when it is given and
from the default target (d = 32, L = 4, width 4: ``bfclab.config.TargetConfig``) otherwise.  An
unknown name, an unknown option or a bad value raises :class:`bfclab.config.ConfigError` with
one line naming the field and what is accepted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from ..config import ConfigError, RunConfig, TargetConfig, apply_mapping, to_dict
from ..methods import is_deep
from .deep import DeepEstimator
from .kernels import RBF, Polynomial, ReluNTK, learner_entk
from .krr import KRR
from .random_features import RandomFeatures
from .ridge import DEFAULT_GRID, DTYPES
from .sequential import PASS_UP, SequentialKernel
from .two_layer import OPTIMIZERS, SCHEDULES, TwoLayer

_DEFAULT_TARGET = TargetConfig()


@dataclass(frozen=True)
class Opt:
    """One option: its default (a value, or a function of the target), its kind and constraint.

    kind: "int", "float", "str", "bool", "floats" (a list of numbers); ``optional``: None allowed.
    check: "" | ">0" | ">=0" | "(0,1)" | "(0,1]".  choices: the accepted strings for kind "str".
    """

    default: Any
    kind: str
    check: str = ""
    choices: tuple = ()
    optional: bool = False

    def resolve_default(self, target) -> Any:
        return self.default(target) if callable(self.default) else self.default


def _top_level(target) -> int:
    return target.L if target is not None else _DEFAULT_TARGET.L


def _width(target) -> int:
    return max(target.widths.values()) if target is not None else int(_DEFAULT_TARGET.widths[0])


RIDGE_OPTS = {
    "ridge": Opt(None, "float", ">0", optional=True),
    "ridge_grid": Opt(list(DEFAULT_GRID), "floats", ">0"),
    "val_frac": Opt(0.25, "float", "(0,1)"),
    "dtype": Opt("float32", "str", choices=tuple(DTYPES)),
}
KRR_OPTS = {**RIDGE_OPTS, "select_n": Opt(4000, "int", ">0"), "block_size": Opt(2048, "int", ">0"),
            "mem_fraction": Opt(0.9, "float", "(0,1]")}
RF_OPTS = {**RIDGE_OPTS, "val_frac": Opt(0.2, "float", "(0,1)"), "dtype": Opt("float64", "str", choices=tuple(DTYPES)),
           "n_features": Opt(4096, "int", ">0"), "bias": Opt(1.0, "float", ">=0"), "chunk": Opt(4096, "int", ">0"),
           "solver": Opt("auto", "str", choices=("auto", "primal", "dual"))}
TWO_LAYER_OPTS = {
    "width": Opt(1024, "int", ">0"), "steps": Opt(4000, "int", ">0"), "batch_size": Opt(256, "int", ">0"),
    "lr": Opt(1e-2, "float", ">0"), "optimizer": Opt("adam", "str", choices=OPTIMIZERS),
    "momentum": Opt(0.9, "float", ">=0"), "schedule": Opt("cosine", "str", choices=SCHEDULES),
    "min_lr_frac": Opt(0.01, "float", ">=0"), "weight_decay": Opt(0.0, "float", ">=0"),
    "clip": Opt(1.0, "float", ">=0"), "bias": Opt(1.0, "float", ">=0"),
    "dtype": Opt("float32", "str", choices=tuple(DTYPES)), "progress": Opt(None, "bool", optional=True),
    "log_every": Opt(100, "int", ">0"),
}
SEQ_OPTS = {**RIDGE_OPTS, "val_frac": Opt(0.2, "float", "(0,1)"), "dtype": Opt("float64", "str", choices=tuple(DTYPES)),
            "L": Opt(_top_level, "int", ">0"), "k": Opt(_width, "int", ">0"),
            "pass_up": Opt("eig", "str", choices=PASS_UP), "c": Opt(1.0, "float", ">0"), "chunk": Opt(4096, "int", ">0")}


def _split(opts: dict, keys) -> tuple[dict, dict]:
    """(the options in ``keys``, the rest)."""
    return {k: v for k, v in opts.items() if k in keys}, {k: v for k, v in opts.items() if k not in keys}


def _krr(kernel_of: Callable[[dict, Any, int], Any], kernel_keys: tuple) -> Callable:
    def build(name: str, opts: dict, device: str, seed: int, target) -> KRR:
        kopts, rest = _split(opts, kernel_keys)
        return KRR(kernel_of(kopts, target, seed), device=device, seed=seed, name=name, **rest)

    return build


def _entk_kernel(kopts: dict, target, seed: int):
    if target is None:
        raise ConfigError("estimator 'krr-entk': needs the target (make_estimator(..., target=target)) "
                          "for the learner's widths, connections and alphas")
    return learner_entk(target, kind=kopts["learner_kind"], m=kopts["m"], init_std=kopts["init_std"],
                        seed=seed, chunk=kopts["chunk"])


def _rf(features: str) -> Callable:
    def build(name, opts, device, seed, target):
        return RandomFeatures(features, device=device, seed=seed, name=name, **opts)

    return build


def _two_layer(activation: str) -> Callable:
    def build(name, opts, device, seed, target):
        return TwoLayer(activation, device=device, seed=seed, name=name, **opts)

    return build


def _seq(name, opts, device, seed, target):
    return SequentialKernel(device=device, seed=seed, name=name, **opts)


@dataclass(frozen=True)
class Spec:
    build: Callable
    options: dict
    doc: str


ESTIMATORS: dict[str, Spec] = {
    "krr-poly": Spec(_krr(lambda o, t, s: Polynomial(o["degree"], o["c"]), ("degree", "c")),
                     {"degree": Opt(lambda t: 2 ** (_top_level(t) - 1), "int", ">0"), "c": Opt(1.0, "float", ">=0"),
                      **KRR_OPTS},
                     "KRR, polynomial kernel (c + <x,x'>/d)^degree"),
    "krr-rbf": Spec(_krr(lambda o, t, s: RBF(o["lengthscale"]), ("lengthscale",)),
                    {"lengthscale": Opt(1.0, "float", ">0"), **KRR_OPTS},
                    "KRR, RBF kernel exp(-|x-x'|^2 / (2 l^2 d))"),
    "krr-ntk-relu": Spec(_krr(lambda o, t, s: ReluNTK(o["bias"]), ("bias",)),
                         {"bias": Opt(1.0, "float", ">=0"), **KRR_OPTS},
                         "KRR, NTK of a two-layer ReLU network (closed form)"),
    "krr-entk": Spec(_krr(_entk_kernel, ("learner_kind", "m", "init_std", "chunk")),
                     {"learner_kind": Opt("simple", "str", choices=("simple", "paper")), "m": Opt(64, "int", ">0"),
                      "init_std": Opt(1.0, "float", ">0"), "chunk": Opt(256, "int", ">0"), **KRR_OPTS},
                     "KRR, empirical NTK of the bfclab learner at init"),
    "rf-quad": Spec(_rf("quad"), RF_OPTS, "random quadratic features + ridge"),
    "rf-relu": Spec(_rf("relu"), RF_OPTS, "random ReLU features + ridge"),
    "twolayer-quad": Spec(_two_layer("quad"), TWO_LAYER_OPTS, "two-layer network, quadratic activation"),
    "twolayer-relu": Spec(_two_layer("relu"), TWO_LAYER_OPTS, "two-layer network, ReLU activation"),
    "seqkernel": Spec(_seq, SEQ_OPTS, "degree-2 kernel regression applied level by level"),
}


# ---- option parsing ---------------------------------------------------------------------------


def _parse(value: Any) -> Any:
    """CLI strings: JSON if it parses ("1e-3", "[1, 2]", "true"), none/null -> None."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in ("none", "null"):
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _satisfies(v: float, check: str) -> bool:
    return {"": True, ">0": v > 0, ">=0": v >= 0, "(0,1)": 0 < v < 1, "(0,1]": 0 < v <= 1}[check]


def _coerce(name: str, key: str, opt: Opt, value: Any) -> Any:
    where = f"estimator '{name}' option '{key}'"
    v = _parse(value)
    if v is None and opt.optional:
        return None
    bound = {"": "", ">0": " > 0", ">=0": " >= 0", "(0,1)": " in (0, 1)", "(0,1]": " in (0, 1]"}[opt.check]
    if opt.kind == "int":
        if not (_is_number(v) and float(v).is_integer() and _satisfies(v, opt.check)):
            raise ConfigError(f"{where}: expected an integer{bound}, got {value!r}")
        return int(v)
    if opt.kind == "float":
        if not (_is_number(v) and _satisfies(v, opt.check)):
            raise ConfigError(f"{where}: expected a number{bound}{' or null' if opt.optional else ''}, got {value!r}")
        return float(v)
    if opt.kind == "floats":
        if not (isinstance(v, (list, tuple)) and v and all(_is_number(e) and _satisfies(e, opt.check) for e in v)):
            raise ConfigError(f"{where}: expected a non-empty list of numbers{bound}, got {value!r}")
        return [float(e) for e in v]
    if opt.kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"{where}: expected true or false{' or null' if opt.optional else ''}, got {value!r}")
        return v
    if opt.choices and v not in opt.choices:
        raise ConfigError(f"{where}: unknown {value!r}; accepted: {', '.join(opt.choices)}")
    return v


def default_options(name: str, target=None) -> dict:
    """Every option of estimator ``name`` with its default (target-dependent ones resolved)."""
    spec = _spec(name)
    return {k: o.resolve_default(target) for k, o in spec.options.items()}


def _spec(name: str) -> Spec:
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown estimator '{name}'; accepted: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]


def resolve_options(name: str, given: dict | None, target=None) -> dict:
    """Defaults overridden by ``given``, each value validated (one-line ConfigError)."""
    spec = _spec(name)
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec.options))
    if unknown:
        raise ConfigError(f"estimator '{name}': unknown option '{unknown[0]}'; accepted: {', '.join(spec.options)}")
    out = default_options(name, target)
    for key, value in given.items():
        out[key] = _coerce(name, key, spec.options[key], value)
    return out


def make_estimator(name: str, options: dict | None = None, *, device: str = "cpu", seed: int = 0, target=None):
    """Build the estimator ``name`` (an ``Estimator``: fit(x, y) -> self, predict(x), name).

    A deep training method (bfc | layerwise | window:K | e2e) gives a ``DeepEstimator``; its
    options are any subset of the run config (e.g. {"train": {"steps_per_stage": 2000}}).
    """
    if is_deep(name):
        return _deep(name, options or {}, device, int(seed), target)
    opts = resolve_options(name, options, target)
    try:
        return _spec(name).build(name, opts, device, int(seed), target)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"estimator '{name}': {e}") from None


def _deep(name: str, options: dict, device: str, seed: int, target):
    if target is None:
        raise ConfigError(f"estimator '{name}': needs the target (make_estimator(..., target=target))")
    cfg = RunConfig()
    apply_mapping(cfg, {"target": target.config})
    apply_mapping(cfg, options)
    if to_dict(cfg.target) != target.config:
        raise ConfigError(f"estimator '{name}': options may not change 'target' (it is given)")
    return DeepEstimator(name, target, cfg, device=device, seed=seed)
