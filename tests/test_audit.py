"""batch_monitor.py audit: each kind of inconsistency, injected, is found; a consistent database passes; it
reads only."""

import pytest
from bson import Decimal128, Int64

from amend_plan import SummaryCell
from amend_store import (
    CASES_COLLECTION,
    JOURNAL_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TRANSACTIONS_COLLECTION,
)
from audit import same_amount, seq_mismatches, summary_mismatches
from batch_monitor import audit_batches
from database_checks import fetch_cell_figures
from tests.support import TASK_005, TASK_006, fresh_db, one_line, run_job, snapshot, store_of

OLD_006_TASK = {"Task_Id": 100}  # the fixtures' completed task that closed batch 006's amend seq 2


@pytest.fixture(params=[False, True], ids=["streamed", "aggregated"])
def aggregated(request):
    return request.param


def audit(db, aggregated, batch=None):
    return audit_batches(store_of(db), batch, aggregated)


def amended():
    db = fresh_db()
    run_job(db)
    return db


@pytest.mark.parametrize("make", [fresh_db, amended], ids=["fixtures", "after a run"])
def test_the_fixtures_before_and_after_a_run_are_consistent(make, aggregated):
    db = make()
    before = snapshot(db)
    report, code = audit(db, aggregated)
    assert report == "batch 005: consistent\nbatch 006: consistent\naudit: 2 batch(es), 0 mismatch(es)\n"
    assert code == 0
    assert snapshot(db) == before  # it reads only


def test_one_aggregation_sums_the_cells_as_the_stream_does():
    db = amended()
    db[CASES_COLLECTION].update_many({"Case_Distribution_Batch_ID": "006", "RTOM": "AD"},
                                     {"$set": {"Arrease": Decimal128("10.25")}})
    db[CASES_COLLECTION].update_many({"Case_Distribution_Batch_ID": "005", "RTOM": "CW"}, {"$set": {"NEW_DRC_ID": ""}})
    for batch in ("005", "006"):
        streamed = fetch_cell_figures(store_of(db), batch, aggregated=False)
        summed = fetch_cell_figures(store_of(db), batch, aggregated=True)
        assert [(c.drc, c.rtom, c.count) for c in streamed] == [(c.drc, c.rtom, c.count) for c in summed]
        assert all(same_amount(a.total_arrears, b.total_arrears) for a, b in zip(streamed, summed, strict=True))


def row(db, batch, drc, rtom):
    return {"Case_Distribution_Batch_ID": batch, "DRC_Id": drc, "RTOM": rtom}


def first_seq_of(db, batch, number):
    transaction = db[TRANSACTIONS_COLLECTION].find_one({"Case_Distribution_Batch_ID": batch})
    return next(index for index, seq in enumerate(transaction["batch_seq_details"]) if seq["batch_seq"] == number)


def reopen_seq(db, batch, number):
    index = first_seq_of(db, batch, number)
    db[TRANSACTIONS_COLLECTION].update_one({"Case_Distribution_Batch_ID": batch}, {"$set": {
        f"batch_seq_details.{index}.CRD_Distribution_Status": "open"}})


def duplicate_row(db):
    duplicate = db[SUMMARY_COLLECTION].find_one(row(db, "005", "D1", "CW"))
    del duplicate["_id"]
    db[SUMMARY_COLLECTION].insert_one(duplicate)


def second_completed_task(db):
    task = db[TASKS_COLLECTION].find_one({"_id": TASK_005})
    task.update(_id=None, Task_Id=999)
    del task["_id"]
    db[TASKS_COLLECTION].insert_one(task)


def move_case_behind_the_summarys_back(db):
    in_d1 = {"Case_Distribution_Batch_ID": "005", "RTOM": "CW", "DRC_Id": "D1", "NEW_DRC_ID": None}
    assert db[CASES_COLLECTION].update_one(in_d1, {"$set": {"NEW_DRC_ID": "D2"}}).modified_count == 1


