"""A full run on the shipped fixtures, and every validation failure ending its task in error."""

import copy
import json
from dataclasses import dataclass
from typing import Any

import pytest
from bson import ObjectId

from amend_store import (
    CASES_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TEMPLATES_COLLECTION,
    TRANSACTIONS_COLLECTION,
)
from embedded.data_file import save_database
from tests.mutations import (
    assert_task_101_fails_cleanly,
    drop_distribution_key,
    duplicate_case,
    require_template_parameter,
    retag_rtom,
    seq2,
    set_distribution,
    set_task,
    unset_case_field,
)
from tests.support import (
    FIXED_NOW,
    OTHER_TYPE_TASK,
    TASK_005,
    TASK_006,
    StallInjector,
    add_batch,
    cells,
    current_drc,
    disturbed,
    new_database,
    normalized,
    run_job,
    snapshot,
)


def summary_of(db, batch_id):
    return {(row["DRC_Id"], row["RTOM"]): (row["Count"], row["Tot_Arrease"])
            for row in db[SUMMARY_COLLECTION].find({"Case_Distribution_Batch_ID": batch_id})}


def transaction_of(db, batch_id):
    return db[TRANSACTIONS_COLLECTION].find_one({"Case_Distribution_Batch_ID": batch_id})


@dataclass(frozen=True)
class FullRun:
    """What a full run of the job on the shipped fixtures read before it, the database after it, its report."""
    db: Any
    report: Any
    cases_before: dict
    transactions_before: dict
    other_task_before: dict
    templates_before: list


@pytest.fixture
def full_run(db, settings):
    """One run of the job on the shipped fixtures (batches 005 and 006, tasks 101 and 102)."""
    cases_before = {c["Case_Id"]: c for c in db[CASES_COLLECTION].find()}
    transactions_before = {t["Case_Distribution_Batch_ID"]: t for t in db[TRANSACTIONS_COLLECTION].find()}
    other_task_before = db[TASKS_COLLECTION].find_one({"_id": OTHER_TYPE_TASK})
    templates_before = list(db[TEMPLATES_COLLECTION].find())
    report = run_job(db, settings=settings)
    return FullRun(db, report, cases_before, transactions_before, other_task_before, templates_before)


def test_full_run_on_the_fixtures_completes_both_tasks(full_run):
    report = full_run.report
    assert [o.status for o in report.outcomes] == ["completed", "completed"]
    assert report.exit_code == 0 and report.cases_moved == 4 + 6


def test_full_run_on_the_fixtures_gives_batch_005_the_cells_of_the_worked_example_of_the_spec(full_run):
    assert cells(full_run.db, "005") == {("D1", "CW"): 10, ("D1", "AD"): 4, ("D1", "AG"): 3,
                                         ("D2", "CW"): 1, ("D2", "AD"): 7, ("D2", "AG"): 6}


def ids_of_cell(cases, batch_id, cell):
    """The sorted Case_Ids of the cases of a batch in a (DRC_Id, RTOM) cell."""
    return sorted(i for i, c in cases.items()
                  if c["Case_Distribution_Batch_ID"] == batch_id and (c["DRC_Id"], c["RTOM"]) == cell)


AMEND_FIELDS = ("NEW_DRC_ID", "Proceed_On", "Amend_Status", "Amend_Description")
FENCE_FIELDS = ("DRS_Amend_Fence", "DRS_Amend_Task")


def assert_moved_by_task_101(case, before, old, new):
    """A case of batch 005 that task 101 moved from `old` to `new`: its amend fields written, the rest as it was."""
    assert case["DRC_Id"] == before["DRC_Id"] == old
    assert case["NEW_DRC_ID"] == new
    assert case["Proceed_On"] == FIXED_NOW
    assert case["Amend_Status"] == "Completed"
    assert case["Amend_Description"] == f"Amended from {old} to {new} by amend task 101 ({TASK_005})"
    assert case["DRS_Amend_Fence"] == 1  # the first fencing token the database issued
    assert case["DRS_Amend_Task"] == TASK_005  # the task whose amend moved it, for the audit
    assert {k: v for k, v in case.items() if k not in AMEND_FIELDS + FENCE_FIELDS} == \
           {k: v for k, v in before.items() if k not in AMEND_FIELDS}


