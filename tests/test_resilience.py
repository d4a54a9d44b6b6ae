"""Nothing lost, nothing moved twice: failed, retried and crashed writes at every write point.

Each scenario disturbs a run of the fixtures at write k, then (where the issue says a later
run must repair it) starts a fresh run on exactly that database state with a clock past the
lease. Afterwards every amend task must be `completed` with its batch exactly as an
undisturbed run leaves it, or `error` with its batch exactly as before; no journal is left.
"""

from collections import Counter
from datetime import timedelta

import pytest

from amend_store import (
    CASES_COLLECTION,
    JOURNAL_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TRANSACTIONS_COLLECTION,
)
from tests.support import (
    FIXED_NOW,
    OTHER_TYPE_TASK,
    SETTINGS,
    TASKS,
    FaultInjector,
    SimulatedCrash,
    batch_state,
    copy_of,
    crash,
    disturbed,
    fresh_db,
    permanent,
    run_job,
    transient,
)
from utils.Custom_Exceptions import DatabaseUpdateError

pytestmark = pytest.mark.slow  # every write point: see pyproject.toml

LATER = FIXED_NOW + SETTINGS.lease + timedelta(minutes=1)
DATA_COLLECTIONS = (CASES_COLLECTION, SUMMARY_COLLECTION, TRANSACTIONS_COLLECTION)


def _undisturbed():
    database = fresh_db()
    before = {batch: batch_state(database, batch) for batch in TASKS}
    injector = FaultInjector()
    run_job(disturbed(database, injector))
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
        run_job(disturbed(database, injector))
    except (DatabaseUpdateError, SimulatedCrash):
        return False
    return True


def test_every_task_journals_its_plan_before_its_first_data_write():
    """Per task: the claim first; the journal opened, then the plan journaled, before any data write;
    the data written in the order cases, summary, transaction; the journal closed last. Both tasks
    write alike, and every write point of the run is one of these."""
    injector = FaultInjector()
    run_job(disturbed(fresh_db(), injector))
    claims = [number for number, write in enumerate(injector.writes) if write == (TASKS_COLLECTION,
                                                                                   "find_one_and_update")]
    assert len(claims) == 2 and claims[0] == 0
    first, second = injector.writes[:claims[1]], injector.writes[claims[1]:]
    assert first == second and len(injector.writes) == WRITES
    journal_writes = [number for number, (collection, _) in enumerate(first) if collection == JOURNAL_COLLECTION]
    data_writes = [number for number, (collection, _) in enumerate(first) if collection in DATA_COLLECTIONS]
    assert [first[number][1] for number in journal_writes] == ["insert_one", "update_one", "delete_one"]
    assert journal_writes[1] < data_writes[0] and data_writes[-1] < journal_writes[2] == len(first) - 1
    assert [first[number][0] for number in data_writes] == list(DATA_COLLECTIONS)


@pytest.mark.parametrize("after_write", [False, True], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("k", WRITE_POINTS)
def test_crash_at_every_write_point_then_a_fresh_run(k, after_write):
    database = fresh_db()
    with pytest.raises(SimulatedCrash):
        run_job(disturbed(database, FaultInjector({k}, after_write, crash)))
    run_job(database, clock=lambda: LATER)
    assert_consistent(database)


@pytest.mark.parametrize("k", WRITE_POINTS)
def test_crash_during_recovery_then_another_run(k):
    database = fresh_db()
    with pytest.raises(SimulatedCrash):
        run_job(disturbed(database, FaultInjector({k}, True, crash)))
    recovery_writes = FaultInjector()
    run_job(disturbed(fresh_copy := copy_of(database), recovery_writes), clock=lambda: LATER)
    for j in range(1, len(recovery_writes.writes) + 1):
        copy = copy_of(database)
        with pytest.raises(SimulatedCrash):
            run_job(disturbed(copy, FaultInjector({j}, True, crash)), clock=lambda: LATER)
        run_job(copy, clock=lambda: LATER + SETTINGS.lease * 2)
        assert_consistent(copy)
    assert_consistent(fresh_copy)


@pytest.mark.parametrize("after_write", [False, True], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("k", WRITE_POINTS)
def test_transient_faults_are_retried_to_success(k, after_write):
    database = fresh_db()
    pauses = []
    report = run_job(disturbed(database, FaultInjector({k, k + 1}, after_write, transient)),
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
        run_job(disturbed(database, injector), sleep=pauses.append)
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
    report = run_job(disturbed(database, FaultInjector({7}, True, permanent)))
    task = database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})
    assert task["task_status"] == "error"
    assert "injected fault at write 7" in task["status_description"]
    assert task["status_description"].endswith("every write of the task was undone")
    assert batch_state(database, "005") == BEFORE["005"]
    assert [o.status for o in report.outcomes] == ["error", "completed"]


def die_inside_the_case_bulk_write(database):
    """The ordered bulk_write of the cases lands its first UpdateMany, then the process dies."""
    def hook(collection, command, call, args):
        if (collection, command) != (CASES_COLLECTION, "bulk_write"):
            return call()
        database[CASES_COLLECTION].bulk_write(args[0][:1], ordered=True)
        raise SimulatedCrash("died inside the case bulk_write")
    return disturbed(database, hook)


def test_a_crash_mid_write_is_rolled_forward():
    database = fresh_db()
    with pytest.raises(SimulatedCrash):
        run_job(die_inside_the_case_bulk_write(database))
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
        run_job(disturbed(database, FaultInjector({1}, True, crash)))
    run_job(database, clock=lambda: LATER)
    task = database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})
    assert task["task_status"] == "error"
    assert task["status_description"].startswith("Interrupted before any write, nothing changed; recovered by")
    assert batch_state(database, "005") == BEFORE["005"]


