"""Typed, nested dataclass configs with file and ``--key value`` overrides.

Data flows one way through bfclab: config -> target -> learner -> training -> metrics -> results.
This module owns the first arrow: a :class:`RunConfig` made of small dataclasses, each field with
a readable default, that can be overridden from a YAML/JSON file holding any subset of the
nested keys and from ``--section.key value`` pairs on the command line.  The resolved config is
written to every run directory as ``config.json``.

It is the one option system of bfclab: the run config, the image-run config
(:mod:`bfclab.images.config`) and the estimator options (:mod:`bfclab.baselines.registry`) are
all dataclasses whose fields carry their limits in metadata (:func:`opt`: ``gt``/``ge``/``lt``/``le``,
``choices``, ``nonempty``, ``inf``), are filled by :func:`apply_mapping` / :func:`set_key` (values
coerced to the annotated type, CLI strings parsed) and checked by :func:`check_finite` and
:func:`check_limits`.  Cross-field rules stay explicit code in the validators.

Every invalid input raises :class:`ConfigError` whose message is one line naming the field and
what is accepted; the CLI prints it without a traceback.  How the key is named is a
:class:`Keys` (``config key 'train.lr'``; the registry names ``estimator 'krr-poly' option 'degree'``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class ConfigError(ValueError):
    """A one-line, user-facing message about a bad config key or value."""


def opt(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
        gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
        choices: Any = None, nonempty: bool = False, inf: bool = False, **meta: Any) -> Any:
    """A dataclass field whose accepted values live in its metadata.

    ``gt``/``ge``/``lt``/``le``: bounds (for a list, on every entry); ``choices``: the accepted
    values; ``nonempty``: a list needs at least one entry (all read by :func:`check_limits`);
    ``inf``: +inf is accepted (read by :func:`check_finite`).  ``factory`` builds a mutable
    default; ``meta`` adds other metadata (e.g. the registry's target-dependent defaults).
    """
    limits = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": None if choices is None else tuple(choices)}
    md = {k: v for k, v in limits.items() if v is not None}
    if nonempty:
        md["nonempty"] = True
    if inf:
        md["inf"] = True
    md.update(meta)
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


# ----------------------------------------------------------------------------------------------
# The configs.  Docstrings name the PAPER_NOTES section each block implements.


@dataclass
class TargetConfig:
    """The concept class (PAPER_NOTES §2).  Default = the project's default target.

    Levels are 2..L; level 1 is the input x in R^d and level 0 an optional constant channel.
    ``conn`` is a preset name ("chain", "chain+input", "chain+input+const") or an explicit list,
    one entry per level 2..L, of the lower levels feeding that level (it must contain l-1).
    ``alphas`` (one per level 2..L) wins over the gap ratio ``rho`` (alpha_l = rho^(l-2)).
    ``kind`` names the target (issue 16): ``quadratic`` is this class, any other kind
    (``rhm``, ``staircase``, ``python:PATH:FUNC`` for a user's own, :mod:`bfclab.targets`) takes
    its options from ``options`` and uses ``seed`` only; the fields below are then unused.
    ``mc_samples``: the sample that freezes each level's centring and scale; ``var_samples``: the
    fresh sample that estimates the population Var(G*), the normaliser of test nMSE (issue 11).
    """

    kind: str = "quadratic"  # quadratic | rhm | staircase | python:PATH:FUNC (bfclab.targets, issue 16)
    options: dict = field(default_factory=dict)  # a non-quadratic kind's options (e.g. rhm: v, m, s, L, n_c)
    d: int = opt(32, gt=0)
    L: int = opt(4, ge=2, le=10)  # levels 2..L; at most 10 (output degree 512)
    widths: list = field(default_factory=lambda: [4])
    conn: Any = "chain+input"
    alphas: Any = None
    rho: float = 0.3
    kappa: float = opt(2.0, ge=1)
    center: bool = True
    mc_samples: int = opt(200_000, ge=100)
    var_samples: int = opt(2_000_000, ge=100)
    seed: int = 0


@dataclass
class DataConfig:
    """Samples and labels (PAPER_NOTES §2.8): regression or sign-around-the-median labels.

    ``n_test`` points score every stage end and the final result (issue 11: the top levels are
    heavy-tailed, so small test sets mislead); the periodic records of the training curves score
    the first ``n_monitor`` of them."""

    n_train: int = opt(20_000, ge=2)
    n_test: int = opt(200_000, ge=2)
    n_monitor: int = opt(20_000, ge=2)  # test points of the periodic records (stage ends and final: all n_test)
    task: str = opt("regression", choices=("regression", "classification"))
    label_noise: float = opt(0.0, ge=0)  # classification: a flip probability, at most 0.5 (train.validate)


@dataclass
class LearnerConfig:
    """The learner (PAPER_NOTES §3).

    ``kind``: "simple" (narrow K only, read-out sum_l alpha_l ||S_l||^2) or "paper" (narrow K
    passed upward plus a wide W of width m for the read-out, tied by the K-W regulariser).
    ``lift``: rows of each fixed random lift R_j (None = k(k+1)/2, the smallest that spans all
    quadratic forms).  ``B``: truncation of the square (inf = plain square).
    ``mlp`` / ``cnn`` (issue 16): a generic deep ReLU network of ``blocks`` blocks of ``width``
    units, grown by the same methods on any target (:mod:`bfclab.nets`; discrete inputs through an
    embedding of width ``embed``; ``cnn``: kernel = stride = the target's patch size).
    """

    kind: str = opt("simple", choices=("simple", "paper", "mlp", "cnn"))
    m: int = opt(64, gt=0)
    lift: int | None = opt(None, gt=0)
    B: float = opt(math.inf, gt=0, inf=True)
    trunc_lift: bool = False
    lift_center: bool = True
    learn_scales: bool = True
    bias: bool = True
    width: int = opt(256, gt=0)  # mlp / cnn: units (channels) per block
    blocks: int | None = opt(None, gt=0)  # mlp / cnn: number of blocks (None: the target's depth)
    embed: int = opt(16, gt=0)  # mlp / cnn: embedding width of a discrete input's symbols


@dataclass
class TrainConfig:
    """Stage-wise optimisation (PAPER_NOTES §4).  ``steps_per_stage`` x (L-1) is the budget of
    every method; ``e2e`` spends it in one stage.  ``checkpoint_every``: steps between the full
    checkpoints a run with an output folder writes for ``--resume`` (0 = four per stage).
    ``polish_iters``: after the last stage, at most that many L-BFGS iterations on the whole
    training set over the last stage's trainable levels (PAPER_NOTES §4.2: "after stage L,
    optionally fine-tune all layers"; :meth:`bfclab.training.Run.polish`), stopped early on a
    held-out ``polish_val_frac`` of the training sample, which a run with a polish never trains on."""

    steps_per_stage: int = opt(8000, gt=0)
    batch_size: int = opt(512, gt=0, le=1_000_000)
    optimizer: str = opt("adam", choices=("adam", "sgd"))
    lr: float = opt(1e-2, gt=0)
    momentum: float = opt(0.9, ge=0, lt=1)
    schedule: str = opt("cosine", choices=("cosine", "linear", "constant"))
    min_lr_frac: float = opt(0.01, ge=0, le=1)
    clip: float = opt(1.0, ge=0)
    init_std: float = opt(0.01, ge=0)
    lam_kw: float = opt(1.0, ge=0)
    lam_k: float = opt(0.0, ge=0)
    lam_w: float = opt(1e-4, ge=0)
    warm_start: bool = True
    warm_start_frac: float = opt(1.0, gt=0, le=1)
    log_every: int = opt(250, gt=0)
    checkpoint_every: int = 0
    diverge_factor: float = opt(1e4, gt=0)
    polish_iters: int = opt(0, ge=0)  # full-batch L-BFGS iterations after the last stage (0 = none)
    polish_val_frac: float = opt(0.1, gt=0, lt=1)  # with a polish: training points held out to stop it
    polish_every: int = opt(10, gt=0)  # L-BFGS iterations between two checks of the held-out error
    polish_patience: int = opt(5, gt=0)  # checks without a better held-out error before the polish stops
    device: str = "cpu"
    weight_decay: float = opt(0.0, ge=0)  # mlp / cnn only (AdamW / SGD weight decay)


@dataclass
class MethodAndSeed:
    """What every run config starts with: the training method (bfc | layerwise | window:K | e2e,
    PAPER_NOTES §4.2, §5) and the run seed (:mod:`bfclab.seeds`)."""

    method: str = "bfc"
    seed: int = 0


@dataclass
class RunConfig(MethodAndSeed):
    """One training run on a synthetic target (PAPER_NOTES §4.2, §5): the target (§2), its samples
    (§2.8), the learner (§3) and the stage-wise optimisation (§4)."""

    target: TargetConfig = field(default_factory=TargetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------------------------
# Generic machinery


def to_dict(cfg: Any) -> dict:
    """Dataclass -> plain JSON-able dict (inf stays a float; json writes it as Infinity)."""
    return dataclasses.asdict(cfg)


@dataclass(frozen=True)
class Keys:
    """How a message names a key: ``config key 'train.lr'`` by default (the estimator registry's
    name ``estimator 'krr-poly' option 'degree'``).  Format strings with ``{key}``, ``{where}``
    and ``{accepted}``; ``sort``: list the accepted keys sorted (else in declaration order)."""

    name: str = "config key '{key}'"
    unknown_in: str = "unknown config key '{key}': {where} accepts {accepted}"
    unknown_why: str = "unknown config key '{key}': {where}"
    sort: bool = True

    def key(self, dotted: str) -> str:
        return self.name.format(key=dotted)

    def unknown(self, dotted: str, where: str, accepted: list[str] | None) -> str:
        """``where`` holds the section (``accepted``: its keys) or, with ``accepted`` None, the problem."""
        if accepted is None:
            return self.unknown_why.format(key=dotted, where=where)
        names = sorted(accepted) if self.sort else list(accepted)
        return self.unknown_in.format(key=dotted, where=where, accepted=", ".join(names))


CONFIG_KEYS = Keys()


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))


def _coerce(value: Any, typ: Any, name: str, keys: Keys = CONFIG_KEYS, nullable: bool = False) -> Any:
    """Coerce ``value`` (possibly a CLI string) to the annotated type ``typ``: bool, int, float,
    str, list or ``list[T]`` (entries coerced), ``T | None`` (none/null -> None), Any."""
    where = keys.key(name)
    orn = " or null" if nullable else ""
    if typ is Any:
        if isinstance(value, str):
            return _parse_literal(value)
        return value
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if _is_null(value):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0] if len(inner) == 1 else Any, name, keys, nullable=True)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false{orn}, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer{orn}, got {value!r}")
        try:
            f = float(value)
        except OverflowError:  # an integer too large for a float: not a usable count either
            raise ConfigError(f"{where}: expected an integer, got one too large for a float") from None
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer{orn}, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):
            raise ConfigError(f"{where}: expected an integer{orn}, got {value!r}")
        return int(f)
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number{orn}, got {value!r}")
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"{where}: expected a finite number, got one too large for a float") from None
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number{orn}, got {value!r}") from None
    if typ is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string{orn}, got {value!r}")
        return str(value)
    if typ is dict or origin is dict:
        if isinstance(value, str):
            value = _parse_literal(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping{orn}, got {value!r}")
        return dict(value)
    if typ is list or origin is list:
        if isinstance(value, str):
            value = _parse_literal(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list{orn}, got {value!r}")
        return [_coerce(v, args[0], name, keys) for v in value] if args else value
    return value


def check_finite(cfg: Any, allow_inf: tuple[str, ...] = (), keys: Keys = CONFIG_KEYS, prefix: str = "") -> None:
    """Every number in the config (lists included) is finite; +inf is accepted where it has a
    meaning: fields declared with ``opt(..., inf=True)`` (e.g. ``learner.B``: no truncation) and
    the keys named in ``allow_inf``.  NaN is never accepted."""

    def walk(obj: Any, key: str, inf_ok: bool) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{key}.{k}", f"{key}.{k}" in allow_inf)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, key, inf_ok)
        elif isinstance(obj, float) and not math.isfinite(obj) and not (obj == math.inf and inf_ok):
            ok = "a finite number or inf" if inf_ok else "a finite number"
            raise ConfigError(f"{keys.key(key)}: must be {ok}, got {obj}")

    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_finite(value, allow_inf, keys, f"{key}.")
        else:
            walk(value, key, key in allow_inf or bool(f.metadata.get("inf")))


def _bounds(md: Any) -> str | None:
    """The bounds of a field's metadata as text: "> 0", "<= 1", "in (0, 1]"; None without bounds."""
    lo = ("(", md["gt"]) if "gt" in md else ("[", md["ge"]) if "ge" in md else None
    hi = (")", md["lt"]) if "lt" in md else ("]", md["le"]) if "le" in md else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '>='} {lo[1]}"
    if hi:
        return f"{'<' if hi[0] == ')' else '<='} {hi[1]}"
    return None


def _within(v: Any, md: Any) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    return (("gt" not in md or v > md["gt"]) and ("ge" not in md or v >= md["ge"])
            and ("lt" not in md or v < md["lt"]) and ("le" not in md or v <= md["le"]))


def limit_problem(value: Any, md: Any) -> str | None:
    """What is wrong with ``value`` under a field's metadata (see :func:`opt`), or None.  None
    (an optional field left out) is never checked."""
    if value is None:
        return None
    if "choices" in md and value not in md["choices"]:
        return f"unknown {value!r}; accepted: {', '.join(str(c) for c in md['choices'])}"
    if md.get("nonempty") and isinstance(value, list) and not value:
        return "must be a non-empty list, got []"
    bounds = _bounds(md)
    if bounds is None:
        return None
    if isinstance(value, list):
        return None if all(_within(v, md) for v in value) else f"entries must be {bounds}, got {value!r}"
    return None if _within(value, md) else f"must be {bounds}, got {value!r}"


def check_limits(cfg: Any, prefix: str = "", keys: Keys = CONFIG_KEYS) -> None:
    """Every field of the dataclass ``cfg`` (nested sections too, named ``section.key``) lies in
    the limits of its metadata (:func:`opt`); else one line naming the key and what is accepted,
    e.g. ``config key 'train.lr': must be > 0, got -1.0``."""
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_limits(value, f"{key}.", keys)
            continue
        problem = limit_problem(value, f.metadata)
        if problem:
            raise ConfigError(f"{keys.key(key)}: {problem}")


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


def set_key(cfg: Any, dotted: str, value: Any, keys: Keys = CONFIG_KEYS) -> None:
    """Set ``section.key`` (or a top-level key) on a nested dataclass, coercing the value."""
    parts = dotted.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        fields = _fields(type(obj))
        if part not in fields:
            raise ConfigError(keys.unknown(dotted, ".".join(parts[:i]) or "the top level", list(fields)))
        if i == len(parts) - 1:
            hints = _resolve_hints(type(obj))
            current = getattr(obj, part)
            if dataclasses.is_dataclass(current):
                if not isinstance(value, dict):
                    raise ConfigError(f"{keys.key(dotted)}: expected a mapping of sub-keys")
                for k, v in value.items():
                    set_key(cfg, f"{dotted}.{k}", v, keys)
                return
            setattr(obj, part, _coerce(value, hints[part], dotted, keys))
            return
        obj = getattr(obj, part)
        if isinstance(obj, dict):  # a mapping field (target.options): the rest of the key is one entry
            obj[".".join(parts[i + 1:])] = _parse_literal(value) if isinstance(value, str) else value
            return
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(keys.unknown(dotted, f"'{part}' has no sub-keys", None))


def apply_mapping(cfg: Any, mapping: dict, prefix: str = "", keys: Keys = CONFIG_KEYS) -> None:
    """Apply a nested mapping (from a YAML/JSON file) of any subset of the config's keys."""
    if not isinstance(mapping, dict):
        raise ConfigError("config file: expected a mapping of keys at the top level")
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        set_key(cfg, dotted, value, keys)


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
