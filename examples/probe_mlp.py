"""bfclab.probe on a plain MLP: four Linear-ReLU blocks on mnist1d (40 inputs, 10 classes).

    bfclab probe examples/probe_mlp.py --methods e2e,layerwise,window:1,bfc --seeds 0,1,2 \
        --out results/probe/mlp-mnist1d --train.lr 0.05

The model is an ordinary ``nn.Sequential``; ``split_sequential`` cuts it into blocks after every
ReLU, and every block gets a linear head.
"""

import torch
from torch import nn

from bfclab.images.config import ImageDataConfig
from bfclab.images.data import load
from bfclab.probe import Spec, TensorBatches, split_sequential


def make(seed: int, tiny: bool = False) -> Spec:
    data = load(ImageDataConfig(name="mnist1d", n_train=256 if tiny else 0, n_test=128 if tiny else 0))
    x_train, x_test = data.x_train.flatten(1), data.x_test.flatten(1)
    width = 16 if tiny else 256
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(40, width), nn.ReLU(), *[m for _ in range(3) for m in (nn.Linear(width, width), nn.ReLU())])
    return Spec(blocks=split_sequential(mlp, ends=[2, 4, 6, 8]),
                heads=lambda b: nn.Linear(width, 10),
                train=TensorBatches(x_train, data.y_train, 128, seed=seed),
                test=TensorBatches(x_test, data.y_test, 1000, shuffle=False, drop_last=False),
                name="MLP on mnist1d")
