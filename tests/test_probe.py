"""bfclab.probe (PAPER_NOTES §5.3-§5.5, §7.3 B): the splitters against the unsplit model, the
measurements against closed forms (zero change, zero revert cost, CKA invariances), the
protocols' bookkeeping on a model whose lower blocks are frozen, the lower-block learning-rate
multiplier, batches, the command line's one-line errors, and every example on tiny data."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bfclab.config import ConfigError
from bfclab.probe import (ProbeRun, ProbeRunConfig, Spec, SpecRunConfig, Stack, TensorBatches, linear_cka,
                          probe, split_resnet, split_sequential, split_transformer)
from bfclab.probe import measure
from bfclab.probe.data import gather, plain
from bfclab.probe.experiment import load_factory, make_spec
from bfclab.probe.train import trainable_params
from bfclab.growth import plan
from bfclab.methods import parse_method

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("probe_*.py"))
F32 = dict(rtol=1e-5, atol=1e-6)  # float32, same operations in the same order up to fusion


def probe_cli(argv: list[str]) -> int:
    from bfclab.cli import main

    return main(["probe", *argv])


def blobs(n: int, seed: int, d: int = 6, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian classes around fixed centres (learnable in a few epochs)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(99)) * 2
    y = torch.randint(classes, (n,), generator=g)
    return centres[y] + torch.randn(n, d, generator=g), y


def mlp_spec(seed: int, bn: bool = True, task: str = "classification", width: int = 8) -> Spec:
    """Three Linear(-BatchNorm)-ReLU blocks on blobs (or a regression of their first coordinate)."""
    torch.manual_seed(seed)

    def block(i: int) -> nn.Module:
        layers = [nn.Linear(6 if i == 0 else width, width)] + ([nn.BatchNorm1d(width)] if bn else []) + [nn.ReLU()]
        return nn.Sequential(*layers)

    (xt, yt), (xs, ys) = blobs(192, seed), blobs(96, seed + 1000)
    if task == "regression":
        yt, ys = xt[:, 0] * 2 - 1, xs[:, 0] * 2 - 1
    out = 3 if task == "classification" else 1
    return Spec([block(i) for i in range(3)], heads=lambda b: nn.Linear(width, out),
                train=TensorBatches(xt, yt, 32, seed=seed), test=TensorBatches(xs, ys, 48, shuffle=False),
                task=task, name="blobs")


def run_cfg(method: str, **train) -> ProbeRunConfig:
    cfg = ProbeRunConfig(method=method, seed=0)
    cfg.train.epochs_per_stage, cfg.train.device = 2, "cpu"
    cfg.probe.kind, cfg.probe.max_train = "ridge", 192
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


# ---- splitters ----------------------------------------------------------------------------------

def test_split_sequential_groups_children_and_composes_to_the_model():
    seq = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3))
    blocks = split_sequential(seq, ends=[2, 4, 5])
    assert [type(b).__name__ for b in blocks] == ["Sequential", "Sequential", "Linear"]
    assert blocks[0][0] is seq[0] and blocks[1][1] is seq[3] and blocks[2] is seq[4]
    assert len(split_sequential(seq)) == 5
    x = torch.randn(7, 4)
    stack = Stack(blocks, heads=[nn.Identity()] * 3)
    assert torch.equal(stack(x), seq(x))
    for bad in ([2, 4], [0, 5], [3, 2, 5], []):
        with pytest.raises(ValueError, match="ends"):
            split_sequential(seq, ends=bad)


def test_split_transformer_gives_one_block_per_layer_with_the_embedding_in_front():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False).eval()
    embed = nn.Embedding(5, 8)
    blocks = split_transformer(enc, embed=embed)
    assert len(blocks) == 3
    assert blocks[0][0] is embed and blocks[0][1] is enc.layers[0]
    assert blocks[1] is enc.layers[1] and blocks[2] is enc.layers[2]
    assert split_transformer(list(enc.layers))[0] is enc.layers[0]
    tokens = torch.randint(5, (4, 6))
    stack = Stack(blocks, heads=[nn.Identity()] * 3).eval()
    with torch.no_grad():
        torch.testing.assert_close(stack(tokens), enc(embed(tokens)), **F32)
    with pytest.raises(ValueError, match="no layers"):
        split_transformer([])


class TinyResNet(nn.Module):
    """The attribute layout of torchvision's ResNet (conv1, bn1, relu, maxpool, layer1.., fc)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.layer3 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def trunk(self, x):
        return self.layer3(self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))))


