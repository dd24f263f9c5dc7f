"""``bfclab images``: a ResNet grown block by block on real images, trained layerwise, with a
backward window k, with full backward feature correction, and end to end (PAPER_NOTES §5.3,
§5.4, §5.5, §7.2, §7.3 B).

    bfclab images --dataset mnist1d|digits|cifar10|cifar100 [--data-dir DIR]
                  --methods e2e,layerwise,window:1,window:2,bfc --seeds 0,1,2
                  --out DIR --device auto|cpu|cuda [--config FILE] [--section.key value ...]
    bfclab images --out DIR --report-only       # tables and figures again, from result files

Every (method, seed) run goes to ``OUT/<method>/seed<k>/`` (``window:1`` -> ``window-1``) with
``config.json``, ``metrics.jsonl``, ``result.json`` and ``filters.png``; a run whose
``result.json`` already holds the same config is kept, not trained again.  The experiment
directory gets ``experiment.json`` (wall time and machine conditions of the last invocation),
``summary.md`` and ``summary-<dataset>.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError, apply_mapping, load_file, parse_overrides, set_key
from ..results import atomic_write_bytes
from ..images import summary as S
from ..images.augment import canonical as canonical_augment
from ..images.config import DATASETS, ImageRunConfig, preset, validate
from ..images.data import ImageData, load
from ..images.figures import plot_stem_filters
from ..images.run import train_images
from ..probe import experiment as PE
from ..probe.report import block_table, plot

DEFAULT_METHODS = "e2e,layerwise,window:1,window:2,bfc"


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Define ``bfclab images`` on an ``add_subparsers()`` object; its default ``func`` is
    :func:`cmd_images`."""
    p = subparsers.add_parser("images", help="ResNet grown block by block: layerwise vs window:k vs bfc vs e2e")
    p.add_argument("--dataset", default="mnist1d", help=" | ".join(DATASETS) + " (default mnist1d)")
    p.add_argument("--data-dir", default=None, help="CIFAR: directory of the python-pickle files")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated integers (default 0,1,2)")
    p.add_argument("--out", default=None, help="experiment directory (default results/images/<dataset>)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default auto)")
    p.add_argument("--config", default=None, help="YAML/JSON file with any subset of the config keys")
    p.add_argument("--report-only", action="store_true", help="only rebuild the summary from stored results")
    p.add_argument("--overwrite", action="store_true", help="retrain runs whose stored result has a different config")
    p.add_argument("--figdir", default=None, help="with --report-only: draw the figures into DIR and link them "
                                                  "by bare file name (the bfclab report convention)")
    p.set_defaults(func=cmd_images)
    return p


def parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{what}: expected a comma-separated list, got {text!r}")
    return items


def parse_seeds(text: str) -> list[int]:
    items = parse_list(text, "seeds")
    if not all(t.lstrip("-").isdigit() for t in items):
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}")
    return [int(t) for t in items]


def build_config(args: argparse.Namespace, extra: list[str]) -> ImageRunConfig:
    """Dataset preset < --config FILE < --data-dir/--device < --key value overrides."""
    cfg = preset(args.dataset)
    if args.config:
        apply_mapping(cfg, load_file(args.config))
    if args.data_dir is not None:
        cfg.data.data_dir = args.data_dir
    if args.device is not None:
        cfg.train.device = args.device
    for key, value in parse_overrides(extra):
        set_key(cfg, key, value)
    if cfg.data.name != args.dataset:
        raise ConfigError(f"config key 'data.name': {cfg.data.name!r} differs from --dataset {args.dataset!r}")
    validate(cfg)
    return cfg


def missing_runs(base: ImageRunConfig, methods: list[str], seeds: list[int], out: Path) -> list[tuple[str, int]]:
    """The (method, seed) runs of the experiment without a result of their config under ``out``."""
    return PE.missing_runs(base, methods, seeds, out)


