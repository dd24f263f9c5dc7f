"""``bfclab`` command line.  Bad input ends with one line naming the field (exit code 2)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, RunConfig, apply_mapping, load_file, parse_overrides, set_key


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise ConfigError(f"{self.prog}: {message}")


def build_config(args: argparse.Namespace, extra: list[str], base: dict | None = None) -> RunConfig:
    """Defaults < ``base`` (a stored config.json, for --resume) < --config FILE < --method/--seed
    < --key value overrides."""
    cfg = RunConfig()
    if base is not None:
        apply_mapping(cfg, base)
    if getattr(args, "config", None):
        apply_mapping(cfg, load_file(args.config))
    if getattr(args, "method", None) is not None:
        cfg.method = args.method
    if getattr(args, "seed", None) is not None:
        cfg.seed = args.seed
    for key, value in parse_overrides(extra):
        set_key(cfg, key, value)
    from .nets import NETS, validate_net
    from .training import validate

    if cfg.learner.kind in NETS:
        validate_net(cfg)
    else:
        validate(cfg)
    return cfg


def cmd_train(args, extra) -> int:
    from .training import read_stored_config, train

    base = None
    if args.resume and args.out and (Path(args.out) / "config.json").is_file():
        base = read_stored_config(Path(args.out))  # --resume alone continues the stored config
    cfg = build_config(args, extra, base)
    if args.print_config:
        from .config import to_dict
        from .results import dumps

        print(dumps(to_dict(cfg)))
        return 0
    if not args.out:
        raise ConfigError("bfclab train: the following arguments are required: --out")
    from .plots import plot_curves
    from .results import read_records

    out = Path(args.out)
    if cfg.learner.kind in ("mlp", "cnn"):
        return train_generic_net(cfg, out, args)
    finished = args.resume and not args.overwrite and (out / "result.json").exists()  # reported, not rewritten
    res = train(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=None).result
    if not finished:
        plot_curves(read_records(out / "metrics.jsonl"), out / "curves.png", title=f"{cfg.method}, seed {cfg.seed}")
    fe = " ".join(f"L{l}={v:.4f}" for l, v in res.feature_error.items())
    print(f"{cfg.method} seed {cfg.seed}: {res.error_name} {res.error:.3e}; feature error {fe}; "
          f"{res.seconds:.1f}s -> {args.out}")
    return 0


def train_generic_net(cfg: RunConfig, out: Path, args) -> int:
    """``bfclab train`` of a generic net (``learner.kind`` mlp | cnn) on any target kind."""
    from .nets import NetRun
    from .training import prepare_out

    if args.resume:
        raise ConfigError(f"--resume: a {cfg.learner.kind} run does not resume; rerun it (with --overwrite)")
    net = NetRun(cfg, None, progress=None)  # data and net built (and checked) before anything is written
    prepare_out(out, cfg, resume=False, overwrite=args.overwrite)
    net.out = net.probe.out = out
    res = net.run()
    levels = res.extra.get("level_error") or {}
    last = levels.get(max(levels)) if levels else {}
    fe = " ".join(f"L{l}={v:.3f}" for l, v in (last or {}).items())
    print(f"{cfg.method} seed {cfg.seed} ({res.extra['target']}; {cfg.learner.kind}): {res.error_name} "
          f"{res.error:.3e}" + (f"; last block's level errors {fe}" if fe else "") + f"; {res.seconds:.1f}s -> {out}")
    return 0


def cmd_demo(args, extra) -> int:
    from .experiments import demo

    cfg = build_config(args, extra)
    results = demo.run(cfg, Path(args.out), overwrite=args.overwrite)
    print(demo.table(results))
    print(f"\nfigure: {Path(args.out) / 'demo.png'}; runs in {args.out}/<method>/")
    return 0


def cmd_sweep(args, extra) -> int:
    from .sweep import clear_diverged, load_grid, run_sweep

    if extra:
        raise ConfigError(f"unexpected argument '{extra[0]}' for sweep")
    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    grid = load_grid(args.grid)
    if args.rerun_diverged:
        _report_cleared(clear_diverged(grid, Path(args.out)))
    rows = run_sweep(grid, Path(args.out), workers=args.workers, overwrite=args.overwrite, batched=args.batched,
                     executor=args.executor, address=args.address)
    print(f"{len(rows)}/{len(grid.cells)} cells finished; table: {Path(args.out) / 'table.csv'}")
    return 0 if len(rows) == len(grid.cells) else 1


def cmd_experiment(args, extra) -> int:
    from .experiments import registry
    from .report import run_experiment

    if extra:
        raise ConfigError(f"unexpected argument '{extra[0]}' for experiment")
    exps = registry()
    if args.name not in exps:
        raise ConfigError(f"experiment '{args.name}': unknown; accepted: {', '.join(exps)}")
    results = Path(args.results or ("runs/quick" if args.quick else "results"))
    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    from .sweep import make_executor

    make_executor(args.executor, args.workers, args.address)  # a bad --executor / --address: before anything runs
    if args.only is not None:
        if not getattr(exps[args.name], "renders_partial", False):
            raise ConfigError(f"--only: applies to the adaptive experiments; '{args.name}' is not one (accepted: "
                              f"{', '.join(n for n, e in exps.items() if getattr(e, 'renders_partial', False))})")
        exps[args.name].plan(args.quick, args.only)  # a bad --only: before anything runs
    if args.rerun_diverged:
        spec = getattr(exps[args.name], "spec", None)
        if not callable(spec):
            raise ConfigError(f"--rerun-diverged: applies to the experiments run as one grid of cells; '{args.name}' "
                              f"is not one (accepted: {', '.join(n for n, e in exps.items() if callable(getattr(e, 'spec', None)))})")
        from .sweep import clear_diverged, expand

        _report_cleared(clear_diverged(expand(spec(args.quick)), exps[args.name].folder(results)))
    sections = run_experiment(args.name, results, args.quick, args.workers, overwrite=args.overwrite,
                              batched=args.batched, executor=args.executor, address=args.address, only=args.only)
    from .results import atomic_write_bytes

    text = "\n\n".join(f"# {s.title}\n\n{s.markdown}" for s in sections) + "\n"
    out = exps[args.name].folder(results) / "summary.md"
    atomic_write_bytes(out, text.encode())
    print(text)
    print(f"summary: {out}")
    return 0


def _report_cleared(ids: list[str]) -> None:
    print(f"--rerun-diverged: {len(ids)} diverged cell(s) removed, to train again" + (f": {', '.join(ids)}" if ids else ""))


def cmd_report(args, extra) -> int:
    from .report import build

    if extra:
        raise ConfigError(f"unexpected argument '{extra[0]}' for report")
    results = Path(args.results or ("runs/quick" if args.quick else "results"))
    docs = Path(args.docs or (results / "docs" if args.quick else "docs"))
    out = build(results, docs, quick=args.quick, compute=not args.no_compute, workers=args.workers,
                overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


RERUN_HELP = "train again the stored cells whose result says diverged (say, after a change of the divergence rule)"


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bfclab", description="Backward feature correction lab (arXiv 2001.04413)")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    overrides = ("Any config key can be overridden as --section.key value (sections: target, data, learner, "
                 "train), e.g. --train.lr 3e-3 --target.rho 0.2 --learner.kind paper; --print-config shows "
                 "every key with its resolved value.")
    t = sub.add_parser("train", help="train one method on one target", epilog=overrides)
    t.add_argument("--method", default=None, help="bfc | layerwise | window:K | e2e (default bfc)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--out", default=None, help="run directory (required unless --print-config)")
    t.add_argument("--config", default=None, help="YAML/JSON file with any subset of the config keys")
    t.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (its stored config; any key given "
                        "must agree with it); a finished run is reported, an empty folder starts afresh")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.set_defaults(func=cmd_train)
    d = sub.add_parser("demo", help="bfc vs layerwise vs e2e on the default target", epilog=overrides)
    d.add_argument("--seed", type=int, default=None)
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--config", default=None)
    d.add_argument("--overwrite", action="store_true", help="train again instead of reusing finished runs")
    d.set_defaults(func=cmd_demo)
    w = sub.add_parser("sweep", help="run a declarative grid (resumable) into one table")
    w.add_argument("grid", help="YAML/JSON grid file (see bfclab.sweep)")
    w.add_argument("--out", required=True, help="sweep directory (cells/, table.csv)")
    w.add_argument("--workers", type=int, default=1, help="parallel worker processes (Ray: CPUs of the local instance)")
    w.add_argument("--executor", default="process", help="process (default) | ray (pip install 'bfclab[ray]')")
    w.add_argument("--address", default=None, help="with --executor ray: a running cluster's address "
                                                   "(default: start a local Ray instance)")
    w.add_argument("--overwrite", action="store_true", help="replace results of a different config instead of stopping")
    w.add_argument("--rerun-diverged", action="store_true", help=RERUN_HELP)
    w.add_argument("--batched", action=argparse.BooleanOptionalAction, default=True,
                   help="train deep cells of one growth plan together (default; --no-batched: one by one)")
    w.set_defaults(func=cmd_sweep)
    e = sub.add_parser("experiment", help="run one named experiment (resumable) and summarise it")
    from .experiments import registry

    e.add_argument("name", help=" | ".join(registry()))
    e.add_argument("--quick", action="store_true", help="tiny grid (seconds to minutes), into runs/quick")
    e.add_argument("--results", default=None, help="results folder (default results/, or runs/quick)")
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--batched", action=argparse.BooleanOptionalAction, default=True,
                   help="train deep cells of one growth plan together (default; --no-batched: one by one)")
    e.add_argument("--overwrite", action="store_true", help="replace results of a different config instead of stopping")
    e.add_argument("--rerun-diverged", action="store_true", help=RERUN_HELP)
    e.add_argument("--executor", default="process", help="process (default) | ray: where the cells run (as for sweep)")
    e.add_argument("--address", default=None, help="with --executor ray: a running cluster's address")
    e.add_argument("--only", default=None, metavar="KEY=V,..;..",
                   help="scaling: compute a part of the plan, e.g. 'method=bfc,krr-poly;L=2,3;d=8,16' "
                        "(keys method, L, d); the summary shows every finished search")
    e.set_defaults(func=cmd_experiment)
    from .experiments import images

    images.add_subparser(sub)
    from .experiments import probe

    probe.add_subparser(sub)
    r = sub.add_parser("report", help="regenerate docs/RESULTS.md and figures from stored results")
    r.add_argument("--quick", action="store_true", help="the whole chain on tiny grids (CI)")
    r.add_argument("--results", default=None, help="results folder (default results/, or runs/quick)")
    r.add_argument("--docs", default=None, help="output folder (default docs/, or <results>/docs)")
    r.add_argument("--no-compute", action="store_true", help="name missing results instead of computing them")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--overwrite", action="store_true", help="replace results of a different config instead of stopping")
    r.set_defaults(func=cmd_report)
    return p


#: what str.splitlines() (and a terminal) would take for the end of a line
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def one_line(text: str) -> str:
    """``text`` with line breaks (say, in a file name or a key from argv) escaped: one line."""
    return "".join(c.encode("unicode_escape").decode() if c in _LINE_BREAKS else c for c in str(text))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            commands = ", ".join(parser._subparsers._group_actions[0].choices)
            print(f"bfclab: error: argument command: required; accepted: {commands}", file=sys.stderr)
            return 2
        return args.func(args, extra)
    except ConfigError as e:
        print(f"bfclab: error: {one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable path, full disk, ...: name the file, keep what was written
        names = [n for n in (getattr(e, "filename", None), getattr(e, "filename2", None)) if n]
        where = "".join(f"'{n}': " for n in names)
        print(one_line(f"bfclab: error: {where}{e.strerror or e}; files written before are intact"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bfclab: interrupted; files written so far are complete", file=sys.stderr)
        return 130
    except Exception as e:
        from .experiments.scaling import Missing
        from .methods import DivergenceError

        if isinstance(e, Missing):  # a round left unfinished (a parallel process holds its cells)
            print(one_line(f"bfclab: {e}"), file=sys.stderr)
            return 1

        if isinstance(e, DivergenceError):
            where = f"; last good state kept in {args.out}/last_good.pt" if getattr(args, "out", None) else ""
            print(one_line(f"bfclab: error: {e}{where}"), file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