def test_split_resnet_joins_the_stem_to_the_first_stage():
    model = TinyResNet().eval()
    blocks = split_resnet(model)
    assert len(blocks) == 3 and blocks[1] is model.layer2 and blocks[2] is model.layer3
    assert [m for m in blocks[0]] == [model.conv1, model.bn1, model.relu, model.maxpool, model.layer1]
    assert len(split_resnet(model, layers=["layer1", "layer2"])) == 2
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(Stack(blocks, heads=[nn.Identity()] * 3).eval()(x), model.trunk(x))
    with pytest.raises(ValueError, match="stem"):
        split_resnet(nn.Sequential(nn.Linear(2, 2)))


def test_stack_needs_one_head_per_block():
    with pytest.raises(ValueError, match="one head per block"):
        Stack([nn.Linear(2, 2)] * 2, heads=[nn.Identity()])
    with pytest.raises(ValueError, match="at least one block"):
        Stack([], heads=[])


# ---- measurements against closed forms ----------------------------------------------------------

def test_revert_has_zero_cost_and_zero_change_when_nothing_moved():
    spec = mlp_spec(0)
    model = Stack(spec.blocks, spec.heads).eval()
    refs = {b: measure.block_state(model, b) for b in (1, 2, 3)}
    out = measure.revert_effect(model, refs, spec.test, "classification", torch.device("cpu"), seed=0)
    assert set(out) == {1, 2}
    for r in out.values():
        assert r["cost"] == 0.0 and r["random_cost"] == 0.0  # same weights, same computation
    assert all(measure.weight_change(model, b, refs[b]) == 0.0 for b in (1, 2, 3))
    assert all(measure.direction_change(model, b, refs[b]) == 0.0 for b in (1, 2, 3))


def test_revert_cost_is_the_metric_lost_by_putting_the_block_back():
    spec = mlp_spec(0, bn=False, task="regression")
    model = Stack(spec.blocks, spec.heads).eval()
    refs = {b: measure.block_state(model, b) for b in (1, 2, 3)}
    with torch.no_grad():
        model.block(1)[0].weight.mul_(-1.0)
    dev = torch.device("cpu")
    final = measure.evaluate(model, spec.test, 3, "regression", dev)
    back = copy.deepcopy(model)
    back.block(1).load_state_dict(refs[1])
    out = measure.revert_effect(model, refs, spec.test, "regression", dev, seed=0)
    assert out[1]["cost"] == pytest.approx(final - measure.evaluate(back, spec.test, 3, "regression", dev), abs=1e-12)
    assert out[2]["cost"] == 0.0
    assert measure.weight_change(model, 1, refs[1]) == pytest.approx(2.0, rel=1e-6)  # ||-W - W|| / ||W||


def test_linear_cka_invariances_and_reference_formula():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 10))
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    assert linear_cka(a, 3.0 * a @ q + 5.0) == pytest.approx(1.0, abs=1e-12)  # rotation, scale, shift
    b = rng.standard_normal((300, 7))
    # reference: HSIC with the centring matrix H, CKA = tr(K H L H) / sqrt(tr(K H K H) tr(L H L H))
    h = np.eye(300) - 1.0 / 300
    k, l_ = a @ a.T, b @ b.T
    hsic = lambda u, v: np.trace(u @ h @ v @ h)  # noqa: E731
    assert linear_cka(a, b) == pytest.approx(hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_)), rel=1e-9)
    assert linear_cka(a, b) < 0.2  # independent features
    assert np.isnan(linear_cka(np.ones((5, 2)), a[:5]))


def test_probe_quality_regression_and_classification():
    rng = np.random.default_rng(1)
    f = rng.standard_normal((400, 5))
    y = f @ np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert measure.fit_probe(f[:300], y[:300], f[300:], y[300:], "regression", C=1e6) == pytest.approx(1.0, abs=1e-6)
    labels = (f[:, 0] > 0).astype(int)
    assert measure.fit_probe(f[:300], labels[:300], f[300:], labels[300:], "classification") > 0.95


# ---- protocols ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def layerwise_result():
    return ProbeRun(mlp_spec(0), run_cfg("layerwise"), progress=False, log=lambda s: None).run()


def test_frozen_lower_blocks_show_zero_correction(layerwise_result):
    """Layerwise freezes every block below the stage's own (weights and batch-norm statistics):
    no weight change, probes at the end equal those at the end of the own stage, CKA 1, revert
    free."""
    r = layerwise_result
    assert r["epochs"] == 6 and set(r["stage_metric"]) == {1, 2, 3}
    assert all(v == 0.0 for c in r["weight_change"].values() for v in c.values())
    assert all(v == 0.0 for c in r["direction_change"].values() for v in c.values())
    assert r["probe_own"] == r["probe_final"]
    assert all(v == pytest.approx(1.0, abs=1e-9) for v in r["cka"].values())
    assert all(v["cost"] == 0.0 and v["random_cost"] == 0.0 for v in r["revert"].values())


