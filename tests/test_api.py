"""The public API (issue 9): `import bfclab`, the example script, the typed Result, the growth
plan, and an import graph without cycles."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bfclab
from bfclab.growth import plan
from bfclab.methods import parse_method
from bfclab.results import Result, dumps

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "bfclab"


# ---- the import graph -----------------------------------------------------------------------------

def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The bfclab modules ``path`` imports, anywhere in the file (inside functions too)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("bfclab")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("bfclab"):
                continue
            for a in node.names:  # `from . import seeds` imports the module bfclab.seeds
                sub = f"{target}.{a.name}"
                out.add(sub if (SRC.parent / (sub.replace(".", "/") + ".py")).exists()
                        or (SRC.parent / sub.replace(".", "/") / "__init__.py").exists() else target)
    return out


def import_graph() -> dict[str, set[str]]:
    graph = {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}
    # importing a.b.c runs a/__init__ and a/b/__init__ first; those edges are not cycles of the
    # code, so package initialisers are left out as targets, except where imported by name
    return {m: {t for t in deps if t in graph and t != m} for m, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (as a list of modules), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m], _ = 1, stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        state[m] = 2
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 30  # the walker found the package
    graph.pop("bfclab", None)  # the public API imports everything, nothing imports it
    assert not any("bfclab" in deps for deps in graph.values()), "a module imports the package's __init__"
    assert find_cycle(graph) is None, find_cycle(graph)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    # and the walker sees imports inside functions (the kind that hid the sweep/registry cycle)
    assert "bfclab.methods" in imports_of(SRC / "baselines" / "registry.py")
    assert "bfclab.seeds" in imports_of(SRC / "learner.py")


def test_lower_floors_do_not_import_higher_ones():
    """config -> target -> learner -> train -> ... : the core never imports experiments, reports or CLI."""
    graph = import_graph()
    core = ["bfclab.config", "bfclab.seeds", "bfclab.methods", "bfclab.growth", "bfclab.device", "bfclab.results",
            "bfclab.target", "bfclab.learner", "bfclab.metrics", "bfclab.training", "bfclab.tables", "bfclab.nets",
            "bfclab.targets", "bfclab.targets.protocol", "bfclab.targets.rhm", "bfclab.targets.staircase",
            "bfclab.userfile"]
    high = ("bfclab.experiments", "bfclab.report", "bfclab.cli", "bfclab.sweep", "bfclab.plots")
    for m in core:
        assert not [t for t in graph[m] if t.startswith(high)], (m, graph[m])
    for m, deps in graph.items():
        if m.startswith("bfclab.images") or m.startswith("bfclab.baselines"):
            assert not [t for t in deps if t.startswith(("bfclab.experiments", "bfclab.report", "bfclab.cli",
                                                          "bfclab.sweep"))], (m, deps)


# ---- the public API ---------------------------------------------------------------------------------

def test_public_api_exports_documented_objects():
    for name in bfclab.__all__:
        obj = getattr(bfclab, name)
        assert obj is not None, name
    research = ["Target", "TargetConfig", "RunConfig", "DataConfig", "LearnerConfig", "TrainConfig", "Learner", "train",
                "Run", "make_data", "Result", "make_estimator", "run_sweep", "expand", "load_grid", "plan", "Segment",
                "parse_method", "Method"]
    undocumented = [n for n in research if "PAPER_NOTES" not in (getattr(bfclab, n).__doc__ or "")]
    assert not undocumented, undocumented


def test_example_script_runs_and_prints_three_errors():
    env = {**os.environ, "BFCLAB_EXAMPLE_TINY": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "api.py")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert [l.split()[0] for l in lines] == ["bfc", "layerwise", "krr-poly"]
    errors = [float(l.split("test nMSE")[1].split()[0]) for l in lines]
    assert all(0 < e < 2 for e in errors), errors
    assert "feature error {2:" in lines[0] and "feature error {2:" in lines[1]
    code = [l for l in (ROOT / "examples" / "api.py").read_text().splitlines() if l.strip()]
    body = code[code.index("import bfclab"):]
    sizing = body[body.index(next(l for l in body if l.startswith("if os.environ"))):
                  body.index(next(l for l in body if l.startswith("target =")))]  # the run's size, not the API
    assert 0 < len(body) - len(sizing) <= 12, "the example should stay within 12 lines of bfclab code"


def test_readme_shows_the_example():
    """README's "In Python" block is examples/api.py without its sizing switch."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("In Python")[1].split("```python\n")[1].split("```")[0].strip().splitlines()
    code = (ROOT / "examples" / "api.py").read_text().splitlines()
    body = code[code.index("import bfclab"):]
    start = next(i for i, l in enumerate(body) if l.startswith("if os.environ"))
    end = next(i for i, l in enumerate(body) if l.startswith("target ="))
    sized = body[:start] + [l[4:] for l in body[start:end] if l.startswith("    ") and "BFCLAB" not in l][-1:] + body[end:]
    assert [l for l in block if l.strip()] == [l for l in sized if l.strip()]


