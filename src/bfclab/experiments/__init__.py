"""Experiments as commands: ``bfclab experiment NAME`` runs one, ``bfclab report`` all of them.

:func:`registry` is the one list: the CLI's ``experiment`` choices, the report's sections (in
this order) and the image experiments all come from it.  A synthetic experiment is a grid run
through the resumable sweep runner (:mod:`bfclab.sweep`) plus summaries that turn the stored run
directories into Markdown and figures (``correction`` also has the mechanism analysis of its
checkpoints); an image experiment trains its (method, seed) runs with :mod:`bfclab.images` and
is summarised from their result files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from ..images.config import preset
from . import correction, gap, images, mechanism, sample_complexity, window
from .common import Section, missing, run_grid

IMAGE_METHODS = ["e2e", "layerwise", "window:1", "window:2", "bfc"]
IMAGE_QUICK_METHODS = ["e2e", "layerwise", "bfc"]


@dataclass(frozen=True)
class Experiment:
    """A grid experiment: ``spec(quick)`` is its grid, ``summaries`` turn its stored runs into
    report sections (each ``summarize(root, figdir, quick=, command=) -> Section``)."""

    name: str
    spec: Callable[..., dict]
    summaries: tuple[Callable[..., Section], ...]
    workers: int | None = None  # None: the caller's choice
    threads: int = 1  # torch threads per cell
    in_quick: bool = True  # part of `bfclab report --quick`

    def folder(self, results: Path) -> Path:
        return Path(results) / self.name

    def command(self, quick: bool, results: Path) -> str:
        return f"bfclab experiment {self.name}" + (" --quick" if quick else "")

    def missing(self, results: Path, quick: bool) -> int:
        return len(missing(self.folder(results), self.spec(quick)))

    def compute(self, results: Path, quick: bool, workers: int, overwrite: bool = False, batched: bool = True) -> None:
        """Run the cells without a result of their config (all of them resumable; ``batched``:
        deep cells of one growth plan train together, :mod:`bfclab.batched`)."""
        run_grid(self.spec(quick), self.folder(results), workers=self.workers or workers, threads=self.threads,
                 overwrite=overwrite, batched=batched)

    def sections(self, results: Path, figdir: Path, quick: bool) -> list[Section]:
        return [s(self.folder(results), figdir, quick=quick, command=self.command(quick, results))
                for s in self.summaries]


@dataclass(frozen=True)
class ImageExperiment:
    """The growth protocols on real images (PAPER_NOTES §7.3 B) for one data set: every method of
    ``methods`` with seeds 0-2 on the data set's preset (``--quick``: 3 methods, seed 0, one epoch
    a stage)."""

    dataset: str
    methods: list[str] = field(default_factory=lambda: list(IMAGE_METHODS))
    in_quick: bool = True

    @property
    def name(self) -> str:
        return f"images-{self.dataset}"

    def folder(self, results: Path) -> Path:
        return Path(results) / "images" / self.dataset

    def plan(self, quick: bool):
        base = preset(self.dataset)
        if quick:
            base.train.epochs_per_stage = 1
            return base, IMAGE_QUICK_METHODS, [0]
        return base, self.methods, [0, 1, 2]

    def command(self, quick: bool, results: Path) -> str:
        cmd = f"bfclab images --dataset {self.dataset}"
        if quick:
            cmd += f" --methods {','.join(IMAGE_QUICK_METHODS)} --seeds 0 --train.epochs_per_stage 1"
        return f"{cmd} --out {self.folder(results)}"

    def missing(self, results: Path, quick: bool) -> int:
        return len(images.missing_runs(*self.plan(quick), self.folder(results)))

    def compute(self, results: Path, quick: bool, workers: int, overwrite: bool = False, batched: bool = True) -> None:
        """Train the missing (method, seed) runs one after another (``batched`` does not apply)."""
        images.run_experiment(*self.plan(quick), self.folder(results), progress=False, log=lambda s: None,
                              overwrite=overwrite)

    def sections(self, results: Path, figdir: Path, quick: bool) -> list[Section]:
        text = images.report_section(self.folder(results), figdir)
        return [Section(f"images: {self.dataset}", f"Command: `{self.command(quick, results)}`.\n\n{text}")]


def registry() -> dict[str, Experiment | ImageExperiment]:
    """Every experiment, in the report's order."""
    exps: list[Experiment | ImageExperiment] = [
        Experiment("correction", correction.spec, (correction.summarize, mechanism.summarize)),
        Experiment("window", window.spec, (window.summarize,)),
        Experiment("gap", gap.spec, (gap.summarize,)),
        Experiment("classification", partial(correction.spec, task="classification"),
                   (partial(correction.summarize, task="classification"),)),
        Experiment("kernel-limit", sample_complexity.limit_spec, (sample_complexity.summarize_limit,),
                   workers=1, threads=2),
        Experiment("sample-complexity", sample_complexity.spec, (sample_complexity.summarize,)),
        ImageExperiment("mnist1d", in_quick=False),
        ImageExperiment("digits"),
    ]
    return {e.name: e for e in exps}
