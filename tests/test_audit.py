"""batch_monitor.py audit, trustworthy in both directions: every kind of inconsistency, every value the
job would refuse and every state the job could not have produced is found (a false negative is worse
than no audit); a consistent database passes, also after legitimate moves such as a reused seq number
(no false positive); a batch it cannot audit is said so with a non-zero exit; it reads only."""

from datetime import timedelta

import pytest
from bson import Decimal128, Int64

from amend_store import (
    CASES_COLLECTION,
    JOURNAL_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TRANSACTIONS_COLLECTION,
)
from amounts import same_amount
from batch_monitor import audit_batches
from ops.audit import row_problem
from tests.support import (
    FIXED_NOW,
    SETTINGS,
    TASK_005,
    TASK_006,
    AtFirst,
    SimulatedCrash,
    disturbed,
    fresh_db,
    one_line,
    run_job,
    snapshot,
    store_of,
)

OLD_006_TASK = {"Task_Id": 100}  # the fixtures' completed task that closed batch 006's amend seq 2


def audit(db, batch=None, now=FIXED_NOW):
    return audit_batches(store_of(db), batch, now, SETTINGS)


def amended():
    db = fresh_db()
    run_job(db)
    return db


@pytest.mark.parametrize("make", [fresh_db, amended], ids=["fixtures", "after a run"])
def test_the_fixtures_before_and_after_a_run_are_consistent(make):
    db = make()
    before = snapshot(db)
    report, code = audit(db)
    assert report == "batch 005: consistent\nbatch 006: consistent\naudit: 2 batch(es), 0 mismatch(es), 0 not audited\n"
    assert code == 0
    assert snapshot(db) == before  # it reads only


def row(batch, drc, rtom):
    return {"Case_Distribution_Batch_ID": batch, "DRC_Id": drc, "RTOM": rtom}


def set_row(drc, rtom, **fields):
    return lambda db: db[SUMMARY_COLLECTION].update_one(row("005", drc, rtom), {"$set": fields})


def first_seq_of(db, batch, number):
    transaction = db[TRANSACTIONS_COLLECTION].find_one({"Case_Distribution_Batch_ID": batch})
    return next(index for index, seq in enumerate(transaction["batch_seq_details"]) if seq["batch_seq"] == number)


def set_seq(db, batch, number, **fields):
    index = first_seq_of(db, batch, number)
    db[TRANSACTIONS_COLLECTION].update_one({"Case_Distribution_Batch_ID": batch}, {"$set": {
        f"batch_seq_details.{index}.{name}": value for name, value in fields.items()}})


def duplicate_row(db):
    duplicate = db[SUMMARY_COLLECTION].find_one(row("005", "D1", "CW"))
    del duplicate["_id"]
    db[SUMMARY_COLLECTION].insert_one(duplicate)


def second_completed_task(db):
    task = db[TASKS_COLLECTION].find_one({"_id": TASK_005})
    del task["_id"]
    db[TASKS_COLLECTION].insert_one(dict(task, Task_Id=999))


def move_case_behind_the_summarys_back(db):
    in_d1 = {"Case_Distribution_Batch_ID": "005", "RTOM": "CW", "DRC_Id": "D1", "NEW_DRC_ID": None}
    assert db[CASES_COLLECTION].update_one(in_d1, {"$set": {"NEW_DRC_ID": "D2"}}).modified_count == 1


def set_case(case_id, **fields):
    return lambda db: db[CASES_COLLECTION].update_one({"Case_Id": case_id}, {"$set": fields})


def second_open_transaction(db):
    """Two open transactions of batch 006, each with an open amend seq: the job cannot tell which to apply."""
    for number in (8, 9):
        db[TRANSACTIONS_COLLECTION].insert_one({
            "Case_Distribution_Batch_ID": "006", "summery_status": "open", "batch_seq_details": [
                {"batch_seq": number, "action_type": "amend", "CRD_Distribution_Status": "open",
                 "array_of_distributions": [{"rtom": "AG", "donor_drc_id": "D3", "receiver_drc_id": "D1",
                                             "transfer_count": 1}]}]})


def new_open_seq(distributions):
    def add(db):
        db[TRANSACTIONS_COLLECTION].update_one({"Case_Distribution_Batch_ID": "005"}, {
            "$set": {"summery_status": "open"},
            "$push": {"batch_seq_details": {"batch_seq": 3, "action_type": "amend", "CRD_Distribution_Status": "open",
                                            "array_of_distributions": distributions}}})
    return add