def test_full_run_on_the_fixtures_moves_the_lowest_case_ids_of_batch_005_and_no_other_case(full_run):
    cases_before = full_run.cases_before
    donor_cw = ids_of_cell(cases_before, "005", ("D2", "CW"))
    d1_ad = ids_of_cell(cases_before, "005", ("D1", "AD"))
    d1_ag = ids_of_cell(cases_before, "005", ("D1", "AG"))
    expected_moves = {donor_cw[0]: ("D2", "D1"), donor_cw[1]: ("D2", "D1"), d1_ad[0]: ("D1", "D2"),
                      d1_ag[0]: ("D1", "D2")}
    for case in full_run.db[CASES_COLLECTION].find({"Case_Distribution_Batch_ID": "005"}):
        before = cases_before[case["Case_Id"]]
        if case["Case_Id"] in expected_moves:
            assert_moved_by_task_101(case, before, *expected_moves[case["Case_Id"]])
        else:
            assert case == before


def recounted_summary(db, batch_id):
    """{(current DRC, RTOM): (Count, Tot_Arrease to the cent)} of a batch, recounted from its cases."""
    expected = {}
    for case in db[CASES_COLLECTION].find({"Case_Distribution_Batch_ID": batch_id}):
        count, total = expected.get((current_drc(case), case["RTOM"]), (0, 0.0))
        expected[(current_drc(case), case["RTOM"])] = (count + 1, total + case["Arrease"])
    return {cell: (n, round(t, 2)) for cell, (n, t) in expected.items()}


def test_full_run_on_the_fixtures_recomputes_every_summary_cell_from_the_final_assignment(full_run):
    db = full_run.db
    for batch_id in ("005", "006"):
        assert summary_of(db, batch_id) == recounted_summary(db, batch_id)
    assert db[SUMMARY_COLLECTION].count_documents({}) == 16


def test_full_run_on_the_fixtures_closes_only_the_processed_amend_seq_and_the_summery(full_run):
    """Only the processed amend seq closed; summery closed as no amend seq is left open."""
    for batch_id, processed in (("005", 2), ("006", 3)):
        after, before = transaction_of(full_run.db, batch_id), full_run.transactions_before[batch_id]
        assert after["summery_status"] == "close"
        assert after["DRS_Amend_Fence"] == {"005": 1, "006": 2}[batch_id]
        for seq_after, seq_before in zip(after["batch_seq_details"], before["batch_seq_details"], strict=True):
            if seq_before["batch_seq"] == processed:
                assert seq_after == dict(seq_before, CRD_Distribution_Status="close",
                                         CRD_Distribution_Status_on=FIXED_NOW)
            else:
                assert seq_after == seq_before


def test_full_run_on_the_fixtures_records_what_task_101_did(full_run):
    db = full_run.db
    task = db[TASKS_COLLECTION].find_one({"_id": TASK_005})
    assert task["task_status"] == "completed"
    assert task["end_dtm"] == task["status_changed_dtm"] == FIXED_NOW
    assert task["amended_batch_seq"] == 2  # the seq it closed, for the audit: by number, and exactly
    transaction_005 = transaction_of(db, "005")
    assert task["amended_seq"] == {"transaction_id": transaction_005["_id"], "index": 1, "batch_seq": 2,
                                   "closed_dtm": FIXED_NOW}
    assert task["amended_cases"] == 4
    assert task["status_description"] == (
        "Amended batch 005 seq 2: requested 2 CW from D2 to D1; 4 case(s) reassigned (D1->D2 2, D2->D1 2)")


def test_full_run_on_the_fixtures_records_what_task_102_did(full_run):
    task = full_run.db[TASKS_COLLECTION].find_one({"_id": TASK_006})
    assert task["task_status"] == "completed"
    assert "requested 2 AG from D3 to D1; 1 CW from D1 to D2; 6 case(s) reassigned" in task["status_description"]
    assert task["amended_batch_seq"] == 3


