"""Every write of the job, and the undo of each.

One owner per collection: System_tasks (claim_task, take_over_expired_claim, renew_claim,
release_task, update_task_status), the journal (open_journal, record_planned_writes,
mark_journal_undoing, close_journal), cases (update_case_distribution_collection), summary
(update_summary_in_mongo) and transactions (close_amend_sequence), each data write with its
rollback_*.

Every write is idempotent: running it twice, as a retry after a lost reply or a recovery
after a crash does, leaves what running it once leaves.
"""

from collections import defaultdict
from contextlib import contextmanager

import bson
from pymongo import DeleteMany, ReplaceOne, ReturnDocument, UpdateMany, UpdateOne
from pymongo.errors import DuplicateKeyError, PyMongoError

from amend_plan import group_priors
from database_checks import AMEND_FIELDS, AMEND_TASK_TYPE
from utils.connectDB import (
    CASES_COLLECTION,
    JOURNAL_COLLECTION,
    RUN_HISTORY_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TRANSACTIONS_COLLECTION,
)
from utils.Custom_Exceptions import BatchBusyError, ClaimLostError, DatabaseUpdateError
from utils.loggers import get_logger

CASE_CHUNK_SIZE = 10_000
# MongoDB's limit is 16 MB for the whole journal document; the rest of it is a few hundred bytes.
JOURNAL_LIMIT_BYTES = 16 * 2**20 - 64 * 2**10
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

def _claim_fields(run, now, lease, description):
    return {"task_status": "processing", "status_changed_dtm": now, "status_description": description,
            "claimed_by": run.document(), "claim_expires_dtm": now + lease}


def claim_task(db, task_object_id, run, now, lease):
    """open -> processing in one atomic update on _id; None when another run claimed it first.

    A retry after a lost reply finds the task claimed by this very run and returns it again.
    """
    with _writing(f"claiming task {task_object_id}"):
        return db[TASKS_COLLECTION].find_one_and_update(
            {"_id": task_object_id, "task_type": AMEND_TASK_TYPE,
             "$or": [{"task_status": "open"}, {"task_status": "processing", "claimed_by.run_id": run.run_id}]},
            {"$set": _claim_fields(run, now, lease, f"Claimed by {run.label}")},
            return_document=ReturnDocument.AFTER,
        )


def take_over_expired_claim(db, task_object_id, run, now, lease):
    """A processing task whose lease expired becomes this run's; None when it is not (or no longer) expired."""
    with _writing(f"taking over task {task_object_id}"):
        return db[TASKS_COLLECTION].find_one_and_update(
            {"_id": task_object_id, "task_type": AMEND_TASK_TYPE, "task_status": "processing",
             "$or": [{"claim_expires_dtm": {"$lt": now}}, {"claimed_by.run_id": run.run_id},
                     {"claim_expires_dtm": None, "status_changed_dtm": {"$lt": now - lease}}]},
            {"$set": _claim_fields(run, now, lease, f"Being recovered by {run.label}")},
            return_document=ReturnDocument.AFTER,
        )


def renew_claim(db, task_object_id, run, now, lease):
    """Extend this run's lease before writing; ClaimLostError when another run took the task over."""
    with _writing(f"renewing the claim of task {task_object_id}"):
        result = db[TASKS_COLLECTION].update_one(
            {"_id": task_object_id, "task_status": "processing", "claimed_by.run_id": run.run_id},
            {"$set": {"claim_expires_dtm": now + lease}})
    if result.matched_count != 1:
        raise ClaimLostError(f"task {task_object_id} is no longer claimed by {run.label}")


def release_task(db, task_object_id, run, now, description):
    """processing -> open again, for a task that has to wait for a later run."""
    with _writing(f"releasing task {task_object_id}"):
        db[TASKS_COLLECTION].update_one(
            {"_id": task_object_id, "task_status": "processing", "claimed_by.run_id": run.run_id},
            {"$set": {"task_status": "open", "status_changed_dtm": now, "status_description": description},
             "$unset": {"claimed_by": "", "claim_expires_dtm": ""}})


def update_task_status(db, task_object_id, run, status, description, now):
    """Move a task this run holds to `status`; a final status also sets end_dtm.

    When the reply is lost the task is read back: a status that landed counts as written,
    so a completed task is never undone because its acknowledgement went missing.
    """
    fields = {"task_status": status, "status_description": description, "status_changed_dtm": now}
    if status in FINAL_STATUSES:
        fields["end_dtm"] = now
    held = {"_id": task_object_id, "claimed_by.run_id": run.run_id}
    try:
        with _writing(f"setting task {task_object_id} to {status}"):
            result = db[TASKS_COLLECTION].update_one(
                dict(held, task_status={"$in": ["processing", status]}), {"$set": fields})
    except DatabaseUpdateError:
        with _writing(f"reading back task {task_object_id}"):
            landed = db[TASKS_COLLECTION].find_one(dict(held, task_status=status, status_changed_dtm=now))
        if landed is None:
            raise
        log.warning("task %s: the reply to setting it %s was lost, but the write landed", task_object_id, status)
        return
    if result.matched_count != 1:
        raise ClaimLostError(f"task {task_object_id} is no longer held by {run.label}; not set to {status}")


