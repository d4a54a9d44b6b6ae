"""Nothing lost, nothing moved twice: failed, retried and crashed writes at every write point.

Each scenario disturbs a run of the fixtures at write k, then (where the issue says a later
run must repair it) starts a fresh run on exactly that database state with a clock past the
lease. Afterwards every amend task must be `completed` with its batch exactly as an
undisturbed run leaves it, or `error` with its batch exactly as before; no journal is left.
"""

from collections import Counter
from datetime import timedelta

import mongomock
import pytest
from bson import ObjectId

from database_update import read_fixtures, reset_collections
from task_processor import amend_task_processing
from tests.conftest import FIXED_NOW, PROJECT_ROOT, batch_state, copy_of, fixed_clock
from tests.faults import FaultInjector, FaultyDatabase, SimulatedCrash, crash, permanent, transient
from utils.config import JobSettings
from utils.connectDB import (
    CASES_COLLECTION,
    COUNTERS_COLLECTION,
    JOURNAL_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TRANSACTIONS_COLLECTION,
)
from utils.Custom_Exceptions import DatabaseUpdateError

SETTINGS = JobSettings(template_task_id=3)
LATER = FIXED_NOW + SETTINGS.lease + timedelta(minutes=1)
TASKS = {"005": ObjectId("6740a0000000000000000101"), "006": ObjectId("6740a0000000000000000102")}
OTHER_TYPE_TASK = ObjectId("6740a0000000000000000901")
FIXTURES = read_fixtures(PROJECT_ROOT / "data")


def fresh_db():
    database = mongomock.MongoClient()["drs_case_distribution_db"]
    reset_collections(database, FIXTURES)
    return database


def no_sleep(_seconds):
    """Retries in tests do not wait."""


def run_job(database, clock=fixed_clock, sleep=no_sleep):
    return amend_task_processing(database, SETTINGS, clock=clock, sleep=sleep)


def _undisturbed():
    database = fresh_db()
    before = {batch: batch_state(database, batch) for batch in TASKS}
    injector = FaultInjector()
    run_job(FaultyDatabase(database, injector))
    return before, {batch: batch_state(database, batch) for batch in TASKS}, len(injector.writes)


BEFORE, AFTER, WRITES = _undisturbed()
WRITE_POINTS = range(1, WRITES + 1)


def totals(cases):
    """Cases per DRC and per RTOM, and each case's RTOM: what no amend may change."""
    current = [(case.get("NEW_DRC_ID") or case["DRC_Id"], case["RTOM"]) for case in cases]
    return (Counter(drc for drc, _ in current), Counter(rtom for _, rtom in current),
            [(case["Case_Id"], case["RTOM"]) for case in cases])


def assert_consistent(database):
    """Every amend task ended; each batch is exactly as before, or exactly as an undisturbed run leaves it,
    and the invariants of SPEC.md hold."""
    for batch, task_id in TASKS.items():
        task = database[TASKS_COLLECTION].find_one({"_id": task_id})
        assert task["task_status"] in ("completed", "error"), task
        expected = AFTER if task["task_status"] == "completed" else BEFORE
        assert batch_state(database, batch) == expected[batch], (batch, task["status_description"])
        assert totals(batch_state(database, batch)["cases"]) == totals(BEFORE[batch]["cases"])
    assert database[JOURNAL_COLLECTION].count_documents({}) == 0
    assert database[TASKS_COLLECTION].find_one({"_id": OTHER_TYPE_TASK})["task_status"] == "open"


def disturbed_run(database, injector):
    """A run that may abort (a failed claim: exit code 2) or die (a simulated crash)."""
    try:
        run_job(FaultyDatabase(database, injector))
    except (DatabaseUpdateError, SimulatedCrash):
        return False
    return True