INCONSISTENCIES = [
    # the summary against the cases
    ("a Count changed", lambda db: db[SUMMARY_COLLECTION].update_one(row("005", "D1", "CW"), {"$inc": {"Count": 1}}),
     ["batch 005: summary of DRC D1 RTOM CW says Count 11; the cases hold 10"]),
    ("a Tot_Arrease changed",
     lambda db: db[SUMMARY_COLLECTION].update_one(row("005", "D1", "CW"), {"$inc": {"Tot_Arrease": 1}}),
     ["batch 005: summary of DRC D1 RTOM CW says Tot_Arrease"]),
    ("a summary row deleted", lambda db: db[SUMMARY_COLLECTION].delete_one(row("005", "D2", "AG")),
     ["batch 005: summary of DRC D2 RTOM AG is missing; the cases hold 6 there"]),
    ("a stale row of a cell without cases",
     lambda db: db[SUMMARY_COLLECTION].insert_one(dict(row("005", "D9", "CW"), Count=3, Tot_Arrease=30)),
     ["batch 005: summary of DRC D9 RTOM CW says Count 3; the cases hold 0"]),
    ("an empty cell's row with an amount",
     lambda db: db[SUMMARY_COLLECTION].insert_one(dict(row("005", "D9", "CW"), Count=0, Tot_Arrease=123456)),
     ["it counts 0 cases but its Tot_Arrease is 123456"]),
    ("a cell with two rows", duplicate_row, ["batch 005: summary of DRC D1 RTOM CW has 2 rows"]),
    ("a case moved behind the summary's back", move_case_behind_the_summarys_back,
     ["batch 005: summary of DRC D1 RTOM CW says Count 10; the cases hold 9",
      "batch 005: summary of DRC D2 RTOM CW says Count 1; the cases hold 2"]),
    # summary rows the job could not have written
    ("a Tot_Arrease that is no number", set_row("D1", "CW", Tot_Arrease="lots"),
     ["batch 005: summary row", "its Tot_Arrease is 'lots' (str), not a number"]),
    ("a Count of 0 with an amount", set_row("D1", "CW", Count=0, Tot_Arrease=123456),
     ["it counts 0 cases but its Tot_Arrease is 123456", "batch 005: summary of DRC D1 RTOM CW is missing"]),
    ("a Count of true", set_row("D2", "CW", Count=True), ["its Count is True (bool), not a non-negative integer"]),
    ("a negative Count", set_row("D2", "CW", Count=-1), ["its Count is -1 (int), not a non-negative integer"]),
    ("a fractional Count", set_row("D2", "CW", Count=1.5), ["its Count is 1.5 (float), not a non-negative integer"]),
    ("a NaN total", set_row("D2", "CW", Tot_Arrease=float("nan")), ["its Tot_Arrease is nan (float), not a number"]),
    ("a batch id that is an array", set_row("D2", "CW", Case_Distribution_Batch_ID=["005"]),
     ["its Case_Distribution_Batch_ID is ['005'] (list), not exactly '005'",
      "batch 005: summary of DRC D2 RTOM CW is missing"]),
    ("a code with whitespace", set_row("D2", "CW", DRC_Id=" D2"), ["DRC_Id ' D2' has surrounding whitespace",
                                                                   "batch 005: summary of DRC D2 RTOM CW is missing"]),
    # cases the job would refuse
    ("a Case_Id the job refuses", set_case(2001, Case_Id="x"),
     ["batch 006: 1 case(s) the job would refuse, so its summary cannot be checked: case _id"]),
    ("a Case_Id twice", set_case(2001, Case_Id=2002),
     ["batch 006: 1 case(s) the job would refuse", "Case_Id 2002 appears more than once in batch 006"]),
    ("an amount that is text", set_case(2001, Arrease="12"), ["Arrease must be a number, got '12' (str)"]),
    # seqs and tasks
    ("a completed task's seq reopened", lambda db: set_seq(db, "005", 2, CRD_Distribution_Status="open"),
     ["batch 005: amend task 101 (6740a0000000000000000101) completed amend seq 2 (batch_seq_details[1] of "
      "transaction 6740c0000000000000000005, closed 2026-11-25 10:30:00.123000), which the transaction does not "
      "hold closed"]),
    ("a closed seq without its task", lambda db: db[TASKS_COLLECTION].delete_one(OLD_006_TASK),
     ["batch 006: amend seq 2 (batch_seq_details[1] of transaction 6740c0000000000000000006) closed, but only 0 "
      "completed task(s) could have closed them"]),
    ("a seq closed by two tasks", second_completed_task,
     ["batch 005: amend seq 2 (batch_seq_details[1] of transaction 6740c0000000000000000005) was closed by 2 "
      "completed tasks (amend task 101 (6740a0000000000000000101), amend task 999 ("]),
    ("a closed seq whose close time changed", lambda db: set_seq(db, "006", 3, CRD_Distribution_Status_on=None),
     ["batch 006: amend task 102 (6740a0000000000000000102) completed amend seq 3",
      "batch 006: amend seq 3 (batch_seq_details[2] of transaction 6740c0000000000000000006) closed, but only 0"]),
    ("a seq neither open nor closed", lambda db: set_seq(db, "006", 2, CRD_Distribution_Status="done"),
     ["amend seq 2 has CRD_Distribution_Status 'done', neither open nor close",
      "batch 006: amend task 100 (6740a0000000000000000100) completed amend seq 2, which the transaction does not "
      "hold closed"]),
    ("amended_cases that is no count",
     lambda db: db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": {"amended_cases": 4.0}}),
     ["batch 005: amend task 101 (6740a0000000000000000101) records amended_cases 4.0, not a count of cases"]),
    ("a case naming another batch's task", set_case(2001, DRS_Amend_Task=TASK_005),
     ["batch 006: 1 case(s) carry the amend of amend task 101 (6740a0000000000000000101), a task of batch '005'"]),
    ("a completed task whose batch id is an array",
     lambda db: db[TASKS_COLLECTION].update_one({"_id": TASK_005},
                                                {"$set": {"parameters.Case_Distribution_Batch_ID": ["005"]}}),
     ["batch 005: amend task 101 (6740a0000000000000000101) has Case_Distribution_Batch_ID ['005'], not exactly "
      "'005'"]),
    ("a closed seq the job would never have applied",
     lambda db: set_seq(db, "006", 2, array_of_distributions=[
         {"rtom": "AG", "donor_drc_id": "D2", "receiver_drc_id": "D2", "transfer_count": "abc"}]),
     ["closed amend seq 2.array_of_distributions[0]", "the job would never have applied it"]),
    ("a closed seq without a close time",
     lambda db: db[TRANSACTIONS_COLLECTION].update_one({"Case_Distribution_Batch_ID": "006"}, {
         "$unset": {f"batch_seq_details.{first_seq_of(db, '006', 2)}.CRD_Distribution_Status_on": ""}}),
     ["closed amend seq 2 has no close time (CRD_Distribution_Status_on None); the job always writes one"]),
    # the open amend request
    ("an open request the job would refuse",
     new_open_seq([{"rtom": "CW", "donor_drc_id": "D1", "receiver_drc_id": "D2", "transfer_count": 0}]),
     ["the job would refuse its open amend request: batch 005 seq 3.array_of_distributions[0].transfer_count must be"]),
    ("two open transactions with an open amend seq", second_open_transaction,
     ["batch 006: 2 open transactions hold an open amend seq; the job refuses such a batch"]),
]