INCONSISTENCIES = [
    ("a Count changed",
     lambda db: db[SUMMARY_COLLECTION].update_one(row(db, "005", "D1", "CW"), {"$inc": {"Count": 1}}),
     ["batch 005: summary of DRC D1 RTOM CW says Count 11; the cases hold 10"]),
    ("a Tot_Arrease changed",
     lambda db: db[SUMMARY_COLLECTION].update_one(row(db, "005", "D1", "CW"), {"$inc": {"Tot_Arrease": 1}}),
     ["batch 005: summary of DRC D1 RTOM CW says Tot_Arrease"]),
    ("a Tot_Arrease that is no number",
     lambda db: db[SUMMARY_COLLECTION].update_one(row(db, "005", "D1", "CW"), {"$set": {"Tot_Arrease": "lots"}}),
     ["batch 005: summary of DRC D1 RTOM CW says Tot_Arrease 'lots'"]),
    ("a summary row deleted",
     lambda db: db[SUMMARY_COLLECTION].delete_one(row(db, "005", "D2", "AG")),
     ["batch 005: summary of DRC D2 RTOM AG is missing; the cases hold 6 there"]),
    ("a stale row of a cell without cases",
     lambda db: db[SUMMARY_COLLECTION].insert_one(dict(row(db, "005", "D9", "CW"), Count=3, Tot_Arrease=30)),
     ["batch 005: summary of DRC D9 RTOM CW says Count 3; the cases hold 0"]),
    ("a cell with two rows", duplicate_row, ["batch 005: summary of DRC D1 RTOM CW has 2 rows"]),
    ("a case moved behind the summary's back", move_case_behind_the_summarys_back,
     ["batch 005: summary of DRC D1 RTOM CW says Count 10; the cases hold 9",
      "batch 005: summary of DRC D2 RTOM CW says Count 1; the cases hold 2"]),
    ("a completed task's seq reopened", lambda db: reopen_seq(db, "005", 2),
     ["batch 005: amend task 101 (6740a0000000000000000101) completed seq 2, which is still open"]),
    ("a closed seq without its task", lambda db: db[TASKS_COLLECTION].delete_one(OLD_006_TASK),
     ["batch 006: amend seq(s) 2 closed, but only 0 completed task(s) could have closed them"]),
    ("a seq closed by two tasks", second_completed_task,
     ["batch 005: amend seq 2 was closed by 2 completed tasks (101 (6740a0000000000000000101), 999 ("]),
    ("a task naming a seq the transaction lacks",
     lambda db: db[TASKS_COLLECTION].update_one({"_id": TASK_006}, {"$set": {"amended_batch_seq": 7}}),
     ["batch 006: amend task 102 (6740a0000000000000000102) completed seq 7, which the transaction does not hold",
      "batch 006: amend seq(s) 3 closed, but only 0 completed task(s) could have closed them"]),
]


@pytest.mark.parametrize("name, inject, messages", INCONSISTENCIES, ids=[case[0] for case in INCONSISTENCIES])
def test_each_kind_of_inconsistency_is_found(name, inject, messages, aggregated):
    db = amended()
    inject(db)
    report, code = audit(db, aggregated)
    lines = report.splitlines()
    assert code == 1, report
    for message in messages:
        assert sum(line.startswith(message) for line in lines) == 1, (message, report)
    assert lines[-1] == f"audit: 2 batch(es), {len(lines) - 1 - sum('consistent' in line for line in lines)} " \
                        f"mismatch(es)"
    assert len(lines) - 1 == len(messages) + sum(line.endswith(": consistent") for line in lines)


def test_a_case_the_job_would_refuse_stops_the_streamed_sum_of_its_batch():
    db = amended()
    db[CASES_COLLECTION].update_one({"Case_Distribution_Batch_ID": "006"}, {"$set": {"Case_Id": "x"}})
    report, code = audit(db, aggregated=False)
    assert code == 1 and report.splitlines()[1].startswith(
        "batch 006: its cases cannot be summed: case _id") and "Case_Id must be an integer" in report
    assert audit(db, aggregated=True)[1] == 0  # a server counts it as any other case


