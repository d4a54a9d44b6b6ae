"""Overlapping runs: each task processed exactly once, the end state equal to one sequential run."""

import subprocess
import sys
import threading
from datetime import datetime, timedelta

import pytest
from bson import ObjectId

from amend_store import AMEND_TASK_TYPE, JOURNAL_COLLECTION, TASKS_COLLECTION, TRANSACTIONS_COLLECTION
from embedded.data_file import save_database
from tests.support import (
    FIXED_NOW,
    PROJECT_ROOT,
    TEMPLATE_TASK_ID,
    add_batch,
    add_template,
    batch_state,
    load,
    new_database,
    one_command_at_a_time,
    run_job,
)

BATCHES = [f"B{number:02d}" for number in range(30)]
# Every fifth batch carries a second open amend seq, requested by a second task.
TWICE_AMENDED = BATCHES[::5]


def build_database():
    db = new_database()
    add_template(db)
    for number, batch_id in enumerate(BATCHES):
        add_batch(db, batch_id, {"D1": {"CW": 8 + number % 3, "AG": 4, "AD": 5},
                                 "D2": {"CW": 3 + number % 2, "AG": 5, "AD": 6}},
                  [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 2}],
                  first_case_id=1000 * number + 1, task_id=number + 1, arrears=10 + number)
    for number, batch_id in enumerate(TWICE_AMENDED):
        db[TRANSACTIONS_COLLECTION].update_one({"Case_Distribution_Batch_ID": batch_id}, {"$push": {
            "batch_seq_details": {"batch_seq": 3, "action_type": "amend", "CRD_Distribution_Status": "open",
                                  "array_of_distributions": [{"rtom": "AG", "donor_drc_id": "D1",
                                                              "receiver_drc_id": "D2", "transfer_count": 1}]}}})
        db[TASKS_COLLECTION].insert_one({
            "_id": ObjectId(f"{100 + number:024x}"), "Task_Id": 100 + number, "Template_Task_Id": TEMPLATE_TASK_ID,
            "task_type": AMEND_TASK_TYPE, "parameters": {"Case_Distribution_Batch_ID": batch_id},
            "task_status": "open", "created_dtm": datetime(2026, 11, 20, 9, 0, number)})
    return db


@pytest.fixture(scope="module")
def sequential():
    """Each batch as one run processing every task leaves it."""
    db = build_database()
    report = run_job(db)
    assert report.count("completed") == len(BATCHES) + len(TWICE_AMENDED)
    return {batch_id: batch_state(db, batch_id) for batch_id in BATCHES}


def assert_same_as_sequential(db, sequential):
    assert {batch_id: batch_state(db, batch_id) for batch_id in BATCHES} == sequential
    assert db[TASKS_COLLECTION].count_documents({"task_status": {"$ne": "completed"}}) == 0
    assert db[JOURNAL_COLLECTION].count_documents({}) == 0


def test_four_threads_over_thirty_five_tasks(sequential):
    db = build_database()
    server_like = one_command_at_a_time(db)
    reports, failures = [], []

    def one_run():
        try:
            reports.append(run_job(server_like))
        except BaseException as exc:  # noqa: BLE001 - a thread's failure must fail the test, not vanish
            failures.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    # a task deferred because its batch was busy is taken by the next run, as from cron
    reports.append(run_job(server_like))

    completed = [o.object_id for report in reports for o in report.outcomes if o.status == "completed"]
    assert len(completed) == len(set(completed)) == len(BATCHES) + len(TWICE_AMENDED)
    assert not [o for report in reports for o in report.outcomes if o.status == "error"]
    assert_same_as_sequential(db, sequential)


def test_a_task_waits_while_another_task_amends_its_batch():
    db = build_database()
    first, second = db[TASKS_COLLECTION].find({"parameters.Case_Distribution_Batch_ID": "B00"}).sort("Task_Id", 1)
    db[JOURNAL_COLLECTION].insert_one({"_id": "B00", "task_object_id": first["_id"], "Task_Id": first["Task_Id"],
                                       "phase": "planning", "run": {"run_id": "other"}})
    # the first task is held by a live run: its lease runs for ten more minutes
    db[TASKS_COLLECTION].update_one({"_id": first["_id"]}, {"$set": {
        "task_status": "processing", "claim_expires_dtm": FIXED_NOW + timedelta(minutes=10)}})
    report = run_job(db)
    deferred = [o for o in report.outcomes if o.status == "deferred"]
    assert [o.object_id for o in deferred] == [second["_id"]]
    task = db[TASKS_COLLECTION].find_one({"_id": second["_id"]})
    assert task["task_status"] == "open"
    assert task["status_description"] == \
        f"Waiting for a later run: batch B00 is being amended by amend task 1 ({first['_id']})"
    assert "claimed_by" not in task
    assert "0 errored, 1 deferred (batch busy)" in report.summary_line()


@pytest.mark.parametrize("processes", [4])
def test_concurrent_processes_on_the_embedded_default(tmp_path, processes, sequential):
    path = tmp_path / "db.bson"
    save_database(build_database(), path)
    environment = {"DRS_MONGO_URI": f"embedded://{path}", "PATH": "/usr/bin:/bin"}
    runs = [subprocess.Popen([sys.executable, str(PROJECT_ROOT / "main.py"), "--log-dir", str(tmp_path / "logs")],
                             env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(processes)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    assert [code for code, _ in results] == [0] * processes, results
    completed = sum(int(stderr.split(" task(s) completed")[0].rsplit(" ", 1)[1]) for _, stderr in results)
    assert completed == len(BATCHES) + len(TWICE_AMENDED)
    assert_same_as_sequential(load(path), sequential)
