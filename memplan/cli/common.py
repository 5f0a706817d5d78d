"""Options and helpers shared by the commands.

Importing this module imports click and nothing heavy: the options take their choices from
``memplan.cli.names``, and numpy, rich and the layers below are imported by the functions that
need them (``memplan CMD --help`` and option completion never call those).
"""

from __future__ import annotations

import functools
import sys
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    NoReturn,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    TypeVar,
)

import click

from memplan.cli.names import CONFIDENCE_LEVELS, FOREIGN_REF_TIMINGS, MAX_DEFAULT_JOBS, SEMANTICS_NAMES
from memplan.cli.signals import one_line
from memplan.core.errors import ProfileError, UsageError
from memplan.core.source import InputSource
from memplan.core.status import ExitStatus, check_status
from memplan.core.units import format_block_ranges, parse_block_spans, parse_chmem_size, parse_size

if TYPE_CHECKING:  # the readers, writers and renderers are imported by the function that uses them
    from rich.console import Console

    from memplan.core.machine import Machine
    from memplan.core.results import Confidence
    from memplan.plans.state import MachineState
    from memplan.plans.types import PlanResult, UnplugResult

#: a click command function that an option decorator returns as it is (with the option added)
FuncT = TypeVar("FuncT", bound=Callable[..., Any])


def stdout_console() -> Console:
    """stdout for results; no colour unless stdout is a terminal (rich honours NO_COLOR); the
    width only matters to ``map`` (``memplan.render.console``: a bad ``COLUMNS`` is ignored)."""
    from memplan.render.console import make_console

    return make_console()


def stderr_console() -> Console:
    from memplan.render.console import make_console

    return make_console(stderr=True)


class SnapshotSource(str):
    """PROFILE's value when ``--sysroot DIR`` or ``--live`` was given instead: the sysroot
    path (``/`` when live). It is a ``str``, so commands pass it on like a profile path."""

    live: bool = False

    def __new__(cls, root: str, live: bool = False) -> "SnapshotSource":
        obj = super().__new__(cls, root)
        obj.live = live
        return obj


def machine_source(profile: Optional[str], sysroot: Optional[str], live: bool) -> str:
    """Exactly one of PROFILE, ``--sysroot DIR`` and ``--live``."""
    given = [name for name, value in (("PROFILE", profile), ("--sysroot", sysroot), ("--live", live)) if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} exclude each other: give a PROFILE, --sysroot DIR or --live")
    if not given:
        raise UsageError("give a PROFILE, --sysroot DIR (a saved snapshot) or --live (this machine)")
    if live:
        return SnapshotSource("/", live=True)
    if sysroot:
        return SnapshotSource(sysroot)
    assert profile is not None
    return profile


def input_source(profile: str) -> InputSource:
    """What the JSON documents name as their ``source`` (``machine_source()``'s value)."""
    if isinstance(profile, SnapshotSource):
        return InputSource.of(str(profile), sysroot=True, live=profile.live)
    return InputSource.of(profile)


def load_machine(profile: str) -> Machine:
    """A machine from a profile path, or from a snapshot (``--sysroot``/``--live``)."""
    if isinstance(profile, SnapshotSource):
        from memplan.snapshot.reader import load_snapshot

        return load_snapshot(str(profile), live=profile.live)
    from memplan.profile.reader import load_profile

    try:
        return load_profile(profile)
    except ProfileError as exc:
        from memplan.profile.bundled import missing_profile_hint

        hint = None if exc.hint or exc.key else missing_profile_hint(profile)
        if hint is None:
            raise
        raise ProfileError(exc.path, "", exc.message[len(exc.path) + 2:], hint=hint) from None


def _jobs_value(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> None:
    """``--jobs N``: threads reading kpageflags/kpagecount (``memplan.snapshot.ingest``)."""
    if ctx.resilient_parsing:  # completing a command line: nothing runs
        return
    if value is None:
        if "memplan.snapshot.ingest" in sys.modules:  # else it has its default already
            sys.modules["memplan.snapshot.ingest"].set_jobs(None)
        return
    from memplan.snapshot import ingest

    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()):  # int() would take "４", "1_0" and " 4"
        raise UsageError(f"--jobs: {value!r} is not a number")
    number = int(digits) if len(digits) <= 20 else 1 << 64  # past any thread count either way
    ingest.set_jobs(ingest.check_jobs(-number if value.startswith("-") else number))


def snapshot_options(func: FuncT) -> FuncT:
    """``--sysroot DIR``, ``--live`` and ``--jobs N`` (shared by ``machine_argument`` and
    ``memplan snapshot``)."""
    func = click.option("--jobs", metavar="N", default=None, expose_value=False, callback=_jobs_value,
                        help=f"Threads reading page flags (live: one reader per range; saved: one xz chunk each; "
                             f"default: one per CPU, at most {MAX_DEFAULT_JOBS}).")(func)
    func = click.option("--live", is_flag=True,
                        help="Snapshot this machine (reads /sys and /proc; needs root for /proc/kpageflags).")(func)
    return click.option("-s", "--sysroot", metavar="DIR", type=click.Path(file_okay=False), default=None,
                        help="Read a saved snapshot tree instead of a profile (like lsmem --sysroot).")(func)


