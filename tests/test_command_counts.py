"""The database cost of a task depends on its cells and changed cases, not on the batch size:
at most 15 commands plus 1 per 10,000 changed cases (getMore batches not counted)."""

import math

import pytest

from amend_store import (
    CASES_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TRANSACTIONS_COLLECTION,
    WRITE_COMMANDS,
    BatchRead,
)
from fixture_generator import BatchShape, generate_batch
from tests.instruments import CommandLog
from tests.support import disturbed, new_database, run_job, store_of
from update_databases import reset_collections

DATA_COLLECTIONS = (CASES_COLLECTION, SUMMARY_COLLECTION, TRANSACTIONS_COLLECTION)


def run_counted(shape, batch_read=BatchRead.FULL):
    db = new_database()
    reset_collections(store_of(db), generate_batch(shape))
    counting = CommandLog()
    report = run_job(disturbed(db, counting), batch_read=batch_read)
    assert [o.status for o in report.outcomes] == ["completed"], report.outcomes
    return counting, report.cases_moved, db


def limit(changed):
    return 15 + math.ceil(changed / 10_000)


def test_a_1000_case_task_on_mongomock():
    counting, changed, db = run_counted(BatchShape(1_000, drcs=4, rtoms=4, distributions=3))
    commands = counting.commands_of_first_task()
    assert len(commands) <= limit(changed)
    assert commands.count((CASES_COLLECTION, "bulk_write")) == 1
    assert commands.count((CASES_COLLECTION, "find")) == 2  # the batch, then the prior values of the changed cases
    # the changed cases, the summary rows, the transaction, and one document per other write (the task, the
    # journal, the fencing counter)
    summary_rows = db[SUMMARY_COLLECTION].count_documents({})
    bookkeeping = [(collection, command) for collection, command in commands
                   if command in WRITE_COMMANDS and collection not in DATA_COLLECTIONS]
    assert counting.documents_written_by_first_task() == changed + summary_rows + 1 + len(bookkeeping)
    assert db[TASKS_COLLECTION].find_one()["task_status"] == "completed"


@pytest.mark.slow  # 6 to 10 s each on mongomock
@pytest.mark.parametrize("shape", [
    BatchShape(100_000, distributions=3),
    BatchShape(100_000, drcs=2, rtoms=3, distributions=3, transfer_share=0.3),
], ids=["100k-few-changes", "100k-tens-of-thousands-of-changes"])
def test_a_100000_case_task_on_mongomock(shape):
    counting, changed, _ = run_counted(shape)
    commands = counting.commands_of_first_task()
    assert len(commands) <= limit(changed), (changed, commands)
    assert commands.count((CASES_COLLECTION, "find")) == 1 + math.ceil(changed / 10_000)
    if shape.transfer_share > 0.05:
        assert changed > 10_000  # more than one chunk of 10,000