def test_full_run_on_the_fixtures_leaves_a_task_of_another_type_and_the_templates_alone(full_run):
    db = full_run.db
    assert db[TASKS_COLLECTION].find_one({"_id": OTHER_TYPE_TASK}) == full_run.other_task_before
    assert list(db[TEMPLATES_COLLECTION].find()) == full_run.templates_before


def test_batch_006_applies_its_two_distributions_in_sequence(db, settings):
    run_job(db, settings=settings)
    assert cells(db, "006") == {("D1", "CW"): 4, ("D1", "AG"): 7, ("D1", "AD"): 5, ("D1", "GM"): 2,
                                ("D2", "CW"): 6, ("D2", "AG"): 4, ("D2", "AD"): 5,
                                ("D3", "CW"): 5, ("D3", "AG"): 5, ("D3", "GM"): 6}


def test_an_amended_case_moves_from_its_current_drc(empty_db, settings):
    db = empty_db
    add_batch(db, "B1", {"D1": {"CW": 8, "AG": 6}, "D2": {"CW": 3, "AG": 5}},
              [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 1}])
    lowest_d1_ag = db[CASES_COLLECTION].find_one({"DRC_Id": "D1", "RTOM": "AG"}, sort=[("Case_Id", 1)])
    # amended earlier from D2 to D1: DRC_Id keeps the original assignment
    db[CASES_COLLECTION].update_one({"_id": lowest_d1_ag["_id"]}, {"$set": {"DRC_Id": "D2", "NEW_DRC_ID": "D1"}})
    run_job(db, settings=settings)
    after = db[CASES_COLLECTION].find_one({"_id": lowest_d1_ag["_id"]})
    assert (after["DRC_Id"], after["NEW_DRC_ID"]) == ("D2", "D2")
    assert after["Amend_Description"].startswith("Amended from D1 to D2 by amend task 1")
    assert cells(db, "B1") == {("D1", "CW"): 9, ("D1", "AG"): 5, ("D2", "CW"): 2, ("D2", "AG"): 6}


def test_a_second_run_has_nothing_to_do(db, settings):
    run_job(db, settings=settings)
    state = snapshot(db)
    report = run_job(db, settings=settings)
    assert report.outcomes == [] and report.exit_code == 0
    assert snapshot(db) == state


def test_only_the_lowest_open_amend_seq_is_closed(empty_db, settings):
    db = empty_db
    add_batch(db, "B1", {"D1": {"CW": 8, "AG": 4}, "D2": {"CW": 3, "AG": 5}},
              [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 1}])
    db[TRANSACTIONS_COLLECTION].update_one({}, {"$push": {"batch_seq_details": {
        "$each": [{"batch_seq": 3, "action_type": "amend", "CRD_Distribution_Status": "open",
                   "array_of_distributions": [{"rtom": "AG", "donor_drc_id": "D2", "receiver_drc_id": "D1",
                                               "transfer_count": 1}]}], "$position": 0}}})
    run_job(db, settings=settings)
    transaction = db[TRANSACTIONS_COLLECTION].find_one()
    status = {seq["batch_seq"]: seq["CRD_Distribution_Status"] for seq in transaction["batch_seq_details"]}
    assert status == {1: "close", 2: "close", 3: "open"}
    assert transaction["summery_status"] == "open"
    assert cells(db, "B1")[("D1", "CW")] == 9


def test_a_cell_that_drops_to_zero_is_written_as_zero(empty_db, settings):
    db = empty_db
    add_batch(db, "B1", {"D1": {"CW": 3, "AD": 9, "AG": 1}, "D2": {"CW": 3, "AD": 2, "AG": 2}},
              [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 2}], arrears=10)
    run_job(db, settings=settings)
    assert summary_of(db, "B1")[("D1", "AG")] == (0, 0)
    assert summary_of(db, "B1")[("D2", "AG")] == (3, 30)


