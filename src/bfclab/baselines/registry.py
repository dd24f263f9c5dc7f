"""Build a non-hierarchical baseline (PAPER_NOTES §6, §7.3 A.5) from a name and an options dict.

    est = make_estimator("krr-poly", {"degree": 8}, device="cpu", seed=0, target=target)
    est.fit(x, y).predict(x_test)

Names (see ``ESTIMATORS``; ``default_options(name)`` lists every option with its default):

==================  ==============================================================================
krr-poly            exact KRR, polynomial kernel (c + <x,x'>/d)^degree, degree = 2^(L-1) of the target
krr-rbf             exact KRR, RBF kernel
krr-ntk-relu        exact KRR, closed-form NTK of a two-layer ReLU network
krr-entk            exact KRR, empirical NTK of the bfclab learner at init (needs ``target=``)
nystrom-poly/-rbf/  Nyström KRR (m centres) solved by FALKON's preconditioned CG, for n past the
  -ntk-relu         exact solver's memory (:mod:`bfclab.baselines.nystrom`), same kernels
rf-quad / rf-relu   random quadratic / ReLU features, last layer fitted by ridge
twolayer-quad/-relu two-layer network trained by Adam/SGD
mlp-relu            deep ReLU MLP trained end to end by Adam/SGD, one hidden layer per level the
                    deep learner trains (:mod:`bfclab.baselines.mlp`)
seqkernel           degree-2 kernel regression applied level by level on residuals
krr-oracle          exact KRR, polynomial kernel of degree 4, on the target's true features of the
                    levels below the top (:mod:`bfclab.baselines.oracle`): perfect lower levels
==================  ==============================================================================

Each family's options are a dataclass (``KRROptions`` with a kernel's fields, ``RFOptions``,
``TwoLayerOptions``, ``MLPOptions``, ``SeqKernelOptions``; ``ESTIMATORS[name].options``) whose fields carry their
limits in metadata (:func:`bfclab.config.opt`); they are parsed and checked by the run config's
code (``apply_mapping``, ``check_finite``, ``check_limits``), so the estimators' constructors do not
check them again.  Defaults that depend on the target (degree, L, k) are taken from ``target`` when
it is given and from the default target (d = 32, L = 4, width 4: ``bfclab.config.TargetConfig``)
otherwise.  An unknown name, an unknown option or a bad value raises
:class:`bfclab.config.ConfigError` with one line naming the estimator and the option, e.g.
``estimator 'krr-poly' option 'degree': must be > 0, got 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from ..config import (ConfigError, Keys, RunConfig, TargetConfig, apply_mapping, check_finite, check_limits,
                      opt, to_dict)
from ..methods import is_deep
from ..nets import depth_of
from .deep import DeepEstimator
from .kernels import RBF, Polynomial, ReluNTK, learner_entk
from .krr import KRR
from .nystrom import CACHE, NystromKRR
from .oracle import OracleFeatures
from .random_features import RandomFeatures
from .ridge import DEFAULT_GRID, DTYPES
from .sequential import PASS_UP, SequentialKernel
from .tuning import Tuned
from .mlp import DeepMLP
from .two_layer import OPTIMIZERS, SCHEDULES, TwoLayer

_DEFAULT_TARGET = TargetConfig()


def estimator_keys(estimator: str) -> Keys:
    """Messages name ``estimator 'NAME' option 'KEY'`` (the run config's are ``config key 'KEY'``)."""
    e = estimator.replace("{", "{{").replace("}", "}}")
    return Keys(name=f"estimator '{e}' option '{{key}}'",
                unknown_in=f"estimator '{e}': unknown option '{{key}}'; accepted: {{accepted}}",
                unknown_why=f"estimator '{e}': unknown option '{{key}}' ({{where}})", sort=False)


def _quadratic(target):
    """The quadratic :class:`~bfclab.target.Target` behind ``target`` (itself, or the one a
    protocol view wraps), or None for another kind (its defaults are then the default target's)."""
    target = getattr(target, "target", target)
    return target if hasattr(target, "widths") and hasattr(target, "L") else None


def _top_level(target) -> int:
    t = _quadratic(target)
    return t.L if t is not None else _DEFAULT_TARGET.L


def _width(target) -> int:
    t = _quadratic(target)
    return max(t.widths.values()) if t is not None else int(_DEFAULT_TARGET.widths[0])


def from_target(fn: Callable[[Any], Any], **limits: Any) -> Any:
    """An option whose default is ``fn(target)`` (``fn(None)``: the default target's), resolved by
    :func:`default_options`."""
    return opt(fn(None), from_target=fn, **limits)


# ---- the options of each estimator family --------------------------------------------------------
# Typed dataclasses with their limits in the field metadata (bfclab.config.opt), parsed and checked
# by the same code as the run config.  A kernel's fields come first in its KRR options: the kernel
# class is the last base, and dataclass fields follow the reversed method resolution order.


@dataclass
class RidgeOptions:
    """The ridge of every ridge fit (:mod:`bfclab.baselines.ridge`, PAPER_NOTES §6): a fixed
    normalised ``ridge``, or None to choose it from ``ridge_grid`` on a ``val_frac`` split."""

    ridge: float | None = opt(None, gt=0)
    ridge_grid: list[float] = opt(factory=lambda: list(DEFAULT_GRID), gt=0, nonempty=True)
    val_frac: float = opt(0.25, gt=0, lt=1)
    dtype: str = opt("float32", choices=DTYPES)


@dataclass
class KRROptions(RidgeOptions):
    """Exact KRR (:class:`bfclab.baselines.krr.KRR`, PAPER_NOTES §6, §7.3 A.5); the kernel's own
    options come from one of the kernel classes below."""

    select_n: int = opt(4000, ge=4)  # the ridge is chosen on a split of it: at least 4 points
    block_size: int = opt(2048, gt=0)
    mem_fraction: float = opt(0.9, gt=0, le=1)


@dataclass
class NystromOptions(RidgeOptions):
    """Nyström KRR by preconditioned CG (:class:`bfclab.baselines.nystrom.NystromKRR`): ``centres``
    (m), at most ``iterations`` CG steps or a relative residual ``tol``; ``cache`` K_nm when it fits
    (``auto``), always or never."""

    centres: int = opt(4096, gt=0)
    iterations: int = opt(50, gt=0)
    tol: float = opt(1e-6, gt=0)
    block_size: int = opt(4096, gt=0)
    cache: str = opt("auto", choices=CACHE)
    mem_fraction: float = opt(0.9, gt=0, le=1)
    extend: int = opt(4, ge=0)  # decades added beyond a grid edge the validation choice sits at


@dataclass
class PolyKernelOptions:
    """(c + <x,x'>/d)^degree, degree = 2^(L-1) of the target (PAPER_NOTES §2.4, §6)."""

    degree: int = from_target(lambda t: 2 ** (_top_level(t) - 1), gt=0)
    c: float = opt(1.0, ge=0)  # >= 0: a PSD kernel


@dataclass
class RBFKernelOptions:
    """exp(-|x-x'|^2 / (2 lengthscale^2 d)) (PAPER_NOTES §7.3 A.5: RBF KRR)."""

    lengthscale: float = opt(1.0, gt=0)


@dataclass
class ReluNTKKernelOptions:
    """The NTK of a two-layer ReLU network with biases scaled by ``bias`` (PAPER_NOTES §6)."""

    bias: float = opt(1.0, ge=0)


@dataclass
class EmpiricalNTKKernelOptions:
    """The bfclab learner (PAPER_NOTES §3) at init: its kind, wide width ``m``, init std, Jacobian chunk."""

    learner_kind: str = opt("simple", choices=("simple", "paper"))
    m: int = opt(64, gt=0)
    init_std: float = opt(1.0, gt=0)
    chunk: int = opt(256, gt=0)


@dataclass
class OracleKernelOptions:
    """(c + <u,u'>/p)^degree on the true lower features u (:mod:`bfclab.baselines.oracle`): degree 4,
    the top term's degree in them (2 for L = 2, where u = x)."""

    degree: int = from_target(lambda t: 4 if _top_level(t) >= 3 else 2, gt=0)
    c: float = opt(1.0, ge=0)


@dataclass
class PolyKRROptions(KRROptions, PolyKernelOptions):
    pass


@dataclass
class OracleKRROptions(KRROptions, OracleKernelOptions):
    """As the tuned kernels (issue 12): float64 and ridges down to 1e-14 (an exact degree-4 fit's
    ridge sits below float32's floor), chosen on a split of all training points up to 20 000."""

    ridge_grid: list[float] = opt(factory=lambda: [10.0 ** e for e in range(-14, 1)], gt=0, nonempty=True)
    dtype: str = opt("float64", choices=DTYPES)
    select_n: int = opt(20000, ge=4)


@dataclass
class RBFKRROptions(KRROptions, RBFKernelOptions):
    pass


@dataclass
class ReluNTKKRROptions(KRROptions, ReluNTKKernelOptions):
    pass


@dataclass
class EmpiricalNTKKRROptions(KRROptions, EmpiricalNTKKernelOptions):
    pass


@dataclass
class PolyNystromOptions(NystromOptions, PolyKernelOptions):
    pass


@dataclass
class RBFNystromOptions(NystromOptions, RBFKernelOptions):
    pass


@dataclass
class ReluNTKNystromOptions(NystromOptions, ReluNTKKernelOptions):
    pass


@dataclass
class RFOptions(RidgeOptions):
    """Random features + ridge (:mod:`bfclab.baselines.random_features`, PAPER_NOTES §6)."""

    val_frac: float = opt(0.2, gt=0, lt=1)
    dtype: str = opt("float64", choices=DTYPES)
    n_features: int = opt(4096, gt=0)
    bias: float = opt(1.0, ge=0)
    chunk: int = opt(4096, gt=0)
    solver: str = opt("auto", choices=("auto", "primal", "dual"))


@dataclass
class NetOptions:
    """A network trained by Adam/SGD on standardised labels (the training options of
    :class:`~bfclab.baselines.two_layer.TwoLayer`, shared by the two-layer nets and the deep MLP)."""

    width: int = opt(1024, gt=0)
    steps: int = opt(4000, gt=0)
    batch_size: int = opt(256, gt=0)
    lr: float = opt(1e-2, gt=0)
    optimizer: str = opt("adam", choices=OPTIMIZERS)
    momentum: float = opt(0.9, ge=0)
    schedule: str = opt("cosine", choices=SCHEDULES)
    min_lr_frac: float = opt(0.01, ge=0)
    weight_decay: float = opt(0.0, ge=0)
    clip: float = opt(1.0, ge=0)
    dtype: str = opt("float32", choices=DTYPES)
    progress: bool | None = None
    log_every: int = opt(100, gt=0)


@dataclass
class TwoLayerOptions(NetOptions):
    """A two-layer network trained by Adam/SGD (:mod:`bfclab.baselines.two_layer`, PAPER_NOTES §6)."""

    bias: float = opt(1.0, ge=0)


def _depth(target) -> int:
    """The deep learner's number of trained layers on ``target``: L - 1 on the quadratic class (its
    levels 2..L), :func:`bfclab.nets.depth_of` on another kind."""
    t = _quadratic(target)
    if t is not None or target is None:
        return (t.L if t is not None else _DEFAULT_TARGET.L) - 1
    return depth_of(target)


@dataclass
class MLPOptions(NetOptions):
    """A deep ReLU MLP in the standard parametrisation trained end to end by Adam/SGD
    (:mod:`bfclab.baselines.mlp`, issue 12): ``depth`` hidden layers of ``width`` units, one per
    level the deep learner trains by default; Adam's usual learning rate for this parametrisation."""

    width: int = opt(256, gt=0)
    lr: float = opt(1e-3, gt=0)
    depth: int = from_target(_depth, gt=0)


@dataclass
class SeqKernelOptions(RidgeOptions):
    """Level-by-level kernel regression (:mod:`bfclab.baselines.sequential`, PAPER_NOTES §6):
    levels 2..L and k directions passed up per level, from the target by default."""

    val_frac: float = opt(0.2, gt=0, lt=1)
    dtype: str = opt("float64", choices=DTYPES)
    L: int = from_target(_top_level, ge=2)
    k: int = from_target(_width, gt=0)
    pass_up: str = opt("eig", choices=PASS_UP)
    c: float = opt(1.0, gt=0)
    chunk: int = opt(4096, gt=0)


def _split(opts: dict, keys) -> tuple[dict, dict]:
    """(the options in ``keys``, the rest)."""
    return {k: v for k, v in opts.items() if k in keys}, {k: v for k, v in opts.items() if k not in keys}


def _krr(kernel_of: Callable[[dict, Any, int], Any], kernel_options: type, solver: type = KRR) -> Callable:
    kernel_keys = {f.name for f in fields(kernel_options)}

    def build(name: str, opts: dict, device: str, seed: int, target):
        kopts, rest = _split(opts, kernel_keys)
        return solver(kernel_of(kopts, target, seed), device=device, seed=seed, name=name, **rest)

    return build


def _poly(o, t, s):
    return Polynomial(o["degree"], o["c"])


def _rbf(o, t, s):
    return RBF(o["lengthscale"])


def _ntk(o, t, s):
    return ReluNTK(o["bias"])


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


def _mlp(name, opts, device, seed, target):
    return DeepMLP(device=device, seed=seed, name=name, **opts)


def _oracle(name, opts, device, seed, target):
    if target is None:
        raise ConfigError(f"estimator '{name}': needs the target (make_estimator(..., target=target))")
    kernel_keys = {f.name for f in fields(OracleKernelOptions)}
    kopts, rest = _split(opts, kernel_keys)
    return OracleFeatures(KRR(Polynomial(kopts["degree"], kopts["c"]), device=device, seed=seed, name=name, **rest),
                          target, name=name)


def _seq(name, opts, device, seed, target):
    return SequentialKernel(device=device, seed=seed, name=name, **opts)


@dataclass(frozen=True)
class Spec:
    build: Callable  # (name, options dict, device, seed, target) -> estimator
    options: type  # the options dataclass
    doc: str
    check: Callable | None = None  # (name, parsed options, target) -> None: what one field cannot say alone


# ---- tuned baselines (issue 12): the inner estimator's options chosen on validation data ----------


TUNED_SPACES = {
    "krr-poly": {"degree": [2, 4, 8], "c": [0.5, 1.0, 2.0, 4.0, 8.0]},
    "krr-rbf": {"lengthscale": [0.5, 1.0, 2.0, 4.0, 8.0]},
    "krr-ntk-relu": {"bias": [0.25, 0.5, 1.0, 2.0, 4.0]},
    "twolayer-relu": {"lr": [1e-3, 3e-3, 1e-2], "width": [256, 1024], "weight_decay": [0.0, 1e-4, 1e-3]},
    "mlp-relu": {"lr": [3e-4, 1e-3, 3e-3], "width": [128, 256], "weight_decay": [0.0, 1e-4, 1e-3]},
}
#: the inner estimator's fixed options of a tuned baseline: KRR in float64 with a ridge grid down to
#: 1e-14 (float32's floor, 1.9e-6, is where the untuned kernels' choice sat; float64's is 3.6e-15)
TUNED_RIDGES = [10.0 ** e for e in range(-14, 1)]
TUNED_FIXED = {k: {"dtype": "float64", "ridge_grid": list(TUNED_RIDGES)} for k in ("krr-poly", "krr-rbf", "krr-ntk-relu")}


def _tuned_options(inner: str) -> type:
    """The options dataclass of ``tuned-<inner>``."""

    @dataclass
    class TunedOptions:
        """A tuned baseline (:mod:`bfclab.baselines.tuning`): the inner estimator's ``options``
        (fixed) and ``space`` (each key an option of it, a list of values to choose from on
        validation data at the full n), extended beyond an edge up to ``extend`` times and no
        further than ``caps`` (an option's largest value to try, for cost; none by default)."""

        space: dict = opt(factory=lambda: {k: list(v) for k, v in TUNED_SPACES[inner].items()})
        options: dict = opt(factory=lambda: {k: (list(v) if isinstance(v, list) else v)
                                             for k, v in TUNED_FIXED.get(inner, {}).items()})
        extend: int = opt(3, ge=0)
        val_frac: float = opt(0.25, gt=0, lt=1)
        caps: dict = opt(factory=dict)

    TunedOptions.__name__ = TunedOptions.__qualname__ = f"Tuned{inner.title().replace('-', '')}Options"
    return TunedOptions


def _tuned_check(name: str, opts: Any, target) -> None:
    """Every key of ``space`` is an option of the inner estimator, every value (with ``options``)
    valid for it; one-line errors naming the tuned estimator."""
    inner = name[len("tuned-"):]
    accepted = [f.name for f in fields(ESTIMATORS[inner].options)]
    if not isinstance(opts.space, dict) or not opts.space:
        raise ConfigError(f"estimator '{name}' option 'space': a mapping of options of '{inner}' to lists of values")
    for k, vals in opts.space.items():
        if k not in accepted:
            raise ConfigError(f"estimator '{name}' option 'space': unknown option '{k}' of '{inner}'; accepted: "
                              f"{', '.join(accepted)}")
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"estimator '{name}' option 'space.{k}': a non-empty list of values, got {vals!r}")
        for v in vals:
            try:
                resolve_options(inner, {**opts.options, k: v}, target)
            except ConfigError as e:
                raise ConfigError(f"estimator '{name}' option 'space.{k}': {e}") from None
    if not isinstance(opts.caps, dict):
        raise ConfigError(f"estimator '{name}' option 'caps': a mapping of keys of 'space' to numbers")
    for k, v in opts.caps.items():
        if k not in opts.space or isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"estimator '{name}' option 'caps.{k}': a number capping a key of 'space' "
                              f"({', '.join(opts.space)}), got {v!r}")
    resolve_options(inner, opts.options, target)


