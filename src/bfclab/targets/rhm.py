"""The Random Hierarchy Model (issue 16's built-in ``rhm`` target).

Cagnetta, Petrini, Tomasini, Favero, Wyart, "How deep neural networks learn compositional data:
the Random Hierarchy Model", Phys. Rev. X 14, 031001 (2024).

Definition.  Every level has a vocabulary of ``v`` symbols, the top one ``n_c`` classes; there are
``L`` levels of production rules, each of patch size ``s`` with ``m`` synonyms.  Level 0 is the
input (``s^L`` leaf symbols), level ``l`` has ``s^(L-l)`` symbols and level ``L`` is the class.
Each class has ``m`` distinct production rules, each an ``s``-tuple of level-(L-1) symbols; each of
the ``v`` symbols of every lower level ``l`` (1 <= l < L) has ``m`` rules, each an ``s``-tuple of
level-(l-1) symbols.  The rules are unambiguous: at every level the tuples of all symbols are
drawn uniformly *without replacement* from the ``v^s`` possible ``s``-tuples, so two distinct
symbols never share a tuple (this needs ``m v <= v^s``, i.e. ``m <= v^(s-1)``, and
``n_c m <= v^s`` at the top).  An input is generated top-down: the class is drawn uniformly,
then every node picks one of its ``m`` rules uniformly and independently and is replaced by
that tuple.  A class has ``m^((s^L - 1)/(s - 1))`` distinct inputs (one rule choice per internal
node of the ``s``-ary tree, and distinct choices give distinct inputs since the rules are
unambiguous), so there are ``P_max = n_c m^((s^L - 1)/(s - 1))`` in all.

Choices made here.

* Symbols of every level are the integer ids ``0..v-1`` (classes ``0..n_c-1``); inputs are int64
  tensors of shape ``(n, s^L)``, the leaves in the tree's left-to-right order, so position ``i``
  of level ``l`` expands into positions ``s i .. s i + s - 1`` of level ``l - 1``.
* ``rules[l]`` (int64, shape ``(symbols of level l, m, s)``) holds the rules of level ``l``;
  rule ``j`` of symbol ``a`` is the tuple ``rules[l][a, j]``.  The levels are drawn top-down
  (``L``, then ``L-1``, ..., ``1``) from one generator of the ``rhm_rules`` stream of the
  target seed.  Each level's ``k = (symbols) * m`` tuples are ``k`` distinct tuples in uniformly
  random order (a random permutation of the ``v^s`` tuples, truncated, or, when ``v^s`` is
  larger than :data:`DENSE` and than ``2 k``, sequential rejection of repeated uniform draws, which
  gives the same distribution), assigned in order: symbol ``a`` gets tuples ``a m .. a m + m - 1``.  A tuple's
  digits are its symbols, the first most significant.
* ``sample(n, seed)`` draws the classes, then the rule choices level by level top-down, from a
  ``torch.Generator`` seeded by ``seed``.
* The hidden levels are ``1..L-1``; their ground-truth features are the one-hot codes of the
  level's symbols, decoded bottom-up from the input through the inverse of the rules (decoding
  level ``L`` gives the class back).

The labels are a deterministic function of the input, so the Bayes error is 0; chance is
``1 - 1/n_c`` (balanced classes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .. import seeds
from ..config import ConfigError, Keys, apply_mapping, check_finite, check_limits, opt

KIND = "rhm"
#: the longest input (s^L symbols) accepted
MAX_INPUT = 4096
#: ``all_inputs`` enumerates at most this many inputs
MAX_ENUMERATE = 10**6
#: up to this many possible tuples (v^s), rules are drawn by a permutation and decoded by a table
DENSE = 2**20

_KEYS = Keys(name=f"target '{KIND}' option '{{key}}'",
             unknown_in=f"target '{KIND}': unknown option '{{key}}'; accepted: {{accepted}}",
             unknown_why=f"target '{KIND}': unknown option '{{key}}' ({{where}})", sort=False)


@dataclass
class RHMOptions:
    """The RHM's parameters: ``v`` symbols per level, ``m`` synonyms (rules per symbol), patch
    size ``s``, ``L`` levels of rules and ``n_c`` classes (inputs have ``s^L`` symbols)."""

    v: int = opt(8, ge=2)
    m: int = opt(4, ge=1)
    s: int = opt(2, ge=2)
    L: int = opt(3, ge=1)
    n_c: int = opt(8, ge=2)


def _error(option: str, accepted: str, got: Any) -> ConfigError:
    return ConfigError(f"{_KEYS.key(option)}: must be {accepted}, got {got}")


def validate_options(o: RHMOptions) -> None:
    """The field limits and the cross-field ones (one-line :class:`ConfigError` naming the option):
    ``s^L <= 4096`` (input length), ``m <= v^(s-1)`` and ``n_c m <= v^s`` (unambiguous rules)."""
    check_finite(o, keys=_KEYS)
    check_limits(o, keys=_KEYS)
    max_L = 0
    while o.s ** (max_L + 1) <= MAX_INPUT:
        max_L += 1
    if o.L > max_L:
        raise _error("L", f"<= {max_L} (input length s^L <= {MAX_INPUT} with s = {o.s})", o.L)
    if o.m > o.v ** (o.s - 1):
        raise _error("m", f"<= v^(s-1) = {o.v ** (o.s - 1)}", o.m)
    if o.n_c * o.m > o.v**o.s:
        raise _error("n_c", f"<= v^s / m = {o.v ** o.s // o.m} (n_c*m <= v^s)", o.n_c)


def _digits(idx: torch.Tensor, base: int, width: int) -> torch.Tensor:
    """(k,) integers -> (k, width) base-``base`` digits, the first most significant."""
    powers = torch.tensor([base ** (width - 1 - j) for j in range(width)], dtype=torch.int64)
    return idx[:, None] // powers % base


def _first_occurrences(rows: torch.Tensor) -> torch.Tensor:
    """The rows of ``rows`` (2-D) without repeats, each kept at its first occurrence, in order."""
    _, inv = torch.unique(rows, dim=0, return_inverse=True)
    pos = torch.arange(rows.shape[0], dtype=torch.int64)
    first = torch.full((int(inv.max()) + 1,), rows.shape[0], dtype=torch.int64).scatter_reduce(0, inv, pos, "amin")
    return rows[first.sort().values]


def _distinct_tuples(g: torch.Generator, v: int, s: int, k: int) -> torch.Tensor:
    """``k`` distinct ``s``-tuples of symbols ``0..v-1`` drawn uniformly without replacement, in
    random order: (k, s) int64."""
    total = v**s
    if total <= max(DENSE, 2 * k):
        return _digits(torch.randperm(total, generator=g)[:k], v, s)
    have = torch.empty(0, s, dtype=torch.int64)
    while have.shape[0] < k:  # k < total / 2 here, so each round keeps over half of its draws
        need = k - have.shape[0]
        fresh = torch.randint(v, (max(2 * need, 64), s), generator=g)
        have = _first_occurrences(torch.cat([have, fresh]))[:k]
    return have


class _Inverse:
    """The inverse of one level's rules: a tuple of symbols -> the symbol whose rule it is (-1
    for a tuple no rule produces)."""

    def __init__(self, rules: torch.Tensor, v: int):
        n_sym, m, s = rules.shape
        self.v, self.s = v, s
        self.rows = rules.reshape(n_sym * m, s)
        self.parents = torch.arange(n_sym, dtype=torch.int64).repeat_interleave(m)
        self.table = None
        if v**s <= DENSE:
            self.powers = torch.tensor([v ** (s - 1 - j) for j in range(s)], dtype=torch.int64)
            self.table = torch.full((v**s,), -1, dtype=torch.int64)
            self.table[(self.rows * self.powers).sum(-1)] = self.parents

    def __call__(self, tuples: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return self.table[(tuples * self.powers).sum(-1)]
        k = self.rows.shape[0]
        _, inv = torch.unique(torch.cat([self.rows, tuples]), dim=0, return_inverse=True)
        lookup = torch.full((int(inv.max()) + 1,), -1, dtype=torch.int64)
        lookup[inv[:k]] = self.parents
        return lookup[inv[k:]]


class RHM:
    """The Random Hierarchy Model (module docstring) as a protocol target: ``sample`` draws
    (inputs, classes); ``features`` gives the one-hot symbols of the hidden levels ``1..L-1``;
    ``size`` is the number ``P_max`` of distinct inputs."""

    kind = KIND
    task = "classification"
    input = "discrete"

    def __init__(self, options: RHMOptions, seed: int = 0):
        validate_options(options)
        o, g = options, seeds.generator("rhm_rules", seed)
        rules = {}
        for level in range(o.L, 0, -1):
            n_sym = o.n_c if level == o.L else o.v
            rules[level] = _distinct_tuples(g, o.v, o.s, n_sym * o.m).reshape(n_sym, o.m, o.s)
        self._setup(options, seed, rules)

    def _setup(self, options: RHMOptions, seed: int, rules: dict[int, torch.Tensor]) -> None:
        o = options
        self.options, self.seed = options, int(seed)
        self.shape = (o.s**o.L,)
        self.vocab, self.n_classes, self.patch = o.v, o.n_c, o.s
        self.levels = list(range(1, o.L))
        self.size = o.n_c * self.inputs_per_class()
        self.config = {"kind": KIND, "seed": self.seed, "options": dataclasses.asdict(options)}
        self.rules = {level: rules[level] for level in range(1, o.L + 1)}
        self._inverse = {level: _Inverse(r, o.v) for level, r in self.rules.items()}

    # ---- drawing ----------------------------------------------------------------------------

    def inputs_per_class(self) -> int:
        """``m^((s^L - 1)/(s - 1))``: one rule choice per internal node of the tree."""
        o = self.options
        return o.m ** ((o.s**o.L - 1) // (o.s - 1))

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` examples: classes uniform, then every node's rule uniform and independent
        (drawn level by level, top-down, from a generator seeded by ``seed``).  Returns x int64
        (n, s^L) and y int64 (n,)."""
        g = torch.Generator().manual_seed(int(seed))
        y = torch.randint(self.n_classes, (n,), generator=g)
        h = y[:, None]
        for level in range(self.options.L, 0, -1):
            choice = torch.randint(self.options.m, h.shape, generator=g)
            h = self.rules[level][h, choice].reshape(n, h.shape[1] * self.patch)
        return h, y

    def all_inputs(self, c: int) -> torch.Tensor:
        """Every input of class ``c`` (int64, ``inputs_per_class()`` distinct rows, ordered by the
        rule choices, top node first); ValueError above :data:`MAX_ENUMERATE` inputs."""
        if not (isinstance(c, int) and 0 <= c < self.n_classes):
            raise ValueError(f"rhm: class must be an integer in 0..{self.n_classes - 1}, got {c!r}")
        count = self.inputs_per_class()
        if count > MAX_ENUMERATE:
            raise ValueError(f"rhm: class {c} has {count} inputs; all_inputs enumerates at most {MAX_ENUMERATE}")
        m, h = self.options.m, torch.tensor([[c]], dtype=torch.int64)
        for level in range(self.options.L, 0, -1):
            n, w = h.shape
            combos = _digits(torch.arange(m**w, dtype=torch.int64), m, w)  # (m^w, w): a rule per node
            children = self.rules[level][h]  # (n, w, m, s)
            h = children[:, torch.arange(w)[None, :], combos].reshape(n * m**w, w * self.patch)
        return h

    # ---- ground truth -----------------------------------------------------------------------

    def _check_inputs(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.shape[0]:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"rhm: inputs must be a tensor of shape (n, {self.shape[0]}), got {got}")
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise ValueError(f"rhm: inputs must be integer symbol ids, got dtype {x.dtype}")
        x = x.to(torch.int64)
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab):
            raise ValueError(f"rhm: input symbols must lie in 0..{self.vocab - 1}")
        return x

    def decode(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The symbols of every level ``1..L`` (int64 (n, s^(L-l)); level ``L``: the class,
        shape (n, 1)) of inputs ``x``, decoded bottom-up through the inverse rules; ValueError
        for an input the rules do not produce."""
        h = self._check_inputs(x)
        n, out = h.shape[0], {}
        for level in range(1, self.options.L + 1):
            parents = self._inverse[level](h.reshape(-1, self.patch)).reshape(n, h.shape[1] // self.patch)
            bad = (parents < 0).any(dim=1)
            if bool(bad.any()):
                i = int(bad.nonzero()[0, 0])
                raise ValueError(f"rhm: input {i} is not produced by the rules (no rule of level {level} "
                                 f"gives its patches)")
            out[level] = h = parents
        return out

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The hidden levels' ground truth: level ``l`` -> the one-hot codes of its ``s^(L-l)``
        symbols, float64 (n, s^(L-l) v), position-major (as :func:`protocol.encode`)."""
        hidden = self.decode(x)
        return {level: torch.nn.functional.one_hot(hidden[level], self.vocab).to(torch.float64)
                .reshape(hidden[level].shape[0], hidden[level].shape[1] * self.vocab) for level in self.levels}

    def floors(self) -> dict[str, float]:
        """Classification error floors: Bayes 0 (y is a function of x), chance ``1 - 1/n_c``."""
        return {"bayes": 0.0, "chance": 1.0 - 1.0 / self.n_classes}

    # ---- persistence ------------------------------------------------------------------------

    def state(self) -> dict:
        return {"rules": {str(level): r.clone() for level, r in self.rules.items()}}

    @classmethod
    def from_state(cls, config: dict, state: dict) -> RHM:
        """The target of ``config`` with the stored ``state``'s rules (checked: shapes, symbol
        range, unambiguity)."""
        o = RHMOptions()
        apply_mapping(o, dict(config.get("options", {})), keys=_KEYS)
        validate_options(o)
        stored = state.get("rules") if isinstance(state, dict) else None
        if not isinstance(stored, dict):
            raise ConfigError(f"target '{KIND}': stored state must hold a 'rules' mapping")
        rules = {}
        for level in range(1, o.L + 1):
            r = stored.get(str(level))
            n_sym = o.n_c if level == o.L else o.v
            if not (isinstance(r, torch.Tensor) and r.dtype == torch.int64 and tuple(r.shape) == (n_sym, o.m, o.s)):
                raise ConfigError(f"target '{KIND}': stored rules of level {level} must be an int64 tensor "
                                  f"of shape {(n_sym, o.m, o.s)}")
            flat = r.reshape(-1, o.s)
            if int(flat.min()) < 0 or int(flat.max()) >= o.v or torch.unique(flat, dim=0).shape[0] != flat.shape[0]:
                raise ConfigError(f"target '{KIND}': stored rules of level {level} must be distinct tuples of "
                                  f"symbols 0..{o.v - 1}")
            rules[level] = r.clone()
        obj = cls.__new__(cls)
        obj._setup(o, int(config.get("seed", 0)), rules)
        return obj
