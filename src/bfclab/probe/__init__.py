"""``bfclab.probe``: measure backward feature correction in any PyTorch model (PAPER_NOTES §5.3-§5.5,
§7.3 B).

Give the model as an ordered list of blocks (any ``nn.Module``s) with a head per block, train
and test batches and the task; the probe grows and trains it with the growth protocols
(``e2e``, ``layerwise``, ``window:k``, ``bfc``) on one budget and measures, per block: the test
metric at every stage end, the relative weight change after the block's own stage, linear-probe
quality at the end of its own stage and at the end (the correction gain), linear CKA between
those two points, and the revert test (the cost of putting the block back).  A ten-line use::

    from torch import nn
    from bfclab.probe import Spec, TensorBatches, probe

    def make(seed):
        torch.manual_seed(seed)
        blocks = [nn.Sequential(nn.Linear(40, 64), nn.ReLU()) for _ in range(3)]
        blocks[1:] = [nn.Sequential(nn.Linear(64, 64), nn.ReLU()) for _ in range(2)]
        return Spec(blocks, heads=lambda b: nn.Linear(64, 10),
                    train=TensorBatches(x_train, y_train, 128, seed=seed), test=TensorBatches(x_test, y_test, 1000, shuffle=False))

    summary = probe(make, ["e2e", "layerwise", "bfc"], seeds=[0, 1, 2], out="runs/my-probe")

or ``bfclab probe my_spec.py --methods e2e,layerwise,bfc --seeds 0,1,2 --out runs/my-probe``.

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
