"""bfclab.probe on a torchvision-style ResNet (``conv1``/``bn1``/``relu``/``maxpool``, then
``layer1..layer3``, ``fc``) on mnist1d (1-D) or scikit-learn's digits (2-D).

    bfclab probe examples/probe_resnet.py:make_mnist1d --out results/probe/resnet-mnist1d
    bfclab probe examples/probe_resnet.py:make_digits  --out results/probe/resnet-digits

``split_resnet`` turns the model's stages into blocks (the stem goes with the first); each block
gets a pooled linear head for its width.  The model's own ``fc`` is not used.
"""

import torch
from torch import nn

from bfclab.images.config import ImageDataConfig
from bfclab.images.data import load
from bfclab.images.resnet import BasicBlock, Head
from bfclab.probe import Spec, TensorBatches, split_resnet


class TinyResNet(nn.Module):
    """The torchvision layout at CPU scale: a stem and three stages of one basic block each."""

    def __init__(self, dim: int, in_channels: int, classes: int, width: int):
        super().__init__()
        Conv, BN = (nn.Conv1d, nn.BatchNorm1d) if dim == 1 else (nn.Conv2d, nn.BatchNorm2d)
        self.conv1, self.bn1, self.relu = Conv(in_channels, width, 5, padding=2, bias=False), BN(width), nn.ReLU()
        self.maxpool = nn.Identity()  # inputs are small; torchvision's stride-2 max-pool would halve them
        self.layer1 = BasicBlock(dim, width, width, 1, 3)
        self.layer2 = BasicBlock(dim, width, 2 * width, 2, 3)
        self.layer3 = BasicBlock(dim, 2 * width, 4 * width, 2, 3)
        self.widths = [width, 2 * width, 4 * width]
        self.fc = Head(dim, 4 * width, classes)


def _make(dataset: str, seed: int, tiny: bool) -> Spec:
    data = load(ImageDataConfig(name=dataset, n_train=192 if tiny else 0, n_test=96 if tiny else 0))
    torch.manual_seed(seed)
    net = TinyResNet(data.dim, data.in_channels, data.num_classes, 4 if tiny else 32)
    return Spec(blocks=split_resnet(net), heads=lambda b: Head(data.dim, net.widths[b - 1], data.num_classes),
                train=TensorBatches(data.x_train, data.y_train, 64 if dataset == "digits" else 128, seed=seed),
                test=TensorBatches(data.x_test, data.y_test, 1000, shuffle=False, drop_last=False),
                name=f"ResNet on {dataset}")


def make_mnist1d(seed: int, tiny: bool = False) -> Spec:
    return _make("mnist1d", seed, tiny)


def make_digits(seed: int, tiny: bool = False) -> Spec:
    return _make("digits", seed, tiny)


make = make_mnist1d
