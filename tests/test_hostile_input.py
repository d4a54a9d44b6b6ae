"""Malformed documents nobody planned for: each ends its task in error with a message naming the
field, writes nothing of that task, never acts as a query operator, and stops no other task."""

import math

import pytest

from amend_store import CASES_COLLECTION, SUMMARY_COLLECTION, TASKS_COLLECTION
from tests.mutations import (
    REQUEST,
    assert_task_101_fails_cleanly,
    cases,
    set_case_field,
    set_distribution,
    set_seq2_field,
    set_task,
    set_template,
    set_transaction,
)
from tests.support import TASK_005, run_job, snapshot


def add_summary_row(**fields):
    row = {"Case_Distribution_Batch_ID": "005", "DRC_Id": "D1", "RTOM": "CW", "Count": 0, "Tot_Arrease": 0}
    return lambda db: db[SUMMARY_COLLECTION].insert_one(dict(row, **fields))


def drop_cases(db):
    cases(db).delete_many({"Case_Distribution_Batch_ID": "005"})


def unset_task_parameters(db):
    db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$unset": {"parameters": ""}})


def drop_batch_seq_details(db):
    db["Case_distribution_drc_transactions"].update_one({"Case_Distribution_Batch_ID": "005"},
                                                         {"$unset": {"batch_seq_details": ""}})


# (name, mutation, text the status_description must contain, whether task 102 fails too)
HOSTILE_INPUTS = [
    ("Case_Id as a string", set_case_field("Case_Id", "1010"), "Case_Id must be an integer, got '1010' (str)", False),
    ("Case_Id as a float", set_case_field("Case_Id", 1010.0), "Case_Id must be an integer, got 1010.0 (float)", False),
    ("Case_Id as a boolean", set_case_field("Case_Id", True), "got True (bool)", False),
    ("Case_Id null", set_case_field("Case_Id", None), "Case_Id must be an integer, got None", False),
    ("DRC_Id as a number", set_case_field("DRC_Id", 1),
     "case 1010 in batch 005: DRC_Id must be a non-empty string, got 1 (int)", False),
    ("DRC_Id with whitespace", set_case_field("DRC_Id", " D1"), "DRC_Id ' D1' has surrounding whitespace", False),
    ("RTOM empty", set_case_field("RTOM", ""), "case 1010 in batch 005: RTOM must be a non-empty string", False),
    ("RTOM as a list", set_case_field("RTOM", ["CW"]), "RTOM must be a non-empty string, got ['CW'] (list)", False),
    ("NEW_DRC_ID as a number", set_case_field("NEW_DRC_ID", 2), "NEW_DRC_ID must be a non-empty string, got 2", False),
    ("NEW_DRC_ID as an operator", set_case_field("NEW_DRC_ID", {"$ne": None}), "NEW_DRC_ID must be a non-empty string",
     False),
    ("Arrease as text", set_case_field("Arrease", "abc"),
     "case 1010 in batch 005: Arrease must be a number, got 'abc'", False),
    ("Arrease NaN", set_case_field("Arrease", math.nan), "Arrease must be a number, got nan", False),
    ("Arrease infinite", set_case_field("Arrease", math.inf), "Arrease must be a number, got inf", False),
    ("donor as a number", set_distribution(donor_drc_id=2),
     "array_of_distributions[0].donor_drc_id must be a non-empty string, got 2 (int)", False),
    ("receiver with whitespace", set_distribution(receiver_drc_id="D1 "),
     "receiver_drc_id 'D1 ' has surrounding whitespace", False),
    ("donor as an operator", set_distribution(donor_drc_id={"$ne": None}),
     "donor_drc_id must be a non-empty string, got {'$ne': None} (dict)", False),
    ("rtom as a list", set_distribution(rtom=["CW"]), "rtom must be a non-empty string, got ['CW'] (list)", False),
    ("rtom that looks like an operator", set_distribution(rtom="$ne"), "donor DRC 'D2' holds no '$ne' case", False),
    ("transfer_count NaN", set_distribution(transfer_count=math.nan),
     "transfer_count must be an integer of at least 1, got nan (float)", False),
    ("transfer_count infinite", set_distribution(transfer_count=math.inf), "got inf (float)", False),
    ("transfer_count 10**18", set_distribution(transfer_count=10**18), "moving 1000000000000000000 leaves", False),
    ("transfer_count 1e30", set_distribution(transfer_count=1e30),
     "must be at most 9223372036854775807 (2**63-1, the largest Int64), got 1e+30 (float)", False),
    ("transfer_count 2**63", set_distribution(transfer_count=str(2**63)),
     "must be at most 9223372036854775807 (2**63-1, the largest Int64), got '9223372036854775808' (str)", False),
    ("transfer_count '2.0'", set_distribution(transfer_count="2.0"), "got '2.0' (str)", False),
    ("transfer_count as a list", set_distribution(transfer_count=[2]), "got [2] (list)", False),
    ("transfer_count as an operator", set_distribution(transfer_count={"$gt": 0}), "got {'$gt': 0} (dict)", False),
    ("parameters missing", unset_task_parameters, "task parameters must be an object, got None", False),
    ("parameters null", set_task(parameters=None), "task parameters must be an object, got None", False),
    ("parameters a list", set_task(parameters=["005"]), "task parameters must be an object, got ['005'] (list)", False),
    ("batch id as an operator", set_task(parameters={"Case_Distribution_Batch_ID": {"$ne": None}}),
     "Case_Distribution_Batch_ID must be a non-empty string or an integer, got {'$ne': None} (dict)", False),
    ("batch id as a list", set_task(parameters={"Case_Distribution_Batch_ID": ["005", "006"]}),
     "got ['005', '006'] (list)", False),
    ("batch id as a boolean", set_task(parameters={"Case_Distribution_Batch_ID": True}), "got True (bool)", False),
    ("distributions null", set_seq2_field("array_of_distributions", None),
     "array_of_distributions must be a non-empty array, got None", False),
    ("distributions a string", set_seq2_field("array_of_distributions", "CW D2 D1 2"),
     "must be a non-empty array, got 'CW D2 D1 2'", False),
    ("distributions repeated", set_seq2_field("array_of_distributions", [REQUEST, REQUEST]),
     "array_of_distributions[1] repeats array_of_distributions[0]", False),
    ("transaction without batch_seq_details", drop_batch_seq_details,
     "batch_seq_details must be an array, got NoneType", False),
    ("batch_seq_details an object", set_transaction(batch_seq_details={"batch_seq": 2}),
     "batch_seq_details must be an array, got dict", False),
    ("batch_seq_details holding text", lambda db: db["Case_distribution_drc_transactions"].update_one(
        {"Case_Distribution_Batch_ID": "005"}, {"$push": {"batch_seq_details": "seq 3"}}),
     "batch_seq_details[2] must be an object, got 'seq 3'", False),
    ("batch_seq as text", set_seq2_field("batch_seq", "2"), "has batch_seq '2'; expected an integer", False),
    ("batch with zero cases", drop_cases, "batch 005 has no cases in DRS.Tmp_Case_Distribution_DRC", False),
    ("template parameters a list", set_template(parameters=["Case_Distribution_Batch_ID"]),
     "Template_task 3 parameters must be an object, got list", True),
    ("template parameters null", set_template(parameters=None),
     "Template_task 3 parameters must be an object, got NoneType", True),
    ("summary row without DRC_Id", add_summary_row(DRC_Id=None, RTOM="ZZ"),
     "DRC_Id must be a non-empty string, got None", False),
    ("summary row twice for one cell", add_summary_row(), "more than one summary row for DRC D1 RTOM CW", False),
    ("task Template_Task_Id as an operator", set_task(Template_Task_Id={"$gt": 0}), "Template_Task_Id is {'$gt': 0}",
     False),
    # issue 8, item 11: a query on the batch matches an array holding it; the job must not
    ("case batch id as an array", set_case_field("Case_Distribution_Batch_ID", ["005"]),
     "case 1010 in batch 005: Case_Distribution_Batch_ID must be exactly '005', got ['005'] (list)", False),
    ("case in two batches at once", set_case_field("Case_Distribution_Batch_ID", ["005", "006"]),
     "case 1010 in batch 005: Case_Distribution_Batch_ID must be exactly '005', got ['005', '006'] (list)", True),
    ("summary row batch id as an array", add_summary_row(Case_Distribution_Batch_ID=["005"], DRC_Id="D9"),
     "Case_Distribution_Batch_ID must be exactly '005', got ['005'] (list)", False),
    ("transaction batch id as an array", set_transaction(Case_Distribution_Batch_ID=["005"]),
     "Case_Distribution_Batch_ID must be exactly '005', got ['005'] (list)", False),
    # issue 8, item 12: a request far beyond any real one is refused at once, naming the limit
    ("16,000 distributions", set_seq2_field("array_of_distributions", [dict(REQUEST, transfer_count=count)
                                                                      for count in range(1, 16_001)]),
     "array_of_distributions holds 16000 entries, more than the 1000 one amend request may hold; split the request",
     False),
]


