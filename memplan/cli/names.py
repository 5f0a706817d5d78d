"""The words the commands' options and help pages show, importable without numpy or rich.

``memplan CMD --help`` and completing an option inside a command load the command's module,
which builds its click options at import time. The choices, defaults and column lists those
options show are defined by modules that import numpy (``memplan.core.model`` and everything
above it) or rich (``memplan.render``), which ``--help`` does not need: this module repeats
them as plain values, and tests/test_startup.py checks each against its source of truth (the
same arrangement as ``memplan.cli.app.COMMANDS`` for the command list).
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

#: ``memplan.kernel.semantics.SEMANTICS``, in its order (``--semantics``, ``--left``, ``--right``)
SEMANTICS_NAMES: Tuple[str, ...] = ("refcount", "skippable")
#: ``memplan.diff.compute.DEFAULT_LEFT`` / ``DEFAULT_RIGHT`` (mainline / the proposed semantics)
DEFAULT_LEFT = "refcount"
DEFAULT_RIGHT = "skippable"
#: ``memplan.core.model.ForeignRefTiming`` values (``--foreign-ref-dropped``)
FOREIGN_REF_TIMINGS: Tuple[str, ...] = ("never", "during-offline", "after-offline", "after-online")
#: ``memplan.core.results.Confidence`` values, surest first (``--trust`` offers the last two)
CONFIDENCE_LEVELS: Tuple[str, ...] = ("certain", "likely", "unknown")
#: ``memplan.render.lsmem.SummaryWhen`` values (``--summary[=WHEN]``)
SUMMARY_WHEN: Tuple[str, ...] = ("never", "always", "only")
#: ``memplan.snapshot.ingest.MAX_DEFAULT_JOBS`` (``--jobs``'s help)
MAX_DEFAULT_JOBS = 16
#: ``memplan.plans.plan.CHMEM_ZONES`` (``plan --zone``)
CHMEM_ZONES: Tuple[str, ...] = ("DMA", "DMA32", "Normal", "Highmem", "Movable", "Device")
#: ``memplan.fleet.executors.DEFAULT_HOST_TIMEOUT_S`` (``fleet --host-timeout``)
DEFAULT_HOST_TIMEOUT_S = 300.0


class ColumnsHelp(NamedTuple):
    """What a listing's ``--help`` says about its ``memplan.render.lsmem.ColumnSet``: every
    column's name and help in order, the default columns, and which of those are optional
    (shown only when needed)."""

    columns: Tuple[Tuple[str, str], ...]
    default: Tuple[str, ...]
    optional: Tuple[str, ...]


_LSMEM_HEAD = (
    ("RANGE", "start and end address of the memory range"),
    ("SIZE", "size of the memory range"),
    ("STATE", "online status of the memory range"),
    ("REMOVABLE", "memory is removable (online blocks)"),
)
_LSMEM_TAIL = (
    ("NODE", "numa node of memory"),
    ("ZONES", "valid zones for the memory range"),
)
_S390 = (
    ("CONFIGURED", "configuration status of the memory range (s390)"),
    ("MEMMAP-ON-MEMORY", "memmap-on-memory status of the memory range (s390)"),
)

#: ``memplan.render.block_columns.verdict_columns(has_memconfig=True)`` (``simulate``)
SIMULATE_COLUMNS = ColumnsHelp(
    columns=(("BLOCK", "memory block number or blocks range"),) + _LSMEM_HEAD + _LSMEM_TAIL + (
        ("ZONE", "the block's zone (none: it spans zones)"),
        ("RESULT", "offlined, fails or hangs"),
        ("ERRNO", "errno the write returns"),
        ("REASON", "the kernel's reason string (pr_debug)"),
        ("STEP", "offline_pages() step that decides"),
        ("FREE", "free (buddy) pages"),
        ("TO-MIGRATE", "pages migrated away"),
        ("SKIPPED", "PageOffline pages offlining skips"),
        ("DISSOLVED", "free hugetlb pages dissolved"),
        ("HWPOISON", "hwpoisoned pages"),
        ("VMEMMAP", "self-hosted memmap pages"),
        ("HOLES", "pages that are not System RAM"),
        ("BLOCKING", "pages that keep the block from going offline"),
        ("PAGES", "pages in the block"),
        ("CULPRIT", "the page the kernel names or stops at (kind@pfn)"),
        ("DEVICE", "virtio-mem device"),
        ("DEVICE-STATE", "virtio-mem block state"),
        ("HAZARDS", "hazard kinds beyond the outcome"),
        ("CONFIDENCE", "certain, likely or unknown (snapshots cannot see everything)"),
    ) + _S390,
    default=("BLOCK", "RANGE", "SIZE", "STATE", "ZONE", "RESULT", "ERRNO", "REASON", "STEP", "FREE", "TO-MIGRATE",
             "SKIPPED", "DISSOLVED", "CULPRIT", "CONFIDENCE"),
    optional=("STATE", "CONFIDENCE"),
)

#: ``memplan.render.block_columns.difference_columns(DEFAULT_LEFT, DEFAULT_RIGHT)`` (``diff-semantics``)
DIFF_COLUMNS = ColumnsHelp(
    columns=(
        ("BLOCK", "memory block number"),
        ("RANGE", "physical address range"),
        ("SIZE", "size"),
        ("ZONE", "zone"),
        ("NODE", "NUMA node"),
        ("REFCOUNT", "verdict under refcount (the --left side; also LEFT)"),
        ("SKIPPABLE", "verdict under skippable (the --right side; also RIGHT)"),
        ("CHANGED", "verdict fields that differ"),
        ("SITES", "predicate sites that explain the difference"),
        ("CULPRIT", "culprit page(s) of either side"),
        ("CONFIDENCE", "the less certain side's confidence"),
    ),
    default=("BLOCK", "RANGE", "SIZE", "ZONE", "REFCOUNT", "SKIPPABLE", "CULPRIT", "CONFIDENCE"),
    optional=("CONFIDENCE",),
)

#: ``memplan.render.block_columns.lsmem_columns(True, memplan.render.snapshot.SNAPSHOT_DEFAULT)``
#: (``snapshot``)
SNAPSHOT_COLUMNS = ColumnsHelp(
    columns=_LSMEM_HEAD + (("BLOCK", "memory block number or blocks range"),) + _LSMEM_TAIL + _S390,
    default=("RANGE", "SIZE", "STATE", "REMOVABLE", "BLOCK", "ZONES"),
    optional=(),
)
