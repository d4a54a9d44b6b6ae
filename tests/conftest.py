"""Shared fixtures: a mongomock database loaded with data/, a fixed clock, batch builders."""

import sys
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import mongomock
import pytest
from bson import ObjectId

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from database_checks import AMEND_TASK_TYPE  # noqa: E402
from database_update import read_fixtures, reset_collections  # noqa: E402
from update_databases import FENCE_FIELD  # noqa: E402
from utils.config import JobSettings  # noqa: E402
from utils.mongomock_compat import patch_mongomock  # noqa: E402

patch_mongomock()

from utils.connectDB import (  # noqa: E402
    CASES_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TEMPLATES_COLLECTION,
    TRANSACTIONS_COLLECTION,
)

FIXED_NOW = datetime(2026, 11, 25, 10, 30, 0, 123000)
# Every date in the fixtures is older; every date a run writes (fixed clock or real one) is newer.
RUN_TIMES_START = datetime(2026, 11, 21)
TEMPLATE_TASK_ID = 3


def uri_with_password(user, password, location, scheme="mongodb"):
    """A test URI carrying a made-up password, built from parts so that no credentialed
    connection string is ever written out in the repository."""
    return f"{scheme}://{user}:{password}@{location}"


def fixed_clock():
    return FIXED_NOW


@pytest.fixture
def settings():
    return JobSettings(template_task_id=TEMPLATE_TASK_ID, min_share_kept=Fraction(1, 5))


@pytest.fixture
def db():
    """A fresh in-memory database holding the shipped fixtures of data/."""
    database = mongomock.MongoClient()["drs_case_distribution_db"]
    reset_collections(database, read_fixtures(PROJECT_ROOT / "data"))
    return database


@pytest.fixture
def empty_db():
    database = mongomock.MongoClient()["drs_case_distribution_db"]
    database[TEMPLATES_COLLECTION].insert_one({
        "Template_Task_Id": TEMPLATE_TASK_ID, "task_type": AMEND_TASK_TYPE,
        "parameters": {"Case_Distribution_Batch_ID": "string"}})
    return database


def add_batch(db, batch_id, layout, distributions, first_case_id=1, task_id=1, arrears=100):
    """Insert a batch: cases per layout {drc: {rtom: n}}, its summary, an open amend seq and an open task.

    Case_Ids are dealt round-robin over the (drc, rtom) cells so that each cell's ids interleave.
    """
    deepest = max((n for counts in layout.values() for n in counts.values()), default=0)
    cells = [(drc, rtom) for k in range(deepest) for drc, counts in layout.items()
             for rtom, n in counts.items() if k < n]
    cases = [{"Case_Id": first_case_id + index, "Case_Distribution_Batch_ID": batch_id, "DRC_Id": drc, "RTOM": rtom,
              "Arrease": arrears, "NEW_DRC_ID": None} for index, (drc, rtom) in enumerate(cells)]
    if cases:
        db[CASES_COLLECTION].insert_many(cases)
    summary = {}
    for case in cases:
        summary.setdefault((case["DRC_Id"], case["RTOM"]), []).append(case["Arrease"])
    if summary:
        db[SUMMARY_COLLECTION].insert_many([
            {"Case_Distribution_Batch_ID": batch_id, "DRC_Id": drc, "RTOM": rtom, "Count": len(v), "Tot_Arrease": sum(v)}
            for (drc, rtom), v in summary.items()])
    db[TRANSACTIONS_COLLECTION].insert_one({
        "Case_Distribution_Batch_ID": batch_id, "summery_status": "open",
        "batch_seq_details": [
            {"batch_seq": 1, "action_type": "distribution", "CRD_Distribution_Status": "close"},
            {"batch_seq": 2, "action_type": "amend", "CRD_Distribution_Status": "open",
             "array_of_distributions": distributions}]})
    db[TASKS_COLLECTION].insert_one({
        "_id": ObjectId(f"{task_id:024x}"), "Task_Id": task_id, "Template_Task_Id": TEMPLATE_TASK_ID, "task_type": AMEND_TASK_TYPE,
        "parameters": {"Case_Distribution_Batch_ID": batch_id}, "task_status": "open",
        "created_dtm": datetime(2026, 11, 20, 8, 0, task_id % 60)})
    return cases


def snapshot(db, batch_id=None):
    """Every document of the data collections (of one batch when given), for before/after comparisons."""
    batch_filter = {} if batch_id is None else {"Case_Distribution_Batch_ID": batch_id}
    return {
        name: sorted(db[name].find(batch_filter), key=lambda doc: str(doc["_id"]))
        for name in (CASES_COLLECTION, SUMMARY_COLLECTION, TRANSACTIONS_COLLECTION)
    } | {TEMPLATES_COLLECTION: list(db[TEMPLATES_COLLECTION].find())}


def normalized(value):
    """A document with the times written by a run replaced by a marker and without _id or fencing
    token, so that the results of runs at different times, or with upserted rows, compare equal
    (a token only grows: an undo leaves the undoer's, see README "Fencing")."""
    if isinstance(value, datetime) and value >= RUN_TIMES_START:
        return "<run time>"
    if isinstance(value, dict):
        return {key: normalized(item) for key, item in value.items() if key not in ("_id", FENCE_FIELD)}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    return value


def copy_of(database):
    """An independent copy of a mongomock database."""
    copy = mongomock.MongoClient()[database.name]
    for name in database.list_collection_names():
        documents = list(database[name].find())
        if documents:
            copy[name].insert_many(documents)
    return copy


def batch_state(db, batch_id):
    """Cases, summary and transaction of one batch, normalized."""
    query = {"Case_Distribution_Batch_ID": batch_id}
    return normalized({
        "cases": list(db[CASES_COLLECTION].find(query).sort("Case_Id", 1)),
        "summary": list(db[SUMMARY_COLLECTION].find(query).sort([("DRC_Id", 1), ("RTOM", 1)])),
        "transaction": db[TRANSACTIONS_COLLECTION].find_one(query),
    })