def test_a_missing_summary_row_is_upserted(empty_db, settings):
    db = empty_db
    add_batch(db, "B1", {"D1": {"CW": 8, "AG": 4}, "D2": {"CW": 3, "AG": 5}},
              [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 1}], arrears=10)
    db[SUMMARY_COLLECTION].delete_one({"DRC_Id": "D1", "RTOM": "AG"})
    run_job(db, settings=settings)
    assert summary_of(db, "B1") == {("D1", "CW"): (9, 90), ("D1", "AG"): (3, 30),
                                    ("D2", "CW"): (2, 20), ("D2", "AG"): (6, 60)}


def test_tasks_run_oldest_first_and_other_types_are_never_claimed(db, settings):
    db[TASKS_COLLECTION].update_one({"_id": TASK_006}, {"$set": {"created_dtm": FIXED_NOW.replace(year=2020)}})
    report = run_job(db, settings=settings)
    assert [o.object_id for o in report.outcomes] == [TASK_006, TASK_005]
    assert db[TASKS_COLLECTION].find_one({"_id": OTHER_TYPE_TASK})["task_status"] == "open"


def test_a_task_claimed_by_another_run_is_skipped(db, settings):
    def a_rival_claims_task_101_first():
        db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": {
            "task_status": "processing", "claimed_by": {"run_id": "rival", "host": "elsewhere", "pid": 1},
            "claim_expires_dtm": FIXED_NOW.replace(hour=11)}})

    first_claim = 1
    report = run_job(disturbed(db, StallInjector(first_claim, a_rival_claims_task_101_first)), settings=settings)
    assert report.skipped == 1
    assert [o.object_id for o in report.outcomes] == [TASK_006]
    task = db[TASKS_COLLECTION].find_one({"_id": TASK_005})
    assert task["task_status"] == "processing" and task["claimed_by"]["run_id"] == "rival"


# --- validation failures -----------------------------------------------------------------

