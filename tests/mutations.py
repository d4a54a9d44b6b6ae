"""Mutations of the shipped fixtures: each makes batch 005 or its task 101 malformed in one way."""

from amend_store import (
    CASES_COLLECTION,
    JOURNAL_COLLECTION,
    TASKS_COLLECTION,
    TEMPLATES_COLLECTION,
    TRANSACTIONS_COLLECTION,
)
from tests.support import FIXED_NOW, OTHER_TYPE_TASK, TASK_005, TASK_006, run_job, snapshot


def cases(db):
    return db[CASES_COLLECTION]


def seq2(db, update):
    db[TRANSACTIONS_COLLECTION].update_one(
        {"Case_Distribution_Batch_ID": "005", "batch_seq_details.batch_seq": 2}, update)


# The amend request of batch 005 as shipped.
REQUEST = {"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 2}


def set_seq2_field(field, value):
    return lambda db: seq2(db, {"$set": {f"batch_seq_details.$.{field}": value}})


def set_distribution(**fields):
    return set_seq2_field("array_of_distributions", [dict(REQUEST, **fields)])


def drop_distribution_key(key):
    return set_seq2_field("array_of_distributions", [{k: v for k, v in REQUEST.items() if k != key}])


def set_transaction(**fields):
    return lambda db: db[TRANSACTIONS_COLLECTION].update_one({"Case_Distribution_Batch_ID": "005"}, {"$set": fields})


def set_case_field(field, value):
    return lambda db: cases(db).update_one({"Case_Distribution_Batch_ID": "005", "Case_Id": 1010},
                                           {"$set": {field: value}})


def set_template(**fields):
    return lambda db: db[TEMPLATES_COLLECTION].update_one({"Template_Task_Id": 3}, {"$set": fields})


def set_task(**fields):
    return lambda db: db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": fields})


def retag_rtom(drc, rtom, new_rtom):
    return lambda db: cases(db).update_many(
        {"Case_Distribution_Batch_ID": "005", "DRC_Id": drc, "RTOM": rtom}, {"$set": {"RTOM": new_rtom}})


def unset_case_field(field):
    return lambda db: cases(db).update_one({"Case_Distribution_Batch_ID": "005", "Case_Id": 1010},
                                           {"$unset": {field: ""}})


def duplicate_case(db):
    case = cases(db).find_one({"Case_Distribution_Batch_ID": "005", "Case_Id": 1010})
    case.pop("_id")
    cases(db).insert_one(case)


def require_template_parameter(db):
    db[TEMPLATES_COLLECTION].update_one({"Template_Task_Id": 3}, {"$set": {"parameters.Requested_By": "string"}})
    db[TASKS_COLLECTION].update_one({"_id": TASK_006}, {"$set": {"parameters.Requested_By": "operator_b"}})


def assert_task_101_fails_cleanly(db, settings, mutate, reason, affects_all):
    """After `mutate`, a run ends task 101 in error with `reason`, writes nothing of it, and
    processes task 102 (which fails too only when the mutation `affects_all` tasks)."""
    mutate(db)
    before = snapshot(db, "005")
    other_type_before = db[TASKS_COLLECTION].find_one({"_id": OTHER_TYPE_TASK})
    report = run_job(db, settings=settings)
    task = db[TASKS_COLLECTION].find_one({"_id": TASK_005})
    assert task["task_status"] == "error"
    assert reason in task["status_description"]
    assert task["status_description"].endswith("nothing was written")
    assert task["end_dtm"] == task["status_changed_dtm"] == FIXED_NOW
    assert snapshot(db, "005") == before
    assert report.exit_code == 1
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_006})["task_status"] == ("error" if affects_all else "completed")
    assert db[TASKS_COLLECTION].find_one({"_id": OTHER_TYPE_TASK}) == other_type_before
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0
