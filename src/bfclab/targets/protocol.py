"""The target protocol (issue 16): what any hierarchical task gives bfclab's methods, sweeps and
experiments (PAPER_NOTES §2 for the quadratic class, the first implementation; §7.3 for the
measurements a level's ground truth enables).

A target is any object with

* ``kind``       its registered name (``quadratic``, ``rhm``, ``staircase``, ``python:PATH:FUNC``);
* ``task``       ``regression`` (float64 labels) or ``classification`` (int64 labels 0..n_classes-1);
* ``input``      ``continuous`` (x float64 of shape (n, *shape)) or ``discrete`` (x int64 symbol ids
  0..vocab-1 of shape (n, *shape));
* ``shape``      one input's shape; ``vocab`` the number of symbols (discrete inputs; 0 otherwise);
* ``n_classes``  the number of classes (classification; 0 for regression);
* ``config``     a JSON-able mapping from which the target can be rebuilt;
* ``sample(n, seed) -> (x, y)``  n labelled examples drawn from a generator seeded by ``seed``.

and optionally

* ``levels``     the names (ints) of its hidden levels, bottom-up;
* ``features(x) -> {level: tensor (n, k_level)}``  the ground-truth features of every level;
* ``floors() -> {name: nMSE or error}``  known error floors (e.g. Bayes 0, a degree-p floor);
* ``variance``   the population variance of y (regression), the normaliser of every nMSE; when
  absent it is estimated once from a large sample (:func:`variance_of`);
* ``test_sample(n, seed) -> (x, y)``  the test examples, when they differ from training draws
  (the quadratic class's test labels are clean of the training labels' noise, PAPER_NOTES §2.8);
  :func:`split` uses it, and ``sample`` when it is absent;
* ``size``       the number of distinct inputs of a finite input space (the RHM's P_max, the
  staircase's 2^d): :func:`split` then keeps test points out of the training set;
* ``patch``      the patch size of a tree-structured discrete input (a CNN with kernel = stride =
  ``patch`` then matches its hierarchy);
* ``state() -> dict`` and a class method ``from_state(config, state)``: what :func:`save_target`
  writes and :func:`load_target` gives back (without them the target is rebuilt from ``config``).

The quadratic class (:class:`bfclab.target.Target`) keeps its own file format and learner; through
the protocol it is seen by :class:`Quadratic`, which draws exactly the data
:func:`bfclab.training.make_data` draws (tested).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from .. import seeds
from ..config import ConfigError, DataConfig
from ..results import atomic_write_bytes, load_torch_file
from ..target import CHUNK, Target, chunks

TASKS = ("regression", "classification")
INPUTS = ("continuous", "discrete")
FORMAT = "bfclab-any-target-v1"
#: the sample a target without a ``variance`` attribute is normalised by (``target_variance`` stream)
VARIANCE_SAMPLES = 1_000_000


@runtime_checkable
class HierarchicalTarget(Protocol):
    """The required part of the protocol (module docstring); ``isinstance`` checks it."""

    kind: str
    task: str
    input: str
    shape: tuple
    vocab: int
    n_classes: int
    config: dict

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def check(t: Any, where: str = "target") -> Any:
    """``t`` follows the protocol (one-line ConfigError naming the first missing or bad field)."""
    for name in ("kind", "task", "input", "shape", "vocab", "n_classes", "config", "sample"):
        if not hasattr(t, name):
            raise ConfigError(f"{where}: missing field '{name}' of the target protocol (bfclab.targets.protocol)")
    shape = t.shape
    if not (isinstance(shape, (tuple, list)) and shape
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise ConfigError(f"{where}: field 'shape' must be a tuple of positive integers (one input's shape), "
                          f"got {shape!r}")
    if t.task not in TASKS:
        raise ConfigError(f"{where}: field 'task' is {t.task!r}; accepted: {', '.join(TASKS)}")
    if t.input not in INPUTS:
        raise ConfigError(f"{where}: field 'input' is {t.input!r}; accepted: {', '.join(INPUTS)}")
    if t.task == "classification" and not (isinstance(t.n_classes, int) and t.n_classes >= 2):
        raise ConfigError(f"{where}: field 'n_classes' must be an integer >= 2 for classification, got {t.n_classes!r}")
    if t.input == "discrete" and not (isinstance(t.vocab, int) and t.vocab >= 2):
        raise ConfigError(f"{where}: field 'vocab' must be an integer >= 2 for discrete inputs, got {t.vocab!r}")
    if not callable(t.sample):
        raise ConfigError(f"{where}: field 'sample' must be a method sample(n, seed) -> (x, y)")
    return t


def checked_sample(t: Any, n: int, seed: int, test: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``t.sample(n, seed)`` (``t.test_sample`` for ``test`` where the target has one) with its
    output checked against the declared task and input."""
    draw = getattr(t, "test_sample", None) if test else None
    out = (draw if callable(draw) else t.sample)(int(n), int(seed))
    if not (isinstance(out, tuple) and len(out) == 2 and all(isinstance(a, torch.Tensor) for a in out)):
        raise ConfigError(f"target '{t.kind}': sample(n, seed) must return two tensors (x, y)")
    x, y = out
    if x.shape[0] != n or y.shape != (n,):
        raise ConfigError(f"target '{t.kind}': sample({n}, seed) gave x {tuple(x.shape)} and y {tuple(y.shape)}; "
                          f"expected x ({n}, ...) and y ({n},)")
    if tuple(x.shape[1:]) != tuple(t.shape):
        raise ConfigError(f"target '{t.kind}': sample gave inputs of shape {tuple(x.shape[1:])}; field 'shape' "
                          f"says {tuple(t.shape)}")
    if t.input == "discrete":
        if x.dtype != torch.int64 or (n and (int(x.min()) < 0 or int(x.max()) >= t.vocab)):
            raise ConfigError(f"target '{t.kind}': discrete inputs must be int64 symbols 0..{t.vocab - 1}")
    else:
        x = x.to(torch.float64)
    if t.task == "classification":
        if y.dtype != torch.int64 or (n and (int(y.min()) < 0 or int(y.max()) >= t.n_classes)):
            raise ConfigError(f"target '{t.kind}': classification labels must be int64 classes 0..{t.n_classes - 1}")
    else:
        y = y.to(torch.float64)
    return x, y


