"""When ``listen`` writes a study (fhir_imaging/dicom/collector.py): once its associations end, after a quiet
period, or when too much is held; each instance once. Time is passed in.

See docs/dicom.md, *listen*.
"""

from __future__ import annotations

from fhir_imaging.dicom.collector import StudyCollector
from fhir_imaging.dicom.mapping import InstanceRecord


def record(study: str, sop: str) -> InstanceRecord:
    return InstanceRecord(study, f"{study}.1", sop, {}, {"identifier": []}, {}, {"uid": sop})


def uids(due: list[list[InstanceRecord]]) -> list[tuple[str, int]]:
    return [(records[0].study_uid, len(records)) for records in due]


def test_a_study_is_due_when_its_association_ends_and_not_before() -> None:
    collector = StudyCollector(quiet_period=30, max_held=1000)
    collector.add(1, record("1.1", "1.1.1"), now=0)
    collector.add(1, record("1.1", "1.1.2"), now=1)
    collector.add(1, record("1.1", "1.1.2"), now=2)  # sent twice: held once
    assert collector.take_due(now=3) == []
    collector.end(1)
    assert uids(collector.take_due(now=3)) == [("1.1", 2)]
    assert collector.take_due(now=4) == [] and collector.held() == 0


def test_a_study_sent_over_two_associations_waits_for_both() -> None:
    collector = StudyCollector(quiet_period=30, max_held=1000)
    collector.add(1, record("1.1", "a"), now=0)
    collector.add(2, record("1.1", "b"), now=0)
    collector.end(1)
    assert collector.take_due(now=1) == []
    collector.end(2)
    assert uids(collector.take_due(now=1)) == [("1.1", 2)]


def test_a_quiet_study_is_due_while_its_association_stays_open() -> None:
    collector = StudyCollector(quiet_period=5, max_held=1000)
    collector.add(1, record("1.1", "a"), now=0)
    collector.add(1, record("2.2", "b"), now=4)
    assert uids(collector.take_due(now=5)) == [("1.1", 1)]
    assert uids(collector.take_due(now=9)) == [("2.2", 1)]
    collector.add(1, record("1.1", "c"), now=10)  # more of a written study: held again, written again later
    collector.end(1)
    assert uids(collector.take_due(now=10)) == [("1.1", 1)]


def test_at_the_bound_the_oldest_studies_are_written_first() -> None:
    collector = StudyCollector(quiet_period=30, max_held=3)
    collector.add(1, record("1.1", "a"), now=0)
    collector.add(1, record("2.2", "b"), now=1)
    collector.add(1, record("3.3", "c"), now=2)
    assert uids(collector.take_due(now=2)) == [("1.1", 1)]
    assert collector.held() == 2


def test_take_all_empties_in_arrival_order() -> None:
    collector = StudyCollector(quiet_period=30, max_held=100)
    collector.add(1, record("2.2", "b"), now=0)
    collector.add(2, record("1.1", "a"), now=1)
    assert uids(collector.take_all()) == [("2.2", 1), ("1.1", 1)]
    collector.end(1)
    collector.end(2)
    assert collector.take_due(now=2) == []


def test_a_study_held_back_is_due_at_its_retry_time_with_what_arrived_meanwhile() -> None:
    collector = StudyCollector(quiet_period=30, max_held=1000)
    collector.add(1, record("1.1", "a"), now=0)
    collector.end(1)
    (taken,) = collector.take_due(now=1)
    collector.hold_back(taken, now=1, not_before=5)
    collector.add(2, record("1.1", "b"), now=2)  # the study goes on arriving
    collector.end(2)
    assert collector.take_due(now=4) == [] and collector.held() == 2
    assert uids(collector.take_due(now=5)) == [("1.1", 2)]


def test_a_study_held_back_is_still_due_early_when_too_much_is_held() -> None:
    collector = StudyCollector(quiet_period=30, max_held=3)
    collector.add(1, record("1.1", "a"), now=0)
    collector.end(1)
    collector.hold_back(collector.take_due(now=0)[0], now=0, not_before=100)
    collector.add(2, record("2.2", "b"), now=1)
    collector.add(2, record("2.2", "c"), now=1)
    assert uids(collector.take_due(now=2)) == [("1.1", 1)]  # the oldest, though its retry time has not come