# (name, mutation of batch 005 / task 101, text of the reason, whether task 102 fails too)
VALIDATION_FAILURES = [
    ("missing template", lambda db: db[TEMPLATES_COLLECTION].delete_many({"Template_Task_Id": 3}),
     "no Template_task with Template_Task_Id 3", True),
    ("template of another type", lambda db: db[TEMPLATES_COLLECTION].update_one(
        {"Template_Task_Id": 3}, {"$set": {"task_type": "Something else"}}), "no Template_task", True),
    ("mismatched template id", set_task(Template_Task_Id=4), "Template_Task_Id is 4; TEMPLATE_TASK_ID is 3", False),
    ("template id as text", set_task(Template_Task_Id="3"), "Template_Task_Id is '3'", False),
    ("mismatched parameters", require_template_parameter, "missing or empty: Requested_By", False),
    ("empty batch id", set_task(parameters={"Case_Distribution_Batch_ID": ""}),
     "missing or empty: Case_Distribution_Batch_ID", False),
    ("no open transaction", lambda db: db[TRANSACTIONS_COLLECTION].update_one(
        {"Case_Distribution_Batch_ID": "005"}, {"$set": {"summery_status": "close"}}),
     "no open transaction for batch 005", False),
    ("no open amend seq", lambda db: seq2(db, {"$set": {"batch_seq_details.$.CRD_Distribution_Status": "close"}}),
     "the open transaction of batch 005 has no open amend seq", False),
    ("empty distributions", lambda db: seq2(db, {"$set": {"batch_seq_details.$.array_of_distributions": []}}),
     "array_of_distributions must be a non-empty array", False),
    ("distributions not an array", lambda db: seq2(
        db, {"$set": {"batch_seq_details.$.array_of_distributions": {"rtom": "CW"}}}),
     "array_of_distributions must be a non-empty array", False),
    ("distribution not an object", lambda db: seq2(
        db, {"$set": {"batch_seq_details.$.array_of_distributions": ["CW D2 D1 2"]}}), "must be an object", False),
    ("distribution without receiver", drop_distribution_key("receiver_drc_id"), "lacks receiver_drc_id", False),
    ("distribution without rtom", drop_distribution_key("rtom"), "lacks rtom", False),
    ("empty donor", set_distribution(donor_drc_id=""), "donor_drc_id must be a non-empty string", False),
    ("donor is receiver", set_distribution(donor_drc_id="D1"), "donor and receiver are the same DRC", False),
    ("transfer_count 0", set_distribution(transfer_count=0), "transfer_count must be an integer of at least 1", False),
    ("transfer_count -1", set_distribution(transfer_count=-1), "got -1 (int)", False),
    ("transfer_count 2.5", set_distribution(transfer_count=2.5), "got 2.5 (float)", False),
    ("transfer_count True", set_distribution(transfer_count=True), "got True (bool)", False),
    ("transfer_count None", set_distribution(transfer_count=None), "got None (NoneType)", False),
    ("transfer_count abc", set_distribution(transfer_count="abc"), "got 'abc' (str)", False),
    ("unknown receiver", set_distribution(receiver_drc_id="D9"), "receiver DRC 'D9' holds no case", False),
    ("unknown donor", set_distribution(donor_drc_id="D9"), "donor DRC 'D9' holds no case", False),
    ("rtom missing on the donor", retag_rtom("D2", "CW", "ZZ"), "donor DRC 'D2' holds no 'CW' case", False),
    ("rtom missing on the receiver", retag_rtom("D1", "CW", "ZZ"), "receiver DRC 'D1' holds no 'CW' case", False),
    ("donor rule", set_distribution(transfer_count=3), "donor DRC 'D2' in RTOM 'CW' holds 3; moving 3 leaves 0", False),
    ("receiver rule", lambda db: (retag_rtom("D2", "AD", "ZZ")(db), set_distribution(
        rtom="CW", donor_drc_id="D1", receiver_drc_id="D2", transfer_count=5)(db)),
     "receiver DRC 'D2' in its give-back pool (AG) holds 5; moving 5 leaves 0", False),
    ("empty give-back pool", lambda db: (retag_rtom("D2", "AD", "ZZ")(db), retag_rtom("D2", "AG", "ZZ")(db),
                                         set_distribution(donor_drc_id="D1", receiver_drc_id="D2",
                                                          transfer_count=1)(db)),
     "receiver DRC 'D2' has no give-back pool", False),
    ("case without Case_Id", unset_case_field("Case_Id"), "Case_Id must be an integer, got None", False),
    ("case without DRC_Id", unset_case_field("DRC_Id"), "case 1010 in batch 005 lacks DRC_Id", False),
    ("case without RTOM", unset_case_field("RTOM"), "case 1010 in batch 005 lacks RTOM", False),
    ("duplicated Case_Id", duplicate_case, "Case_Id 1010 appears more than once in batch 005", False),
]


@pytest.mark.parametrize("name, mutate, reason, affects_all", VALIDATION_FAILURES,
                         ids=[case[0] for case in VALIDATION_FAILURES])
def test_validation_failure_ends_the_task_in_error_and_writes_nothing(db, settings, name, mutate, reason,
                                                                      affects_all):
    assert_task_101_fails_cleanly(db, settings, mutate, reason, affects_all)


def test_validation_failures_cover_the_issue_list():
    assert len(VALIDATION_FAILURES) >= 30
    assert len({name for name, *_ in VALIDATION_FAILURES}) == len(VALIDATION_FAILURES)


def test_an_integral_numeric_string_is_accepted(db, settings):
    set_distribution(transfer_count="2")(db)
    run_job(db, settings=settings)
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_005})["task_status"] == "completed"
    assert cells(db, "005")[("D1", "CW")] == 10


