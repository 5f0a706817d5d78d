"""The five predicate sites of spec §5.1, one by one."""

import numpy as np
import pytest

from memplan.core.errors import UsageError
from memplan.core.model import PageKind
from memplan.kernel.semantics import MAINLINE, PROPOSED, SEMANTICS, get_semantics, semantics_marking

R, S = get_semantics("refcount"), get_semantics("skippable")
REF = np.array([0, 1, 2, 0, 1, 2])
SKIP = np.array([False, False, False, True, True, True])


def test_isolation_site():
    assert R.isolation_treats_as_movable(SKIP).all()
    assert (S.isolation_treats_as_movable(SKIP) == SKIP).all()


def test_scan_site():
    assert (R.scan_busy(REF, SKIP) == (REF != 0)).all()
    assert (S.scan_busy(REF, SKIP) == ~SKIP).all()


def test_migrate_site():
    assert not R.migrate_skips(SKIP).any()
    assert (S.migrate_skips(SKIP) == SKIP).all()


def test_test_isolated_site():
    assert (R.test_passes(REF, SKIP) == (REF == 0)).all()
    assert (S.test_passes(REF, SKIP) == SKIP).all()


def test_commit_site():
    (level, text, _, _, mask), = R.commit_checks(REF, SKIP)
    assert (level.value, text) == ("bug", "BUG_ON(page_count(page))") and (mask == (REF != 0)).all()
    checks = S.commit_checks(REF, SKIP)
    assert [(c[0].value, c[1]) for c in checks] == [("warn_once", "WARN_ON_ONCE(!PageOfflineSkippable(page))"),
                                                    ("warn_once", "WARN_ON_ONCE(page_count(page) != 1)")]
    assert (checks[1][4] == (REF != 1)).all()


def test_virtio_mem_side_effects():
    ref = np.array([1, 2])
    assert (R.virtio_mem_going_offline(ref) == [0, 1]).all() and (R.virtio_mem_cancel_offline(ref - 1) == ref).all()
    assert (S.virtio_mem_going_offline(ref) == ref).all() and (S.virtio_mem_cancel_offline(ref) == ref).all()
    assert (R.marks_fake_offline, S.marks_fake_offline) == (False, True)
    assert (R.unflagged_fake_offline_kind, S.unflagged_fake_offline_kind) == (PageKind.FAKE_OFFLINE, PageKind.BALLOON)


def test_snapshot_detection_asks_the_semantics():
    assert semantics_marking(False) is get_semantics(MAINLINE) is get_semantics(None)
    assert semantics_marking(True) is get_semantics(PROPOSED)


def test_registry():
    assert set(SEMANTICS) == {"refcount", "skippable"}
    with pytest.raises(UsageError, match="did you mean 'skippable'"):
        get_semantics("skipable")


def test_foreign_reference_blocks_follows_the_scan_site():
    from memplan.kernel.semantics import foreign_reference_blocks
    assert foreign_reference_blocks(R) is True   # row 20: refcount 1 after virtio-mem's drop -> -EBUSY
    assert foreign_reference_blocks(S) is False  # skippable: SCAN ignores the refcount
