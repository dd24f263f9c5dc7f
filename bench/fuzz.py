"""Fuzz the CLI and the files it reads, and report how many inputs were tried (issue 8 part 4).

    .venv/bin/python bench/fuzz.py [--profile ci|long]

Runs ``tests/test_fuzz.py`` (hypothesis; see its docstring for the properties) under the chosen
profile (``ci``: the test suite's bounded, fixed-seed run; ``long``: 20x the examples), then writes
``bench/results/fuzz_<profile>.json`` and ``docs/bench_fuzz_<profile>.md`` with the inputs tried
and the failures found per property, and prints ``fuzz: N inputs tried, F failures``.
Exit status: pytest's (0 when every property held).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=["ci", "long"], default="long")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {**os.environ, "BFCLAB_FUZZ_PROFILE": args.profile, "BFCLAB_FUZZ_REPORT": str(report)}
        t0 = time.time()
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              str(ROOT / "tests" / "test_fuzz.py")], cwd=ROOT, env=env)
        seconds = time.time() - t0
        if not report.exists():
            print("fuzz: the test module wrote no report (did it fail to import?)", file=sys.stderr)
            return rc or 1
        counts = json.loads(report.read_text())["properties"]
    tried = sum(c["inputs"] for c in counts.values())
    failed = sum(c["failures"] for c in counts.values())
    out = {"profile": args.profile, "pytest_exit": rc, "seconds": seconds, "inputs": tried, "failures": failed,
           "properties": counts, "python": platform.python_version(), "machine": platform.machine(),
           "cpus": os.cpu_count()}
    res_dir = ROOT / "bench" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / f"fuzz_{args.profile}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# Fuzzing the CLI and its files (profile `{args.profile}`)", "",
             f"Produced by `.venv/bin/python bench/fuzz.py --profile {args.profile}` "
             f"({seconds:.0f} s, {os.cpu_count()} CPUs, pytest exit {rc}). "
             "The properties are described in `tests/test_fuzz.py`; an input counts once per example "
             "hypothesis ran (shrinking replays included).", "",
             "| property | inputs | failures |", "|---|---:|---:|"]
    lines += [f"| {name} | {c['inputs']} | {c['failures']} |" for name, c in counts.items()]
    lines += [f"| **all** | **{tried}** | **{failed}** |", ""]
    (ROOT / "docs" / f"bench_fuzz_{args.profile}.md").write_text("\n".join(lines))
    print(f"fuzz: {tried} inputs tried, {failed} failures")
    return rc


if __name__ == "__main__":
    sys.exit(main())