def test_a_defect_ends_only_its_task_in_error(db, settings, monkeypatch):
    import amend_plan

    real = amend_plan.plan_amend

    def broken_for_005(batch_id, *args):
        if batch_id == "005":
            raise KeyError("boom")
        return real(batch_id, *args)

    monkeypatch.setattr("task_processor.plan_amend", broken_for_005)
    before = copy.deepcopy(snapshot(db, "005"))
    report = run_job(db, settings=settings)
    assert [o.status for o in report.outcomes] == ["error", "completed"]
    assert "internal error: KeyError" in db[TASKS_COLLECTION].find_one({"_id": TASK_005})["status_description"]
    assert snapshot(db, "005") == before


def test_the_collector_is_paused_only_while_reading_and_planning(db, settings, monkeypatch):
    import gc

    from utils.collector import collector_paused

    seen = []
    real_plan = __import__("amend_plan").plan_amend

    def observing_plan(*args):
        seen.append(gc.isenabled())
        return real_plan(*args)

    monkeypatch.setattr("task_processor.plan_amend", observing_plan)
    assert gc.isenabled()
    run_job(db, settings=settings)
    assert seen == [False, False] and gc.isenabled()
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()
    gc.enable()


def test_what_was_built_while_the_collector_was_paused_is_frozen_when_it_resumes():
    import gc

    from utils.collector import collector_paused

    gc.unfreeze()
    with collector_paused():
        built = [[index] for index in range(1000)]
    assert gc.get_freeze_count() >= len(built) and gc.isenabled()


# --- a reused batch_seq number (issue 8, item 3) -------------------------------------------

EARLIER_CLOSE = FIXED_NOW.replace(year=2025)


def add_reused_seq_numbers(db, task_id=2):
    """Batch B1: seq 2 closed by an earlier amendment, then seq 2 (open) and seq 3 (open), and a second task."""
    add_batch(db, "B1", {"D1": {"CW": 8, "AG": 6, "AD": 5}, "D2": {"CW": 4, "AG": 5, "AD": 6}},
              [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 1}])
    closed = {"batch_seq": 2, "action_type": "amend", "CRD_Distribution_Status": "close",
              "CRD_Distribution_Status_on": EARLIER_CLOSE,
              "array_of_distributions": [{"rtom": "AG", "donor_drc_id": "D1", "receiver_drc_id": "D2",
                                          "transfer_count": 1}]}
    third = {"batch_seq": 3, "action_type": "amend", "CRD_Distribution_Status": "open",
             "array_of_distributions": [{"rtom": "AD", "donor_drc_id": "D2", "receiver_drc_id": "D1",
                                         "transfer_count": 1}]}
    db[TRANSACTIONS_COLLECTION].update_one({}, {"$push": {"batch_seq_details": {"$each": [closed], "$position": 1}}})
    db[TRANSACTIONS_COLLECTION].update_one({}, {"$push": {"batch_seq_details": third}})
    task = db[TASKS_COLLECTION].find_one({"Task_Id": 1})
    db[TASKS_COLLECTION].insert_one(dict(task, _id=ObjectId(f"{task_id:024x}"), Task_Id=task_id,
                                         created_dtm=task["created_dtm"].replace(hour=9)))


def seqs_of(db):
    return [(seq["batch_seq"], seq["CRD_Distribution_Status"], seq.get("CRD_Distribution_Status_on"))
            for seq in db[TRANSACTIONS_COLLECTION].find_one()["batch_seq_details"]]


def test_a_reused_seq_number_closes_the_open_seq_and_never_the_closed_one(empty_db, settings):
    db = empty_db
    add_reused_seq_numbers(db)
    report = run_job(db, settings=settings, task_id=1)
    assert [o.status for o in report.outcomes] == ["completed"]
    assert seqs_of(db) == [(1, "close", None), (2, "close", EARLIER_CLOSE), (2, "close", FIXED_NOW), (3, "open", None)]
    assert db[TRANSACTIONS_COLLECTION].find_one()["summery_status"] == "open"
    assert cells(db, "B1")[("D1", "CW")] == 9  # the open seq 2 moved 1 CW, not the closed one's AG
    later = FIXED_NOW.replace(hour=11)
    report = run_job(db, clock=lambda: later, settings=settings)
    assert [o.status for o in report.outcomes] == ["completed"]
    assert "seq 3" in report.outcomes[0].message
    assert seqs_of(db) == [(1, "close", None), (2, "close", EARLIER_CLOSE), (2, "close", FIXED_NOW),
                           (3, "close", later)]
    assert db[TRANSACTIONS_COLLECTION].find_one()["summery_status"] == "close"


