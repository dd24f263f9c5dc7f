"""The growth plan: a method turned into explicit segments (PAPER_NOTES §4.2, §5.3, §5.4).

A network is grown from *units* (the learner's levels 2..L, or a ResNet's blocks 1..B).  A
segment is one lifetime of an optimiser: some units are switched on at its start, a set of
units trains for ``length`` steps (or epochs), and the stages of one or more units end at given
offsets, where the trainers measure.  Both trainers (:mod:`bfclab.training`, :mod:`bfclab.probe.train`)
only walk the plan; neither names a method.

* stage-wise methods (``bfc``, ``layerwise``, ``window:k``): one segment per unit, which
  activates that unit, trains ``method.trainable(...)`` and ends that unit's stage at its end;
  the new unit's K is warm-started from its W (PAPER_NOTES §4.3) where the learner has one;
* ``e2e``: one segment that activates every unit, trains all of them for the whole budget
  (units x per-stage length) and ends unit u's "stage" after u's share of the budget, so that
  it is measured at the same points as the stage-wise methods; no warm start (the K-W
  consistency term is on from the first step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .methods import Method


@dataclass(frozen=True)
class Segment:
    """One segment of a growth plan (PAPER_NOTES §4.2).  ``activate``: units switched on at the start; ``active``: units active during it;
    ``trainable``: the ones that train; ``length``: steps (or epochs); ``ends``: (offset in the
    segment, unit) for every stage that ends in it, in order, the last at ``length``;
    ``warm_start``: whether new units start untied and are warm-started during/at the end
    (stage-wise) or start tied (e2e)."""

    index: int
    activate: tuple[int, ...]
    active: tuple[int, ...]
    trainable: tuple[int, ...]
    length: int
    ends: tuple[tuple[int, int], ...]
    warm_start: bool

    @property
    def top(self) -> int:
        """The highest active unit (the depth a ResNet is read out at)."""
        return self.active[-1]

    @property
    def first_stage(self) -> int:
        """The unit whose stage is under way when the segment starts."""
        return self.ends[0][1]

    def end_at(self, offset: int) -> int | None:
        """The unit whose stage ends after ``offset`` steps of this segment, or None."""
        return next((u for o, u in self.ends if o == offset), None)

    def stage_after(self, unit: int) -> int:
        """The unit whose stage is under way after ``unit``'s stage ended (within the segment)."""
        units = [u for _, u in self.ends]
        i = units.index(unit)
        return units[i + 1] if i + 1 < len(units) else unit


def plan(method: Method, units: Sequence[int], per_stage: int) -> list[Segment]:
    """The segments of ``method`` growing ``units`` (in order), ``per_stage`` steps a stage
    (PAPER_NOTES §4.2 for bfc, §5.3 layerwise, §5.4 window:k)."""
    units = [int(u) for u in units]
    if not units:
        raise ValueError("a growth plan needs at least one unit")
    if not method.stage_wise:
        ends = tuple((per_stage * (i + 1), u) for i, u in enumerate(units))
        return [Segment(0, tuple(units), tuple(units), tuple(units), per_stage * len(units), ends, False)]
    return [Segment(i, (u,), tuple(units[: i + 1]), tuple(method.trainable(units[: i + 1], u)), per_stage,
                    ((per_stage, u),), True)
            for i, u in enumerate(units)]
