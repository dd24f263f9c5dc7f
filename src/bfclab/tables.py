"""Markdown tables and the summary statistics printed in them (median with its range).

Below both :mod:`bfclab.experiments` and :mod:`bfclab.images`, which format their reports with it.
"""

from __future__ import annotations

import statistics


def markdown_table(head: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def med(values) -> float:
    """Median of the non-nan values (nan when there are none)."""
    vals = [v for v in values if v == v]
    return statistics.median(vals) if vals else float("nan")


def spread(values) -> str:
    """'median [min, max]' in scientific notation ('n/a' without values)."""
    vals = [v for v in values if v == v]
    if not vals:
        return "n/a"
    return f"{statistics.median(vals):.2e} [{min(vals):.1e}, {max(vals):.1e}]"


def spread_ci(pairs) -> str:
    """'median ±h% [min, max]' from (error, interval) pairs, one per seed: the spread over seeds as
    :func:`spread`, and h the half-width of the median seed's 95 % test-set interval relative to
    its error (the lower middle seed for an even count; left out where no interval was stored).  An
    interval cut at 0 (an error's floor, :func:`bfclab.metrics.block_interval`; results stored before
    the cut are cut here) is not symmetric: it reads '+h%/-l%'."""
    pairs = [(v, ci) for v, ci in pairs if v == v]
    if not pairs:
        return "n/a"
    vals = [v for v, _ in pairs]
    v, ci = sorted(pairs, key=lambda p: p[0])[(len(pairs) - 1) // 2]
    half = ""
    if ci and v:
        lo, hi = max(ci[0], 0.0), ci[1]
        up, down = 100 * (hi - v) / v, 100 * (v - lo) / v
        half = f" ±{(up + down) / 2:.0f}%" if ci[0] > 0 else f" +{up:.0f}%/-{down:.0f}%"
    return f"{statistics.median(vals):.2e}{half} [{min(vals):.1e}, {max(vals):.1e}]"


#: the sentence that explains :func:`spread_ci`'s format wherever a report uses it
CI_NOTE = ("Errors read median ±h% [min, max] over seeds, h the half-width of the median seed's 95 % "
           "interval over independent blocks of its test set, relative to its error (+h%/-l% where that "
           "interval is cut at an error of 0).")