def run_experiment(base: ImageRunConfig, methods: list[str], seeds: list[int], out: Path,
                   progress: bool | None = None, log=None, data: ImageData | None = None,
                   overwrite: bool = False) -> str:
    """Train every (method, seed) into ``out`` through the probe's runner
    (:func:`bfclab.probe.experiment.run_all`: kept when done, experiment.json); return the summary.

    A run folder holding the result of a different config stops everything before any training
    (one-line error naming ``--overwrite``) unless ``overwrite``."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    loaded: dict[str, ImageData] = {}

    def prepare() -> None:  # data errors stop here, before any file
        loaded["data"] = data if data is not None else load(base.data)

    def train_one(cfg: ImageRunConfig, path: Path) -> dict:
        res = train_images(cfg, path, data=loaded["data"], progress=progress, log=log)
        plot_stem_filters(res, path / "filters.png")
        return res

    PE.run_all(base, methods, seeds, Path(out), train_one, lambda s: log(f"[images] {s}"), overwrite=overwrite,
               prepare=prepare)
    return summarize(out)


def _setup(runs: dict[str, list[dict]]) -> str:
    c = next(iter(runs.values()))[0]["config"]
    m, t = c["model"], c["train"]
    return (f"ResNet: stem + {m['blocks']} basic blocks (width {m['width']}, stride 2 and double width at "
            f"blocks {m['downsample']}, kernel {m['kernel']}, stem kernel {m['stem_kernel']}); "
            f"{t['epochs_per_stage']} epochs per stage, {t['epochs_per_stage'] * m['blocks']} in all for every "
            f"method; {t['optimizer']} lr {t['lr']} ({t['schedule']} schedule restarted at every stage), "
            f"momentum {t['momentum']}, weight decay {t['weight_decay']}, batch {t['batch_size']}; augmentation "
            f"{canonical_augment(c['data']['augment'], c['data']['name'])}; "
            f"probe {c['probe']['kind']} on features pooled to {c['probe']['pool']} per axis.")


def _figures(dataset: str, runs: dict[str, list[dict]], out: Path, figdir: Path | None,
             tag: str | None = None) -> tuple[str, str]:
    """Draw the summary figure (and, with ``figdir``, each method's stem-filter figure of its
    first seed) from the stored results; return the Markdown links.  Without ``figdir`` the
    summary figure goes to ``out`` and links keep their paths; with it, links are bare file
    names in ``figdir`` (the ``bfclab report`` convention)."""
    if figdir is None:
        fig = out / f"summary-{dataset}.png"
        plot(runs, fig, title=f"{dataset}: mean ± std over seeds")
        filters = {m: Path(rs[0]["_dir"]) / "filters.png" for m, rs in runs.items()}
        return f"![summary]({fig})", " · ".join(f"[{m}]({p})" for m, p in filters.items())
    figdir.mkdir(parents=True, exist_ok=True)
    tag = tag or dataset
    name = f"images-{tag}-summary.png"
    plot(runs, figdir / name, title=f"{dataset}: mean ± std over seeds")
    links = []
    for m, rs in runs.items():
        fname = f"images-{tag}-filters-{m.replace(':', '-')}.png"
        plot_stem_filters(rs[0], figdir / fname)
        links.append(f"[{m}]({fname})")
    return f"![summary]({name})", " · ".join(links)


def markdown(out_dir: str | Path, figdir: str | Path | None = None, tag: str | None = None) -> str:
    """Markdown tables and figure links for every data set under ``out_dir``, rebuilt from the
    stored result files only (figures are redrawn, see :func:`_figures`)."""
    out = Path(out_dir)
    found = S.collect(out)
    if not found:
        ds = out.name if out.name in DATASETS else "mnist1d"
        return f"No image results under `{out}`: run `bfclab images --dataset {ds} --out {out}`.\n"
    parts = []
    for dataset, runs in found.items():
        fig, filters = _figures(dataset, runs, out, Path(figdir) if figdir is not None else None, tag)
        parts.append("\n\n".join(([f"### {dataset}"] if len(found) > 1 else []) + [
            _setup(runs),
            "**Test accuracy** (mean ± sample std over seeds; per stage = the network of that stage, for e2e "
            "the full network at the same epoch; gap recovered = (acc − acc_layerwise) / (acc_e2e − "
            "acc_layerwise) from the means)", S.accuracy_table(runs),
            "**Relative weight change** ‖W − W_ref‖/‖W_ref‖ of each lower block's conv weights, W_ref = its "
            "weights at the end of its own stage (for e2e: at the same epoch)", S.weight_change_table(runs),
            "**Direction change** of the same filters, RMS over output filters of ‖w/‖w‖ − w_ref/‖w_ref‖‖ "
            "(scale-free: each conv feeds a batch norm; 0 = only rescaled, √2 = orthogonal)",
            S.weight_change_table(runs, "direction_change"),
            "**Stem filters alone**, ‖W − W_ref‖/‖W_ref‖ (the first layer, shown in the filter figures)",
            S.stem_table(runs),
            "**Per block** (bfclab.probe): linear probe (a linear classifier on the block's pooled features) at "
            "the end of the block's own stage → at the end (gain ± std, pp); relative weight change by the end; "
            "linear CKA of the block's features between the end of its own stage and the end; **does the "
            "change matter?** the final network's loss of test accuracy (pp) when the block is put back to its "
            "end-of-own-stage state (revert cost), and when it gets a random change of the same norm instead",
            block_table(runs),
            "**Time**", S.time_table(runs),
            f"Figures: {fig} — stem filters after stage 1 vs at the end (first seed): {filters}",
        ]))
    cond = PE.conditions(out)
    return "\n\n".join(parts) + (f"\n\n{cond}" if cond else "") + "\n"


def summarize(out_dir: str | Path) -> str:
    """:func:`markdown` with the figures next to the results; also written to ``summary.md``."""
    text = markdown(out_dir)
    if Path(out_dir).is_dir():
        atomic_write_bytes(Path(out_dir) / "summary.md", text.encode())
    return text


def report_section(out_dir: str | Path, figdir: str | Path | None = None, tag: str | None = None) -> str:
    """The ``bfclab report`` section of one image experiment directory: Markdown tables and
    figure links regenerated purely from the stored result files.  With ``figdir`` the figures
    are drawn there and linked by bare file name (named after ``tag``, default the data set)."""
    return markdown(out_dir, figdir, tag)


def cmd_images(args: argparse.Namespace, extra: list[str]) -> int:
    """The ``bfclab images`` command."""
    out = Path(args.out) if args.out else Path("results/images") / args.dataset
    if args.report_only:
        if extra:
            raise ConfigError(f"--report-only takes no overrides, got {' '.join(extra)}")
        print(summarize(out) if args.figdir is None else report_section(out, args.figdir))
        return 0
    base = build_config(args, extra)
    methods = parse_list(args.methods, "methods")
    seeds = parse_seeds(args.seeds)
    print(run_experiment(base, methods, seeds, out, overwrite=args.overwrite))
    return 0
