"""The deep ReLU MLP baseline (bfclab.baselines.mlp, issue 12 part 1): its depth follows the deep
learner's, its He initialisation keeps the activations' second moment through depth (checked
against the closed form by Monte Carlo over draws), and it is reproducible from its seed."""

import math

import torch

from bfclab.baselines import default_options, make_estimator
from bfclab.baselines.mlp import DeepReLUNet
from bfclab.config import TargetConfig
from bfclab.target import Target

F64 = torch.float64


def test_depth_is_one_hidden_layer_per_level_the_learner_trains():
    assert default_options("mlp-relu")["depth"] == TargetConfig().L - 1
    t5 = Target.from_config(TargetConfig(d=8, L=5, widths=[2], mc_samples=2000, var_samples=20000))
    assert default_options("mlp-relu", t5)["depth"] == 4
    est = make_estimator("mlp-relu", {"width": 8, "steps": 2, "progress": False}, target=t5)
    x = torch.randn(20, 8, dtype=F64)
    est.fit(x, x[:, 0] ** 2)
    assert len(est.net_.hidden) == 4 and all(layer.out_features == 8 for layer in est.net_.hidden)


def test_he_init_keeps_the_mean_square_activation_through_depth():
    """With W ~ N(0, 2/fan_in) and zero biases, E[relu(Wh)_i^2] = |h|^2 / fan_in exactly: every
    layer's mean square activation equals, in expectation over the draw and given the inputs, the
    inputs' mean square.  Averaged over 200 draws of a width-256 net on 64 fixed inputs, the relative
    standard error is ~0.2 % at the first layer and grows with depth (the layers' fluctuations
    compound) to ~1 % at the fourth: the 5 % tolerance is five standard errors there."""
    d, width, depth, draws = 16, 256, 4, 200
    x = torch.randn(64, d, generator=torch.Generator().manual_seed(0), dtype=F64)
    sums = torch.zeros(depth, dtype=F64)
    for s in range(draws):  # no_grad below: only forward values are read
        net = DeepReLUNet(d, width, depth, torch.Generator().manual_seed(s + 1)).double()
        h = x
        with torch.no_grad():
            for i, layer in enumerate(net.hidden):
                h = torch.relu(layer(h))
                sums[i] += h.pow(2).mean()
    ms = sums / draws
    target = float(x.pow(2).mean())
    assert torch.allclose(ms, torch.full_like(ms, target), rtol=0.05), (ms, target)


def test_same_seed_same_predictions_other_seed_other():
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(3), dtype=F64)
    y = x[:, 0] * x[:, 1]
    opts = {"width": 16, "steps": 50, "depth": 2, "progress": False}
    a = make_estimator("mlp-relu", opts, seed=5).fit(x, y).predict(x)
    b = make_estimator("mlp-relu", opts, seed=5).fit(x, y).predict(x)
    c = make_estimator("mlp-relu", opts, seed=6).fit(x, y).predict(x)
    assert torch.equal(a, b)  # one machine, one operation order
    assert not torch.allclose(a, c)
    assert math.isfinite(float(a.abs().max()))