def machine_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    """PROFILE, or ``--sysroot DIR`` / ``--live`` in its place. The command still receives
    one ``profile`` argument; pass it to ``load_machine()``."""

    @functools.wraps(func)
    def wrapper(*args: Any, profile: Optional[str] = None, sysroot: Optional[str] = None, live: bool = False,
                **kwargs: Any) -> Any:
        return func(*args, profile=machine_source(profile, sysroot, live), **kwargs)

    return click.argument("profile", metavar="[PROFILE]", required=False,
                          type=click.Path(dir_okay=False))(snapshot_options(wrapper))


def semantics_option(func: FuncT) -> FuncT:
    return click.option("--semantics", type=click.Choice(list(SEMANTICS_NAMES)), default=None,
                        help="Kernel semantics (default: the profile's, else refcount = mainline).")(func)


#: ``--blocks`` examples, shown with every error about its value
BLOCKS_EXAMPLES = "examples: 7, 32-63, 1,4,8-9"
#: Without a machine to check them against, ``--blocks`` may name at most this many blocks (a
#: 64 TiB machine of 128 MiB blocks has 2^19): more than that is no machine's list of blocks.
MAX_LISTED_BLOCKS = 1 << 22


def _block_spans(value: str) -> List[Tuple[int, int]]:
    """``--blocks`` as written: ASCII decimal spans (``３２`` is not 32), never expanded."""
    if not value.isascii():
        raise UsageError(f"--blocks: {value!r} is not a block range ({BLOCKS_EXAMPLES}; ASCII digits)")
    try:
        return parse_block_spans(value)
    except ValueError as exc:
        raise UsageError(f"--blocks: {exc}") from None


def parse_blocks(value: Optional[str], machine: Optional[Machine] = None) -> Optional[List[int]]:
    """``--blocks RANGE`` as block ids (``None``: not given).

    With ``machine`` every block named must be one of its memory blocks (else one error line
    naming the first absent block); ranges are checked as spans against the machine's sorted
    block ids, so ``0-3000000000`` costs as much as ``0-3``. Without a machine the list is
    expanded, up to ``MAX_LISTED_BLOCKS`` blocks."""
    if value is None:
        return None
    spans = _block_spans(value)
    if machine is not None:
        return present_blocks(machine, value, spans)
    total = 0
    for lo, hi in spans:
        total += hi - lo + 1
        if total > MAX_LISTED_BLOCKS:
            raise UsageError(f"--blocks: {value!r} names more than {MAX_LISTED_BLOCKS} memory blocks, more than "
                             f"any machine has ({BLOCKS_EXAMPLES})")
    return sorted({block for lo, hi in spans for block in range(lo, hi + 1)})


def present_blocks(machine: Machine, value: str, spans: Sequence[Tuple[int, int]]) -> List[int]:
    """The ids in ``spans`` (sorted, each once), all of which must exist on ``machine``."""
    import numpy as np

    ids = machine.blocks.ids  # sorted int64
    top = int(ids[-1]) if len(ids) else -1
    chosen: List[int] = []
    for lo, hi in spans:
        last = min(hi, top)  # within int64 from here on
        if lo <= last:
            left = int(np.searchsorted(ids, lo, side="left"))
            right = int(np.searchsorted(ids, last, side="right"))
            found = ids[left:right]
            if len(found) != last - lo + 1:
                gaps = np.flatnonzero(found != np.arange(lo, lo + len(found), dtype=np.int64))
                _absent(machine, value, lo + int(gaps[0]) if len(gaps) else lo + len(found))
            chosen.extend(found.tolist())
        if hi > top:
            _absent(machine, value, max(lo, top + 1))
    return sorted(set(chosen))


def _absent(machine: Machine, value: str, block: int) -> NoReturn:
    import numpy as np

    ids = machine.blocks.ids
    present = format_block_ranges([int(i) for i in ids]) if len(ids) else "none"
    if len(present) > 60:
        present = present[:57] + "..."
    hint = None
    if len(ids):  # the nearest block that exists (``block`` may be past int64)
        row = min(int(np.searchsorted(ids, min(block, int(ids[-1])))), len(ids) - 1)
        nearest = min((int(ids[r]) for r in (row - 1, row) if r >= 0), key=lambda b: abs(b - block))
        hint = f"did you mean {nearest}?"
    raise UsageError(f"--blocks {value!r}: memory block {block} does not exist on {machine.name} "
                     f"(blocks: {present})", hint=hint)


def blocks_option(func: FuncT) -> FuncT:
    return click.option("--blocks", "blocks", metavar="RANGE", default=None,
                        help="Memory blocks to judge, lsmem syntax: 7, 32-63, 1,4,8-9 "
                             "(default: every online block).")(func)


