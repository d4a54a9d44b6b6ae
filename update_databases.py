"""Every write of the job, and the undo of each.

One owner per collection: System_tasks (claim_task, update_task_status), cases
(update_case_distribution_collection), summary (update_summary_in_mongo) and transactions
(close_amend_sequence), each with its rollback_*. AmendWriteUnit runs a task's data writes
as one unit that can be undone, newest step first.
"""

from collections import defaultdict
from contextlib import contextmanager

import bson
from pymongo import DeleteMany, ReplaceOne, ReturnDocument, UpdateOne
from pymongo.errors import PyMongoError

from database_checks import AMEND_FIELDS, AMEND_TASK_TYPE
from utils.connectDB import CASES_COLLECTION, SUMMARY_COLLECTION, TASKS_COLLECTION, TRANSACTIONS_COLLECTION
from utils.Custom_Exceptions import DatabaseUpdateError
from utils.loggers import get_logger

CASE_CHUNK_SIZE = 10_000
FINAL_STATUSES = ("completed", "error")

log = get_logger("writes")


@contextmanager
def _writing(what):
    """Turn a driver error into a DatabaseUpdateError saying which write failed."""
    try:
        yield
    except PyMongoError as exc:
        raise DatabaseUpdateError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- System_tasks ----------------------------------------------------------------------

def claim_task(db, task_object_id, now, description):
    """open -> processing in one atomic update on _id; None when another run claimed it first."""
    with _writing(f"claiming task {task_object_id}"):
        return db[TASKS_COLLECTION].find_one_and_update(
            {"_id": task_object_id, "task_status": "open", "task_type": AMEND_TASK_TYPE},
            {"$set": {"task_status": "processing", "status_changed_dtm": now, "status_description": description}},
            return_document=ReturnDocument.AFTER,
        )


def update_task_status(db, task_object_id, status, description, now, expected_statuses=("processing",)):
    """Move a claimed task to `status`; a final status also sets end_dtm."""
    fields = {"task_status": status, "status_description": description, "status_changed_dtm": now}
    if status in FINAL_STATUSES:
        fields["end_dtm"] = now
    with _writing(f"setting task {task_object_id} to {status}"):
        result = db[TASKS_COLLECTION].update_one(
            {"_id": task_object_id, "task_status": {"$in": list(expected_statuses)}}, {"$set": fields})
    if result.matched_count != 1:
        raise DatabaseUpdateError(
            f"task {task_object_id} is no longer in status {' or '.join(expected_statuses)}; not set to {status}")


# --- DRS.Tmp_Case_Distribution_DRC -----------------------------------------------------

def update_case_distribution_collection(db, batch_id, changes, now, task_label):
    """NEW_DRC_ID and the amend fields of every changed case, one UpdateMany per (old, new) DRC and chunk."""
    by_move = defaultdict(list)
    for change in changes:
        by_move[(change.old_drc, change.new_drc)].append(change.case_id)
    collection = db[CASES_COLLECTION]
    for (old_drc, new_drc), case_ids in sorted(by_move.items()):
        fields = {"NEW_DRC_ID": new_drc, "Proceed_On": now, "Amend_Status": "Completed",
                  "Amend_Description": f"Amended from {old_drc} to {new_drc} by {task_label}"}
        for chunk in _chunks(case_ids, CASE_CHUNK_SIZE):
            with _writing(f"updating {len(chunk)} case(s) of batch {batch_id} from {old_drc} to {new_drc}"):
                result = collection.update_many(
                    {"Case_Distribution_Batch_ID": batch_id, "Case_Id": {"$in": chunk}}, {"$set": fields})
            if result.matched_count != len(chunk):
                raise DatabaseUpdateError(
                    f"updating cases of batch {batch_id} from {old_drc} to {new_drc}: matched "
                    f"{result.matched_count} of {len(chunk)}; the batch changed while the task ran")


def rollback_case_distribution_collection(db, batch_id, priors):
    """Put back the amend fields each case had before the task (absent fields are removed again)."""
    groups = defaultdict(list)
    for case_id, fields in priors.items():
        ordered = {field: fields[field] for field in AMEND_FIELDS if field in fields}
        groups[bson.encode(ordered)].append(case_id)
    collection = db[CASES_COLLECTION]
    for encoded, case_ids in groups.items():
        fields = bson.decode(encoded)
        update = {}
        if fields:
            update["$set"] = fields
        absent = [field for field in AMEND_FIELDS if field not in fields]
        if absent:
            update["$unset"] = {field: "" for field in absent}
        for chunk in _chunks(sorted(case_ids), CASE_CHUNK_SIZE):
            with _writing(f"restoring {len(chunk)} case(s) of batch {batch_id}"):
                collection.update_many({"Case_Distribution_Batch_ID": batch_id, "Case_Id": {"$in": chunk}}, update)