def _tuned(name: str, opts: dict, device: str, seed: int, target):
    inner = name[len("tuned-"):]
    spec = ESTIMATORS[inner]
    md = {f.name: f.metadata for f in fields(spec.options)}

    def build(point: dict):
        return spec.build(inner, resolve_options(inner, {**opts["options"], **point}, target), device, seed, target)

    return Tuned(name, build, opts["space"], lambda k: md.get(k, {}), extend=opts["extend"], val_frac=opts["val_frac"],
                 seed=seed, caps=opts["caps"])


ESTIMATORS: dict[str, Spec] = {
    "krr-poly": Spec(_krr(_poly, PolyKernelOptions), PolyKRROptions, "KRR, polynomial kernel (c + <x,x'>/d)^degree"),
    "krr-rbf": Spec(_krr(_rbf, RBFKernelOptions), RBFKRROptions, "KRR, RBF kernel exp(-|x-x'|^2 / (2 l^2 d))"),
    "krr-ntk-relu": Spec(_krr(_ntk, ReluNTKKernelOptions), ReluNTKKRROptions,
                         "KRR, NTK of a two-layer ReLU network (closed form)"),
    "nystrom-poly": Spec(_krr(_poly, PolyKernelOptions, NystromKRR), PolyNystromOptions,
                         "Nyström KRR (FALKON's preconditioned CG), polynomial kernel"),
    "nystrom-rbf": Spec(_krr(_rbf, RBFKernelOptions, NystromKRR), RBFNystromOptions,
                        "Nyström KRR (FALKON's preconditioned CG), RBF kernel"),
    "nystrom-ntk-relu": Spec(_krr(_ntk, ReluNTKKernelOptions, NystromKRR), ReluNTKNystromOptions,
                             "Nyström KRR (FALKON's preconditioned CG), two-layer ReLU NTK"),
    "krr-entk": Spec(_krr(_entk_kernel, EmpiricalNTKKernelOptions), EmpiricalNTKKRROptions,
                     "KRR, empirical NTK of the bfclab learner at init"),
    "rf-quad": Spec(_rf("quad"), RFOptions, "random quadratic features + ridge"),
    "rf-relu": Spec(_rf("relu"), RFOptions, "random ReLU features + ridge"),
    "twolayer-quad": Spec(_two_layer("quad"), TwoLayerOptions, "two-layer network, quadratic activation"),
    "twolayer-relu": Spec(_two_layer("relu"), TwoLayerOptions, "two-layer network, ReLU activation"),
    "mlp-relu": Spec(_mlp, MLPOptions, "deep ReLU MLP (depth = the learner's layers) trained end to end"),
    "seqkernel": Spec(_seq, SeqKernelOptions, "degree-2 kernel regression applied level by level"),
    "krr-oracle": Spec(_oracle, OracleKRROptions, "KRR, degree-4 polynomial kernel on the true lower-level features"),
}
ESTIMATORS.update({f"tuned-{inner}": Spec(_tuned, _tuned_options(inner), f"{inner}, its {', '.join(space)} chosen "
                                          f"on validation data at the full n (bracketed)", _tuned_check)
                   for inner, space in TUNED_SPACES.items()})


