"""The Random Hierarchy Model (bfclab.targets.rhm) against the facts of Cagnetta et al., PRX 2024:
unambiguous rules, m^((s^L-1)/(s-1)) distinct inputs per class, disjoint classes, uniform
top-down generation.  The trusted references are a pure-Python top-down expansion of the rules
(itertools / random, one sample at a time) and binomial / coupon-collector bounds."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest
import torch

from bfclab.config import ConfigError
from bfclab.targets import load_target, parse_options, protocol, save_target
from bfclab.targets import rhm as rhm_module
from bfclab.targets.rhm import RHM, RHMOptions, validate_options

SMALL = [dict(v=3, m=2, s=2, L=2, n_c=3), dict(v=4, m=2, s=3, L=2, n_c=2), dict(v=3, m=3, s=2, L=3, n_c=2)]


@pytest.fixture(params=["dense", "sparse"])
def path(request, monkeypatch):
    """Both ways of drawing and inverting the rules: a permutation and a table (v^s <= DENSE),
    and rejection sampling and a sort-based inverse (forced here by DENSE = 0)."""
    if request.param == "sparse":
        monkeypatch.setattr(rhm_module, "DENSE", 0)
    return request.param


def internal_nodes(s: int, L: int) -> int:
    """Internal nodes of the complete s-ary tree of depth L, counted level by level."""
    return sum(s**j for j in range(L))


def reference_expand(t: RHM, c: int) -> set[tuple]:
    """Every input of class c by recursive expansion of the rules (pure Python)."""
    rules = {lv: r.tolist() for lv, r in t.rules.items()}

    def expand(symbol: int, level: int) -> list[tuple]:
        if level == 0:
            return [(symbol,)]
        out = []
        for rule in rules[level][symbol]:
            for parts in itertools.product(*(expand(a, level - 1) for a in rule)):
                out.append(sum(parts, ()))
        return out

    return set(expand(c, t.options.L))


def reference_sample(t: RHM, n: int, seed: int):
    """n samples drawn top-down one at a time with Python's random, with every level's symbols."""
    rng = random.Random(seed)
    rules, L = {lv: r.tolist() for lv, r in t.rules.items()}, t.options.L
    xs, ys, hidden = [], [], {lv: [] for lv in range(1, L)}
    for _ in range(n):
        c = rng.randrange(t.n_classes)
        h = [c]
        for level in range(L, 0, -1):
            h = [a for sym in h for a in rules[level][sym][rng.randrange(t.options.m)]]
            if level - 1 >= 1:
                hidden[level - 1].append(h)
        xs.append(h)
        ys.append(c)
    return (torch.tensor(xs), torch.tensor(ys), {lv: torch.tensor(v) for lv, v in hidden.items()})


# ---- the counts of the paper -------------------------------------------------------------------


@pytest.mark.parametrize("o", SMALL)
def test_all_inputs_counts_and_disjoint_classes(o, path):
    t = RHM(RHMOptions(**o), seed=3)
    per_class = o["m"] ** internal_nodes(o["s"], o["L"])
    assert t.inputs_per_class() == per_class == o["m"] ** ((o["s"] ** o["L"] - 1) // (o["s"] - 1))
    assert isinstance(t.size, int) and t.size == o["n_c"] * per_class
    union: set[tuple] = set()
    for c in range(o["n_c"]):
        a = t.all_inputs(c)
        assert a.dtype == torch.int64 and a.shape == (per_class, o["s"] ** o["L"])
        rows = {tuple(r) for r in a.tolist()}
        assert len(rows) == per_class  # distinct
        assert rows == reference_expand(t, c)
        assert not rows & union  # classes are disjoint
        union |= rows
        assert torch.equal(t.decode(a)[o["L"]][:, 0], torch.full((per_class,), c))
    assert len(union) == t.size


@pytest.mark.parametrize("o", SMALL[:2])
def test_samples_lie_in_their_class_and_cover_all_inputs(o, path):
    t = RHM(RHMOptions(**o), seed=1)
    sets = [{tuple(r) for r in t.all_inputs(c).tolist()} for c in range(t.n_classes)]
    x, y = t.sample(20 * t.size, seed=5)
    assert all(tuple(r) in sets[c] for r, c in zip(x.tolist(), y.tolist()))
    # each input has probability 1/P_max: missing one after 20 P_max draws has probability < e^-20
    assert torch.unique(x, dim=0).shape[0] == t.size


def test_distinct_inputs_follow_the_coupon_collector():
    """Every input has probability 1/P (uniform class and rule choices, unambiguous rules), so n
    draws show P (1 - (1 - 1/P)^n) distinct inputs in expectation; the count of distinct inputs
    has variance below its mean (a sum of negatively correlated indicators)."""
    t = RHM(RHMOptions(), seed=0)
    P, n = t.size, 200_000
    assert P == 8 * 4**7
    seen = torch.unique(t.sample(n, seed=2)[0], dim=0).shape[0]
    expected = P * (1 - (1 - 1 / P) ** n)
    assert abs(seen - expected) <= 5 * math.sqrt(expected)


@pytest.mark.parametrize("o", [SMALL[0], dict(v=8, m=4, s=2, L=3, n_c=8)])
def test_class_frequencies_are_balanced(o):
    t = RHM(RHMOptions(**o), seed=0)
    n = 100_000
    counts = torch.bincount(t.sample(n, seed=11)[1], minlength=t.n_classes)
    p = 1 / t.n_classes
    assert counts.shape == (t.n_classes,)
    assert (counts - n * p).abs().max() <= 5 * math.sqrt(n * p * (1 - p))


def test_rule_choices_are_uniform():
    """At the top, each of a class's m rules is picked with probability 1/m: the first patch of
    the level below tells which (rules are unambiguous)."""
    o = dict(v=4, m=3, s=2, L=2, n_c=2)
    t = RHM(RHMOptions(**o), seed=4)
    n = 60_000
    x, y = t.sample(n, seed=8)
    top = t.decode(x)[1][:, :2]  # the level-1 pair the class rule produced
    for c in range(2):
        mine = top[y == c]
        for j in range(3):
            k = int((mine == t.rules[2][c, j]).all(dim=1).sum())
            nc = mine.shape[0]
            assert abs(k - nc / 3) <= 5 * math.sqrt(nc * (1 / 3) * (2 / 3))


# ---- the rules --------------------------------------------------------------------------------


@pytest.mark.parametrize("o", SMALL + [dict(v=8, m=8, s=2, L=3, n_c=8), dict(v=2, m=3, s=24, L=1, n_c=2)])
def test_rules_are_unambiguous(o, path):
    t = RHM(RHMOptions(**o), seed=7)
    assert sorted(t.rules) == list(range(1, o["L"] + 1))
    for level, r in t.rules.items():
        n_sym = o["n_c"] if level == o["L"] else o["v"]
        assert r.dtype == torch.int64 and r.shape == (n_sym, o["m"], o["s"])
        assert int(r.min()) >= 0 and int(r.max()) < o["v"]
        flat = r.reshape(-1, o["s"])
        assert torch.unique(flat, dim=0).shape[0] == flat.shape[0]  # no tuple shared at a level


def test_m_at_its_limit_uses_every_tuple(path):
    """m = v^(s-1) and n_c = v: every one of the v^s tuples is a rule at every level."""
    t = RHM(RHMOptions(v=3, m=3, s=2, L=2, n_c=3), seed=2)
    for r in t.rules.values():
        assert {tuple(p) for p in r.reshape(-1, 2).tolist()} == set(itertools.product(range(3), repeat=2))


@pytest.mark.parametrize("dense", [True, False])
def test_tuples_are_drawn_uniformly_without_replacement(dense, monkeypatch):
    """Over many seeds, class 0's single rule is uniform over the v^s = 8 tuples (v = 2, s = 3,
    m = 1), and class 1's is uniform over the 7 others: by permutation, or (DENSE = 0) by
    rejection of repeated draws."""
    if not dense:
        monkeypatch.setattr(rhm_module, "DENSE", 0)
    n = 4000
    counts, pairs = torch.zeros(8), set()
    for seed in range(n):
        r = RHM(RHMOptions(v=2, m=1, s=3, L=1, n_c=2), seed=seed).rules[1][:, 0].tolist()
        codes = [4 * a + 2 * b + c for a, b, c in r]
        assert codes[0] != codes[1]
        counts[codes[0]] += 1
        pairs.add(tuple(codes))
    assert (counts - n / 8).abs().max() <= 5 * math.sqrt(n * (1 / 8) * (7 / 8))
    assert len(pairs) == 8 * 7  # every ordered pair of distinct tuples occurs


# ---- ground truth -------------------------------------------------------------------------------


@pytest.mark.parametrize("o", SMALL + [dict(v=8, m=4, s=2, L=3, n_c=8)])
def test_features_match_a_reference_generation(o, path):
    t = RHM(RHMOptions(**o), seed=9)
    x, y, hidden = reference_sample(t, 300, seed=1)
    assert t.levels == list(range(1, o["L"]))
    f = t.features(x)
    assert sorted(f) == t.levels
    for level in t.levels:
        width = o["s"] ** (o["L"] - level)
        assert f[level].dtype == torch.float64 and f[level].shape == (300, width * o["v"])
        expect = torch.nn.functional.one_hot(hidden[level], o["v"]).to(torch.float64).reshape(300, -1)
        assert torch.equal(f[level], expect)
    d = t.decode(x)
    assert torch.equal(d[o["L"]][:, 0], y)  # decoding the top gives the class back


def test_decoded_samples_give_the_labels(path):
    t = RHM(RHMOptions(), seed=5)
    x, y = t.sample(5000, seed=3)
    d = t.decode(x)
    assert d[3].shape == (5000, 1) and torch.equal(d[3][:, 0], y)
    assert all(d[lv].shape == (5000, 2 ** (3 - lv)) for lv in (1, 2))
    for level in t.levels:  # every position is one symbol
        assert torch.equal(t.features(x)[level].reshape(5000, -1, 8).sum(-1), torch.ones(5000, 2 ** (3 - level),
                                                                                         dtype=torch.float64))


def test_inputs_not_produced_by_the_rules_are_rejected(path):
    o = SMALL[0]
    t = RHM(RHMOptions(**o), seed=0)
    produced = set().union(*({tuple(r) for r in t.all_inputs(c).tolist()} for c in range(t.n_classes)))
    everything = list(itertools.product(range(o["v"]), repeat=o["s"] ** o["L"]))
    foreign = [r for r in everything if r not in produced]
    assert len(foreign) == o["v"] ** 4 - t.size > 0
    for r in foreign:
        with pytest.raises(ValueError):
            t.features(torch.tensor([r]))
    ok = torch.tensor(sorted(produced))
    assert t.decode(ok)[2].shape == (len(produced), 1)
    for bad in (torch.zeros(2, 5, dtype=torch.int64), torch.zeros(2, 4), torch.full((1, 4), 3), torch.full((1, 4), -1)):
        with pytest.raises(ValueError):
            t.decode(bad)


def test_floors_and_enumeration_limit():
    t = RHM(RHMOptions(), seed=0)
    assert t.floors() == {"bayes": 0.0, "chance": 1 - 1 / 8}
    assert t.all_inputs(0).shape == (4**7, 8)
    big = RHM(RHMOptions(L=4), seed=0)  # 4^15 inputs per class
    with pytest.raises(ValueError, match="at most"):
        big.all_inputs(0)
    with pytest.raises(ValueError):
        t.all_inputs(8)


# ---- determinism and persistence ---------------------------------------------------------------------


def test_determinism_given_seeds():
    a, b, c = RHM(RHMOptions(), seed=1), RHM(RHMOptions(), seed=1), RHM(RHMOptions(), seed=2)
    assert all(torch.equal(a.rules[lv], b.rules[lv]) for lv in a.rules)
    assert any(not torch.equal(a.rules[lv], c.rules[lv]) for lv in a.rules)
    xa, ya = a.sample(1000, seed=4)
    xb, yb = b.sample(1000, seed=4)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a.sample(1000, seed=5)[0], xa)
    assert torch.equal(a.sample(10, seed=4)[1], ya[:10])  # classes are drawn first


def test_rules_come_from_the_named_stream_not_the_global_rng():
    torch.manual_seed(0)
    a = RHM(RHMOptions(), seed=3)
    torch.manual_seed(1)
    b = RHM(RHMOptions(), seed=3)
    assert all(torch.equal(a.rules[lv], b.rules[lv]) for lv in a.rules)


def test_state_round_trip_is_bit_identical(tmp_path):
    t = RHM(RHMOptions(v=5, m=3, s=2, L=3, n_c=4), seed=6)
    assert t.config == {"kind": "rhm", "seed": 6, "options": {"v": 5, "m": 3, "s": 2, "L": 3, "n_c": 4}}
    json.dumps(t.config)
    st = t.state()
    assert sorted(st["rules"]) == ["1", "2", "3"]
    u = RHM.from_state(t.config, st)
    save_target(t, tmp_path / "t.pt")
    w = load_target(tmp_path / "t.pt")
    for other in (u, w):
        assert isinstance(other, RHM) and other.config == t.config and other.size == t.size
        assert all(torch.equal(other.rules[lv], t.rules[lv]) for lv in t.rules)
        xa, ya = t.sample(2000, seed=1)
        xb, yb = other.sample(2000, seed=1)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert all(torch.equal(other.features(xa)[lv], t.features(xa)[lv]) for lv in t.levels)
    st["rules"]["1"][0, 1] = st["rules"]["1"][0, 0]  # an ambiguous state is refused
    with pytest.raises(ConfigError, match="distinct"):
        RHM.from_state(t.config, st)
    with pytest.raises(ConfigError, match="level 2"):
        RHM.from_state(t.config, {"rules": {"1": t.rules[1], "3": t.rules[3]}})


# ---- options and protocol --------------------------------------------------------------------------


@pytest.mark.parametrize("given,message", [
    (dict(m=9), "target 'rhm' option 'm': must be <= v^(s-1) = 8, got 9"),
    (dict(v=3, m=2, s=2, n_c=5), "target 'rhm' option 'n_c': must be <= v^s / m = 4 (n_c*m <= v^s), got 5"),
    (dict(s=4, L=7), "target 'rhm' option 'L': must be <= 6 (input length s^L <= 4096 with s = 4), got 7"),
    (dict(m=0), "target 'rhm' option 'm': must be >= 1, got 0"),
    (dict(v=1), "target 'rhm' option 'v': must be >= 2, got 1"),
    (dict(s=1), "target 'rhm' option 's': must be >= 2, got 1"),
    (dict(n_c=1), "target 'rhm' option 'n_c': must be >= 2, got 1"),
])
def test_one_line_config_errors(given, message):
    for check in (lambda: validate_options(RHMOptions(**given)), lambda: RHM(RHMOptions(**given)),
                  lambda: parse_options("rhm", given)):
        with pytest.raises(ConfigError) as e:
            check()
        assert str(e.value) == message and "\n" not in str(e.value)


def test_limits_are_inclusive():
    RHM(RHMOptions(v=8, m=8, s=2, L=3, n_c=8))  # m = v^(s-1), n_c m = v^s
    assert RHM(RHMOptions(v=2, m=1, s=2, L=12, n_c=2)).shape == (4096,)


def test_follows_the_protocol():
    t = RHM(RHMOptions(), seed=0)
    assert protocol.check(t) is t and isinstance(t, protocol.HierarchicalTarget)
    assert (t.kind, t.task, t.input, t.shape, t.vocab, t.n_classes, t.patch) == (
        "rhm", "classification", "discrete", (8,), 8, 8, 2)
    x, y = protocol.checked_sample(t, 300, seed=1)
    assert x.dtype == torch.int64 and x.shape == (300, 8) and y.dtype == torch.int64 and y.shape == (300,)
    assert protocol.has_features(t) and protocol.levels_of(t) == [1, 2]
    assert protocol.encode(t, x).shape == (300, protocol.encoded_dim(t)) == (300, 64)
    x0, y0 = t.sample(0, seed=0)
    assert x0.shape == (0, 8) and y0.shape == (0,)
    assert t.features(x0)[1].shape == (0, 32)
