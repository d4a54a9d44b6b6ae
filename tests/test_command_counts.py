"""The database cost of a task depends on its cells and changed cases, not on the batch size:
at most 15 commands plus 1 per 10,000 changed cases (getMore batches not counted)."""

import math

import mongomock
import pytest

from database_update import reset_collections
from fixture_generator import BatchShape, generate_batch
from task_processor import amend_task_processing
from tests.command_counting import CountingDatabase, LightCasesCollection
from tests.conftest import fixed_clock
from utils.config import JobSettings
from utils.connectDB import CASES_COLLECTION, TASKS_COLLECTION

SETTINGS = JobSettings(template_task_id=3)


def run_counted(shape, light_cases):
    documents = generate_batch(shape)
    db = mongomock.MongoClient()["drs"]
    cases = list(documents.pop(CASES_COLLECTION))
    reset_collections(db, dict(documents, **{CASES_COLLECTION: [] if light_cases else cases}))
    replacements = {CASES_COLLECTION: LightCasesCollection(cases)} if light_cases else {}
    counting = CountingDatabase(db, replacements)
    report = amend_task_processing(counting, SETTINGS, clock=fixed_clock)
    assert [o.status for o in report.outcomes] == ["completed"], report.outcomes
    return counting, report.cases_moved, db


def limit(changed):
    return 15 + math.ceil(changed / 10_000)


def test_a_1000_case_task_on_mongomock():
    counting, changed, db = run_counted(BatchShape(1_000, drcs=4, rtoms=4, distributions=3), light_cases=False)
    commands = counting.commands_of_first_task()
    assert len(commands) <= limit(changed)
    assert commands.count((CASES_COLLECTION, "bulk_write")) == 1
    assert commands.count((CASES_COLLECTION, "find")) == 2  # the batch, then the prior values of the changed cases
    # the changed cases, the summary rows, the transaction, the task 3 times, the journal 3 times, the fence counter
    summary_rows = db["DRS_Database.Case_Distribution_DRC_Summary"].count_documents({})
    assert counting.documents_written_by_first_task() == changed + summary_rows + 1 + 3 + 3 + 1
    assert db[TASKS_COLLECTION].find_one()["task_status"] == "completed"


@pytest.mark.parametrize("shape", [
    BatchShape(100_000, distributions=3),
    BatchShape(100_000, drcs=2, rtoms=3, distributions=3, transfer_share=0.3),
], ids=["100k-few-changes", "100k-tens-of-thousands-of-changes"])
def test_a_100000_case_task_on_a_light_stand_in(shape):
    counting, changed, _ = run_counted(shape, light_cases=True)
    commands = counting.commands_of_first_task()
    assert len(commands) <= limit(changed), (changed, commands)
    assert commands.count((CASES_COLLECTION, "find")) == 1 + math.ceil(changed / 10_000)
    if shape.transfer_share > 0.05:
        assert changed > 10_000  # more than one chunk of 10,000