@pytest.mark.parametrize("name, inject, messages", INCONSISTENCIES, ids=[case[0] for case in INCONSISTENCIES])
def test_each_kind_of_inconsistency_is_found(name, inject, messages):
    db = amended()
    inject(db)
    report, code = audit(db)
    lines = report.splitlines()
    assert code == 1, report
    for message in messages:
        assert sum(message in line for line in lines) == 1, (message, report)
    findings = [line for line in lines[:-1] if not line.endswith(": consistent")]
    assert lines[-1] == f"audit: 2 batch(es), {len(findings)} mismatch(es), 0 not audited"


def half_applied(db):
    """Task 102's case and summary writes landed (the summary agrees with the cases), then its run died
    before closing the seq, and its journal was lost (deleted by hand)."""
    def dies_after_writing(call):
        call()
        raise SimulatedCrash("the run died right after its summary write")
    with pytest.raises(SimulatedCrash):
        run_job(disturbed(db, AtFirst(SUMMARY_COLLECTION, "bulk_write", dies_after_writing)), task_id=102)
    assert db[JOURNAL_COLLECTION].delete_one({"_id": "006"}).deleted_count == 1


def test_a_half_applied_amend_whose_journal_was_lost_is_found_and_so_is_its_second_application():
    db = fresh_db()
    half_applied(db)
    report, code = audit(db)
    assert code == 1 and report.splitlines() == [
        "batch 005: consistent",
        "batch 006: 6 case(s) carry the amend of amend task 102 (6740a0000000000000000102), which is "
        "'processing', not completed: half of an amend's writes were left, its journal lost; a new attempt would "
        "move cases again",
        "audit: 2 batch(es), 1 mismatch(es), 0 not audited"]
    # an operator re-queues the task; the job, with no journal to tell it, applies the seq again
    db[TASKS_COLLECTION].update_one({"_id": TASK_006}, {"$set": {"task_status": "open"}})
    (outcome,) = run_job(db, clock=lambda: FIXED_NOW + timedelta(hours=1), task_id=102).outcomes
    assert outcome.status == "completed"
    report, code = audit(db, now=FIXED_NOW + timedelta(hours=2))
    assert code == 1 and report.splitlines() == [
        "batch 005: consistent",
        "batch 006: 12 case(s) carry the amend of amend task 102 (6740a0000000000000000102), which moved 6: the "
        "amend was applied more than once",
        "audit: 2 batch(es), 1 mismatch(es), 0 not audited"]