TASK_WRITES = [(TASKS_COLLECTION, "find_one_and_update"), (COUNTERS_COLLECTION, "find_one_and_update"),
               (JOURNAL_COLLECTION, "insert_one"),
               (TASKS_COLLECTION, "update_one"), (JOURNAL_COLLECTION, "update_one"),
               (CASES_COLLECTION, "bulk_write"), (SUMMARY_COLLECTION, "bulk_write"),
               (TRANSACTIONS_COLLECTION, "update_one"), (TASKS_COLLECTION, "update_one"),
               (JOURNAL_COLLECTION, "delete_one")]


def test_the_run_has_the_expected_write_points():
    """claim, fencing token, journal, lease renewal, journaled plan, cases, summary, seq, status, journal:
    per task."""
    injector = FaultInjector()
    run_job(FaultyDatabase(fresh_db(), injector))
    assert injector.writes == TASK_WRITES * 2
    assert WRITES == 20


@pytest.mark.parametrize("after_write", [False, True], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("k", WRITE_POINTS)
def test_crash_at_every_write_point_then_a_fresh_run(k, after_write):
    database = fresh_db()
    with pytest.raises(SimulatedCrash):
        run_job(FaultyDatabase(database, FaultInjector({k}, after_write, crash)))
    run_job(database, clock=lambda: LATER)
    assert_consistent(database)


@pytest.mark.parametrize("k", WRITE_POINTS)
def test_crash_during_recovery_then_another_run(k):
    database = fresh_db()
    with pytest.raises(SimulatedCrash):
        run_job(FaultyDatabase(database, FaultInjector({k}, True, crash)))
    recovery_writes = FaultInjector()
    run_job(FaultyDatabase(fresh_copy := copy_of(database), recovery_writes), clock=lambda: LATER)
    for j in range(1, len(recovery_writes.writes) + 1):
        copy = copy_of(database)
        with pytest.raises(SimulatedCrash):
            run_job(FaultyDatabase(copy, FaultInjector({j}, True, crash)), clock=lambda: LATER)
        run_job(copy, clock=lambda: LATER + SETTINGS.lease * 2)
        assert_consistent(copy)
    assert_consistent(fresh_copy)


@pytest.mark.parametrize("after_write", [False, True], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("k", WRITE_POINTS)
def test_transient_faults_are_retried_to_success(k, after_write):
    database = fresh_db()
    pauses = []
    report = run_job(FaultyDatabase(database, FaultInjector({k, k + 1}, after_write, transient)),
                     sleep=pauses.append)
    # 0.5 s then 1.0 s; one pause only where the retried write finds its own landed work
    # (a duplicate journal insert is recognised as this task's)
    assert pauses in ([0.5, 1.0], [0.5])
    assert [o.status for o in report.outcomes] == ["completed", "completed"]
    assert {batch: batch_state(database, batch) for batch in TASKS} == AFTER
    assert database[JOURNAL_COLLECTION].count_documents({}) == 0


@pytest.mark.parametrize("after_write", [False, True], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("k", WRITE_POINTS)
def test_transient_faults_beyond_the_retries(k, after_write):
    database = fresh_db()
    pauses = []
    attempts = SETTINGS.retry.attempts
    injector = FaultInjector(set(range(k, k + attempts)), after_write, transient)
    try:
        run_job(FaultyDatabase(database, injector), sleep=pauses.append)
    except DatabaseUpdateError:
        pass  # the claim or the selection failed for good: the run stops (exit code 2)
    assert pauses and set(pauses) <= set(SETTINGS.retry.delays())
    run_job(database, clock=lambda: LATER)
    assert_consistent(database)


@pytest.mark.parametrize("after_write", [False, True], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("k", WRITE_POINTS)
def test_permanent_failure_at_every_write_point(k, after_write):
    database = fresh_db()
    disturbed_run(database, FaultInjector({k}, after_write, permanent))
    run_job(database, clock=lambda: LATER)
    assert_consistent(database)


def test_a_data_write_failure_is_undone_within_the_run():
    database = fresh_db()
    # write 7 is the summary of batch 005 (see test_the_run_has_the_expected_write_points)
    report = run_job(FaultyDatabase(database, FaultInjector({7}, True, permanent)))
    task = database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})
    assert task["task_status"] == "error"
    assert "injected fault at write 7" in task["status_description"]
    assert task["status_description"].endswith("every write of the task was undone")
    assert batch_state(database, "005") == BEFORE["005"]
    assert [o.status for o in report.outcomes] == ["error", "completed"]


class CrashInsideCaseBulkWrite(FaultyDatabase):
    """The ordered bulk_write of the cases lands its first UpdateMany, then the process dies."""

    def __init__(self, database):
        super().__init__(database, FaultInjector())

    def __getitem__(self, name):
        collection = self._database[name]
        if name != CASES_COLLECTION:
            return collection

        class Collection:
            def __getattr__(self, attribute):
                return getattr(collection, attribute)

            def bulk_write(self, requests, **kwargs):
                collection.bulk_write(requests[:1], **kwargs)
                raise SimulatedCrash("died inside the case bulk_write")

        return Collection()


def test_a_crash_mid_write_is_rolled_forward():
    database = fresh_db()
    with pytest.raises(SimulatedCrash):
        run_job(CrashInsideCaseBulkWrite(database))
    assert batch_state(database, "005")["cases"] not in (BEFORE["005"]["cases"], AFTER["005"]["cases"])
    assert database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})["task_status"] == "processing"
    not_yet = run_job(database, clock=lambda: FIXED_NOW + SETTINGS.lease - timedelta(minutes=1))
    assert database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})["task_status"] == "processing"
    assert [o.status for o in not_yet.outcomes] == ["completed"]  # task 102, on another batch
    report = run_job(database, clock=lambda: LATER)
    task = database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})
    assert task["task_status"] == "completed"
    assert "recovered by DRS Amend run" in task["status_description"]
    assert "its writes were finished" in task["status_description"]
    assert batch_state(database, "005") == AFTER["005"]
    assert [o.status for o in report.outcomes] == ["completed"]