# --- the journal: one document per batch being amended ---------------------------------

def open_journal(db, batch_id, task, run, now):
    """Take the batch for this task: insert its journal (phase `planning`); BatchBusyError if another task holds it."""
    document = {"_id": batch_id, "task_object_id": task["_id"], "Task_Id": task.get("Task_Id"),
                "run": run.document(), "phase": "planning", "created_dtm": now}
    with _writing(f"opening the journal of batch {batch_id}"):
        try:
            db[JOURNAL_COLLECTION].insert_one(document)
            return
        except DuplicateKeyError:
            holder = db[JOURNAL_COLLECTION].find_one({"_id": batch_id})
        if holder is not None and holder.get("task_object_id") == task["_id"]:
            # Our own insert whose reply was lost, or this task's journal from a stopped run.
            db[JOURNAL_COLLECTION].update_one({"_id": batch_id}, {"$set": {"run": run.document()}})
            return
    owner = "another task" if holder is None else f"amend task {holder.get('Task_Id')} ({holder.get('task_object_id')})"
    raise BatchBusyError(f"batch {batch_id} is being amended by {owner}")


def record_planned_writes(db, batch_id, run, writes):
    """Store the planned writes and prior values (phase `writing`) before the first data write."""
    document = writes.to_document()
    size = len(bson.encode(document))
    if size > JOURNAL_LIMIT_BYTES:
        raise DatabaseUpdateError(
            f"the plan of batch {batch_id} ({len(writes.changes)} changed cases) needs {size / 2**20:.1f} MB of "
            f"journal, over MongoDB's 16 MB document limit; split the amend request into smaller ones")
    with _writing(f"journaling the writes of batch {batch_id}"):
        result = db[JOURNAL_COLLECTION].update_one(
            {"_id": batch_id, "run.run_id": run.run_id},
            {"$set": {"phase": "writing", "writes": document}})
    if result.matched_count != 1:
        raise ClaimLostError(f"the journal of batch {batch_id} is no longer held by {run.label}")


def mark_journal_undoing(db, batch_id, run, reason):
    """From here on, the task's writes are to be undone (also by a run recovering from a crash)."""
    with _writing(f"marking the journal of batch {batch_id} for undo"):
        db[JOURNAL_COLLECTION].update_one({"_id": batch_id, "run.run_id": run.run_id},
                                          {"$set": {"phase": "undoing", "error": reason}})


def take_over_journal(db, journal, run):
    with _writing(f"taking the journal of batch {journal['_id']}"):
        db[JOURNAL_COLLECTION].update_one({"_id": journal["_id"], "task_object_id": journal["task_object_id"]},
                                          {"$set": {"run": run.document()}})


def close_journal(db, batch_id, task_object_id):
    """Free the batch once its task is completed or error."""
    with _writing(f"closing the journal of batch {batch_id}"):
        db[JOURNAL_COLLECTION].delete_one({"_id": batch_id, "task_object_id": task_object_id})


# --- DRS.Tmp_Case_Distribution_DRC -----------------------------------------------------

def _case_chunk_filter(batch_id, case_ids):
    return {"Case_Distribution_Batch_ID": batch_id, "Case_Id": {"$in": case_ids}}


def update_case_distribution_collection(db, batch_id, changes, now, task_label):
    """NEW_DRC_ID and the amend fields of every changed case: one UpdateMany per (old, new) DRC and
    chunk of CASE_CHUNK_SIZE ids (a few hundred KB, far under the 16 MB limit), all in one bulk_write."""
    by_move = defaultdict(list)
    for change in changes:
        by_move[(change.old_drc, change.new_drc)].append(change.case_id)
    requests = [
        UpdateMany(_case_chunk_filter(batch_id, chunk),
                   {"$set": {"NEW_DRC_ID": new_drc, "Proceed_On": now, "Amend_Status": "Completed",
                             "Amend_Description": f"Amended from {old_drc} to {new_drc} by {task_label}"}})
        for (old_drc, new_drc), case_ids in sorted(by_move.items())
        for chunk in _chunks(case_ids, CASE_CHUNK_SIZE)
    ]
    if not requests:
        return
    with _writing(f"updating {len(changes)} case(s) of batch {batch_id}"):
        result = db[CASES_COLLECTION].bulk_write(requests, ordered=True)
    # Each Case_Id is unique in the batch and named once, so every case must be matched once.
    if result.matched_count != len(changes):
        raise DatabaseUpdateError(
            f"updating cases of batch {batch_id}: matched {result.matched_count} of {len(changes)}; "
            f"the batch changed while the task ran")