def test_bfc_corrects_lower_blocks_and_the_run_learns():
    r = ProbeRun(mlp_spec(0), run_cfg("bfc", epochs_per_stage=6), progress=False, log=lambda s: None).run()
    assert r["test_metric"] > 0.9  # three well-separated blobs (2 epochs a stage are too few: 0.66)
    assert all(v > 0.0 for c in r["weight_change"].values() for v in c.values())
    assert r["cka"][1] < 1.0 and r["probe_own"] != r["probe_final"]


def test_regression_task_runs_and_reports_r2():
    r = ProbeRun(mlp_spec(0, task="regression"), run_cfg("bfc"), progress=False, log=lambda s: None).run()
    assert r["task"] == "regression"
    assert r["test_metric"] > -1.0 and all(-10 < v <= 1.0 for v in r["probe_final"].values())


def test_lower_lr_mult_gives_the_lower_blocks_their_own_group():
    spec = mlp_spec(0)
    model = Stack(spec.blocks, spec.heads)
    seg = [s for s in plan(parse_method("bfc"), [1, 2, 3], 2) if s.top == 2][0]
    params, lower = trainable_params(model, seg)
    assert {id(p) for p in lower} == {id(p) for p in model.block_params(1)}
    run = ProbeRun(spec, run_cfg("bfc", lower_lr_mult=0.1), progress=False, log=lambda s: None)
    groups = run._optimizer(params, lower).param_groups
    assert [g["lr_mult"] for g in groups] == [1.0, 0.1] and groups[1]["params"] == lower
    assert len(ProbeRun(spec, run_cfg("bfc"), progress=False, log=lambda s: None)
               ._optimizer(params, lower).param_groups) == 1


def test_lower_lr_mult_zero_keeps_lower_weights_and_small_mult_moves_them_less():
    def change(mult: float) -> float:
        r = ProbeRun(mlp_spec(0, bn=False), run_cfg("bfc", lower_lr_mult=mult, weight_decay=0.0), progress=False,
                     log=lambda s: None).run()
        return r["weight_change"][1][3]

    assert change(0.0) == 0.0
    assert 0.0 < change(0.1) < change(1.0)


def test_e2e_and_stagewise_share_the_budget():
    for method in ("e2e", "window:1"):
        r = ProbeRun(mlp_spec(0), run_cfg(method, epochs_per_stage=1), progress=False, log=lambda s: None).run()
        assert r["epochs"] == 3 and set(r["stage_metric"]) == {1, 2, 3}


# ---- batches ------------------------------------------------------------------------------------

def test_tensor_batches_are_seeded_and_plain_view_is_ordered():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    a, b = TensorBatches(x, y, 3, seed=4), TensorBatches(x, y, 3, seed=4)
    first = [yb.tolist() for _, yb in a]
    assert first == [yb.tolist() for _, yb in b]                 # same seed, same pass
    assert first != [yb.tolist() for _, yb in a]                 # the next pass reshuffles
    assert len(a) == 3 and all(len(v) == 3 for v in first)      # drop_last
    assert len(set(sum(first, []))) == 9                          # a permutation, the last one dropped
    view = plain(a, batch_size=4)
    assert [yb.tolist() for _, yb in view] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plain([(x, y)]) is None
    gx, gy = gather(view, limit=5)
    assert gy.tolist() == [0, 1, 2, 3, 4] and gx.shape == (5, 1)
    with pytest.raises(ValueError, match="inputs for"):
        TensorBatches(x, y[:5], 2)


# ---- the Python API and the command line ---------------------------------------------------------

def test_probe_api_writes_runs_summary_and_figure(tmp_path):
    cfg = SpecRunConfig()
    cfg.train.epochs_per_stage, cfg.train.device, cfg.probe.kind = 1, "cpu", "ridge"
    text = probe(lambda seed: mlp_spec(seed), ["e2e", "layerwise", "bfc"], seeds=[0], out=tmp_path, config=cfg,
                 progress=False)
    for m in ("e2e", "layerwise", "bfc"):
        res = json.loads((tmp_path / m / "seed0" / "result.json").read_text())
        assert res["config"]["method"] == m
        assert (tmp_path / m / "seed0" / "metrics.jsonl").is_file() and (tmp_path / m / "seed0" / "config.json").is_file()
    assert (tmp_path / "probe.png").is_file() and (tmp_path / "summary.md").read_text() == text
    assert "revert" in text and "| bfc |" in text


SPECS = {
    "syntax": "def make(seed:\n",
    "nofunc": "x = 1\n",
    "wrongtype": "def make(seed):\n    return 3\n",
    "notiny": "from bfclab.probe import Spec\ndef make(seed):\n    return None\n",
    "raises": "def make(seed):\n    raise KeyError('x_train')\n",
}