def max_degree(name: str, options: dict | None = None) -> int | None:
    """The largest polynomial degree the predictor of baseline ``name`` can represent, or None when
    unbounded (issue 12: a baseline below the target's degree fails by construction)."""
    if name in ("twolayer-quad", "rf-quad"):
        return 2
    if name in ("krr-poly", "nystrom-poly"):
        return int(resolve_options(name, options or {})["degree"])
    return None


#: estimators that use the quadratic class's structure (its learner, its levels and widths)
QUADRATIC_ONLY = ("krr-entk", "seqkernel", "krr-oracle")
USES = {"krr-entk": "learner", "seqkernel": "levels and widths", "krr-oracle": "levels and true features"}


def check_applies(name: str, target_kind: str) -> None:
    """One-line ConfigError when baseline ``name`` cannot run on a target of ``target_kind``."""
    if name in QUADRATIC_ONLY and target_kind != "quadratic":
        raise ConfigError(f"estimator '{name}': applies to target.kind 'quadratic' only (it uses the quadratic "
                          f"class's {USES[name]}), not "
                          f"target.kind {target_kind!r}")


# ---- option parsing ---------------------------------------------------------------------------


def _spec(name: str) -> Spec:
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown estimator '{name}'; accepted: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name]


def _defaults(name: str, target) -> Any:
    """The options dataclass of ``name`` at its defaults, the target-dependent ones resolved."""
    cls = _spec(name).options
    return cls(**{f.name: f.metadata["from_target"](target) for f in fields(cls) if "from_target" in f.metadata})