def rollback_case_distribution_collection(db, batch_id, case_priors):
    """Put back the amend fields each case had before the task (absent fields are removed again)."""
    requests = []
    for fields, case_ids in group_priors(case_priors):
        update = {"$set": fields} if fields else {}
        absent = [field for field in AMEND_FIELDS if field not in fields]
        if absent:
            update["$unset"] = {field: "" for field in absent}
        requests += [UpdateMany(_case_chunk_filter(batch_id, chunk), update)
                     for chunk in _chunks(case_ids, CASE_CHUNK_SIZE)]
    if requests:
        with _writing(f"restoring {len(case_priors)} case(s) of batch {batch_id}"):
            db[CASES_COLLECTION].bulk_write(requests, ordered=True)


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
    prior_ids = [row["_id"] for row in prior_rows]
    requests = [DeleteMany({"Case_Distribution_Batch_ID": batch_id, "_id": {"$nin": prior_ids}})]
    requests += [ReplaceOne({"_id": row["_id"]}, row, upsert=True) for row in prior_rows]
    with _writing(f"restoring the summary of batch {batch_id}"):
        db[SUMMARY_COLLECTION].bulk_write(requests, ordered=True)


# --- Case_distribution_drc_transactions ------------------------------------------------

def _seq_filter(request):
    # The batch's journal guarantees that no other task touches this seq meanwhile, so the
    # filter does not test its status: closing (or reopening) twice lands the same document.
    return {"_id": request.transaction_id,
            "batch_seq_details": {"$elemMatch": {"batch_seq": request.batch_seq, "action_type": "amend"}}}


def close_amend_sequence(db, request, now):
    """Close the processed amend seq only (positional $), and the transaction once no amend seq is open."""
    fields = {"batch_seq_details.$.CRD_Distribution_Status": "close",
              "batch_seq_details.$.CRD_Distribution_Status_on": now}
    if request.closes_transaction:
        fields["summery_status"] = "close"
    with _writing(f"closing amend seq {request.batch_seq} of transaction {request.transaction_id}"):
        result = db[TRANSACTIONS_COLLECTION].update_one(_seq_filter(request), {"$set": fields})
    if result.matched_count != 1:
        raise DatabaseUpdateError(f"amend seq {request.batch_seq} of transaction {request.transaction_id} is gone")


def rollback_amend_sequence(db, request):
    update = {"$set": {"batch_seq_details.$.CRD_Distribution_Status": "open",
                       "summery_status": request.prior_summery_status}}
    if request.prior_status_on_present:
        update["$set"]["batch_seq_details.$.CRD_Distribution_Status_on"] = request.prior_status_on
    else:
        update["$unset"] = {"batch_seq_details.$.CRD_Distribution_Status_on": ""}
    with _writing(f"reopening amend seq {request.batch_seq} of transaction {request.transaction_id}"):
        db[TRANSACTIONS_COLLECTION].update_one(_seq_filter(request), update)


# --- one task's writes as a unit -------------------------------------------------------

class AmendWriteUnit:
    """The data writes of one task (a PlannedWrites). apply() lands them; undo() reverts every
    step, so it is safe after a failure at any point, including in another process after a crash."""

    def __init__(self, db, writes):
        self._steps = (
            ("cases",
             lambda: update_case_distribution_collection(db, writes.batch_id, writes.changes, writes.now,
                                                         writes.label),
             lambda: rollback_case_distribution_collection(db, writes.batch_id, writes.case_priors)),
            ("summary",
             lambda: update_summary_in_mongo(db, writes.batch_id, writes.summary),
             lambda: rollback_summary_in_mongo(db, writes.batch_id, writes.summary_rows)),
            ("transaction",
             lambda: close_amend_sequence(db, writes.request, writes.now),
             lambda: rollback_amend_sequence(db, writes.request)),
        )

    def apply(self):
        for _, write, _ in self._steps:
            write()

    def undo(self):
        """Undo every step, newest first (each undo is idempotent); report the steps whose undo failed."""
        failures = []
        for name, _, undo in reversed(self._steps):
            try:
                undo()
            except DatabaseUpdateError as exc:
                log.error("undo of the %s writes failed: %s", name, exc)
                failures.append(f"{name}: {exc}")
        if failures:
            raise DatabaseUpdateError("undo incomplete, the database may hold part of this task's writes: "
                                      + "; ".join(failures))


# --- DRS_Amend.Run_History -------------------------------------------------------------

def record_run(db, document):
    """One execution record per run of main.py."""
    with _writing("recording the run"):
        db[RUN_HISTORY_COLLECTION].insert_one(document)
