"""A write failure at any write of a task leaves the database as it was before that task."""

import pytest
from bson import ObjectId

from task_processor import amend_task_processing
from tests.conftest import fixed_clock, snapshot
from tests.faults import FaultInjector, FaultyDatabase
from utils.connectDB import CASES_COLLECTION, TASKS_COLLECTION
from utils.Custom_Exceptions import DatabaseUpdateError

TASK_005 = ObjectId("6740a0000000000000000101")
TASK_006 = ObjectId("6740a0000000000000000102")


def task_writes(db, settings):
    """The writes of an undisturbed run of task 101 alone: claim, data writes, completion."""
    db[TASKS_COLLECTION].delete_one({"_id": TASK_006})
    injector = FaultInjector()
    amend_task_processing(FaultyDatabase(db, injector), settings, clock=fixed_clock)
    return injector.writes


def test_the_task_writes_are_known(db, settings):
    writes = task_writes(db, settings)
    assert writes == [
        ("System_tasks", "find_one_and_update"),
        ("DRS.Tmp_Case_Distribution_DRC", "update_many"),
        ("DRS.Tmp_Case_Distribution_DRC", "update_many"),
        ("DRS_Database.Case_Distribution_DRC_Summary", "bulk_write"),
        ("Case_distribution_drc_transactions", "update_one"),
        ("System_tasks", "update_one"),
    ]


# Writes 2..6 are the task's own writes after its claim (see test_the_task_writes_are_known).
@pytest.mark.parametrize("after_write", [False, True], ids=["fails-before-landing", "fails-after-landing"])
@pytest.mark.parametrize("fail_at", [2, 3, 4, 5, 6])
def test_a_failed_write_is_undone(db, settings, fail_at, after_write):
    db[TASKS_COLLECTION].delete_one({"_id": TASK_006})
    before = snapshot(db)
    report = amend_task_processing(FaultyDatabase(db, FaultInjector({fail_at}, after_write)), settings,
                                   clock=fixed_clock)
    assert snapshot(db) == before
    task = db[TASKS_COLLECTION].find_one({"_id": TASK_005})
    assert task["task_status"] == "error"
    assert f"injected fault at write {fail_at}" in task["status_description"]
    assert task["status_description"].endswith("every write of the task was undone")
    assert report.exit_code == 1


def test_a_failed_claim_stops_the_run_before_any_data_write(db, settings):
    before = snapshot(db)
    with pytest.raises(DatabaseUpdateError, match="claiming task"):
        amend_task_processing(FaultyDatabase(db, FaultInjector({1})), settings, clock=fixed_clock)
    assert snapshot(db) == before


def test_an_undo_that_fails_is_reported_in_the_task(db, settings):
    db[TASKS_COLLECTION].delete_one({"_id": TASK_006})
    cases_before = snapshot(db)[CASES_COLLECTION]
    # write 4 (summary) fails, then write 5, the first undo write (restoring the summary), fails too
    amend_task_processing(FaultyDatabase(db, FaultInjector({4, 5})), settings, clock=fixed_clock)
    task = db[TASKS_COLLECTION].find_one({"_id": TASK_005})
    assert task["task_status"] == "error"
    assert "undo incomplete" in task["status_description"]
    assert "summary:" in task["status_description"]
    assert snapshot(db)[CASES_COLLECTION] == cases_before  # the other undo steps still ran
