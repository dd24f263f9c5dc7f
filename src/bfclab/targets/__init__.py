"""Targets by name (issue 16): the quadratic class and any other hierarchical task through one
protocol (:mod:`.protocol`), selectable in configs and sweep grids as ``target.kind``:

==========================  ====================================================================
``quadratic``               the paper's concept class (PAPER_NOTES §2, :class:`bfclab.target.Target`)
``rhm``                     the Random Hierarchy Model (:mod:`.rhm`; options v, m, s, L, n_c)
``staircase``               the staircase on the hypercube (:mod:`.staircase`; options d, k, ...)
``python:PATH:FUNC``        a user's own: ``FUNC(seed=..., **target.options)`` of the file PATH
                            returns an object following the protocol (``examples/own_target.py``)
==========================  ====================================================================

A non-quadratic kind takes its options from ``target.options`` (``--target.options.m 4`` or
``target.options.m: [2, 4]`` as a grid axis) and its seed from ``target.seed``.  Built-in kinds'
options are typed dataclasses parsed by the run config's code (one-line errors such as
``target 'rhm' option 'm': must be >= 1, got 0``).
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import seeds
from ..config import ConfigError, DataConfig, Keys, TargetConfig, apply_mapping, check_finite, check_limits
from ..target import Target
from ..userfile import load_function
from . import protocol
from .protocol import (HierarchicalTarget, Quadratic, checked_sample, encode, encoded_dim, has_features, levels_of,
                       save_target, variance_of)
from .rhm import RHM, RHMOptions
from .rhm import validate_options as _rhm_validate
from .staircase import Staircase, StaircaseOptions
from .staircase import validate_options as _staircase_validate

__all__ = ["KINDS", "HierarchicalTarget", "Quadratic", "RHM", "RHMOptions", "Staircase", "StaircaseOptions",
           "checked_sample", "encode", "encoded_dim", "has_features", "is_quadratic", "levels_of", "load_target",
           "make_target", "parse_options", "save_target", "validate_target", "variance_of"]

PYTHON = "python:"


@dataclass(frozen=True)
class Kind:
    """A built-in target kind: its options dataclass, cross-field check and constructor."""

    options: type
    validate: Callable[[Any], None]
    build: Callable[[Any, int], Any]
    cls: type


KINDS: dict[str, Kind] = {
    "rhm": Kind(RHMOptions, _rhm_validate, lambda o, seed: RHM(o, seed), RHM),
    "staircase": Kind(StaircaseOptions, _staircase_validate, lambda o, seed: Staircase(o, seed), Staircase),
}
ACCEPTED = f"quadratic, {', '.join(KINDS)}, or python:PATH.py:FUNC"


def is_quadratic(tcfg: TargetConfig) -> bool:
    return tcfg.kind == "quadratic"


def option_keys(kind: str) -> Keys:
    k = kind.replace("{", "{{").replace("}", "}}")
    return Keys(name=f"target '{k}' option '{{key}}'",
                unknown_in=f"target '{k}': unknown option '{{key}}'; accepted: {{accepted}}",
                unknown_why=f"target '{k}': unknown option '{{key}}' ({{where}})", sort=False)


def parse_options(kind: str, given: dict) -> Any:
    """The options dataclass of built-in ``kind``: defaults overridden by ``given``, checked."""
    spec = KINDS[kind]
    opts = spec.options()
    keys = option_keys(kind)
    apply_mapping(opts, dict(given or {}), keys=keys)
    check_finite(opts, keys=keys)
    check_limits(opts, keys=keys)
    spec.validate(opts)
    return opts


def _python_factory(kind: str, options: dict) -> Callable:
    """The user's factory of ``kind``, its signature checked against ``seed=`` and ``options``."""
    rest = kind[len(PYTHON):]
    path, sep, func = rest.rpartition(":")
    if not sep or not path or not func:
        raise ConfigError(f"config key 'target.kind': {kind!r} must be python:PATH.py:FUNC")
    factory = load_function(path, func, "config key 'target.kind'", f"{func}(seed=..., **target.options) -> a target")
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a callable without a signature: checked when called
        return factory
    try:
        sig.bind(seed=0, **dict(options))
    except TypeError as e:
        raise ConfigError(f"config key 'target.options': {kind} takes ({', '.join(sig.parameters)}); got options "
                          f"{sorted(options)} ({e})") from None
    return factory