def test_a_corrupt_journal_is_reported_and_the_run_goes_on():
    database = fresh_db()
    with pytest.raises(SimulatedCrash):
        run_job(disturbed(database, FaultInjector({6}, False, crash)))  # journaled, no data written
    database[JOURNAL_COLLECTION].update_one({"_id": "005"}, {"$unset": {"writes.moves": ""}})
    report = run_job(database, clock=lambda: LATER)
    assert [o.status for o in report.outcomes] == ["error", "completed"]
    assert report.outcomes[0].message.startswith("recovery failed: internal error: KeyError")
    assert database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})["task_status"] == "processing"
    assert batch_state(database, "005") == BEFORE["005"]


def test_a_plan_too_large_for_its_journal_ends_in_error_with_nothing_written():
    database = fresh_db()
    run_job(database, journal_limit_bytes=500)
    task = database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})
    assert task["task_status"] == "error"
    assert "over MongoDB's 16 MB document limit; split the amend request" in task["status_description"]
    assert task["status_description"].endswith("nothing was written")
    assert batch_state(database, "005") == BEFORE["005"]
    assert database[JOURNAL_COLLECTION].count_documents({}) == 0


def test_an_undo_that_fails_is_left_to_recovery_which_finishes_it():
    """The summary write fails for good, then every write of the undo fails too: the journal stays
    `undoing` and the task `processing`; the next run after the lease finishes the undo."""
    database = fresh_db()
    summary_write, undo_writes = 7, set(range(9, 13))  # 8 journals the undo; then seq, summary, cases, status
    report = run_job(disturbed(database, FaultInjector({summary_write} | undo_writes, error=permanent)), task_id=101)
    assert [o.status for o in report.outcomes] == ["error"]
    assert report.outcomes[0].message.endswith("undo incomplete, left for recovery")
    assert database[JOURNAL_COLLECTION].find_one({"_id": "005"})["phase"] == "undoing"
    assert database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})["task_status"] == "processing"
    assert batch_state(database, "005") != BEFORE["005"]  # part of the writes is still there
    report = run_job(database, clock=lambda: LATER)
    task = database[TASKS_COLLECTION].find_one({"_id": TASKS["005"]})
    assert task["task_status"] == "error" and "injected fault at write 7" in task["status_description"]
    assert "(recovered by DRS Amend run" in task["status_description"]
    assert_consistent(database)


def test_a_token_race_on_the_first_ever_counter_is_retried():
    from pymongo.errors import DuplicateKeyError

    from amend_store import COUNTERS_COLLECTION

    raced = []

    def another_run_creates_the_counter_first(collection, command, call, args):
        if collection == COUNTERS_COLLECTION and not raced:
            raced.append(1)
            raise DuplicateKeyError("E11000 duplicate key error collection: DRS_Amend.Counters")
        return call()

    database = fresh_db()
    report = run_job(disturbed(database, another_run_creates_the_counter_first))
    assert raced and [o.status for o in report.outcomes] == ["completed", "completed"]
    assert_consistent(database)
