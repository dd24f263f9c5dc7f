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
