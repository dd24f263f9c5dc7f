"""Property-based fuzzing of the CLI and of the files it reads (issue 8 part 4; docs/RELIABILITY.md).

Every example copies a real run folder (a finished run, or one killed after a mid-stage
checkpoint), optionally damages one or two of its files (truncated, bits flipped, replaced by
random bytes / JSON / YAML / an empty file / a folder, one field of its structure replaced), runs
``bfclab.cli.main`` in-process with random arguments in random order pointing at it, and checks:

(a) the exit status is 2, unless success is legitimate, and then what success means is checked
    (``--print-config`` of a valid config; ``--resume`` of a finished run of the same config,
    which reports it; ``--resume`` of a killed run of the same config, whose training may start
    only from the untouched checkpoint and target);
(b) stderr is exactly one line, ``bfclab: error: ...``, never a traceback or a warning;
(c) the line names the damaged file (or the field, the option, the config key);
(d) every file of the example's folder is byte-identical afterwards, and nothing new appears
    (only a stale ``.*.tmp`` may be cleaned up, and only by a resume that starts training).

Training itself never runs here: ``Run.run`` and the sweep's ``run_cell`` are replaced by stubs that
raise :class:`TrainingStarted`, and the judge decides whether starting was legitimate.

Profiles (``BFCLAB_FUZZ_PROFILE``): ``ci`` (default: fixed seed, bounded examples, about a
minute on two slow cores) and ``long`` (20x the examples).  ``BFCLAB_FUZZ_REPORT=path`` writes
the count of inputs tried and failed per property as JSON; ``python bench/fuzz.py`` runs this
file and prints the counts.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from bfclab import cli
from bfclab import sweep as S
from bfclab import training as T
from bfclab.config import RunConfig, to_dict
from bfclab.results import dumps, read_json
from bfclab.target import Target
from conftest import tiny_config

# ---- profiles and the count of inputs tried ---------------------------------------------------------

settings.register_profile(
    "ci", max_examples=100, derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture])
settings.register_profile("long", settings.get_profile("ci"), max_examples=2000)
# quick local iteration: few examples, failures reported as found (not shrunk)
settings.register_profile("dev", settings.get_profile("ci"), max_examples=25,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
PROFILE = os.environ.get("BFCLAB_FUZZ_PROFILE", "ci")
BASE = settings.get_profile(PROFILE)


def examples(weight: float) -> settings:
    """This property's share of the profile's examples (``weight`` x the profile's max_examples)."""
    return settings(BASE, max_examples=max(1, round(BASE.max_examples * weight)))


COUNTS: dict[str, dict[str, int]] = {}


def _count(prop: str, key: str) -> None:
    COUNTS.setdefault(prop, {"inputs": 0, "failures": 0})[key] += 1


@pytest.fixture(scope="module", autouse=True)
def fuzz_report():
    yield
    path = os.environ.get("BFCLAB_FUZZ_REPORT")
    if path:
        Path(path).write_text(json.dumps({"profile": PROFILE, "properties": COUNTS}, indent=2) + "\n")


def holds(prop: str, problems: list[str]) -> None:
    """Count one input of ``prop``; fail (and count the failure) when the judge found problems."""
    _count(prop, "inputs")
    if problems:
        _count(prop, "failures")
        raise AssertionError(f"{prop}: " + "; ".join(problems))


# ---- running the CLI in-process -----------------------------------------------------------------------


class TrainingStarted(BaseException):
    """Raised by the stubs that replace training: the CLI accepted its input and began a run."""

    def __init__(self, what: str, **info):
        super().__init__(what)
        self.what, self.info = what, info


@dataclasses.dataclass
class Result:
    rc: int | None
    stdout: str
    stderr: str
    exc: BaseException | None = None  # escaped from main (a traceback for a user)
    started: TrainingStarted | None = None
    prepared: list = dataclasses.field(default_factory=list)  # prepare_out calls: (cfg, resume, overwrite, returned)


SPY: list = []


def run_cli(argv: list[str], cwd: Path) -> Result:
    """``bfclab ARGV`` in ``cwd``: exit status, stdout, stderr (warnings go to stderr, as for a user)."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    SPY.clear()
    res = Result(None, "", "")

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        os.chdir(cwd)
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("default")
            warnings.showwarning = show
            try:
                res.rc = cli.main(list(argv))
            except TrainingStarted as e:
                res.started = e
            except SystemExit as e:
                res.exc = e
            except BaseException as e:  # noqa: BLE001 - a traceback is what the property forbids
                res.exc = e
                err.write("".join(traceback.format_exception(e)))
    finally:
        os.chdir(here)
    res.stdout, res.stderr, res.prepared = out.getvalue(), err.getvalue(), list(SPY)
    return res


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root``: file -> its bytes, folder -> '<dir>'."""
    snap: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        snap[rel] = "<dir>" if p.is_dir() and not p.is_symlink() else p.read_bytes()
    return snap


def run_watched(argv: list[str], ws: Path) -> tuple[dict, "Result", dict]:
    """``run_cli`` in ``ws`` with a snapshot of the folder before and after."""
    before = snapshot(ws)
    res = run_cli(argv, ws)
    return before, res, snapshot(ws)


def changes(before: dict, after: dict, allowed=lambda path: False) -> list[str]:
    """Paths created, removed or changed (``allowed`` paths may be removed, nothing else)."""
    diff = []
    for k in sorted(before.keys() | after.keys()):
        if k not in after:
            if not allowed(k):
                diff.append(f"{k} removed")
        elif k not in before:
            diff.append(f"{k} created")
        elif before[k] != after[k]:
            diff.append(f"{k} changed")
    return diff


NAMES_SOMETHING = re.compile(r"'[^']*'|--[\w.-]+|\bconfig key\b|\bfield\b|\bgrid (key|file)\b|\bargument")


def judge(res: Result, before: dict, after: dict, *, name: tuple[str, ...] = (), success=None) -> list[str]:
    """Everything wrong with one outcome.  A refusal: exit 2, one line ``bfclab: error: ...`` on
    stderr naming one of ``name`` (or, with no ``name``, something: a quoted file or key, an option),
    no traceback, no file changed.  Anything else is legitimate only if ``success(res)`` (called for
    exit 0 and for a start of training) returns no problem."""
    if res.exc is not None:
        return [f"exception escaped: {type(res.exc).__name__}: {res.exc}\n{res.stderr[-3000:]}"]
    if res.rc == 2 and res.started is None:
        p = []
        lines = res.stderr.splitlines()
        if len(lines) != 1:
            p.append(f"{len(lines)} lines on stderr: {res.stderr[:2000]!r}")
        if not res.stderr.startswith("bfclab: error: "):
            p.append(f"stderr does not start with 'bfclab: error: ': {res.stderr[:300]!r}")
        if "Traceback" in res.stderr:
            p.append("a traceback on stderr")
        msg = lines[0] if lines else ""
        if name and not any(n in msg for n in name):
            p.append(f"the message names none of {name}: {msg!r}")
        if not name and not NAMES_SOMETHING.search(msg):
            p.append(f"the message names no file, key or option: {msg!r}")
        p += [f"refused, yet {c}" for c in changes(before, after)]
        return p
    if res.rc == 0 or res.started is not None:
        if success is None:
            what = res.started.what if res.started else "exit 0"
            return [f"accepted ({what}) where it must refuse; stdout {res.stdout[:300]!r} stderr {res.stderr[:300]!r}"]
        return success(res)
    return [f"exit status {res.rc}; stderr {res.stderr[:500]!r}"]


# ---- the run folders every example starts from ----------------------------------------------------------


def same(a, b) -> bool:
    """Deep equality of checkpoint/target states (tensors bit for bit, nan == nan)."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and bool(torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)))))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def canon(obj) -> str:
    return dumps(obj, indent=None)


@dataclasses.dataclass
class Template:
    kind: str  # "finished" | "killed"
    path: Path
    cfg: dict  # the run's config as config.json holds it (JSON round trip)
    checkpoint: dict
    target: dict


class _Killed(BaseException):
    pass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two real tiny runs (one finished, one killed after a mid-stage checkpoint), a finished
    one-cell sweep; then training is replaced by stubs for the rest of the module."""
    root = tmp_path_factory.mktemp("fuzz-templates")
    cfg = tiny_config(**{"train.checkpoint_every": 7})
    quiet = {"progress": False, "log": lambda s: None}
    T.train(cfg, root / "finished", **quiet)
    mp = pytest.MonkeyPatch()
    orig = T.Run.checkpoint

    def checkpoint(self, position, opt, seconds):
        orig(self, position, opt, seconds)
        if tuple(position) == (1, 21):
            raise _Killed()

    mp.setattr(T.Run, "checkpoint", checkpoint)
    with pytest.raises(_Killed):
        T.train(cfg, root / "killed", **quiet)
    mp.undo()
    assert not (root / "killed" / "result.json").exists()
    templates = {}
    for kind in ("finished", "killed"):
        d = root / kind
        templates[kind] = Template(kind, d, json.loads(canon(to_dict(cfg))),
                                   torch.load(d / "checkpoint.pt", weights_only=True),
                                   torch.load(d / "target.pt", weights_only=True))
    # a finished sweep of one tiny cell, and its grid file
    grid = {"name": "fz", "base": json.loads(canon(to_dict(tiny_config(**{"train.steps_per_stage": 10})))),
            "grid": {"seed": [0]}}
    (root / "grid.yaml").write_text(yaml.safe_dump(grid))
    S.run_sweep(S.load_grid(root / "grid.yaml"), root / "sweep", progress=False)
    assert len(list((root / "sweep" / "cells").glob("*/result.json"))) == 1

    # from here on nothing trains: a start of training is an outcome the judge rules on
    real_prepare = T.prepare_out

    def prepare_out(out, cfg, resume, overwrite):
        rec = [copy.deepcopy(to_dict(cfg)), resume, overwrite, Path(out), None]
        SPY.append(rec)
        rec[4] = real_prepare(out, cfg, resume, overwrite)
        return rec[4]

    def no_run(self, resume=None):  # the run is set up (data, learner, target); it must not train
        raise TrainingStarted("train", cfg=self.cfg, out=self.out, kw={"target": self.target})

    def no_cell(cell, root, threads=1):
        raise TrainingStarted("sweep cell", cell=cell, root=root)

    mp.setattr(T, "prepare_out", prepare_out)
    mp.setattr(T.Run, "run", no_run)
    mp.setattr(S, "run_cell", no_cell)
    scratch = root / "examples"
    scratch.mkdir()
    yield World(templates=templates, root=root, scratch=scratch)
    mp.undo()


class World(dict):
    """The fixture's templates and folders (a short repr for hypothesis's reports)."""

    def __init__(self, **kw):
        super().__init__(**kw)

    def __repr__(self) -> str:
        return f"<fuzz world in {self['root']}>"


@contextlib.contextmanager
def workspace(world, template: str | None = None):
    """A fresh folder: ``run/`` (a copy of the template), ``plain.txt`` (a regular file)."""
    ws = Path(tempfile.mkdtemp(dir=world["scratch"]))
    try:
        if template == "sweep":
            shutil.copytree(world["root"] / "sweep", ws / "run")
            shutil.copy(world["root"] / "grid.yaml", ws / "grid.yaml")
        elif template:
            shutil.copytree(world["templates"][template].path, ws / "run")
        (ws / "plain.txt").write_text("a plain file, not a folder\n")
        yield ws
    finally:
        shutil.rmtree(ws, ignore_errors=True)


# ---- strategies ---------------------------------------------------------------------------------------

SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(getattr(RunConfig(), f.name))}
CONFIG = RunConfig()
VALID_KEYS = ["method", "seed"] + [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(CONFIG, s))]
WORDS = ["bfc", "e2e", "layerwise", "window:1", "window:2", "window:", "paper", "simple", "adam", "sgd", "cosine",
         "linear", "constant", "chain", "chain+input", "chain+input+const", "regression", "classification", "cpu",
         "auto", "cuda", "cuda:0", "true", "false", "yes", "null", "None", "inf", "-inf", "nan", "NaN", "Infinity",
         "1e400", "-0.0", "[2]", "[[1],[2,1],[3]]", "{}", "[]", "", " ", "0", "-1", "1e-3", "0x10", "1_000"]