def test_train_returns_the_run_with_result_and_model(tiny_cfg):
    run = bfclab.train(tiny_cfg, progress=False, log=lambda s: None)
    assert isinstance(run.result, Result) and run.result.error == run.result.metrics["test_nmse"]
    assert run.model.active == [2, 3, 4] and set(run.result.feature_error) == {2, 3, 4}
    other = bfclab.Target.from_config(bfclab.TargetConfig(d=tiny_cfg.target.d + 1, widths=[2], mc_samples=2000, var_samples=20000))
    with pytest.raises(bfclab.ConfigError, match="target.d"):
        bfclab.train(tiny_cfg, target=other)


def test_learner_for_target_matches_the_target():
    t = bfclab.Target.from_config(bfclab.TargetConfig(d=6, L=3, widths=[2], mc_samples=2000, var_samples=20000))
    m = bfclab.Learner.for_target(t)
    assert m.levels == [2, 3] and m.d == 6 and m.conn == t.conn


# ---- the typed result ----------------------------------------------------------------------------

def test_result_round_trip_keeps_int_keys_and_every_field(tiny_cfg, tmp_path):
    run = bfclab.train(tiny_cfg, tmp_path / "r", progress=False, log=lambda s: None)
    stored = json.loads((tmp_path / "r" / "result.json").read_text())
    back = Result.read(tmp_path / "r" / "result.json")
    assert set(back.feature_error) == {2, 3, 4} and set(back.stage_end) == {2, 3, 4}
    assert all(isinstance(l, int) for r in back.stage_end.values() for l in r["feature_error"])
    assert json.loads(dumps(back.to_json())) == stored
    assert back.error == stored["test_nmse"] and back.error_name == "test_nmse"
    assert back.stage_value(3, "feature_error", 2) == stored["stage_end"]["3"]["feature_error"]["2"]
    assert math.isnan(back.stage_value(9, "test_nmse"))
    assert back.metrics == run.result.metrics


def test_result_classification_error_and_malformed_fields():
    r = Result.from_json({"method": "bfc", "seed": 0, "config": {}, "seconds": 1.0, "test_error": 0.1,
                          "train_error": 0.05, "test_loss": 0.3, "feature_error": {"2": 0.5}})
    assert r.error_name == "test_error" and r.error == 0.1 and r.feature_error == {2: 0.5}
    for bad, field in (({"feature_error": [1]}, "feature_error"), ({"test_nmse": "x"}, "test_nmse"),
                       ({"seed": 1.5}, "seed"), ({"stage_end": {"a": {}}}, "stage_end")):
        with pytest.raises(ValueError, match=field):
            Result.from_json({"method": "bfc", "config": {}, **bad})


# ---- the growth plan -------------------------------------------------------------------------------

@pytest.mark.parametrize("method, trainable", [
    ("bfc", [(2,), (2, 3), (2, 3, 4)]),
    ("layerwise", [(2,), (3,), (4,)]),
    ("window:1", [(2,), (2, 3), (3, 4)]),
])
def test_stage_wise_plans(method, trainable):
    segs = plan(parse_method(method), [2, 3, 4], 10)
    assert [s.trainable for s in segs] == trainable
    assert [s.activate for s in segs] == [(2,), (3,), (4,)] and all(s.warm_start for s in segs)
    assert [s.ends for s in segs] == [((10, 2),), ((10, 3),), ((10, 4),)]
    assert [s.top for s in segs] == [2, 3, 4]


def test_e2e_plan_is_one_segment_measured_at_the_stage_boundaries():
    (seg,) = plan(parse_method("e2e"), [1, 2, 3], 5)
    assert seg.activate == seg.trainable == (1, 2, 3) and seg.length == 15 and not seg.warm_start
    assert seg.ends == ((5, 1), (10, 2), (15, 3)) and seg.end_at(10) == 2 and seg.end_at(7) is None
    assert seg.first_stage == 1 and seg.stage_after(1) == 2


@pytest.fixture
def tiny_cfg():
    from conftest import tiny_config

    return tiny_config()
