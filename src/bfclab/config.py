"""Typed, nested dataclass configs with file and ``--key value`` overrides.

Data flows one way through bfclab: config -> target -> learner -> training -> metrics -> results.
This module owns the first arrow: a :class:`RunConfig` made of small dataclasses, each field with
a readable default, that can be overridden from a YAML/JSON file holding any subset of the
nested keys and from ``--section.key value`` pairs on the command line.  The resolved config is
written to every run directory as ``config.json``.

Every invalid input raises :class:`ConfigError` whose message is one line naming the field and
what is accepted; the CLI prints it without a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A one-line, user-facing message about a bad config key or value."""


# ----------------------------------------------------------------------------------------------
# The configs.  Docstrings name the PAPER_NOTES section each block implements.


@dataclass
class TargetConfig:
    """The concept class (PAPER_NOTES §2).  Default = the project's default target.

    Levels are 2..L; level 1 is the input x in R^d and level 0 an optional constant channel.
    ``conn`` is a preset name ("chain", "chain+input", "chain+input+const") or an explicit list,
    one entry per level 2..L, of the lower levels feeding that level (it must contain l-1).
    ``alphas`` (one per level 2..L) wins over the gap ratio ``rho`` (alpha_l = rho^(l-2)).
    """

    d: int = 32
    L: int = 4
    widths: list = field(default_factory=lambda: [4])
    conn: Any = "chain+input"
    alphas: Any = None
    rho: float = 0.3
    kappa: float = 2.0
    center: bool = True
    mc_samples: int = 200_000
    seed: int = 0


@dataclass
class DataConfig:
    """Samples and labels (PAPER_NOTES §2.8): regression or sign-around-the-median labels."""

    n_train: int = 20_000
    n_test: int = 20_000
    task: str = "regression"
    label_noise: float = 0.0


@dataclass
class LearnerConfig:
    """The learner (PAPER_NOTES §3).

    ``kind``: "simple" (narrow K only, read-out sum_l alpha_l ||S_l||^2) or "paper" (narrow K
    passed upward plus a wide W of width m for the read-out, tied by the K-W regulariser).
    ``lift``: rows of each fixed random lift R_j (None = k(k+1)/2, the smallest that spans all
    quadratic forms).  ``B``: truncation of the square (inf = plain square).
    """

    kind: str = "simple"
    m: int = 64
    lift: Any = None
    B: float = math.inf
    trunc_lift: bool = False
    lift_center: bool = True
    learn_scales: bool = True
    bias: bool = True


@dataclass
class TrainConfig:
    """Stage-wise optimisation (PAPER_NOTES §4).  ``steps_per_stage`` x (L-1) is the budget of
    every method; ``e2e`` spends it in one stage.  ``checkpoint_every``: steps between the full
    checkpoints a run with an output folder writes for ``--resume`` (0 = four per stage)."""

    steps_per_stage: int = 8000
    batch_size: int = 512
    optimizer: str = "adam"
    lr: float = 1e-2
    momentum: float = 0.9
    schedule: str = "cosine"
    min_lr_frac: float = 0.01
    clip: float = 1.0
    init_std: float = 0.01
    lam_kw: float = 1.0
    lam_k: float = 0.0
    lam_w: float = 1e-4
    warm_start: bool = True
    warm_start_frac: float = 1.0
    log_every: int = 250
    checkpoint_every: int = 0
    diverge_factor: float = 1e4
    device: str = "cpu"