SPECIAL_NUMBERS = [math.inf, -math.inf, math.nan, -0.0, 0.0, 1e308, -1e308, 5e-324, 0, -1, 1, 2, 2**31, 2**63, 2**64,
                   10**30, -(10**30), 10**400]

# text a user can put in a file (no lone surrogates) and in argv (no NUL; undecodable bytes as surrogates)
file_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
argv_text = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
    st.binary(max_size=8).map(lambda b: b.replace(b"\x00", b"").decode("utf-8", "surrogateescape")),
)
sub_key = st.one_of(st.sampled_from([f.name for s in SECTIONS for f in dataclasses.fields(getattr(CONFIG, s))]),
                    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.-0123456789", max_size=10), file_text)
dotted_key = st.one_of(
    st.sampled_from(VALID_KEYS),
    st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(list(SECTIONS)), sub_key),
    st.builds(".".join, st.lists(sub_key, min_size=1, max_size=4)),
)
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(), st.sampled_from(SPECIAL_NUMBERS), st.sampled_from(WORDS), file_text,
)
any_value = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.one_of(file_text, st.sampled_from(list(SECTIONS))), inner, max_size=4),
    max_leaves=8)


def stored_value(cfg: dict, key: str):
    obj = cfg
    for part in key.split("."):
        obj = obj[part]
    return obj