def foreign_ref_dropped_option(func: FuncT) -> FuncT:
    """``--foreign-ref-dropped``, every ``ForeignRefTiming`` (diff-semantics, simulate, explain, map)."""
    return click.option(
        "--foreign-ref-dropped", type=click.Choice(FOREIGN_REF_TIMINGS), default=None,
        help="When someone else's reference on a fake-offline page is dropped: never, during-offline (after "
             "virtio-mem's MEM_GOING_OFFLINE), after-offline (while the block is offline), after-online (after "
             "the block was onlined again). Overrides the profile's [environment] foreign_ref_dropped.")(func)


def with_foreign_ref_timing(machine: Machine, timing: Optional[str]) -> Machine:
    """``--foreign-ref-dropped TIMING`` applied to the machine (``memplan.diff.compute``, imported
    only when the option is given)."""
    if timing is None:
        return machine
    from memplan.diff.compute import with_foreign_ref_timing as replaced

    return replaced(machine, timing)


def trusted(trust: Confidence, level: Optional[Confidence]) -> bool:
    """Whether ``--trust TRUST`` counts a verdict of confidence ``level`` (``None``: certain).
    Confidence levels go from the surest down: trusting a level trusts every level before it."""
    from memplan.core.results import Confidence

    doubt = _doubt()
    return doubt[level or Confidence.CERTAIN] <= doubt[trust]


@functools.lru_cache(maxsize=None)
def _doubt() -> Dict[Confidence, int]:
    from memplan.core.results import Confidence

    return {level: rank for rank, level in enumerate(Confidence)}


def _trust_value(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    """The ``Confidence`` (completing a command line: the word as it is; nothing runs)."""
    if ctx.resilient_parsing:
        return value
    from memplan.core.results import Confidence

    return Confidence(value)


def trust_option(func: FuncT) -> FuncT:
    """``--trust likely|unknown``: the least sure verdicts that count as successes (``--check``
    of simulate, plan, unplug and fleet, fleet's "Hosts reaching it"). The command receives a
    ``Confidence``."""
    return click.option("--trust", type=click.Choice(CONFIDENCE_LEVELS[1:]), default=CONFIDENCE_LEVELS[1],
                        show_default=True, callback=_trust_value,
                        help="Verdicts that count as successes for --check (and fleet's 'Hosts reaching it'): "
                             "'likely' counts verdicts that are certain or likely; 'unknown' also counts "
                             "verdicts the input cannot decide (a snapshot without the page data to settle "
                             "them).")(func)


def print_warnings(warnings: Iterable[str]) -> None:
    for warning in warnings:
        click.echo(one_line(f"memplan: warning: {warning}"), err=True)


class CapacityResult(Protocol):
    """What ``--check`` compares: ``PlanResult`` and ``UnplugResult``."""

    @property
    def asked_bytes(self) -> int: ...

    @property
    def achieved_bytes(self) -> int: ...

    @property
    def achieved_bytes_by_confidence(self) -> Dict[Confidence, int]: ...


R = TypeVar("R", bound=CapacityResult)


def finish_capacity_command(result: R, state: MachineState, profile: str, out: Optional[str], header: str,
                            warnings: List[str], as_json: bool, check: bool,
                            to_dict: Callable[[R, InputSource], Dict[str, Any]],
                            print_table: Callable[[Console, R], None], trust: Confidence) -> None:
    """The common end of ``plan`` and ``unplug``: write the resulting profile if asked, print
    warnings, render, and exit with chmem's codes under ``--check`` (counting the memory whose
    confidence ``--trust`` accepts)."""
    from memplan.profile.writer import read_document, write_profile
    from memplan.render import json as render_json

    warnings = list(warnings)
    if out:
        warnings += write_profile(state.machine, read_document(profile), state.to_machine(), out, header=header)
    print_warnings(warnings)
    if as_json:
        render_json.write(to_dict(result, input_source(profile)), sys.stdout)
    else:
        print_table(stdout_console(), result)
    if check:
        counted = sum(n for level, n in result.achieved_bytes_by_confidence.items() if trusted(trust, level))
        raise SystemExit(int(check_status(counted, result.asked_bytes)))
    raise SystemExit(int(ExitStatus.SUCCESS))


def print_plan_table(console: Console, result: PlanResult) -> None:
    """``plan``'s report (the renderer, and rich with it, is imported here: ``--json`` imports none)."""
    from memplan.render.capacity_table import print_plan

    print_plan(console, result)


def print_unplug_table(console: Console, result: UnplugResult) -> None:
    """``unplug``'s report (rich imported here, as for ``plan``)."""
    from memplan.render.capacity_table import print_unplug

    print_unplug(console, result)


def size_value(option: str, value: str, chmem: bool = False, positive: bool = False) -> int:
    """A size given on the command line (``chmem``: a bare number means MiB)."""
    try:
        size = parse_chmem_size(value) if chmem else parse_size(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if positive and size <= 0:
        raise UsageError(f"{option}: {value!r} is not more than 0")
    return size