@dataclass
class RunConfig:
    """One training run: ``method`` is bfc | layerwise | window:K | e2e (PAPER_NOTES §4.2, §5)."""

    method: str = "bfc"
    seed: int = 0
    target: TargetConfig = field(default_factory=TargetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------------------------
# Generic machinery


def to_dict(cfg: Any) -> dict:
    """Dataclass -> plain JSON-able dict (inf stays a float; json writes it as Infinity)."""
    return dataclasses.asdict(cfg)


def _coerce(value: Any, typ: Any, name: str) -> Any:
    """Coerce ``value`` (possibly a CLI string) to the annotated type ``typ``."""
    if typ is Any:
        if isinstance(value, str):
            return _parse_literal(value)
        return value
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"config key '{name}': expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{name}': expected an integer, got {value!r}")
        try:
            f = float(value)
        except OverflowError:  # an integer too large for a float: not a usable count either
            raise ConfigError(f"config key '{name}': expected an integer, got one too large for a float") from None
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{name}': expected an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"config key '{name}': expected an integer, got {value!r}")
        return int(f)
    if typ is float:
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"config key '{name}': expected a finite number, got one too large for a float") from None
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{name}': expected a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"config key '{name}': expected a string, got {value!r}")
        return str(value)
    if typ is list or origin is list:
        if isinstance(value, str):
            value = _parse_literal(value)
        if isinstance(value, (int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"config key '{name}': expected a list, got {value!r}")
        return value
    return value


def check_finite(cfg: Any, allow_inf: tuple[str, ...] = ()) -> None:
    """Every number in the config (lists included) is finite; ``allow_inf`` names the keys where
    +inf has a meaning (e.g. ``learner.B``: no truncation).  NaN is never accepted."""

    def walk(obj: Any, key: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, key)
        elif isinstance(obj, float) and not math.isfinite(obj):
            if not (obj == math.inf and key in allow_inf):
                ok = "a finite number or inf" if key in allow_inf else "a finite number"
                raise ConfigError(f"config key '{key}': must be {ok}, got {obj}")

    walk(to_dict(cfg), "")


def _parse_literal(text: str) -> Any:
    """Parse a CLI value: JSON if it parses (numbers, lists, null, true), else the raw string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("inf", "+inf", "infinity"):
        return math.inf
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _resolve_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def set_key(cfg: Any, dotted: str, value: Any) -> None:
    """Set ``section.key`` (or a top-level key) on a nested dataclass, coercing the value."""
    parts = dotted.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        fields = _fields(type(obj))
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            accepted = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key '{dotted}': {where} accepts {accepted}")
        if i == len(parts) - 1:
            hints = _resolve_hints(type(obj))
            current = getattr(obj, part)
            if dataclasses.is_dataclass(current):
                if not isinstance(value, dict):
                    raise ConfigError(f"config key '{dotted}': expected a mapping of sub-keys")
                for k, v in value.items():
                    set_key(cfg, f"{dotted}.{k}", v)
                return
            setattr(obj, part, _coerce(value, hints[part], dotted))
            return
        obj = getattr(obj, part)
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"unknown config key '{dotted}': '{part}' has no sub-keys")


def apply_mapping(cfg: Any, mapping: dict, prefix: str = "") -> None:
    """Apply a nested mapping (from a YAML/JSON file) of any subset of the config's keys."""
    if not isinstance(mapping, dict):
        raise ConfigError("config file: expected a mapping of keys at the top level")
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        set_key(cfg, dotted, value)


def load_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into a mapping; one-line errors for missing/bad files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}': not found")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml/json both raise a variety of errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config file '{p}': not valid YAML/JSON ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}': expected a mapping of keys at the top level")
    problem = _alias_problem(data)
    if problem:
        raise ConfigError(f"config file '{p}': {problem}")
    return data


#: a bound on the values a config file may hold once YAML aliases are expanded (a real one has ~100)
MAX_VALUES = 100_000


def _alias_problem(data: Any) -> str | None:
    """YAML aliases (``&a`` ... ``*a``) share one object: a value may contain itself, or a few lines
    may expand to billions of values ("billion laughs"); every reader of the config walks it, so
    both are refused here.  Iterative (the nesting may be as deep as the YAML parser allows)."""
    size: dict[int, int] = {}  # id -> values in the expanded subtree
    open_: set[int] = set()  # containers on the path being walked
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, done = stack.pop()
        kids = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else None
        if kids is None:
            continue
        i = id(node)
        if done:
            open_.discard(i)
            size[i] = 1 + sum(size.get(id(k), 1) for k in kids)
            if size[i] > MAX_VALUES:
                return f"more than {MAX_VALUES} values once its YAML aliases are expanded"
            continue
        if i in size:
            continue
        if i in open_:
            return "a YAML alias makes a value contain itself"
        open_.add(i)
        stack.append((node, True))
        stack.extend((k, False) for k in kids)
    return None


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """``['--train.lr', '1e-3', '--learner.kind=paper']`` -> [(key, value), ...]."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--") or len(a) <= 2:
            raise ConfigError(f"unexpected argument '{a}': overrides look like --section.key value")
        key = a[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override '--{key}' needs a value")
            value = args[i + 1]
            i += 2
        out.append((key.replace("-", "_"), value))
    return out


def from_dict(cls: type, mapping: dict) -> Any:
    """Rebuild a config dataclass from its ``to_dict`` form (e.g. a saved ``config.json``)."""
    cfg = cls()
    apply_mapping(cfg, mapping)
    return cfg
