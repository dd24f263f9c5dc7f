"""``bfclab.probe``: measure backward feature correction in any PyTorch model (PAPER_NOTES §5.3-§5.5,
§7.3 B).

Give the model as an ordered list of blocks (any ``nn.Module``s) with a head per block, train
and test batches and the task; the probe grows and trains it with the growth protocols
(``e2e``, ``layerwise``, ``window:k``, ``bfc``) on one budget and measures, per block: the test
metric at every stage end, the relative weight change after the block's own stage, linear-probe
quality at the end of its own stage and at the end (the correction gain), linear CKA between
those two points, and the revert test (the cost of putting the block back).  A ten-line use::

    import torch
    from torch import nn
    from bfclab.probe import Spec, TensorBatches, probe

    x = torch.randn(2000, 20, generator=torch.Generator().manual_seed(0))           # your data
    y = (x[:, 0] * x[:, 1] > 0).long() + 2 * (x[:, 2] * x[:, 3] > 0).long()
    def make(seed):                                               # your model: blocks + a head per block
        torch.manual_seed(seed)
        blocks = [nn.Sequential(nn.Linear(20 if b == 0 else 64, 64), nn.ReLU()) for b in range(4)]
        return Spec(blocks, heads=lambda b: nn.Linear(64, 4), train=TensorBatches(x[:1500], y[:1500], 100, seed=seed),
                    test=TensorBatches(x[1500:], y[1500:], 500, shuffle=False))
    print(probe(make, ["e2e", "layerwise", "bfc"], seeds=[0, 1, 2], out="runs/my-probe"))

(the README's snippet, run by the tests), or ``bfclab probe my_spec.py --methods e2e,layerwise,bfc --seeds 0,1,2 --out runs/my-probe``.

Modules: :mod:`.stack` (blocks + heads, splitters), :mod:`.data` (batches), :mod:`.config`
(typed training/measurement config), :mod:`.measure`, :mod:`.train` (one run),
:mod:`.experiment` (protocols x seeds, resumable), :mod:`.report` (tables, the figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .config import MeasureConfig, ProbeRunConfig, TrainConfig
from .data import TensorBatches
from .experiment import SpecRunConfig, load_factory, run_spec
from .measure import linear_cka, pooled, tokens_mean
from .stack import Stack, split_resnet, split_sequential, split_transformer
from .train import ProbeRun, Spec

__all__ = ["MeasureConfig", "ProbeRun", "ProbeRunConfig", "Spec", "SpecRunConfig", "Stack", "TensorBatches",
           "TrainConfig", "linear_cka", "load_factory", "pooled", "probe", "split_resnet", "split_sequential",
           "split_transformer", "tokens_mean"]


def probe(make: Callable[..., Spec], methods: Sequence[str] = ("e2e", "layerwise", "window:1", "bfc"),
          seeds: Sequence[int] = (0, 1, 2), out: str | Path = "runs/probe", config: SpecRunConfig | None = None,
          overwrite: bool = False, progress: bool | None = None) -> str:
    """Run ``make(seed) -> Spec`` under every protocol and seed into ``out``; return the Markdown
    summary (tables and the diagnostic figure ``out/probe.png``).  ``config``: training and
    measurement settings (default :class:`SpecRunConfig`)."""
    return run_spec(make, config or SpecRunConfig(), list(methods), list(seeds), Path(out), progress=progress,
                    overwrite=overwrite)
