"""Experiments as commands: ``bfclab experiment NAME`` runs one, ``bfclab report`` all of them.

:func:`registry` is the one list: the CLI's ``experiment`` choices, the report's sections (in
this order) and the image experiments all come from it.  A synthetic experiment is a grid run
through the resumable sweep runner (:mod:`bfclab.sweep`) plus summaries that turn the stored run
directories into Markdown and figures (``correction`` also has the mechanism analysis of its
checkpoints); an image experiment trains its (method, seed) runs with :mod:`bfclab.images` and
is summarised from their result files; a probe experiment runs one of the example models of
``examples/probe_*.py`` through :mod:`bfclab.probe`.  Each section names the document it goes
to (``RESULTS.md``, or ``PROBE.md`` for the probe's examples and the "how much" study).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from ..config import ConfigError, set_key
from ..images.config import preset
from ..probe import experiment as PE
from ..probe import report as PR
from ..probe.config import validate as validate_probe
from . import correction, gap, hierarchies, images, mechanism, sample_complexity, scaling, window
from .common import Section, missing, run_grid

IMAGE_METHODS = ["e2e", "layerwise", "window:1", "window:2", "bfc"]
IMAGE_QUICK_METHODS = ["e2e", "layerwise", "bfc"]
PROBE_METHODS = ["e2e", "layerwise", "window:1", "bfc"]
REPO = Path(__file__).resolve().parents[3]  # examples/ lives beside src/


def in_process(name: str, executor: str) -> None:
    """Image and probe experiments train their runs one after another in this process."""
    if executor != "process":
        raise ConfigError(f"--executor: experiment '{name}' trains its runs one after another in this process; "
                          f"accepted: process")


def _flags(overrides: tuple) -> str:
    return "".join(f" --{k} {v}" for k, v in overrides)


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

    def compute(self, results: Path, quick: bool, workers: int, overwrite: bool = False, batched: bool = True,
                executor: str = "process", address: str | None = None) -> None:
        """Run the cells without a result of their config (all of them resumable; ``batched``:
        deep cells of one growth plan train together, :mod:`bfclab.batched`; ``executor``:
        ``process`` or ``ray`` at ``address``, :func:`bfclab.sweep.make_executor`)."""
        run_grid(self.spec(quick), self.folder(results), workers=self.workers or workers, threads=self.threads,
                 overwrite=overwrite, batched=batched, executor=executor, address=address)

    def sections(self, results: Path, figdir: Path, quick: bool) -> list[Section]:
        return [s(self.folder(results), figdir, quick=quick, command=self.command(quick, results))
                for s in self.summaries]


@dataclass(frozen=True)
class AdaptiveExperiment:
    """An experiment whose cells are chosen as it runs (``scaling``: the searches of
    :mod:`bfclab.scaling`, rounds of sweeps into one resumable folder).  ``only`` (the text of
    ``--only``, ``module.parse_only``) restricts the computing to a part of the plan; its summary
    shows whatever the stored cells finish, so it renders a partial run too."""

    name: str
    module: object  # plan(quick), parse_only, select, drive(plan, root, compute, ...), missing_count, summarize
    in_quick: bool = True
    renders_partial: bool = True

    def folder(self, results: Path) -> Path:
        return Path(results) / self.name

    def command(self, quick: bool, results: Path) -> str:
        return f"bfclab experiment {self.name}" + (" --quick" if quick else "")

    def plan(self, quick: bool, only: str | None = None):
        p = self.module.plan(quick)
        return self.module.select(p, self.module.parse_only(only, p)) if only else p

    def missing(self, results: Path, quick: bool, only: str | None = None) -> int:
        return self.module.missing_count(self.plan(quick, only), self.folder(results))

    def compute(self, results: Path, quick: bool, workers: int, overwrite: bool = False, batched: bool = True,
                executor: str = "process", address: str | None = None, only: str | None = None) -> None:
        """Run the searches (of ``only``'s part of the plan) to their end (cells already stored are
        reused; ``overwrite`` does not apply: a search's cells are defined by the stored ones)."""
        self.module.drive(self.plan(quick, only), self.folder(results), compute=True, workers=workers,
                          batched=batched, executor=executor, address=address)

    def sections(self, results: Path, figdir: Path, quick: bool) -> list[Section]:
        return [self.module.summarize(self.folder(results), figdir, quick=quick,
                                      command=self.command(quick, results))]


@dataclass(frozen=True)
class ImageExperiment:
    """The growth protocols on real images (PAPER_NOTES §7.3 B) for one data set: every method of
    ``methods`` with seeds 0-2 on the data set's preset (``--quick``: 3 methods, seed 0, one epoch
    a stage)."""

    dataset: str
    methods: list[str] = field(default_factory=lambda: list(IMAGE_METHODS))
    in_quick: bool = True
    variant: str = ""        # results/images/<dataset>-<variant>, the preset with ``overrides``
    overrides: tuple = ()    # ((dotted key, value), ...)
    doc: str = "RESULTS.md"

    @property
    def tag(self) -> str:
        return self.dataset + (f"-{self.variant}" if self.variant else "")

    @property
    def name(self) -> str:
        return f"images-{self.tag}"

    def folder(self, results: Path) -> Path:
        return Path(results) / "images" / self.tag

    def plan(self, quick: bool):
        base = preset(self.dataset)
        for key, value in self.overrides:
            set_key(base, key, value)
        if quick:
            base.train.epochs_per_stage = 1
            return base, IMAGE_QUICK_METHODS, [0]
        return base, self.methods, [0, 1, 2]

    def command(self, quick: bool, results: Path) -> str:
        cmd = f"bfclab images --dataset {self.dataset}"
        if quick:
            cmd += f" --methods {','.join(IMAGE_QUICK_METHODS)} --seeds 0 --train.epochs_per_stage 1"
        elif self.methods != IMAGE_METHODS:
            cmd += f" --methods {','.join(self.methods)}"
        return f"{cmd}{_flags(self.overrides)} --out {self.folder(results)}"

    def missing(self, results: Path, quick: bool) -> int:
        return len(images.missing_runs(*self.plan(quick), self.folder(results)))

    def compute(self, results: Path, quick: bool, workers: int, overwrite: bool = False, batched: bool = True,
                executor: str = "process", address: str | None = None) -> None:
        """Train the missing (method, seed) runs one after another (``batched`` does not apply)."""
        in_process(self.name, executor)
        images.run_experiment(*self.plan(quick), self.folder(results), progress=False, log=lambda s: None,
                              overwrite=overwrite)

    def sections(self, results: Path, figdir: Path, quick: bool) -> list[Section]:
        text = images.report_section(self.folder(results), figdir, self.tag)
        out = [Section(f"images: {self.tag}", f"Command: `{self.command(quick, results)}`.\n\n{text}", self.doc)]
        if self.variant:
            out.append(self.comparison(results, quick))
        return out

    def comparison(self, results: Path, quick: bool) -> Section:
        """This variant against the data set's own experiment (``results/images/<dataset>``),
        protocol by protocol: the "how much" answer (PAPER_NOTES §5.5)."""
        plain = ImageExperiment(self.dataset)
        base, low = PR.collect(plain.folder(results), "images"), PR.collect(self.folder(results), "images")
        title = f"how much: {self.tag} against {self.dataset}"
        if not base or not low:
            return Section(title, f"Needs the runs of both `{plain.command(quick, results)}` and "
                                  f"`{self.command(quick, results)}`.", self.doc)
        labels = ("the preset", ", ".join(f"{k} = {v}" for k, v in self.overrides) or self.variant)
        text = (f"Commands: `{plain.command(quick, results)}` and `{self.command(quick, results)}`.\n\n"
                f"{PR.compare_text(base, low, labels)}\n\n"
                f"**Per lower block**, {labels[0]} → {labels[1]} (mean ± sample std over seeds)\n\n"
                f"{PR.compare_table(base, low, labels)}")
        return Section(title, text, self.doc)


@dataclass(frozen=True)
class ProbeExperiment:
    """An example model of :mod:`bfclab.probe` (``examples/probe_*.py``, PAPER_NOTES §7.3 B) at
    full size: every method of ``methods`` with seeds 0-2 and the example's ``overrides``
    (``--quick``: the factory's tiny data, e2e / layerwise / bfc, seed 0, one epoch a stage)."""

    short: str              # results/probe/<short>; the experiment's name is probe-<short>
    spec: str               # FILE.py[:FUNC], relative to the repository
    title: str
    overrides: tuple = ()   # ((dotted key, value), ...): the example's documented settings
    methods: list[str] = field(default_factory=lambda: list(PROBE_METHODS))
    in_quick: bool = True
    doc: str = "PROBE.md"

    @property
    def name(self) -> str:
        return f"probe-{self.short}"

    def folder(self, results: Path) -> Path:
        return Path(results) / "probe" / self.short

    def plan(self, quick: bool):
        cfg = PE.SpecRunConfig(spec=self.spec, tiny=quick)
        for key, value in self.overrides:
            set_key(cfg, key, value)
        if quick:
            cfg.train.epochs_per_stage = 1
        validate_probe(cfg)
        return cfg, (IMAGE_QUICK_METHODS if quick else self.methods), ([0] if quick else [0, 1, 2])

    def command(self, quick: bool, results: Path) -> str:
        _, methods, seeds = self.plan(quick)
        extra = " --tiny --train.epochs_per_stage 1" if quick else ""
        return (f"bfclab probe {self.spec} --methods {','.join(methods)} --seeds {','.join(map(str, seeds))}"
                f"{_flags(self.overrides)}{extra} --out {self.folder(results)}")

    def missing(self, results: Path, quick: bool) -> int:
        return len(PE.missing_runs(*self.plan(quick), self.folder(results)))

    def compute(self, results: Path, quick: bool, workers: int, overwrite: bool = False, batched: bool = True,
                executor: str = "process", address: str | None = None) -> None:
        """Train the missing runs one after another (``batched`` does not apply)."""
        in_process(self.name, executor)
        path, _, func = self.spec.partition(":")
        factory = PE.load_factory(f"{REPO / path}:{func}" if func else str(REPO / path))
        PE.run_spec(factory, *self.plan(quick), self.folder(results), progress=False, log=lambda s: None,
                    overwrite=overwrite)

    def sections(self, results: Path, figdir: Path, quick: bool) -> list[Section]:
        text = PE.markdown(self.folder(results), figdir, prefix=self.name)
        return [Section(f"probe: {self.title}", f"Command: `{self.command(quick, results)}`.\n\n{text}", self.doc)]


def registry() -> dict[str, Experiment | AdaptiveExperiment | ImageExperiment | ProbeExperiment]:
    """Every experiment, in the report's order."""
    exps: list[Experiment | AdaptiveExperiment | ImageExperiment | ProbeExperiment] = [
        Experiment("correction", correction.spec, (correction.summarize, mechanism.summarize)),
        Experiment("window", window.spec, (window.summarize,)),
        Experiment("gap", gap.spec, (gap.summarize,)),
        Experiment("gap-slopes", gap.slopes_spec, (gap.slopes_summary,)),
        Experiment("classification", partial(correction.spec, task="classification"),
                   (partial(correction.summarize, task="classification"),)),
        Experiment("kernel-limit", sample_complexity.limit_spec, (sample_complexity.summarize_limit,),
                   workers=1, threads=2),
        Experiment("seqkernel-limit", sample_complexity.seq_spec, (sample_complexity.summarize_seq,)),
        Experiment("sample-complexity-tuned", sample_complexity.tuned_spec, (sample_complexity.summarize_tuned,)),
        Experiment("sample-complexity", sample_complexity.spec, (sample_complexity.summarize,)),
        AdaptiveExperiment("scaling", scaling),
        Experiment("rhm", hierarchies.rhm_spec, (hierarchies.rhm_summary,)),
        Experiment("staircase", hierarchies.staircase_spec, (hierarchies.staircase_summary,)),
        ImageExperiment("mnist1d", in_quick=False),
        ImageExperiment("digits"),
        ProbeExperiment("mlp-mnist1d", "examples/probe_mlp.py", "an MLP on mnist1d", (("train.lr", 0.05),)),
        ProbeExperiment("resnet-mnist1d", "examples/probe_resnet.py:make_mnist1d", "the ResNet on mnist1d",
                        in_quick=False),
        ProbeExperiment("resnet-digits", "examples/probe_resnet.py:make_digits", "the ResNet on digits",
                        in_quick=False),
        ProbeExperiment("transformer-rules", "examples/probe_transformer.py",
                        "a transformer encoder on sequences of composed local rules",
                        (("train.optimizer", "adam"), ("train.lr", 0.003), ("train.weight_decay", 0.01),
                         ("train.epochs_per_stage", 10))),
        ImageExperiment("mnist1d", in_quick=False, variant="lower0.1", overrides=(("train.lower_lr_mult", 0.1),),
                        doc="PROBE.md"),
    ]
    return {e.name: e for e in exps}