def _call_factory(kind: str, factory: Callable, seed: int, options: dict) -> Any:
    """``factory(seed=seed, **options)``; whatever the user's code raises becomes one line
    naming the target, the exception and where in the user's file it was raised."""
    try:
        return factory(seed=seed, **options)
    except Exception as e:
        frames = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        name = getattr(factory, "__name__", "factory")
        raise ConfigError(f"target '{kind}': {name}(seed=..., **target.options) with options {dict(options)} "
                          f"raised {type(e).__name__}: {e}{where}") from None


def validate_target(tcfg: TargetConfig) -> None:
    """One-line errors for ``tcfg`` before anything is built or written."""
    kind = tcfg.kind
    if kind == "quadratic":
        from ..target import validate

        if tcfg.options:
            raise ConfigError(f"config key 'target.options': the quadratic class takes its settings from target.d, "
                              f"target.L, ... (options are for the kinds {', '.join(KINDS)} and python:), got "
                              f"{sorted(tcfg.options)}")
        validate(tcfg)
    elif kind in KINDS:
        parse_options(kind, tcfg.options)
    elif kind.startswith(PYTHON):
        _python_factory(kind, tcfg.options)
    else:
        raise ConfigError(f"config key 'target.kind': unknown {kind!r}; accepted: {ACCEPTED}")


def make_target(tcfg: TargetConfig, data: DataConfig | None = None) -> Any:
    """The protocol target of ``tcfg`` (the quadratic class wrapped by :class:`Quadratic` with
    ``data``'s task and label noise)."""
    kind, seed = tcfg.kind, int(tcfg.seed)
    if not kind.startswith(PYTHON):  # a python: kind is checked by _python_factory, loading the file once
        validate_target(tcfg)
    if kind == "quadratic":
        return Quadratic(Target.from_config(tcfg), data)
    if kind in KINDS:
        return KINDS[kind].build(parse_options(kind, tcfg.options), seed)
    factory = _python_factory(kind, tcfg.options)
    t = _call_factory(kind, factory, seeds.seed_of("user_target", seed), dict(tcfg.options))
    protocol.check(t, where=f"target '{kind}'")
    if not isinstance(t.config, dict):
        raise ConfigError(f"target '{kind}': field 'config' must be a mapping")
    t.config = {**t.config, "kind": kind, "seed": seed, "options": dict(tcfg.options)}
    t.kind = kind
    return t


def load_target(path: str | Path, data: DataConfig | None = None) -> Any:
    """A target written by :func:`save_target` (or a quadratic ``target.pt``), rebuilt."""
    st = None
    try:
        st = protocol.read_target_file(path)
    except ConfigError:
        t = Target.load(path)  # the quadratic class's own format (its own one-line errors)
        return Quadratic(t, data)
    kind, config, state = st["kind"], st["config"], st["state"]
    if kind in KINDS:
        cls = KINDS[kind].cls
        if state is not None and hasattr(cls, "from_state"):
            return cls.from_state(config, state)
        return KINDS[kind].build(parse_options(kind, config.get("options", {})), int(config.get("seed", 0)))
    if isinstance(kind, str) and kind.startswith(PYTHON):
        tcfg = TargetConfig(kind=kind, options=dict(config.get("options", {})), seed=int(config.get("seed", 0)))
        return make_target(tcfg, data)
    raise ConfigError(f"target file '{path}': field 'kind' is {kind!r}; accepted: {ACCEPTED}")


def describe(t: Any) -> str:
    """One line for logs and tables: kind, task, input shape."""
    what = f"{t.n_classes} classes" if t.task == "classification" else "regression"
    inp = f"{t.input} {tuple(t.shape)}" + (f" over {t.vocab} symbols" if t.input == "discrete" else "")
    return f"{t.kind}: {what}, {inp}"

