"""Benchmark: bfclab's exact KRR solver against scikit-learn's KernelRidge (PAPER_NOTES §6 KRR).

One exact KRR fit at n = 20000 on the default target's data (``bfclab.training.make_data``, d = 32),
the same polynomial kernel (1 + <x,x'>/d)^4 and the same fixed ridge in both libraries, in the
same dtype and with the same number of BLAS threads.  Every fit runs in its own subprocess, which
reports its wall times and its peak resident memory (VmHWM from /proc/self/status, read right
after the fit and again after the prediction).  The two predictions on held-out points must agree.

    .venv/bin/python bench/kernel_solver.py                  # writes the two files below
    .venv/bin/python bench/kernel_solver.py --n 4000 --dtypes float64 --no-write   # quick look

Writes ``bench/results/kernel_solver.json`` and ``docs/bench_kernel_solver.md`` (the latter is
generated, with the command that produced it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def vm_hwm() -> int:
    """Peak resident set size of this process so far, in bytes (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


# ---- workers (one per subprocess) ---------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """Fit one library's KRR on the saved data; print one JSON line of measurements."""
    import numpy as np

    data = np.load(Path(args.data) / "data.npz")
    dtype = np.float32 if args.dtype == "float32" else np.float64
    x, y, xt = (data[k].astype(dtype) for k in ("x", "y", "xt"))
    base = vm_hwm()
    if args.worker == "bfclab":
        import torch

        from bfclab.baselines.kernels import Polynomial
        from bfclab.baselines.krr import KRR

        torch.set_num_threads(args.threads)
        xs, ys, xts = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(xt)
        base = vm_hwm()
        t0 = time.perf_counter()
        est = KRR(Polynomial(args.degree, 1.0), ridge=args.ridge, dtype=args.dtype, device="cpu").fit(xs, ys)
        fit_s = time.perf_counter() - t0
        fit_peak = vm_hwm()
        t0 = time.perf_counter()
        pred = est.predict(xts).numpy()
        predict_s = time.perf_counter() - t0
        extra = {"shift": est.shift_, "phases_s": est.timings_}
    else:
        from sklearn.kernel_ridge import KernelRidge

        ybar = float(y.astype(np.float64).mean())  # bfclab centres the labels: do the same here
        base = vm_hwm()
        t0 = time.perf_counter()
        est = KernelRidge(alpha=args.shift, kernel="polynomial", degree=args.degree, gamma=1.0 / x.shape[1],
                          coef0=1.0).fit(x, y - dtype(ybar))
        fit_s = time.perf_counter() - t0
        fit_peak = vm_hwm()
        t0 = time.perf_counter()
        pred = est.predict(xt).astype(np.float64) + ybar
        predict_s = time.perf_counter() - t0
        extra = {"shift": args.shift}
    np.save(Path(args.data) / f"pred_{args.worker}_{args.dtype}.npy", pred)
    print(json.dumps({"fit_s": fit_s, "predict_s": predict_s, "base_rss": base, "fit_peak_rss": fit_peak,
                      "peak_rss": vm_hwm(), **extra}))


def run_worker(name: str, dtype: str, args: argparse.Namespace, data_dir: Path, shift: float) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, __file__, "--worker", name, "--dtype", dtype, "--data", str(data_dir),
           "--degree", str(args.degree), "--ridge", repr(args.ridge), "--shift", repr(shift),
           "--threads", str(args.threads)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} ({dtype}) failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = wall
    res["rusage_children_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return res


# ---- driver -------------------------------------------------------------------------------------


def machine() -> dict:
    import numpy
    import scipy
    import sklearn
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next((int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_total_gib": round(mem / GiB, 1),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "sklearn": sklearn.__version__,
            "torch_blas": "MKL" if torch.backends.mkl.is_available() else "?",
            "load_avg_at_start": list(os.getloadavg())}


def compare(p_ref, p_new) -> dict:
    import numpy as np

    diff = p_new - p_ref
    return {"max_abs_diff": float(np.abs(diff).max()),
            "rel_l2_diff": float(np.linalg.norm(diff) / np.linalg.norm(p_ref)),
            "max_abs_pred": float(np.abs(p_ref).max())}


def markdown(res: dict) -> str:
    m, cfg = res["machine"], res["config"]
    lines = [
        "# Benchmark: exact kernel ridge regression, bfclab vs scikit-learn",
        "",
        "Generated by `bench/kernel_solver.py`; do not edit by hand.  Command:",
        "",
        f"    {res['command']}",
        "",
        f"Exact KRR fit at n = {cfg['n']} (default target of `bfclab.config.TargetConfig`, d = {cfg['d']}), "
        f"polynomial kernel (1 + <x,x'>/d)^{cfg['degree']}, normalised ridge {cfg['ridge']:g} "
        f"(the same absolute diagonal shift in both), {cfg['threads']} BLAS thread(s) each, "
        f"predictions on {cfg['n_test']} held-out points.  bfclab: `bfclab.baselines.krr.KRR` (only the lower "
        "half of the Gram matrix, in 2048 x 2048 blocks; blocked in-place Cholesky: `cholesky_ex` on diagonal "
        "blocks, triangular solves and GEMM updates; torch + MKL).  scikit-learn: `KernelRidge` "
        "(full Gram, `scipy.linalg.solve(assume_a='pos')` on a copy; numpy/scipy + OpenBLAS).  "
        "Each fit in its own subprocess; peak memory = VmHWM of that process after the fit "
        "(includes the interpreter and the imported libraries; the baseline column is VmHWM just before the fit).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_total_gib']} GiB; torch {m['torch']}, "
        f"numpy {m['numpy']}, scipy {m['scipy']}, scikit-learn {m['sklearn']}.  "
        f"Load average at start: {', '.join(f'{v:.2f}' for v in m['load_avg_at_start'])} "
        "(the machine is shared with other jobs, so wall times carry noise).",
        "",
        "| dtype | library | fit (s) | predict (s) | peak RSS after fit (GiB) | RSS before fit (GiB) | test nMSE |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in res["runs"]:
        lines.append(f"| {row['dtype']} | {row['library']} | {row['fit_s']:.1f} | {row['predict_s']:.2f} | "
                     f"{row['fit_peak_rss'] / GiB:.2f} | {row['base_rss'] / GiB:.2f} | {row['test_nmse']:.4f} |")
    lines += ["", "| dtype | speed-up (sklearn fit / bfclab fit) | memory ratio (bfclab / sklearn peak) | "
                  "goal met (>= 2x, <= 1/2) | predictions: rel. L2 diff | max abs diff |",
              "|---|---:|---:|---|---:|---:|"]
    for dt, s in res["summary"].items():
        ok = "yes" if s["speedup"] >= 2 and s["memory_ratio"] <= 0.5 else "no"
        lines.append(f"| {dt} | {s['speedup']:.2f}x | {s['memory_ratio']:.2f} | {ok} | "
                     f"{s['agreement']['rel_l2_diff']:.2e} | {s['agreement']['max_abs_diff']:.2e} |")
    flops = cfg["n"] ** 3 / 3
    lines += ["", "Breakdown of the bfclab fit (s): " + "; ".join(
        f"{r['dtype']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["phases_s"].items())
        + f" (factorisation at {flops / r['phases_s']['solve'] / 1e9:.0f} GFLOP/s, counting n^3/3 flops)"
        for r in res["runs"] if r["library"] == "bfclab"), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--n-test", type=int, default=2_000)
    p.add_argument("--degree", type=int, default=4)
    p.add_argument("--ridge", type=float, default=1e-5, help="normalised ridge (bfclab.baselines.ridge)")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per fit (the CPU is shared)")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--json", default=str(ROOT / "bench/results/kernel_solver.json"))
    p.add_argument("--md", default=str(ROOT / "docs/bench_kernel_solver.md"))
    # worker mode (internal)
    p.add_argument("--worker", choices=("bfclab", "sklearn"))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--data")
    p.add_argument("--shift", type=float)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from bfclab.baselines.kernels import Polynomial
    from bfclab.config import DataConfig, TargetConfig
    from bfclab.results import atomic_write_bytes, write_json
    from bfclab.target import Target
    from bfclab.training import make_data

    command = " ".join(["OMP_NUM_THREADS=1 .venv/bin/python bench/kernel_solver.py"]
                       + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
    info = machine()
    torch.set_num_threads(1)
    target = Target.from_config(TargetConfig())
    x, y, xt, yt = make_data(target, DataConfig(n_train=args.n, n_test=args.n_test), seed=0)
    kbar = float(Polynomial(args.degree).diag(x).mean())
    shift = args.n * args.ridge * kbar  # the absolute diagonal shift both libraries add
    runs, summary = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_krr_") as tmp:
        np.savez(Path(tmp) / "data.npz", x=x.numpy(), y=y.numpy(), xt=xt.numpy())
        for dt in args.dtypes.split(","):
            preds = {}
            for lib in ("bfclab", "sklearn"):
                print(f"[bench] {lib} {dt} n={args.n} ...", file=sys.stderr, flush=True)
                r = run_worker(lib, dt, args, Path(tmp), shift)
                preds[lib] = np.load(Path(tmp) / f"pred_{lib}_{dt}.npy")
                r.update(library=lib, dtype=dt, test_nmse=float(((preds[lib] - yt.numpy()) ** 2).mean() / yt.numpy().var()))
                runs.append(r)
                print(f"[bench]   fit {r['fit_s']:.1f}s, peak {r['fit_peak_rss'] / GiB:.2f} GiB", file=sys.stderr)
            b, s = runs[-2], runs[-1]
            summary[dt] = {"speedup": s["fit_s"] / b["fit_s"], "memory_ratio": b["fit_peak_rss"] / s["fit_peak_rss"],
                           "agreement": compare(preds["sklearn"], preds["bfclab"])}
    res = {"command": command, "machine": info,
           "config": {"n": args.n, "n_test": args.n_test, "d": x.shape[1], "degree": args.degree,
                      "ridge": args.ridge, "shift": shift, "threads": args.threads},
           "runs": runs, "summary": summary}
    md = markdown(res)
    print(md)
    if not args.no_write:
        write_json(Path(args.json), res)
        atomic_write_bytes(Path(args.md), md.encode())
        print(f"wrote {args.json} and {args.md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