def default_options(name: str, target=None) -> dict:
    """Every option of estimator ``name`` with its default (target-dependent ones resolved)."""
    return to_dict(_defaults(name, target))


def parse_options(name: str, given: dict | None, target=None) -> Any:
    """The options dataclass of ``name``: defaults overridden by ``given`` (CLI strings parsed:
    "1e-3", "[1, 2]", "null"), coerced to the field types and checked against their limits by the
    run config's code (:mod:`bfclab.config`); one-line ConfigError naming estimator and option."""
    opts = _defaults(name, target)
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ConfigError(f"estimator '{name}': options must be a mapping of option names, got {given!r}")
    keys = estimator_keys(name)
    apply_mapping(opts, given, keys=keys)
    check_finite(opts, keys=keys)
    check_limits(opts, keys=keys)
    if _spec(name).check is not None:
        _spec(name).check(name, opts, target)
    return opts


def resolve_options(name: str, given: dict | None, target=None) -> dict:
    """Defaults overridden by ``given``, each value validated (one-line ConfigError), as a plain dict."""
    return to_dict(parse_options(name, given, target))


def make_estimator(name: str, options: dict | None = None, *, device: str = "cpu", seed: int = 0, target=None):
    """Build the non-hierarchical baseline ``name`` (PAPER_NOTES §6; an ``Estimator``: fit(x, y) -> self, predict(x), name).

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
