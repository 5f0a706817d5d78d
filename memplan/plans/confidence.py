"""How sure a capacity plan's answers are: every ``plan`` write and every ``unplug`` device
block carries ``confidence`` and ``blind_spots`` like ``simulate``'s blocks.

Profiles are exact: everything is ``certain``. A snapshot cannot see refcounts, pins and the
like (``memplan.snapshot.confidence``); its ``Machine.assessor`` rates verdicts by judging them
a second time on the pessimistic reading of the same pages:

* ``plan``: a shadow state built from the pessimistic reading takes the same writes in the same
  order; each write's two verdicts go to the assessor, as ``simulate`` does for one block.
* ``unplug``: the driver's fake-offlining moves the same pages ``offline_pages()`` would, so the
  memory of a device block rests on what ``simulate`` says of that block (the same assessor);
  memory unplugged from blocks that were already offline needs no page and is ``certain``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from memplan.core.machine import Machine
from memplan.core.results import BlockVerdict, Confidence
from memplan.core.units import format_block_ranges
from memplan.engine.simulation import simulate
from memplan.plans.state import MachineState

#: confidence levels from the surest down
_RANK = {level: rank for rank, level in enumerate(Confidence)}

Rating = Tuple[Confidence, Tuple[str, ...]]
CERTAIN: Rating = (Confidence.CERTAIN, ())


class WriteAssessor:
    """Rates each ``offline`` write of a plan (see the module docstring)."""

    def __init__(self, state: MachineState) -> None:
        machine = state.machine
        self.assessor = machine.assessor
        self.effect = state.semantics.foreign_reference_effect()
        self.shadow: Optional[MachineState] = None
        alternative = self.assessor.second_reading() if self.assessor is not None else None
        if alternative is not None:
            pessimistic = dataclasses.replace(machine, pages=alternative, assessor=None)
            self.shadow = MachineState(pessimistic, state.semantics.name)

    def offline(self, state: MachineState, block: int) -> BlockVerdict:
        """``state.offline(block)`` with its confidence and blind spots."""
        verdict = state.offline(block)
        second = self.shadow.offline(block) if self.shadow is not None else None
        if self.assessor is None:
            return dataclasses.replace(verdict, confidence=Confidence.CERTAIN, blind_spots=())
        if not self.assessor.needs_second_reading(verdict):
            second = None
        level, spots = self.assessor.assess(verdict, second, self.effect)
        return dataclasses.replace(verdict, confidence=level, blind_spots=spots,
                                   pages_known=state.machine.page_data)


def block_ratings(machine: Machine, semantics: str, blocks: Sequence[int]) -> Dict[int, Rating]:
    """``simulate``'s confidence and blind spots for the given online blocks of ``machine``."""
    if machine.assessor is None or not blocks:
        return {int(b): CERTAIN for b in blocks}
    result = simulate(machine, semantics, sorted({int(b) for b in blocks}))
    return {v.block: (v.confidence or Confidence.CERTAIN, v.blind_spots) for v in result.blocks}


def least_sure(ratings: Iterable[Rating]) -> Rating:
    """The least sure of some ratings, with the blind spots of every rating at that level."""
    worst = Confidence.CERTAIN
    spots: List[str] = []
    for level, blind in ratings:
        if _RANK[level] > _RANK[worst]:
            worst, spots = level, []
        if level is worst:
            spots.extend(s for s in blind if s not in spots)
    return worst, tuple(spots)


def caveats(rated: Iterable[Tuple[int, Rating]], what: str) -> List[str]:
    """One line per (confidence, blind spots) group of the blocks a result relies on that are
    not ``certain``: ``"<what> relies on block 36, rated likely: ..."``."""
    groups: Dict[Rating, List[int]] = {}
    for block, rating in rated:
        if rating[0] is not Confidence.CERTAIN:
            groups.setdefault(rating, []).append(block)
    lines = []
    for (level, spots), blocks in sorted(groups.items(), key=lambda kv: (-_RANK[kv[0][0]], min(kv[1]))):
        noun = "block" if len(blocks) == 1 else "blocks"
        why = "; ".join(spots) if spots else "the snapshot cannot settle it"
        lines.append(f"{what} relies on {noun} {format_block_ranges(blocks)}, rated {level.value}: {why}")
    return lines


__all__ = ["WriteAssessor", "block_ratings", "least_sure", "caveats", "Rating", "CERTAIN"]