@pytest.mark.parametrize("name, mutate, reason, affects_all", HOSTILE_INPUTS, ids=[h[0] for h in HOSTILE_INPUTS])
def test_hostile_input_ends_its_task_in_error_and_loses_nothing(db, settings, name, mutate, reason, affects_all):
    assert_task_101_fails_cleanly(db, settings, mutate, reason, affects_all)


def test_at_least_thirty_distinct_hostile_inputs():
    assert len({name for name, *_ in HOSTILE_INPUTS}) == len(HOSTILE_INPUTS) >= 30


def test_a_batch_id_operator_never_reaches_a_query(db, settings):
    """With {"$ne": null} as batch id a query would match every batch; the task fails before any read."""
    set_task(parameters={"Case_Distribution_Batch_ID": {"$ne": None}})(db)
    before = snapshot(db)
    run_job(db, settings=settings)
    after = snapshot(db)
    assert after[CASES_COLLECTION] != before[CASES_COLLECTION]  # batch 006 was amended by its own task
    assert [c for c in after[CASES_COLLECTION] if c["Case_Distribution_Batch_ID"] == "005"] == \
           [c for c in before[CASES_COLLECTION] if c["Case_Distribution_Batch_ID"] == "005"]


def test_a_task_with_an_odd_created_dtm_is_still_processed(db, settings):
    db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": {"created_dtm": "yesterday"}})
    report = run_job(db, settings=settings)
    assert sorted(o.status for o in report.outcomes) == ["completed", "completed"]
