"""The probe's tidy table, Markdown tables and its one diagnostic figure, from stored result
files only (PAPER_NOTES §5.4 "how deep", §5.5 "how much", §7.3 B "Metrics").

* :func:`tidy`: one row per (protocol, block), every measurement as its mean and sample
  standard deviation over seeds (for CSV or a data frame);
* :func:`metric_table`: the final test metric and the metric at each stage end per protocol;
* :func:`block_table`: per protocol and block, probe quality at the end of the block's own stage
  -> at the end, weight change by the end, CKA own stage vs end, revert cost and its
  random-direction control;
* :func:`plot`: the figure, six panels over blocks, one line (or bar) per protocol.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..results import int_levels, read_json
from ..tables import markdown_table as table

BLOCK_KEYS = ("stage_metric", "probe_own", "probe_final", "cka", "revert")
BLOCK_BY_STAGE_KEYS = ("weight_change", "direction_change")


def block_keys(res: dict) -> dict:
    """A result read from JSON with int block (and stage) keys, as the run made it."""
    out = dict(res)
    for k in BLOCK_KEYS:
        if isinstance(out.get(k), dict):
            out[k] = int_levels(out[k])
    for k in BLOCK_BY_STAGE_KEYS:
        if isinstance(out.get(k), dict):
            out[k] = {c: int_levels(v) for c, v in int_levels(out[k]).items()}
    return out


def method_order(method: str) -> tuple:
    """e2e, layerwise, window:1, window:2, ..., bfc."""
    if method.startswith("window:"):
        return (1, int(method.split(":")[1]))
    return ({"e2e": -1, "layerwise": 0, "bfc": 2}.get(method, 3), 0)


def collect(out_dir: Path, experiment: str = "probe") -> dict[str, list[dict]]:
    """method -> results (sorted by seed) of every ``result.json`` of ``experiment`` under ``out_dir``."""
    found: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(Path(out_dir).rglob("result.json")):
        res = block_keys(read_json(path))
        if res.get("experiment") != experiment:
            continue
        res["_dir"] = str(path.parent)
        found[res["method"]].append(res)
    return {m: sorted(rs, key=lambda r: r["seed"]) for m, rs in sorted(found.items(), key=lambda kv: method_order(kv[0]))}


def mean_std(values) -> tuple[float, float]:
    a = np.asarray(list(values), dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else 0.0)


def pm(values, scale: float = 1.0, digits: int = 3) -> str:
    """'mean ± std' of ``values`` times ``scale``."""
    m, s = mean_std(values)
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def metric_name(by_method: dict[str, list[dict]]) -> tuple[str, float, int]:
    """(name, scale, digits) of the test metric: accuracy in %, or R^2."""
    task = next(iter(by_method.values()))[0].get("task", "classification")
    return ("accuracy (%)", 100.0, 1) if task == "classification" else ("R²", 1.0, 4)


def _block_values(res: dict, b: int) -> dict[str, float | None]:
    """Every per-block measurement of block ``b`` in one result (None where it does not apply)."""
    B = res["blocks"]
    rev = res["revert"].get(b)
    return {
        "probe_own": res["probe_own"][b], "probe_final": res["probe_final"][b],
        "probe_gain": res["probe_final"][b] - res["probe_own"][b],
        "weight_change": res["weight_change"][b][B] if b < B else None,
        "direction_change": res["direction_change"][b][B] if b < B else None,
        "cka": res["cka"][b],
        "revert_cost": rev["cost"] if rev else None, "random_cost": rev["random_cost"] if rev else None,
    }


def tidy(by_method: dict[str, list[dict]]) -> list[dict]:
    """One row per (protocol, block): ``<measure>_mean`` and ``<measure>_std`` over seeds."""
    rows = []
    for m, runs in by_method.items():
        for b in range(1, runs[0]["blocks"] + 1):
            vals = [_block_values(r, b) for r in runs]
            row = {"protocol": m, "block": b, "seeds": len(runs)}
            for k in vals[0]:
                have = [v[k] for v in vals if v[k] is not None]
                row[f"{k}_mean"], row[f"{k}_std"] = mean_std(have) if have else (None, None)
            rows.append(row)
    return rows


def metric_table(by_method: dict[str, list[dict]]) -> str:
    name, scale, digits = metric_name(by_method)
    B = next(iter(by_method.values()))[0]["blocks"]
    head = ["protocol", "seeds", f"final test {name}"] + [f"stage {b}" for b in range(1, B + 1)]
    rows = [[m, str(len(rs)), pm((r["test_metric"] for r in rs), scale, digits)]
            + [pm((r["stage_metric"][b] for r in rs), scale, digits) for b in range(1, B + 1)]
            for m, rs in by_method.items()]
    return table(head, rows)


def block_table(by_method: dict[str, list[dict]]) -> str:
    """The tidy rows as Markdown (mean ± std over seeds)."""
    name, scale, digits = metric_name(by_method)
    unit = " (pp)" if scale == 100 else ""
    head = ["protocol", "block", f"probe own stage → end{unit}", "weight change by the end", "CKA own stage vs end",
            f"revert cost{unit}", f"random-change cost{unit}"]

    def cell(row, key, s=1.0, d=3, sign=""):
        if row[f"{key}_mean"] is None:
            return "–"
        return f"{s * row[key + '_mean']:{sign}.{d}f} ± {s * row[key + '_std']:.{d}f}"

    rows = []
    for row in tidy(by_method):
        probe = (f"{scale * row['probe_own_mean']:.{digits}f} → {scale * row['probe_final_mean']:.{digits}f} "
                 f"({cell(row, 'probe_gain', scale, digits, '+')})")
        rows.append([row["protocol"], str(row["block"]), probe, cell(row, "weight_change"), cell(row, "cka"),
                     cell(row, "revert_cost", scale, digits, "+"), cell(row, "random_cost", scale, digits, "+")])
    return table(head, rows)


def plot(by_method: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """Six panels: test metric at each stage end; probe quality at the end of the block's own
    stage (dashed) and at the end (solid); weight change by the end; direction change; CKA own
    stage vs end; revert cost (solid) and the random-change control (hatched)."""
    from ..plots import plt, save

    name, scale, _ = metric_name(by_method)
    fig, ax = plt.subplots(2, 3, figsize=(16, 8.2))
    ax = ax.ravel()
    width = 0.8 / max(1, len(by_method))
    for i, (m, runs) in enumerate(by_method.items()):
        c, B = f"C{i}", runs[0]["blocks"]
        blocks, lower = np.arange(1, B + 1), np.arange(1, B)
        off = (i - (len(by_method) - 1) / 2) * width
        ms = [mean_std(r["stage_metric"][b] for r in runs) for b in blocks]
        ax[0].errorbar(blocks, [scale * a for a, _ in ms], [scale * s for _, s in ms], marker="o", capsize=3,
                       color=c, label=m)
        for key, ls, mk in (("probe_own", "--", "x"), ("probe_final", "-", "o")):
            ax[1].plot(blocks, [scale * mean_std(r[key][b] for r in runs)[0] for b in blocks], ls=ls, marker=mk,
                       color=c, label=m if key == "probe_final" else None)
        for k, key in ((2, "weight_change"), (3, "direction_change")):
            v = [mean_std(r[key][b][B] for r in runs) for b in lower]
            ax[k].bar(lower + off, [a for a, _ in v], width, yerr=[s for _, s in v], color=c, capsize=2, label=m)
        ck = [mean_std(r["cka"][b] for r in runs) for b in blocks]
        ax[4].errorbar(blocks, [a for a, _ in ck], [s for _, s in ck], marker="o", capsize=3, color=c, label=m)
        for key, hatch, alpha in (("cost", None, 1.0), ("random_cost", "//", 0.35)):
            v = [mean_std(r["revert"][b][key] for r in runs) for b in lower]
            ax[5].bar(lower + off, [scale * a for a, _ in v], width / 2, yerr=[scale * s for _, s in v], color=c,
                      alpha=alpha, hatch=hatch, capsize=2, label=m if key == "cost" else None,
                      align="edge" if key == "cost" else "center")
    ax[0].set(xlabel="stage (end of)", ylabel=f"test {name}", title="test metric at each stage end")
    ax[1].set(xlabel="block", ylabel=f"linear probe {name}", title="probe: end of own stage (dashed) vs end (solid)")
    ax[2].set(xlabel="lower block", ylabel="||W - W_ref|| / ||W_ref||", title="weight change after its own stage")
    ax[3].set(xlabel="lower block", ylabel="RMS row direction change", title="direction change (scale-free)")
    ax[4].set(xlabel="block", ylabel="linear CKA", title="features: end of own stage vs end")
    ax[5].set(xlabel="lower block", ylabel=f"{name} lost", title="revert cost (solid) vs random change (hatched)")
    for a in ax:
        a.xaxis.get_major_locator().set_params(integer=True)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(title)
    save(fig, path)


# ---- two probe experiments side by side (PAPER_NOTES §5.5 "how much") -------------------------------

def _lower(runs: list[dict], b: int) -> dict[str, list[float]]:
    B = runs[0]["blocks"]
    return {"wc": [r["weight_change"][b][B] for r in runs], "cost": [r["revert"][b]["cost"] for r in runs],
            "random": [r["revert"][b]["random_cost"] for r in runs]}


def small_move_large_effect(base: dict[str, list[float]], low: dict[str, list[float]]) -> bool:
    """The rule for "a small change with a large effect" of one block: under the small rate it
    moves at most half as far as under the full rate, reverting it still costs at least half of
    what it costs under the full rate, and that cost exceeds the random-change control by more
    than the two standard deviations together."""
    wc_b, wc_l = mean_std(base["wc"])[0], mean_std(low["wc"])[0]
    (c_b, _), (c_l, s_l), (r_l, sr_l) = mean_std(base["cost"]), mean_std(low["cost"]), mean_std(low["random"])
    return wc_l <= 0.5 * wc_b and c_b > 0 and c_l >= 0.5 * c_b and c_l - r_l > s_l + sr_l


def compare_table(base: dict[str, list[dict]], low: dict[str, list[dict]], labels: tuple[str, str]) -> str:
    """Per protocol present in both experiments and per lower block: weight change by the end,
    revert cost and the random-change control under ``labels[0]`` (``base``) -> ``labels[1]``
    (``low``), and whether the block is a small move with a large effect
    (:func:`small_move_large_effect`)."""
    name, scale, digits = metric_name(base)
    unit = " (pp)" if scale == 100 else ""
    a, b = labels
    head = ["protocol", "block", f"final test {name}: {a} → {b}", f"weight change by the end: {a} → {b}",
            f"revert cost{unit}: {a} → {b}", f"random-change cost{unit}: {a} → {b}", "small move, large effect?"]
    rows = []
    for m in (m for m in base if m in low):
        acc = f"{pm((r['test_metric'] for r in base[m]), scale, digits)} → {pm((r['test_metric'] for r in low[m]), scale, digits)}"
        for blk in range(1, base[m][0]["blocks"]):
            x, y = _lower(base[m], blk), _lower(low[m], blk)
            moved = mean_std(x["wc"])[0] > 0 and x["wc"] != y["wc"]  # frozen, or the multiplier does not apply
            rows.append([m, str(blk), acc if blk == 1 else "", f"{pm(x['wc'])} → {pm(y['wc'])}",
                         f"{pm(x['cost'], scale, digits)} → {pm(y['cost'], scale, digits)}",
                         f"{pm(x['random'], scale, digits)} → {pm(y['random'], scale, digits)}",
                         ("yes" if small_move_large_effect(x, y) else "no") if moved else "– (multiplier does not apply)"])
    return table(head, rows)


def compare_text(base: dict[str, list[dict]], low: dict[str, list[dict]], labels: tuple[str, str],
                 protocol: str = "bfc") -> str:
    """The answer in words, with the numbers, for ``protocol`` (default bfc): how far each lower
    block moves under both rates, what putting it back costs, and the verdict of
    :func:`small_move_large_effect`; plus a check that protocols without corrected blocks did
    not change."""
    name, scale, digits = metric_name(base)
    unit = " pp" if scale == 100 else ""
    a, b = labels
    if protocol not in base or protocol not in low:
        return f"No {protocol} runs in both experiments."
    B = base[protocol][0]["blocks"]
    parts, verdicts = [], []
    for blk in range(1, B):
        x, y = _lower(base[protocol], blk), _lower(low[protocol], blk)
        ratio = mean_std(y["wc"])[0] / mean_std(x["wc"])[0] if mean_std(x["wc"])[0] > 0 else float("nan")
        yes = small_move_large_effect(x, y)
        verdicts.append(yes)
        parts.append(f"block {blk} moves {pm(y['wc'])} at {b} against {pm(x['wc'])} at {a} ({ratio:.2f}× as far); "
                     f"putting it back costs {pm(y['cost'], scale, digits)}{unit} against "
                     f"{pm(x['cost'], scale, digits)}{unit}, a random change of the same norm "
                     f"{pm(y['random'], scale, digits)}{unit}")
    acc = (f"final test {name} {pm((r['test_metric'] for r in low[protocol]), scale, digits)} at {b} against "
           f"{pm((r['test_metric'] for r in base[protocol]), scale, digits)} at {a}")
    gap = ""
    if all(m in base and m in low for m in ("e2e", "layerwise")):
        def recovered(runs: dict[str, list[dict]]) -> float:
            mean = {m: mean_std(r["test_metric"] for r in runs[m])[0] for m in ("e2e", "layerwise", protocol)}
            return (mean[protocol] - mean["layerwise"]) / (mean["e2e"] - mean["layerwise"])
        gap = (f" Share of the layerwise-to-e2e gap in final test {name} that {protocol} recovers, from the means: "
               f"{100 * recovered(low):.0f} % at {b} against {100 * recovered(base):.0f} % at {a}.")
    n_yes = sum(verdicts)
    verdict = (f"By the rule of the table (moves at most half as far, keeps at least half of the revert cost, and "
               f"that cost exceeds the random control by more than both spreads), {n_yes} of {B - 1} lower blocks "
               f"are a small move with a large effect"
               + (f" (blocks {', '.join(str(i + 1) for i, v in enumerate(verdicts) if v)})." if n_yes else "."))
    same = []
    for m in ("e2e", "layerwise"):
        if m in base and m in low:
            diff = max(abs(p["test_metric"] - q["test_metric"]) for p, q in zip(base[m], low[m]))
            same.append(f"{m} {diff * scale:.{digits}f}{unit}")
    check = (f" Protocols that never train a block after its own stage cannot depend on the multiplier: largest "
             f"difference in final test {name} between the two experiments, seed by seed: {', '.join(same)}."
             if same else "")
    return f"Under {protocol} ({len(low[protocol])} seeds, mean ± sample std): " + "; ".join(parts) + f"; {acc}." \
        + gap + " " + verdict + check