def value_for(key: str, cfg: dict) -> st.SearchStrategy:
    """Any value, or the stored run's own value for this key (so that valid configs, and the very
    config of the stored run, come up often)."""
    try:
        own = stored_value(cfg, key)
    except (KeyError, TypeError):
        return any_value
    return st.one_of(any_value, st.just(own))


def cli_text(value) -> st.SearchStrategy:
    """How a value can be spelled on the command line."""
    forms = [st.just(str(value))]
    with contextlib.suppress(ValueError, TypeError, OverflowError):
        forms.append(st.just(json.dumps(value)))
    with contextlib.suppress(Exception):
        forms.append(st.just(yaml.safe_dump(value, default_flow_style=True).strip()))
    return st.one_of(*forms, argv_text)


def option_like(tok: str) -> bool:
    return tok.startswith("-") and not tok.startswith("--") or tok.startswith("--") and "." not in tok.split("=")[0]


def _known_options() -> list[str]:
    opts = []
    for action in cli.make_parser()._subparsers._group_actions:
        for sub in action.choices.values():
            for a in sub._actions:
                opts += a.option_strings
    return sorted(set(opts) | {"-h", "--help"})


KNOWN_OPTIONS = _known_options()


def harmless(tok: str) -> bool:
    """Random tokens must not be (abbreviations of) options with side effects of their own:
    argparse takes ``--over`` for ``--overwrite`` and ``-hx`` for ``-h``."""
    if tok.startswith("-h") or tok.startswith("--") and any(o.startswith(tok.split("=")[0]) for o in KNOWN_OPTIONS):
        return False
    return True


random_token = argv_text.filter(harmless)


@st.composite
def overrides(draw, cfg: dict, max_size: int = 4) -> list[list[str]]:
    """``--section.key value`` groups (also ``--key=value``, dashes for underscores), unique keys."""
    keys = draw(st.lists(dotted_key, max_size=max_size, unique_by=lambda k: k.replace("-", "_")))
    # no key inside another (``train`` and ``train.lr``): then the last one given wins, and order matters
    keys = [k for k in keys if not any(o != k and (o + ".").startswith(k.replace("-", "_") + ".")
                                       for o in (x.replace("-", "_") for x in keys))]
    groups = []
    for key in keys:
        text = draw(value_for(key, cfg).flatmap(cli_text))
        spelled = draw(st.sampled_from([key, key.replace("_", "-")]))
        if draw(st.booleans()):
            groups.append([f"--{spelled}", text])
        else:
            groups.append([f"--{spelled}={text}"])
    return [g for g in groups if all(harmless(t) or t.startswith("--") and "." in t for t in g)]