# --- DRS_Database.Case_Distribution_DRC_Summary ----------------------------------------

def update_summary_in_mongo(db, batch_id, cells):
    """Count and Tot_Arrease of every cell of the batch in one ordered bulk_write (missing rows upserted)."""
    requests = [
        UpdateOne({"Case_Distribution_Batch_ID": batch_id, "DRC_Id": cell.drc, "RTOM": cell.rtom},
                  {"$set": {"Count": cell.count, "Tot_Arrease": cell.total_arrears}}, upsert=True)
        for cell in cells
    ]
    if requests:
        with _writing(f"rewriting the summary of batch {batch_id}"):
            db[SUMMARY_COLLECTION].bulk_write(requests, ordered=True)


def rollback_summary_in_mongo(db, batch_id, prior_rows):
    """Remove the rows the task added and put back every row as it was."""
    requests = [DeleteMany({"Case_Distribution_Batch_ID": batch_id, "_id": {"$nin": [row["_id"] for row in prior_rows]}})]
    requests += [ReplaceOne({"_id": row["_id"]}, row) for row in prior_rows]
    with _writing(f"restoring the summary of batch {batch_id}"):
        db[SUMMARY_COLLECTION].bulk_write(requests, ordered=True)


# --- Case_distribution_drc_transactions ------------------------------------------------

def _seq_filter(request, status):
    return {"_id": request.transaction_id,
            "batch_seq_details": {"$elemMatch": {"batch_seq": request.batch_seq, "action_type": "amend",
                                                 "CRD_Distribution_Status": status}}}


def close_amend_sequence(db, request, now):
    """Close the processed amend seq only (positional $), and the transaction once no amend seq is open."""
    fields = {"batch_seq_details.$.CRD_Distribution_Status": "close",
              "batch_seq_details.$.CRD_Distribution_Status_on": now}
    if request.closes_transaction:
        fields["summery_status"] = "close"
    with _writing(f"closing amend seq {request.batch_seq} of transaction {request.transaction_id}"):
        result = db[TRANSACTIONS_COLLECTION].update_one(_seq_filter(request, "open"), {"$set": fields})
    if result.matched_count != 1:
        raise DatabaseUpdateError(
            f"amend seq {request.batch_seq} of transaction {request.transaction_id} is no longer open")


def rollback_amend_sequence(db, request):
    update = {"$set": {"batch_seq_details.$.CRD_Distribution_Status": "open",
                       "summery_status": request.prior_summery_status}}
    if request.prior_status_on_present:
        update["$set"]["batch_seq_details.$.CRD_Distribution_Status_on"] = request.prior_status_on
    else:
        update["$unset"] = {"batch_seq_details.$.CRD_Distribution_Status_on": ""}
    with _writing(f"reopening amend seq {request.batch_seq} of transaction {request.transaction_id}"):
        db[TRANSACTIONS_COLLECTION].update_one(_seq_filter(request, "close"), update)


# --- one task's writes as a unit -------------------------------------------------------

class AmendWriteUnit:
    """The data writes of one task. When apply() or anything after it fails, undo() reverts
    every step apply() started, the failing one included (each undo is idempotent)."""

    def __init__(self, db, plan, case_priors, summary_rows, now, task_label):
        batch_id = plan.batch_id
        self._steps = (
            ("cases",
             lambda: update_case_distribution_collection(db, batch_id, plan.changes, now, task_label),
             lambda: rollback_case_distribution_collection(db, batch_id, case_priors)),
            ("summary",
             lambda: update_summary_in_mongo(db, batch_id, plan.summary),
             lambda: rollback_summary_in_mongo(db, batch_id, summary_rows)),
            ("transaction",
             lambda: close_amend_sequence(db, plan.request, now),
             lambda: rollback_amend_sequence(db, plan.request)),
        )
        self._started = []

    def apply(self):
        for name, write, undo in self._steps:
            self._started.append((name, undo))
            write()

    def undo(self):
        """Undo every started step, newest first; report the steps whose undo failed."""
        failures = []
        while self._started:
            name, undo = self._started.pop()
            try:
                undo()
            except DatabaseUpdateError as exc:
                log.error("undo of the %s writes failed: %s", name, exc)
                failures.append(f"{name}: {exc}")
        if failures:
            raise DatabaseUpdateError("undo incomplete, the database may hold part of this task's writes: "
                                      + "; ".join(failures))
