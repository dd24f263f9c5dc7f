"""``bfclab probe SPEC``: the growth protocols and block measurements of :mod:`bfclab.probe` on a
user's own model (PAPER_NOTES §5.3-§5.5, §7.3 B).

    bfclab probe FILE.py[:FUNC] [--methods e2e,layerwise,window:1,bfc] [--seeds 0,1,2] [--out DIR]
                 [--device auto|cpu|cuda] [--tiny] [--config FILE] [--train.lr 0.05 ...] [--overwrite]
    bfclab probe --out DIR --report-only      # tables and figure again, from result files

FUNC (default ``make``) takes the seed (and optionally ``tiny=``) and returns a
:class:`bfclab.probe.Spec`.  Runs go to ``OUT/<method>/seed<k>/`` (default OUT:
``runs/probe/<file stem>``); see :mod:`bfclab.probe.experiment`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError, apply_mapping, load_file, parse_overrides, set_key
from ..probe.config import validate
from ..probe.experiment import SpecRunConfig, load_factory, run_spec, summarize
from .images import parse_list, parse_seeds

DEFAULT_METHODS = "e2e,layerwise,window:1,bfc"


def add_subparser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("probe", help="backward feature correction in your own model (growth protocols, "
                                            "probes, revert test)")
    p.add_argument("spec", nargs="?", default=None, help="FILE.py[:FUNC], FUNC(seed) -> bfclab.probe.Spec (default FUNC: make)")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated integers (default 0,1,2)")
    p.add_argument("--out", default=None, help="experiment directory (default runs/probe/<spec file stem>)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default auto)")
    p.add_argument("--tiny", action="store_true", help="ask the spec for its tiny size (FUNC(seed, tiny=True))")
    p.add_argument("--config", default=None, help="YAML/JSON file with any subset of the train.* / probe.* keys")
    p.add_argument("--report-only", action="store_true", help="only rebuild the summary from stored results")
    p.add_argument("--overwrite", action="store_true", help="retrain runs whose stored result has a different config")
    p.set_defaults(func=cmd_probe)
    return p


def build_config(args: argparse.Namespace, extra: list[str]) -> SpecRunConfig:
    """Defaults < --config FILE < --device/--tiny < --key value overrides; the spec as given."""
    cfg = SpecRunConfig(spec=args.spec, tiny=bool(args.tiny))
    if args.config:
        apply_mapping(cfg, load_file(args.config))
    if args.device is not None:
        cfg.train.device = args.device
    for key, value in parse_overrides(extra):
        set_key(cfg, key, value)
    cfg.spec, cfg.tiny = args.spec, bool(args.tiny)
    validate(cfg)
    return cfg


def cmd_probe(args: argparse.Namespace, extra: list[str]) -> int:
    if args.report_only:
        if args.out is None:
            raise ConfigError("--report-only: give the experiment directory with --out")
        if extra:
            raise ConfigError(f"--report-only takes no overrides, got {' '.join(extra)}")
        print(summarize(Path(args.out)))
        return 0
    if args.spec is None:
        raise ConfigError("SPEC: required (FILE.py[:FUNC]), or --report-only --out DIR")
    factory = load_factory(args.spec)
    cfg = build_config(args, extra)
    methods, seeds = parse_list(args.methods, "methods"), parse_seeds(args.seeds)
    out = Path(args.out) if args.out else Path("runs/probe") / Path(args.spec.partition(":")[0]).stem
    print(run_spec(factory, cfg, methods, seeds, out, overwrite=args.overwrite))
    return 0