def encode(t: Any, x: torch.Tensor) -> torch.Tensor:
    """The inputs as float64 rows for the kernels, random features and MLPs: continuous inputs
    flattened; discrete ones one-hot per position, flattened (position-major), so that every
    kernel sees each symbol as an orthogonal direction."""
    if t.input == "discrete":
        return torch.nn.functional.one_hot(x, t.vocab).to(torch.float64).reshape(x.shape[0], -1)
    return x.to(torch.float64).reshape(x.shape[0], -1)


def encoded_dim(t: Any) -> int:
    return math.prod(t.shape) * (t.vocab if t.input == "discrete" else 1)


def variance_of(t: Any) -> float:
    """The population variance of y (regression): the target's own ``variance`` when it states
    one, else estimated once from :data:`VARIANCE_SAMPLES` draws of the ``target_variance`` stream
    and kept on the object (``_bfclab_variance``)."""
    v = getattr(t, "variance", None)
    if v is None:
        v = getattr(t, "_bfclab_variance", None)
    if v is None:
        seed = seeds.seed_of("target_variance", int(t.config.get("seed", 0)) if isinstance(t.config, dict) else 0)
        ys = [checked_sample(t, b - a, seed + a)[1] for a, b in chunks(VARIANCE_SAMPLES, CHUNK)]
        v = float(torch.cat(ys).var())
        try:
            t._bfclab_variance = v
        except AttributeError:
            pass
    v = float(v)
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"target '{t.kind}': the variance of y must be a positive number, got {v}")
    return v


def levels_of(t: Any) -> list:
    return list(getattr(t, "levels", []) or [])


def has_features(t: Any) -> bool:
    return callable(getattr(t, "features", None)) and bool(levels_of(t))


# ---- the quadratic class through the protocol ----------------------------------------------------