def flatten(groups) -> list[str]:
    return [t for g in groups for t in g]


# ---- damaging files ------------------------------------------------------------------------------------


def _paths(obj, prefix=()):
    """Every (path, value) inside a nested dict/list."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _replace(obj, path, value, delete=False):
    if not path:
        return value
    obj = copy.copy(obj)
    head, rest = path[0], path[1:]
    if delete and not rest:
        if isinstance(obj, dict):
            obj.pop(head, None)
        else:
            obj.pop(head)
        return obj
    obj[head] = _replace(obj[head], rest, value, delete)
    return obj


KINDS = ("truncate", "flip", "random-bytes", "random-json", "random-yaml", "empty", "folder", "field", "stale-tmp")


def damage(data, path: Path, kind: str) -> str:
    """Damage ``path`` in one of ``KINDS`` ways (what is drawn comes from ``data``); describe it."""
    raw = path.read_bytes()
    if kind == "truncate":
        at = data.draw(st.integers(0, max(0, len(raw) - 1)), label="truncate at")
        path.write_bytes(raw[:at])
        return f"{path.name} truncated to {at} of {len(raw)} bytes"
    if kind == "flip":
        b = bytearray(raw)
        spots = data.draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(1, 255)), min_size=1, max_size=8),
                          label="flips")
        for i, x in spots:
            b[i] ^= x
        path.write_bytes(bytes(b))
        return f"{path.name}: bytes flipped at {sorted(i for i, _ in spots)}"
    if kind == "random-bytes":
        path.write_bytes(data.draw(st.binary(max_size=200), label="bytes"))
        return f"{path.name} replaced by random bytes"
    if kind == "random-json":
        v = data.draw(any_value, label="json")
        try:
            path.write_text(json.dumps(v))
        except (ValueError, OverflowError):  # an int with over 4300 digits
            path.write_text("[]")
        return f"{path.name} replaced by random JSON"
    if kind == "random-yaml":
        v = data.draw(any_value, label="yaml")
        path.write_text(yaml.safe_dump(v))
        return f"{path.name} replaced by random YAML"
    if kind == "empty":
        path.write_bytes(b"")
        return f"{path.name} emptied"
    if kind == "folder":
        path.unlink()
        path.mkdir()
        (path / "x").write_text("x")
        return f"{path.name} replaced by a folder"
    if kind == "stale-tmp":
        (path.parent / f".{path.name}.{data.draw(st.integers(0, 999))}.tmp").write_bytes(raw[: len(raw) // 2])
        return f"a stale .{path.name}.*.tmp beside it"
    # "field": the file's own structure with one value replaced or one key removed
    if path.suffix == ".pt":
        obj = torch.load(path, weights_only=True)
    elif path.suffix == ".jsonl":
        lines = raw.decode().splitlines()
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        obj = json.loads(lines[i])
    else:
        obj = json.loads(raw)
    # a .pt file: its top-level fields (deeper forgeries of a well-formed file are out of scope;
    # any damage to its bytes is caught by the CRCs)
    spots = [p for p, _ in _paths(obj) if p and len(p) <= (1 if path.suffix == ".pt" else 3)]
    where = data.draw(st.sampled_from(spots), label="field")
    delete = data.draw(st.booleans(), label="delete")
    new = _replace(obj, where, None if delete else data.draw(any_value, label="value"), delete)
    if path.suffix == ".pt":
        torch.save(new, path)
    else:
        try:
            text = json.dumps(new)
        except (ValueError, OverflowError):  # an int with over 4300 digits
            text = json.dumps(_replace(obj, where, None))
        if path.suffix == ".jsonl":
            lines[i] = text
            text = "\n".join(lines) + "\n"
        path.write_text(text)
    return f"{path.name}: field {'/'.join(map(str, where))} {'removed' if delete else 'replaced'}"


RUN_FILES = ("config.json", "result.json", "metrics.jsonl", "target.pt", "checkpoint.pt", "last_good.pt", "stage2.pt")
READ_ON_RESUME = {"config.json", "result.json", "target.pt", "checkpoint.pt"}


# ---- the judges of legitimate success ----------------------------------------------------------------


REAL_RUN, REAL_PREPARE = T.Run.run, T.prepare_out


def continue_for_real(run: Path, cfg: dict) -> list[str]:
    """Resume a copy of ``run`` with the real training: a checkpoint or target the CLI accepted must
    be one a run can continue from (to the end: result.json written)."""
    from bfclab.config import from_dict

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(T.Run, "run", REAL_RUN)
        mp.setattr(T, "prepare_out", REAL_PREPARE)
        shutil.copytree(run, Path(tmp) / "run")
        try:
            T.train(from_dict(RunConfig, cfg), Path(tmp) / "run", resume=True, progress=False, log=lambda s: None)
        except T.DivergenceError:
            return []  # one line and exit 3 for the CLI: a legitimate end of a forged state
        except Exception as e:  # noqa: BLE001
            return [f"accepted a checkpoint/target that cannot be continued: {type(e).__name__}: {e}"]
    return []


def resume_success(tpl: Template, ws: Path, before: dict, after: dict, print_config: bool, forged: bool = False):
    """What exit 0, or a start of training, may mean for a pre-existing run folder."""

    def ok(res: Result) -> list[str]:
        run = ws / "run"
        if res.started is not None:
            p = []
            calls = [c for c in res.prepared if c[4] is not None and not isinstance(c[4], str)]
            if tpl.kind != "killed" or res.started.what != "train" or not calls:
                return [f"training started from {tpl.kind} run without a checkpoint to continue "
                        f"(prepare_out: {[(c[1], c[2], type(c[4]).__name__) for c in res.prepared]})"]
            cfg, resume, overwrite, out, state = calls[-1]
            if not resume or overwrite or out.resolve() != run.resolve():
                p.append(f"started with resume={resume} overwrite={overwrite} out={out}")
            if canon(cfg) != canon(tpl.cfg):
                p.append("continued a run under another config than the stored one")
            target = res.started.info["kw"].get("target")
            if forged:  # a well-formed file with a field replaced: fine if the run can go on from it
                p += continue_for_real(run, tpl.cfg)
            else:  # anything else that is not the run's own state must have been refused
                if not same(tpl.checkpoint, state):
                    p.append("continued from a checkpoint that differs from the one written by the run")
                if target is None or not same(tpl.target, target.state()):
                    p.append("continued with a target that differs from the run's target.pt")
            p += changes(before, after, allowed=lambda k: k.startswith("run/.") and k.endswith(".tmp"))
            return p
        p = changes(before, after)
        if print_config:
            try:
                assert isinstance(json.loads(res.stdout), dict)
            except (ValueError, AssertionError):
                p.append(f"--print-config printed no JSON mapping: {res.stdout[:300]!r}")
            if res.prepared:
                p.append("--print-config touched the run folder")
            return p
        fin = [c for c in res.prepared if c[4] == "finished"]
        if tpl.kind != "finished" or not fin:
            return [f"exit 0 without a finished run to report (prepare_out: {[c[4] for c in res.prepared]!r})"]
        if canon(fin[-1][0]) != canon(tpl.cfg):
            p.append("reported a finished run under another config")
        try:
            stored = read_json(run / "result.json")["config"]
            if canon(stored) != canon(tpl.cfg):
                p.append("reported a result.json made for another config")
        except Exception as e:  # noqa: BLE001
            p.append(f"reported an unreadable result.json ({type(e).__name__})")
        if len(res.stdout.splitlines()) != 1 or f"-> {run}" not in res.stdout and "-> run" not in res.stdout:
            p.append(f"unexpected report {res.stdout!r}")
        return p

    return ok


# ---- properties ---------------------------------------------------------------------------------------


def draw_template(data, world) -> tuple[str, "Template"]:
    """A finished or a killed run folder to start an example from."""
    kind = data.draw(st.sampled_from(["finished", "killed"]), label="template")
    return kind, world["templates"][kind]


@examples(4.0)
@given(data=st.data())
def test_damaged_run_folder(world, data):
    """``train --resume`` (and without it) on a finished or killed run with damaged files."""
    kind, tpl = draw_template(data, world)
    with workspace(world, kind) as ws:
        run = ws / "run"
        damaged = []
        present = [f for f in RUN_FILES if (run / f).is_file()]
        for f in data.draw(st.lists(st.sampled_from(present), max_size=2, unique=True), label="files damaged"):
            damaged.append((f, damage(data, run / f, data.draw(st.sampled_from(KINDS), label="how"))))
        note(f"damage: {damaged}")
        resume = data.draw(st.booleans(), label="--resume") or not damaged
        extra = data.draw(st.one_of(st.just([]), overrides(tpl.cfg, max_size=2)), label="overrides")
        groups = [["--out", str(run)], *extra] + ([["--resume"]] if resume else [])
        argv = ["train", *flatten(data.draw(st.permutations(groups), label="order"))]
        note(f"argv: {argv}")
        before, res, after = run_watched(argv, ws)
        name: tuple[str, ...] = ()
        read = [f for f, how in damaged if f in READ_ON_RESUME and "stale" not in how]
        if resume and not extra and len(read) == 1:
            # the damaged file is what can stop the resume, so the message must name it (a damaged
            # config.json that still parses describes another config: the checkpoint or the result says so)
            name = (read[0],) if read[0] != "config.json" else ("config.json", "checkpoint.pt", "result.json", "target.pt")
        elif not resume:
            name = ("already holds a run", "config key", "--", "'")
        forged = any(f.endswith(".pt") and "field" in how for f, how in damaged)
        holds("damaged run folder", judge(res, before, after, name=name,
                                          success=resume_success(tpl, ws, before, after, False, forged)))


@examples(2.0)
@given(data=st.data())
def test_random_arguments_against_a_run(world, data):
    """Random keys and values of every type, in random order, against a folder holding a run."""
    kind, tpl = draw_template(data, world)
    with workspace(world, kind) as ws:
        run = ws / "run"
        out = data.draw(st.sampled_from([str(run), str(ws / "plain.txt"), "run", "plain.txt", None]), label="--out")
        groups = [] if out is None else [["--out", out]]
        groups += data.draw(overrides(tpl.cfg), label="overrides")
        flags = data.draw(st.lists(st.sampled_from(["--resume", "--print-config"]), unique=True), label="flags")
        groups += [[f] for f in flags]
        if data.draw(st.booleans(), label="--method/--seed"):
            groups.append(["--method", data.draw(st.one_of(st.sampled_from(WORDS), random_token))])
        if data.draw(st.booleans()):
            groups.append(["--seed", data.draw(st.one_of(st.integers().map(str), random_token))])
        groups += [[t] for t in data.draw(st.lists(random_token, max_size=2), label="stray tokens")]
        tokens = flatten(data.draw(st.permutations(groups), label="order"))
        if data.draw(st.integers(0, 4), label="shuffle tokens") == 0:
            tokens = data.draw(st.permutations(tokens))
        tokens.insert(data.draw(st.integers(0, len(tokens)) if data.draw(st.integers(0, 5)) == 0 else st.just(0)), "train")
        note(f"argv: {tokens}")
        before, res, after = run_watched(tokens, ws)
        holds("random arguments", judge(res, before, after,
                                        success=resume_success(tpl, ws, before, after, "--print-config" in tokens)))


@examples(0.5)
@given(data=st.data())
def test_option_order_does_not_matter(world, data):
    """The same options in two random orders: the same exit status (the config is the same)."""
    tpl = world["templates"]["finished"]
    groups = [["--out", "run"]] + data.draw(overrides(tpl.cfg, max_size=3), label="overrides")
    groups += [[f] for f in data.draw(st.lists(st.sampled_from(["--resume", "--print-config"]), unique=True))]
    a = ["train", *flatten(data.draw(st.permutations(groups), label="order a"))]
    b = ["train", *flatten(data.draw(st.permutations(groups), label="order b"))]
    outcomes = []
    for argv in (a, b):
        with workspace(world, "finished") as ws:
            before, res, after = run_watched(argv, ws)
            holds("option order", judge(res, before, after,
                                        success=resume_success(tpl, ws, before, after, "--print-config" in argv)))
            outcomes.append((res.rc, res.started is not None))
    holds("option order", [] if outcomes[0] == outcomes[1] else [f"{a} -> {outcomes[0]} but {b} -> {outcomes[1]}"])


def _valid_yaml_config(cfg: dict) -> st.SearchStrategy:
    """A mapping of any subset of the config's nested keys, with random or the run's own values."""
    def build(keys_values):
        out: dict = {}
        for key, value in keys_values:
            node = out
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else node
            node[parts[-1]] = value
        return out

    return st.lists(dotted_key.flatmap(lambda k: st.tuples(st.just(k), value_for(k, cfg))), max_size=5).map(build)


@st.composite
def config_text(draw, cfg: dict, marker: Path) -> tuple[str | bytes, str]:
    """The text of a --config file, and what it is."""
    how = draw(st.sampled_from(["mapping-yaml", "mapping-json", "truncated-yaml", "random-text", "random-bytes",
                                "python-tag", "deep", "scalar", "empty"]))
    if how in ("mapping-yaml", "truncated-yaml"):
        text = yaml.safe_dump(draw(_valid_yaml_config(cfg)), allow_unicode=draw(st.booleans()))
        if how == "truncated-yaml":
            text = text[: draw(st.integers(0, len(text)))]
        return text, how
    if how == "mapping-json":
        try:
            return json.dumps(draw(_valid_yaml_config(cfg))), how
        except (ValueError, OverflowError):
            return "{}", how
    if how == "random-text":
        return draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)), how
    if how == "random-bytes":
        return draw(st.binary(max_size=80)), how
    if how == "python-tag":
        tag = draw(st.sampled_from(["!!python/object/apply:os.system", "!!python/object/apply:subprocess.call",
                                    "!!python/object/new:os.system", "!!python/name:os.system"]))
        payload = f"{tag} [\"touch {marker}\"]" if "name" not in tag else tag
        where = draw(st.sampled_from(["top", "value", "key"]))
        return ({"top": payload, "value": f"train:\n  lr: {payload}\n", "key": f"? {payload}\n: 1\n"}[where]), how
    if how == "deep":
        n = draw(st.integers(10, 5000))
        return draw(st.sampled_from(["[" * n + "]" * n, "{a: " * n + "1" + "}" * n, "- " * n + "1"])), how
    if how == "scalar":
        return draw(st.sampled_from(["1", "[1, 2]", "- a\n- b\n", "null", "'x'", "true", "~"])), how
    return "", how


@examples(2.0)
@given(data=st.data())
def test_config_files(world, data):
    """``--config FILE``: malformed/truncated YAML and JSON, python object tags, deep nesting,
    random keys and values of every type; the run folder given to --out already holds a run."""
    tpl = world["templates"]["finished"]
    with workspace(world, "finished") as ws:
        marker = ws / "PWNED"
        text, how = data.draw(config_text(tpl.cfg, marker), label="config text")
        suffix = data.draw(st.sampled_from([".yaml", ".yml", ".json", ".txt", ""]), label="suffix")
        f = ws / f"c{suffix}"
        (f.write_bytes if isinstance(text, bytes) else f.write_text)(text)
        target = data.draw(st.sampled_from([str(f), "c" + suffix, str(ws / "missing.yaml"), str(ws / "run")]),
                           label="--config")
        groups = [["--out", "run"], ["--config", target]] + data.draw(overrides(tpl.cfg, max_size=2), label="overrides")
        groups += [[x] for x in data.draw(st.lists(st.sampled_from(["--resume", "--print-config"]), unique=True))]
        argv = ["train", *flatten(data.draw(st.permutations(groups), label="order"))]
        note(f"{how}: {text!r:.300}; argv {argv}")
        before, res, after = run_watched(argv, ws)
        name: tuple[str, ...] = ()
        if target != str(f) and target != "c" + suffix:
            name = (Path(target).name,)
        elif not _parses_as_mapping(f):
            name = (f.name,)
        problems = judge(res, before, after, name=name,
                         success=resume_success(tpl, ws, before, after, "--print-config" in argv))
        if marker.exists():
            problems.append("a YAML tag ran a command")
        holds("config files", problems)


def _parses_as_mapping(f: Path) -> bool:
    try:
        text = f.read_bytes().decode()
        data = json.loads(text) if f.suffix == ".json" else yaml.safe_load(text)
    except Exception:  # noqa: BLE001
        return False
    return data is None or isinstance(data, dict)


@st.composite
def grid_spec(draw, cfg: dict):
    """A grid mapping: known and unknown sections, keys of every kind, values of every type."""
    from bfclab.baselines.registry import ESTIMATORS

    methods = st.one_of(st.sampled_from(["bfc", "e2e", "layerwise", "window:1", *ESTIMATORS]), any_value)
    grid_keys = st.one_of(dotted_key, st.just("method"), scalar)
    grid = st.dictionaries(grid_keys, st.one_of(st.lists(scalar, max_size=3), scalar, st.lists(methods, max_size=2)),
                           max_size=3)
    spec = {}
    if draw(st.integers(0, 5)):
        spec["grid"] = draw(st.one_of(grid, st.lists(grid, max_size=2), any_value))
    if draw(st.booleans()):
        spec["base"] = draw(st.one_of(_valid_yaml_config(cfg), any_value))
    if draw(st.booleans()):
        spec["baseline"] = draw(st.one_of(st.dictionaries(st.one_of(st.sampled_from(list(ESTIMATORS)), file_text),
                                                         st.one_of(st.dictionaries(file_text, any_value, max_size=2), any_value),
                                                         max_size=2), any_value))
    if draw(st.integers(0, 4)) == 0:
        spec[draw(st.one_of(file_text, scalar))] = draw(any_value)
    if draw(st.booleans()):
        spec["name"] = draw(any_value)
    return spec


@examples(1.5)
@given(data=st.data())
def test_sweep_grid_files(world, data):
    """``sweep GRID --out FILE``: any grid file is parsed and checked; --out is a plain file, so
    even a valid grid must be refused, with one line."""
    tpl = world["templates"]["finished"]
    with workspace(world, None) as ws:
        how = data.draw(st.sampled_from(["spec-yaml", "spec-json", "text"]), label="grid kind")
        f = ws / ("grid.json" if how == "spec-json" else "grid.yaml")
        if how == "text":
            text, _ = data.draw(config_text(tpl.cfg, ws / "PWNED"))
        else:
            spec = data.draw(grid_spec(tpl.cfg), label="grid")
            try:
                text = json.dumps(spec) if how == "spec-json" else yaml.safe_dump(spec)
            except (ValueError, TypeError, OverflowError, yaml.YAMLError):
                text = yaml.safe_dump({"grid": {"seed": [0]}})
        (f.write_bytes if isinstance(text, bytes) else f.write_text)(text)
        groups = [[str(f)], ["--out", "plain.txt"]]
        workers = data.draw(st.one_of(st.none(), st.integers(-2, 3).map(str), random_token), label="--workers")
        if workers is not None:
            groups.append(["--workers", workers])
        stray = data.draw(st.lists(random_token, max_size=1), label="stray")
        groups += [[t] for t in stray]
        argv = ["sweep", *flatten(data.draw(st.permutations(groups), label="order"))]
        note(f"grid {text!r:.400}; argv {argv}")
        before, res, after = run_watched(argv, ws)
        grid_read = not stray and (workers is None or workers.strip().lstrip("+").isdigit() and int(workers) >= 1)
        problems = judge(res, before, after, name=(f.name,) if grid_read and not _parses_as_mapping(f) else ())
        if (ws / "PWNED").exists():
            problems.append("a YAML tag ran a command")
        holds("sweep grid files", problems)


SWEEP_FILES = ("cells/*/result.json", "cells/*/cell.json", "cells/*/config.json", "cells/*/checkpoint.pt",
               "grid.json", "table.csv")


@examples(1.0)
@given(data=st.data())
def test_damaged_sweep_folder(world, data):
    """``sweep GRID --out DIR`` over a finished sweep whose cell files are damaged: refused with
    one line naming the file, or (when what is left is still a finished cell of this grid) the
    table is rebuilt and no cell file changes.  No cell is ever run again."""
    with workspace(world, "sweep") as ws:
        pattern = data.draw(st.sampled_from(SWEEP_FILES), label="file")
        target = next((ws / "run").glob(pattern))
        how = data.draw(st.sampled_from(KINDS), label="how")
        if how == "field" and target.suffix not in (".json", ".pt"):
            how = "flip"
        note(damage(data, target, how))
        argv = ["sweep", "grid.yaml", "--out", "run"]
        before, res, after = run_watched(argv, ws)

        def rebuilt(res: Result) -> list[str]:
            if res.started is not None:
                return [f"a finished cell was run again ({target.name} {how})"]
            outputs = {"run/table.csv", "run/grid.json"}
            return changes({k: v for k, v in before.items() if k not in outputs},
                           {k: v for k, v in after.items() if k not in outputs})

        name = (target.name,) if target.name in ("result.json",) and how not in ("stale-tmp",) else ()
        holds("damaged sweep folder", judge(res, before, after, name=name, success=rebuilt))


@examples(1.0)
@given(data=st.data())
def test_random_command_lines(world, data):
    """Any command, any options in any order; every folder or file argument is a plain file, so
    nothing may ever start (``--print-config`` of a valid config is the only success)."""
    cmd = data.draw(st.sampled_from(["train", "sweep", "experiment", "report", "demo", None]), label="command")
    need = {"train": [["--out", "plain.txt"]], "demo": [["--out", "plain.txt"]],
            "sweep": [["grid.yaml"], ["--out", "plain.txt"]],
            "experiment": [[data.draw(st.one_of(st.sampled_from(["correction", "window", "gap"]), random_token))],
                           ["--results", "plain.txt"]],
            "report": [["--results", "plain.txt"], ["--docs", "plain.txt"]], None: []}[cmd]
    vocab = ["--resume", "--print-config", "--quick", "--no-compute", "--workers", "--method", "--seed", "--config",
             "--overwrite" if cmd in ("train", "sweep", "experiment", "report", "demo") else "--quick"]
    tokens = data.draw(st.lists(st.one_of(st.sampled_from(vocab), random_token, st.sampled_from(WORDS)), max_size=5))
    groups = need + [[t] for t in tokens] + data.draw(overrides(world["templates"]["finished"].cfg, max_size=2))
    argv = flatten(data.draw(st.permutations(groups), label="order"))
    if cmd:
        argv.insert(0, cmd)
    with workspace(world, None) as ws:
        (ws / "grid.yaml").write_text(yaml.safe_dump({"grid": {"seed": [0]}}))
        note(f"argv: {argv}")
        before, res, after = run_watched(argv, ws)

        def printed(res: Result) -> list[str]:
            if res.started is None and cmd == "train" and "--print-config" in argv:
                try:
                    return changes(before, after) + ([] if isinstance(json.loads(res.stdout), dict) else ["no JSON"])
                except ValueError:
                    return [f"--print-config printed {res.stdout[:200]!r}"]
            return [f"accepted {argv}: {res.started.what if res.started else res.stdout[:200]!r}"]

        holds("random command lines", judge(res, before, after, success=printed))


# ---- the judge itself catches violations --------------------------------------------------------------


def test_judge_flags_each_violation():
    """The property checker is not vacuous: each kind of violation is reported."""
    snap = {"run/config.json": b"{}", "run/result.json": b"{}"}
    good = Result(2, "", "bfclab: error: run file 'run/result.json': damaged\n")
    assert judge(good, snap, dict(snap), name=("result.json",)) == []
    cases = {
        "exit status": Result(1, "", "bfclab: error: x 'y'\n"),
        "lines on stderr": Result(2, "", "bfclab: error: 'a'\nmore\n"),
        "does not start": Result(2, "", "oops 'a'\n"),
        "traceback": Result(2, "", "bfclab: error: Traceback 'x'\n"),
        "names none": Result(2, "", "bfclab: error: something broke\n"),
        "exception escaped": Result(None, "", "Traceback ...", exc=KeyError("x")),
        "accepted": Result(0, "done", ""),
        "accepted (train)": Result(None, "", "", started=TrainingStarted("train")),
    }
    for what, res in cases.items():
        found = judge(res, snap, dict(snap), name=("result.json",))
        assert found and any(w in " ".join(found).lower() for w in what.lower().split()[:1]), (what, found)
    changed = dict(snap, **{"run/result.json": b"{1"})
    assert any("result.json changed" in p for p in judge(good, snap, changed, name=("result.json",)))
    created = dict(snap, **{"run/new": b""})
    assert any("run/new created" in p for p in judge(good, snap, created, name=("result.json",)))
    assert any("removed" in p for p in judge(good, snap, {"run/config.json": b"{}"}, name=("result.json",)))
    # and the counter records a failure when a property does not hold
    before = dict(COUNTS.get("judge sanity", {"inputs": 0, "failures": 0}))
    with pytest.raises(AssertionError):
        holds("judge sanity", ["a problem"])
    assert COUNTS["judge sanity"]["failures"] == before["failures"] + 1
    COUNTS.pop("judge sanity")


def test_resume_judge_flags_a_changed_checkpoint(world):
    """A start of training from a checkpoint other than the run's own is flagged (the stub sees
    what prepare_out returned)."""
    tpl = world["templates"]["killed"]
    with workspace(world, "killed") as ws:
        snap = snapshot(ws)
        state = copy.deepcopy(tpl.checkpoint)
        state["step"] += 1
        target = Target.from_state(tpl.target)
        res = Result(None, "", "", started=TrainingStarted("train", kw={"target": target}),
                     prepared=[[tpl.cfg, True, False, ws / "run", state]])
        found = judge(res, snap, snap, success=resume_success(tpl, ws, snap, snap, False))
        assert any("checkpoint that differs" in p for p in found), found
        res.prepared = [[tpl.cfg, True, False, ws / "run", copy.deepcopy(tpl.checkpoint)]]
        assert judge(res, snap, snap, success=resume_success(tpl, ws, snap, snap, False)) == []