def test_a_crash_after_the_claim_ends_in_error_with_nothing_changed():
    database = fresh_db()
    with pytest.raises(SimulatedCrash):
        run_job(FaultyDatabase(database, FaultInjector({1}, True, crash)))
    run_job(database, clock=lambda: LATER)
    task = database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})
    assert task["task_status"] == "error"
    assert task["status_description"].startswith("Interrupted before any write, nothing changed; recovered by")
    assert batch_state(database, "005") == BEFORE["005"]


def test_a_corrupt_journal_is_reported_and_the_run_goes_on():
    database = fresh_db()
    with pytest.raises(SimulatedCrash):
        run_job(FaultyDatabase(database, FaultInjector({6}, False, crash)))  # journaled, no data written
    database[JOURNAL_COLLECTION].update_one({"_id": "005"}, {"$unset": {"writes.moves": ""}})
    report = run_job(database, clock=lambda: LATER)
    assert [o.status for o in report.outcomes] == ["error", "completed"]
    assert report.outcomes[0].message.startswith("recovery failed: internal error: KeyError")
    assert database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})["task_status"] == "processing"
    assert batch_state(database, "005") == BEFORE["005"]


def test_a_plan_too_large_for_its_journal_ends_in_error_with_nothing_written(monkeypatch):
    monkeypatch.setattr("update_databases.JOURNAL_LIMIT_BYTES", 500)
    database = fresh_db()
    run_job(database)
    task = database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})
    assert task["task_status"] == "error"
    assert "over MongoDB's 16 MB document limit; split the amend request" in task["status_description"]
    assert task["status_description"].endswith("nothing was written")
    assert batch_state(database, "005") == BEFORE["005"]
    assert database[JOURNAL_COLLECTION].count_documents({}) == 0