@pytest.mark.parametrize("name, extra, needle", [
    ("missing", [], "FILE.py"),
    ("syntax", [], "failed to load: SyntaxError"),
    ("nofunc", [], "no function 'make'"),
    ("wrongtype", [], "returned a int"),
    ("notiny", ["--tiny"], "--tiny"),
    ("raises", [], "make(seed=0) failed: KeyError"),
])
def test_bad_spec_one_line_error_before_any_file(tmp_path, capsys, name, extra, needle):
    f = tmp_path / f"{name}.py"
    if name in SPECS:
        f.write_text(SPECS[name])
    out = tmp_path / "out"
    assert probe_cli([str(f), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--methods", "e2e,deep"], "method"),
    (["--train.optimizer", "lbfgs"], "train.optimizer"),
    (["--train.lower_lr_mult", "-1"], "train.lower_lr_mult"),
    (["--probe.kind", "svm"], "probe.kind"),
    (["--seeds", "a"], "--seeds"),
])
def test_bad_options_one_line_error(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    assert probe_cli([str(EXAMPLES[0]), "--tiny", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err and not out.exists()


def test_load_factory_and_tiny():
    fn = load_factory(f"{ROOT / 'examples' / 'probe_resnet.py'}:make_digits")
    spec = make_spec(fn, 0, tiny=True)
    assert isinstance(spec, Spec) and len(spec.blocks) >= 2
    with pytest.raises(ConfigError, match="no function 'nope'"):
        load_factory(f"{ROOT / 'examples' / 'probe_resnet.py'}:nope")


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_runs_on_tiny_data_through_the_cli(tmp_path, capsys, example):
    funcs = ["make_mnist1d", "make_digits"] if example.stem == "probe_resnet" else ["make"]
    for func in funcs:
        out = tmp_path / func
        argv = [f"{example}:{func}", "--tiny", "--methods", "e2e,layerwise,bfc", "--seeds", "0", "--out", str(out),
                "--device", "cpu", "--train.epochs_per_stage", "1"]
        assert probe_cli(argv) == 0
        for m in ("e2e", "layerwise", "bfc"):
            res = json.loads((out / m / "seed0" / "result.json").read_text())
            assert res["config"]["tiny"] is True and res["blocks"] >= 2
        assert (out / "probe.png").is_file()
        layer = json.loads((out / "layerwise" / "seed0" / "result.json").read_text())
        assert layer["probe_own"] == layer["probe_final"]
    assert "| bfc |" in capsys.readouterr().out


def test_three_example_models():
    assert {e.stem for e in EXAMPLES} >= {"probe_mlp", "probe_resnet", "probe_transformer"}


# ---- the "how much" comparison ------------------------------------------------------------------

def fake(method: str, seed: int, wc: float, cost: float, random: float, acc: float = 0.9) -> dict:
    """A two-block result with block 1's weight change and revert costs given."""
    return {"method": method, "seed": seed, "blocks": 2, "task": "classification", "test_metric": acc,
            "weight_change": {1: {2: wc}}, "revert": {1: {"cost": cost, "random_cost": random}}}


@pytest.mark.parametrize("low, verdict", [
    ((0.1, 0.10, 0.00), "yes"),   # a tenth of the move keeps all of the revert cost, control zero
    ((0.1, 0.02, 0.00), "no"),    # the cost shrank below half
    ((0.8, 0.10, 0.00), "no"),    # it moved almost as far
    ((0.1, 0.10, 0.10), "no"),    # the random control costs as much
])
def test_small_move_large_effect_rule(low, verdict):
    from bfclab.probe.report import compare_table, compare_text

    jitter = (-0.001, 0.0, 0.001)
    base = {"bfc": [fake("bfc", s, 1.0 + j, 0.10 + j, 0.0) for s, j in enumerate(jitter)]}
    small = {"bfc": [fake("bfc", s, low[0] + j, low[1] + j, low[2]) for s, j in enumerate(jitter)]}
    row = [r for r in compare_table(base, small, ("1×", "0.1×")).splitlines() if r.startswith("| bfc")][0]
    assert row.rstrip(" |").endswith(verdict)
    text = compare_text(base, small, ("1×", "0.1×"))
    assert ("1 of 1 lower blocks" if verdict == "yes" else "0 of 1 lower blocks") in text
    assert f"{low[0]:.3f} ± 0.001 at 0.1× against 1.000 ± 0.001 at 1×" in text


def test_readme_snippet_runs(tmp_path, monkeypatch, capsys):
    """The README's use of the probe on a user's own model, exactly as printed there."""
    text = (ROOT / "README.md").read_text()
    code = [b for b in text.split("```python\n")[1:] if "from bfclab.probe import" in b][0].split("```")[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "| bfc |" in out and (tmp_path / "runs" / "my-probe" / "probe.png").is_file()
    assert len(list((tmp_path / "runs" / "my-probe").rglob("result.json"))) == 9