def test_cases_naming_a_task_that_does_not_exist_are_found():
    db = amended()
    db[TASKS_COLLECTION].delete_one({"_id": TASK_006})
    report, code = audit(db)
    assert code == 1 and "batch 006: 6 case(s) carry the amend of task 6740a0000000000000000102, which does not " \
                         "exist" in report


def test_a_reused_seq_number_is_no_finding():
    """An operator renumbers batch 006's open seq 3 to 2, the number of its closed earlier seq (the README
    calls such a reuse legitimate); the job applies it once: the audit finds nothing."""
    db = fresh_db()
    set_seq(db, "006", 3, batch_seq=2)
    run_job(db)
    transaction = db[TRANSACTIONS_COLLECTION].find_one({"Case_Distribution_Batch_ID": "006"})
    assert [seq["batch_seq"] for seq in transaction["batch_seq_details"]] == [1, 2, 2]
    assert audit(db) == ("batch 005: consistent\nbatch 006: consistent\n"
                         "audit: 2 batch(es), 0 mismatch(es), 0 not audited\n", 0)


def test_tasks_of_earlier_releases_are_counted_against_the_seqs_left():
    db = amended()
    # the release before recorded the number only; earlier ones nothing
    db[TASKS_COLLECTION].update_one({"_id": TASK_006}, {"$unset": {"amended_seq": ""}})
    assert audit(db)[1] == 0
    db[TASKS_COLLECTION].update_one({"_id": TASK_006}, {"$unset": {"amended_batch_seq": ""}})
    assert audit(db)[1] == 0  # two legacy tasks (100 and 102) for two closed seqs
    db[TASKS_COLLECTION].delete_one(OLD_006_TASK)
    report, code = audit(db)
    assert code == 1 and "closed, but only 1 completed task(s) could have closed them" in report


def test_a_batch_id_that_is_no_batch_is_found():
    db = amended()
    db[SUMMARY_COLLECTION].insert_one({"Case_Distribution_Batch_ID": 5.5, "DRC_Id": "D1", "RTOM": "CW", "Count": 0,
                                       "Tot_Arrease": 0})
    db[CASES_COLLECTION].update_one({"Case_Id": 2001}, {"$set": {"Case_Distribution_Batch_ID": None}})
    report, code = audit(db)
    assert code == 1
    assert "DRS_Database.Case_Distribution_DRC_Summary: a Case_Distribution_Batch_ID of 5.5 (float); a batch id is a " \
           "string or an integer" in report
    assert "DRS.Tmp_Case_Distribution_DRC: a Case_Distribution_Batch_ID of None (NoneType)" in report
    assert report.splitlines()[-1] == "audit: 2 batch(es), 3 mismatch(es), 0 not audited"  # and 006's summary