def test_tasks_of_earlier_releases_are_counted_against_the_unmatched_seqs():
    closed = {"action_type": "amend", "CRD_Distribution_Status": "close"}
    transactions = [{"batch_seq_details": [dict(closed, batch_seq=2), dict(closed, batch_seq=3)]}]
    legacy = {"Task_Id": 7, "_id": 1}
    assert seq_mismatches("B", transactions, [legacy, dict(legacy, Task_Id=8)]) == []
    assert seq_mismatches("B", transactions, [legacy, {"Task_Id": 9, "amended_batch_seq": 3}]) == []
    assert seq_mismatches("B", transactions, [legacy]) == [
        "batch B: amend seq(s) 2, 3 closed, but only 1 completed task(s) could have closed them"]
    assert seq_mismatches("B", transactions, [legacy] * 3) == [
        "batch B: 3 completed amend task(s) (7 (1), 7 (1), 7 (1)) for 2 closed seq(s) none records"]
    twice = [dict(closed, batch_seq=2)] * 2
    assert "batch B: amend seq 2 is closed 2 times" in seq_mismatches("B", [{"batch_seq_details": twice}],
                                                                       [legacy, legacy])


def test_amounts_compare_exactly_unless_a_float_is_involved():
    assert same_amount(Int64(5), 5) and same_amount(Decimal128("1.10"), Decimal128("1.1"))
    assert not same_amount(Decimal128("1.10"), Decimal128("1.11")) and not same_amount(2**53 + 1, 2**53)
    assert same_amount(10.004, 10.0) and not same_amount(10.006, 10.0)
    assert not same_amount(None, 0) and not same_amount(True, 1) and not same_amount("5", 5)
    assert summary_mismatches("B", [SummaryCell("D1", "CW", 0, 0)],
                              [{"DRC_Id": "D1", "RTOM": "CW", "Count": 0, "Tot_Arrease": None}]) == []


def test_a_batch_being_amended_is_not_audited(aggregated):
    db = fresh_db()
    db[JOURNAL_COLLECTION].insert_one({"_id": "005", "task_object_id": TASK_005, "phase": "writing"})
    db[SUMMARY_COLLECTION].update_one(row(db, "005", "D1", "CW"), {"$inc": {"Count": 5}})
    report, code = audit(db, aggregated)
    assert report.splitlines()[0] == "batch 005: being amended (its journal is open), not audited" and code == 0


def test_the_audit_command(tmp_path, script):
    env = {"DRS_MONGO_URI": f"embedded://{tmp_path / 'db.bson'}"}
    assert script("database_update.py", env=env).returncode == 0
    assert script("main.py", "--log-dir", str(tmp_path / "logs"), env=env).returncode == 0
    before = (tmp_path / "db.bson").read_bytes()
    result = script("batch_monitor.py", "audit", "--batch", "006", env=env)
    assert (result.returncode, result.stdout) == (0, "batch 006: consistent\naudit: 1 batch(es), 0 mismatch(es)\n")
    assert (tmp_path / "db.bson").read_bytes() == before
    unknown = script("batch_monitor.py", "audit", "--batch", "007", env=env)
    assert unknown.returncode == 2 and "no batch '007'" in one_line(unknown.stderr)
    (tmp_path / "db.bson").write_bytes(before[:-10])
    damaged = script("batch_monitor.py", "audit", env=env)
    assert damaged.returncode == 2 and "is damaged" in one_line(damaged.stderr)


def test_an_integer_batch_id_is_named_by_its_digits(aggregated):
    db = fresh_db()
    for name in (TRANSACTIONS_COLLECTION, SUMMARY_COLLECTION, CASES_COLLECTION):
        db[name].update_many({"Case_Distribution_Batch_ID": "005"}, {"$set": {"Case_Distribution_Batch_ID": 5}})
    db[TASKS_COLLECTION].update_one({"_id": TASK_005}, {"$set": {"parameters.Case_Distribution_Batch_ID": 5}})
    report, code = audit(db, aggregated, batch="5")
    assert (report, code) == ("batch 5: consistent\naudit: 1 batch(es), 0 mismatch(es)\n", 0)
