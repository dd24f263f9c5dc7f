"""The one option system (bfclab.config): limits in field metadata, one generic check, one-line
errors naming the key; the run config, the image config and the estimator options share it."""

import dataclasses
import math
import typing
from dataclasses import dataclass

import pytest

from bfclab.config import (ConfigError, DataConfig, LearnerConfig, RunConfig, TargetConfig, TrainConfig,
                           apply_mapping, check_finite, check_limits, opt, set_key)
from bfclab.images.config import ImageRunConfig
from bfclab.images.config import validate as validate_image
from bfclab.training import validate


def error(fn, *args) -> str | None:
    """The one-line ConfigError message of ``fn(*args)``, or None if it passes."""
    try:
        fn(*args)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg, msg
        return msg
    return None


def run_error(key: str, value) -> str | None:
    cfg = RunConfig()
    return error(lambda: (set_key(cfg, key, value), validate(cfg)))


# ---- the generic check ----------------------------------------------------------------------------


@dataclass
class Inner:
    rate: float = opt(0.5, gt=0, le=1)
    kind: str = opt("a", choices=("a", "b"))
    grid: list[float] = opt(factory=lambda: [1.0], gt=0, nonempty=True)
    size: int | None = opt(None, ge=2)
    free: float = 3.0


@dataclass
class Outer:
    lr: float = opt(1e-2, gt=0)
    inner: Inner = dataclasses.field(default_factory=Inner)


@pytest.mark.parametrize("key, value, message", [
    ("lr", -1.0, "config key 'lr': must be > 0, got -1.0"),
    ("lr", 0, "config key 'lr': must be > 0, got 0.0"),
    ("inner.rate", 1.5, "config key 'inner.rate': must be in (0, 1], got 1.5"),
    ("inner.rate", 0.0, "config key 'inner.rate': must be in (0, 1], got 0.0"),
    ("inner.kind", "x", "config key 'inner.kind': unknown 'x'; accepted: a, b"),
    ("inner.grid", "[1, -2]", "config key 'inner.grid': entries must be > 0, got [1.0, -2.0]"),
    ("inner.grid", [], "config key 'inner.grid': must be a non-empty list, got []"),
    ("inner.size", 1, "config key 'inner.size': must be >= 2, got 1"),
])
def test_check_limits_names_the_dotted_key_and_what_is_accepted(key, value, message):
    cfg = Outer()
    set_key(cfg, key, value)
    assert error(check_limits, cfg) == message


def test_values_inside_the_limits_pass():
    cfg = Outer()
    apply_mapping(cfg, {"lr": "1e-3", "inner": {"rate": 1, "kind": "b", "grid": "[0.5, 2]", "size": "null",
                                                "free": -7}})
    check_limits(cfg)
    assert (cfg.lr, cfg.inner.rate, cfg.inner.grid, cfg.inner.size, cfg.inner.free) == (1e-3, 1.0, [0.5, 2.0], None, -7.0)
    set_key(cfg, "inner.size", "2")
    check_limits(cfg)
    assert cfg.inner.size == 2


@pytest.mark.parametrize("key, value, message", [
    ("lr", "fast", "config key 'lr': expected a number, got 'fast'"),
    ("lr", True, "config key 'lr': expected a number, got True"),
    ("inner.size", "2.5", "config key 'inner.size': expected an integer or null, got '2.5'"),
    ("inner.grid", "[1, \"x\"]", "config key 'inner.grid': expected a number, got 'x'"),
    ("inner.nope", 1, "unknown config key 'inner.nope': inner accepts free, grid, kind, rate, size"),
    ("lr.x", 1, "unknown config key 'lr.x': 'lr' has no sub-keys"),
])
def test_coercion_errors_are_one_line(key, value, message):
    assert error(set_key, Outer(), key, value) == message


def test_inf_only_where_declared():
    cfg = RunConfig()
    set_key(cfg, "learner.B", "inf")
    check_finite(cfg)  # opt(..., inf=True): no truncation
    assert LearnerConfig.__dataclass_fields__["B"].metadata["inf"]
    set_key(cfg, "learner.B", "nan")
    assert error(check_finite, cfg) == "config key 'learner.B': must be a finite number or inf, got nan"
    cfg = RunConfig()
    set_key(cfg, "train.lr", "inf")
    assert error(check_finite, cfg) == "config key 'train.lr': must be a finite number, got inf"
    check_finite(cfg, allow_inf=("train.lr",))  # the explicit list still works


# ---- the run config ---------------------------------------------------------------------------------


SECTIONS = {"target": TargetConfig, "data": DataConfig, "learner": LearnerConfig, "train": TrainConfig}


def _limited(cls) -> dict[str, dict]:
    return {f.name: dict(f.metadata) for f in dataclasses.fields(cls)
            if set(f.metadata) & {"gt", "ge", "lt", "le", "choices", "nonempty"}}


def just_outside(md: dict, integer: bool) -> list:
    """Values one step outside each bound of a field's metadata (and a wrong choice)."""
    step = (lambda v, d: v + d) if integer else (lambda v, d: math.nextafter(v, d * math.inf))
    out = []
    if "choices" in md:
        out.append("not-a-choice")
    if "gt" in md:
        out.append(md["gt"])
    if "ge" in md:
        out.append(step(md["ge"], -1))
    if "lt" in md:
        out.append(md["lt"])
    if "le" in md:
        out.append(step(md["le"], 1))
    return out