def test_a_seq_that_moved_in_the_array_while_the_task_ran_is_not_closed_blindly(empty_db, settings):
    db = empty_db
    add_reused_seq_numbers(db)
    before = snapshot(db, "B1")
    inserted = {"batch_seq": 9, "action_type": "distribution", "CRD_Distribution_Status": "close"}

    def another_system_inserts_a_seq():
        db[TRANSACTIONS_COLLECTION].update_one({}, {"$push": {"batch_seq_details": {"$each": [inserted],
                                                                                     "$position": 0}}})
        before[TRANSACTIONS_COLLECTION][0]["batch_seq_details"].insert(0, inserted)

    seq_write = 8  # claim, token, journal, renewal, plan, cases, summary, then the seq
    report = run_job(disturbed(db, StallInjector(seq_write, another_system_inserts_a_seq)), settings=settings,
                     task_id=1)
    assert [o.status for o in report.outcomes] == ["error"]
    assert "is no longer the open seq the task planned for" in report.outcomes[0].message
    assert report.outcomes[0].message.endswith("every write of the task was undone")
    assert normalized(snapshot(db, "B1")) == normalized(before)


# --- what main.py says when there is nothing to do (issue 10) --------------------------------------

def test_main_on_a_database_without_the_jobs_documents_is_an_error_not_a_successful_run(tmp_path, script):
    save_database(new_database(), tmp_path / "empty.bson")
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'empty.bson'}"}
    before = (tmp_path / "empty.bson").read_bytes()
    result = script("main.py", "--log-dir", str(tmp_path / "logs"), env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(
        "holds no System_tasks and no Template_task document: is DB_NAME or MONGO_URI wrong? (the embedded default "
        "is loaded with database_update.py)")
    assert (tmp_path / "empty.bson").read_bytes() == before  # no run recorded: it did not pass for one
    check = script("batch_monitor.py", "check", env=env)
    assert check.returncode == 2 and check.stdout.startswith("DRS-AMEND CRITICAL")


def test_main_names_a_task_id_that_does_not_exist_or_has_nothing_to_do(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    missing = script("main.py", "--task-id", "999", "--log-dir", str(tmp_path / "logs"), env=env)
    assert missing.returncode == 2 and "no amend task has Task_Id 999" in missing.stderr
    assert script("main.py", "--task-id", "101", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    again = script("main.py", "--task-id", "101", "--log-dir", str(tmp_path / "logs"), env=env)
    assert "amend task 101 is completed: nothing to do" in again.stderr


def test_json_prints_the_document_the_run_history_holds(tmp_path, script):
    from tests.support import load

    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    result = script("main.py", "--json", "--log-dir", str(tmp_path / "logs"), env=env)
    printed = json.loads(result.stdout)
    recorded = load(tmp_path / "db.bson")["DRS_Amend.Run_History"].find_one()
    assert set(printed) == set(recorded) and {"version", "configuration"} <= set(printed)
    assert printed["_id"] == str(recorded["_id"]) and printed["duration_seconds"] == recorded["duration_seconds"]


def test_log_lines_carry_no_doubled_prefix(tmp_path, script):
    config = tmp_path / "config"
    import shutil

    from tests.support import PROJECT_ROOT

    shutil.copytree(PROJECT_ROOT / "config", config)
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    (tmp_path / "db.bson").write_bytes(b"not a data file")
    result = script("main.py", "--config-dir", str(config), "--log-dir", str(tmp_path / "logs"), env=env)
    assert result.returncode == 2
    log_text = (tmp_path / "logs" / "drs_amend.log").read_text()
    assert "is not a DRS Amend data file" in log_text and "drs-amend:" not in log_text