def test_amounts_compare_exactly_unless_a_float_is_involved():
    assert same_amount(Int64(5), 5) and same_amount(Decimal128("1.10"), Decimal128("1.1"))
    assert not same_amount(Decimal128("1.10"), Decimal128("1.11")) and not same_amount(2**53 + 1, 2**53)
    assert same_amount(10.004, 10.0) and not same_amount(10.006, 10.0)
    assert not same_amount(None, 0) and not same_amount(True, 1) and not same_amount("5", 5)
    assert not same_amount(Decimal128("NaN"), 0)


def test_a_row_the_job_could_have_written_passes():
    good = dict(row("005", "D1", "CW"), Count=0, Tot_Arrease=Decimal128("0.00"))
    assert row_problem(good, "005") is None
    assert row_problem(dict(good, Count=Int64(3), Tot_Arrease=12.5), "005") is None
    assert "not exactly" in row_problem(dict(good, Case_Distribution_Batch_ID=5), "005")


@pytest.mark.parametrize("live", [True, False], ids=["under way", "left unfinished"])
def test_a_batch_with_an_open_journal_is_not_audited_and_says_so(live):
    db = fresh_db()
    db[JOURNAL_COLLECTION].insert_one({"_id": "005", "task_object_id": TASK_005, "Task_Id": 101, "phase": "writing"})
    lease_end = FIXED_NOW + (timedelta(minutes=10) if live else -timedelta(minutes=10))
    db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": {"task_status": "processing",
                                                                 "claim_expires_dtm": lease_end}})
    db[SUMMARY_COLLECTION].update_one(row("005", "D1", "CW"), {"$inc": {"Count": 5}})
    report, code = audit(db)
    first, *_, last = report.splitlines()
    assert first == ("batch 005: not audited: being amended by amend task 101 (6740a0000000000000000101), phase "
                     "writing; audit it again once that is done" if live else
                     "batch 005: not audited: an amend was left unfinished (amend task 101 (6740a0000000000000000101),"
                     " phase writing); the next run of the job finishes it; audit it again then")
    assert last == "audit: 2 batch(es), 0 mismatch(es), 1 not audited" and code == 3


def test_the_audit_command(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    before = (tmp_path / "db.bson").read_bytes()
    result = script("batch_monitor.py", "audit", "--batch", "006", env=env)
    assert (result.returncode, result.stdout) == (
        0, "batch 006: consistent\naudit: 1 batch(es), 0 mismatch(es), 0 not audited\n")
    assert (tmp_path / "db.bson").read_bytes() == before
    unknown = script("batch_monitor.py", "audit", "--batch", "007", env=env)
    assert unknown.returncode == 2 and "no batch '007'" in one_line(unknown.stderr)
    (tmp_path / "db.bson").write_bytes(before[:-10])
    damaged = script("batch_monitor.py", "audit", env=env)
    assert damaged.returncode == 2 and "is damaged" in one_line(damaged.stderr)


def test_an_integer_batch_id_is_named_by_its_digits():
    db = fresh_db()
    for name in (TRANSACTIONS_COLLECTION, SUMMARY_COLLECTION, CASES_COLLECTION):
        db[name].update_many({"Case_Distribution_Batch_ID": "005"}, {"$set": {"Case_Distribution_Batch_ID": 5}})
    db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": {"parameters.Case_Distribution_Batch_ID": 5}})
    assert audit(db, batch="5") == ("batch 5: consistent\naudit: 1 batch(es), 0 mismatch(es), 0 not audited\n", 0)


def test_a_completed_task_an_operator_requeued_is_no_finding():
    """The job ends it in error (its seq is closed: nothing to do); the seq it recorded still proves the amend
    was applied once."""
    db = amended()
    db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": {"task_status": "open"}})
    run_job(db)
    assert db[TASKS_COLLECTION].find_one({"_id": TASK_005})["task_status"] == "error"
    report, code = audit(db)
    assert code == 0, report


def test_a_seq_inserted_before_a_closed_one_is_no_finding():
    db = amended()
    db[TRANSACTIONS_COLLECTION].update_one({"Case_Distribution_Batch_ID": "005"}, {
        "$set": {"summery_status": "open"},
        "$push": {"batch_seq_details": {"$each": [
            {"batch_seq": 3, "action_type": "amend", "CRD_Distribution_Status": "open",
             "array_of_distributions": [{"rtom": "AD", "donor_drc_id": "D1", "receiver_drc_id": "D2",
                                         "transfer_count": 1}]}], "$position": 1}}})
    report, code = audit(db)
    assert code == 0, report