class Quadratic:
    """The quadratic class (:class:`bfclab.target.Target`, PAPER_NOTES §2) seen through the
    protocol, with the task and label noise of a :class:`~bfclab.config.DataConfig`: ``sample``
    draws exactly what ``Target.sample`` draws (regression labels unchanged; classification's ±1
    labels as classes 0/1), so a run through the protocol sees the same data as the learner's."""

    kind = "quadratic"
    input = "continuous"
    vocab = 0
    patch = None

    def __init__(self, target: Target, data: DataConfig | None = None):
        data = data or DataConfig()
        self.target, self.task, self.label_noise = target, data.task, data.label_noise
        self.shape = (target.d,)
        self.n_classes = 2 if self.task == "classification" else 0
        self.config = target.config
        self.levels = list(range(2, target.L + 1))
        self.depth = target.L - 1

    @property
    def variance(self) -> float:
        return self.target.var_g

    def sample(self, n: int, seed: int, label_noise: float | None = None):
        noise = self.label_noise if label_noise is None else label_noise
        x, y, _ = self.target.sample(n, seed=seed, task=self.task, label_noise=noise)
        return (x, (y > 0).to(torch.int64)) if self.task == "classification" else (x, y)

    def test_sample(self, n: int, seed: int):
        """Test examples with clean labels, as :func:`bfclab.training.test_data` draws them."""
        return self.sample(n, seed, label_noise=0.0)

    def features(self, x: torch.Tensor) -> dict:
        return self.target.features(x)

    def save(self, path: str | Path) -> None:
        self.target.save(path)


# ---- persistence -------------------------------------------------------------------------------


def save_target(t: Any, path: str | Path) -> None:
    """Write any protocol target: its kind, config and (when it has one) ``state()``; atomic."""
    state = t.state() if callable(getattr(t, "state", None)) else None
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "kind": t.kind, "config": t.config, "state": state}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def read_target_file(path: str | Path) -> dict:
    """The stored mapping of :func:`save_target` (one-line errors for a missing or damaged file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"target file '{p}': not found")
    try:
        st = load_torch_file(p)
    except Exception as e:
        raise ConfigError(f"target file '{p}': not a bfclab target file (unreadable: {e})") from None
    if not isinstance(st, dict) or st.get("format") != FORMAT or not isinstance(st.get("config"), dict):
        raise ConfigError(f"target file '{p}': field 'format' must be {FORMAT!r} with a 'config' mapping")
    return st


# ---- the data every method sees ---------------------------------------------------------------


def _row_keys(x: torch.Tensor) -> list[bytes]:
    a = x.contiguous().numpy()
    return [a[i].tobytes() for i in range(a.shape[0])]


def _distinct(t: Any, n: int, stream: str, seed: int, exclude: set[bytes],
              test: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """n distinct examples not in ``exclude``: draws of ``stream`` (index = the round) with
    repeats and excluded rows dropped, in draw order, topped up round by round."""
    xs, ys, seen, have, r = [], [], set(exclude), 0, 0
    while have < n:
        x, y = checked_sample(t, max(n - have, 1024), seeds.seed_of(stream, seed, r), test=test)
        keep = []
        for i, k in enumerate(_row_keys(x)):
            if k not in seen:
                seen.add(k)
                keep.append(i)
        keep = torch.tensor(keep[: n - have], dtype=torch.int64)
        xs.append(x[keep])
        ys.append(y[keep])
        have += keep.numel()
        r += 1
        if r > 1000:
            raise ConfigError(f"target '{t.kind}': could not draw {n} distinct examples")
    return torch.cat(xs), torch.cat(ys)


def split(t: Any, data: DataConfig, seed: int, target_seed: int) -> tuple[torch.Tensor, ...]:
    """(x, y, x_test, y_test) of a run: training examples of the ``train_data`` stream of the run
    seed, test examples (``test_sample`` where the target has one) of the ``test_data`` stream of
    the target seed (the same for every method and seed).  A target with a finite number
    ``size`` of distinct inputs (the RHM, the staircase's 2^d points), when a test point is
    expected to repeat a training point (n_train * n_test > size for uniform inputs), gets distinct
    test examples and distinct training examples that are not in the test set (as in the RHM's
    paper), which needs n_train + n_test <= size / 2; otherwise (e.g. the staircase at d = 30) it
    is drawn like an infinite one."""
    size = getattr(t, "size", None)
    if size is None or data.n_train * data.n_test <= size:  # under one expected train/test coincidence
        x, y = checked_sample(t, data.n_train, seeds.seed_of("train_data", seed))
        xt, yt = checked_sample(t, data.n_test, seeds.seed_of("test_data", target_seed), test=True)
        return x, y, xt, yt
    if data.n_train + data.n_test > size // 2:
        raise ConfigError(f"config key 'data.n_test': target '{t.kind}' has {size} distinct inputs; n_train + "
                          f"n_test must be at most half of that ({size // 2}), got {data.n_train} + {data.n_test}")
    xt, yt = _distinct(t, data.n_test, "test_data", target_seed, set(), test=True)
    x, y = _distinct(t, data.n_train, "train_data", seed, set(_row_keys(xt)))
    return x, y, xt, yt