def _is_int(cls, name: str) -> bool:
    typ = typing.get_type_hints(cls)[name]
    return typ is int or int in typing.get_args(typ)


RUN_CASES = [(f"{sec}.{name}", bad) for sec, cls in SECTIONS.items() for name, md in _limited(cls).items()
             for bad in just_outside(md, _is_int(cls, name))]


def test_every_section_declares_its_limits():
    """The limits the hand-written checks held, now in the metadata (none lost in the move)."""
    names = {sec: set(_limited(cls)) for sec, cls in SECTIONS.items()}
    assert names["target"] == {"d", "L", "kappa", "mc_samples", "var_samples"}
    assert names["data"] == {"n_train", "n_test", "n_monitor", "task", "label_noise"}
    assert names["learner"] == {"kind", "m", "lift", "B", "width", "blocks", "embed"}
    assert names["train"] == {"steps_per_stage", "batch_size", "optimizer", "lr", "momentum", "schedule",
                              "min_lr_frac", "clip", "init_std", "lam_kw", "lam_k", "lam_w", "warm_start_frac",
                              "log_every", "diverge_factor", "weight_decay", "polish_iters", "polish_val_frac",
                              "polish_every", "polish_patience"}
    assert len(RUN_CASES) > 30


@pytest.mark.parametrize("key, bad", RUN_CASES)
def test_validate_refuses_just_outside_every_limit(key, bad):
    msg = run_error(key, bad)
    assert msg is not None and msg.startswith(f"config key '{key}': ")
    assert ("unknown 'not-a-choice'; accepted: " in msg) if bad == "not-a-choice" else ("must be" in msg)


@pytest.mark.parametrize("key, value, message", [
    ("train.lr", -1.0, "config key 'train.lr': must be > 0, got -1.0"),
    ("train.optimizer", "x", "config key 'train.optimizer': unknown 'x'; accepted: adam, sgd"),
    ("train.momentum", 1, "config key 'train.momentum': must be in [0, 1), got 1.0"),
    ("train.batch_size", "1e12", "config key 'train.batch_size': must be in (0, 1000000], got 1000000000000"),
    ("data.n_train", 1, "config key 'data.n_train': must be >= 2, got 1"),
    ("target.L", 11, "config key 'target.L': must be in [2, 10], got 11"),
    ("learner.lift", 0, "config key 'learner.lift': must be > 0, got 0"),
    ("learner.B", 0, "config key 'learner.B': must be > 0, got 0.0"),
])
def test_validate_messages(key, value, message):
    assert run_error(key, value) == message


def test_cross_field_rules_stay_explicit():
    """label_noise <= 0.5 holds only for classification (a flip probability)."""
    assert run_error("data.label_noise", 0.7) is None
    cfg = RunConfig()
    apply_mapping(cfg, {"data": {"task": "classification", "label_noise": 0.7}})
    assert error(validate, cfg) == "config key 'data.label_noise': a flip probability, at most 0.5, got 0.7"
    apply_mapping(cfg, {"data": {"label_noise": 0.5}, "learner": {"B": "inf", "lift": "3"}})
    validate(cfg)
    assert cfg.learner.lift == 3


def test_image_config_uses_the_same_check():
    cfg = ImageRunConfig()
    set_key(cfg, "probe.C", 0)
    assert error(validate_image, cfg) == "config key 'probe.C': must be > 0, got 0.0"
    cfg = ImageRunConfig()
    set_key(cfg, "data.test_frac", 1)
    assert error(validate_image, cfg) == "config key 'data.test_frac': must be in (0, 1), got 1.0"
    cfg = ImageRunConfig()
    set_key(cfg, "train.schedule", "step")
    assert error(validate_image, cfg) == "config key 'train.schedule': unknown 'step'; accepted: cosine, linear, constant"
    cfg = ImageRunConfig()
    set_key(cfg, "model.kernel", 4)  # cross-field/structural rules stay explicit
    assert "must be odd" in error(validate_image, cfg)


# ---- config and estimator options agree -----------------------------------------------------------------


@pytest.mark.parametrize("config_key, estimator, option", [
    ("train.lr", "twolayer-relu", "lr"),                        # > 0, no upper bound
    ("train.warm_start_frac", "krr-poly", "mem_fraction"),      # (0, 1]
    ("train.steps_per_stage", "twolayer-quad", "steps"),        # an integer > 0
    ("train.optimizer", "twolayer-relu", "optimizer"),          # adam, sgd
])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-1", "1", "2", "1.5", "x", "true", "adam"])
def test_config_and_registry_agree(config_key, estimator, option, value):
    """Same value, same verdict and the same words after the key's name ("inf" included)."""
    from bfclab.baselines.registry import resolve_options

    ours = run_error(config_key, value)
    theirs = error(resolve_options, estimator, {option: value})
    if ours is None or theirs is None:
        assert ours is None and theirs is None, (ours, theirs)
        return
    assert ours.startswith(f"config key '{config_key}': ")
    assert theirs.startswith(f"estimator '{estimator}' option '{option}': ")
    assert ours.split(": ", 1)[1] == theirs.split(": ", 1)[1]
