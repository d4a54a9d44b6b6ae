"""Every write of the job, and the undo of each.

One owner per collection: System_tasks (claim_task, take_over_expired_claim, renew_claim,
release_task, update_task_status), the journal (open_journal, record_planned_writes,
mark_journal_undoing, take_over_journal, close_journal), the fencing counter (issue_fence),
cases (update_case_distribution_collection), summary (update_summary_in_mongo) and
transactions (close_amend_sequence), each data write with its rollback_*.

Every write is idempotent: running it twice, as a retry after a lost reply or a recovery
after a crash does, leaves what running it once leaves.

Every data write is fenced (see README, "Fencing"): a task's journal carries a fencing
token issued by the database, strictly increasing; each case, summary row and transaction
the task writes records the token in DRS_Amend_Fence, and a write only matches a document
whose token is not newer than the writer's. A run whose journal was taken over holds an
older token, so its late writes match nothing.
"""

from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal

import bson
from bson.decimal128 import Decimal128
from pymongo import DeleteMany, ReplaceOne, ReturnDocument, UpdateMany, UpdateOne
from pymongo.errors import DuplicateKeyError, PyMongoError

from amend_plan import AmendRequest, CaseChange, PlannedWrites, SummaryCell
from database_checks import AMEND_FIELDS, AMEND_TASK_TYPE
from utils.connectDB import (
    CASES_COLLECTION,
    COUNTERS_COLLECTION,
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
FENCE_FIELD = "DRS_Amend_Fence"
FENCE_COUNTER_ID = "fence"
# The journal's own layout; a journal of another layout (an earlier release) is not rolled forward.
JOURNAL_FORMAT = 2
INT64_MAX = 2**63 - 1

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


def not_newer_than(fence):
    """Matches a document that no writer with a newer fencing token has written."""
    return {FENCE_FIELD: {"$not": {"$gt": fence}}}


def issue_fence(db):
    """A new fencing token: the database's counter, incremented atomically (never reused, never lower)."""
    with _writing("issuing a fencing token"):
        for _ in range(2):
            try:
                counter = db[COUNTERS_COLLECTION].find_one_and_update(
                    {"_id": FENCE_COUNTER_ID}, {"$inc": {"value": 1}}, upsert=True,
                    return_document=ReturnDocument.AFTER)
                return counter["value"]
            except DuplicateKeyError:
                continue  # two first-ever upserts raced; the counter exists now
    raise DatabaseUpdateError("issuing a fencing token failed: the counter could not be created")


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


def _as_read(value):
    """A filter condition on a field that matches `value` as it was read.

    Dates, strings and numbers are compared with $eq (a value never acts as an operator).
    Anything else a run never writes there (NaN, a document, an array) matches "still not a
    date": what a live run would write instead is always a date.
    """
    if value is None:
        return None  # absent or null
    if isinstance(value, (datetime, str, int)) or (isinstance(value, float) and value == value):
        return {"$eq": value}
    return {"$exists": True, "$not": {"$type": "date"}}


def _claim_as_read(task):
    claimed_by = task.get("claimed_by")
    if isinstance(claimed_by, dict):
        condition = {"claimed_by.run_id": _as_read(claimed_by.get("run_id"))}
    else:
        condition = {"claimed_by": _as_read(claimed_by)}
    condition.update({field: _as_read(task.get(field)) for field in ("claim_expires_dtm", "status_changed_dtm")})
    return condition


def take_over_expired_claim(db, task, run, now, lease):
    """Take a processing task whose claim was found stale (database_checks.stale_claim_reason).

    Compare-and-set on the claim as it was read, so that a renewal or another run's
    takeover in between makes this one fail (None). A retry after a lost reply finds the
    task held by this run and returns it.
    """
    as_read = _claim_as_read(task)
    with _writing(f"taking over task {task['_id']}"):
        return db[TASKS_COLLECTION].find_one_and_update(
            {"_id": task["_id"], "task_type": AMEND_TASK_TYPE, "task_status": "processing",
             "$or": [as_read, {"claimed_by.run_id": run.run_id}]},
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

def open_journal(db, batch_id, task, run, now, fence):
    """Take the batch for this task: insert its journal (phase `planning`, this run's fence).

    BatchBusyError when another task holds the batch, or when a journal of an earlier
    attempt of this very task is left: that one is finished first (by the recovery of a
    run, see task_processor.recover_interrupted_tasks), never adopted.
    """
    document = {"_id": batch_id, "task_object_id": task["_id"], "Task_Id": task.get("Task_Id"),
                "run": run.document(), "fence": fence, "phase": "planning", "created_dtm": now}
    with _writing(f"opening the journal of batch {batch_id}"):
        try:
            db[JOURNAL_COLLECTION].insert_one(document)
            return
        except DuplicateKeyError:
            holder = db[JOURNAL_COLLECTION].find_one({"_id": batch_id})
    if holder is not None and holder.get("fence") == fence:
        return  # our own insert, whose reply was lost
    if holder is not None and holder.get("task_object_id") == task["_id"]:
        raise BatchBusyError(
            f"batch {batch_id} holds the unfinished journal (phase {holder.get('phase')}) of an earlier attempt "
            f"of this task; the next run finishes it first")
    owner = "another task" if holder is None else f"amend task {holder.get('Task_Id')} ({holder.get('task_object_id')})"
    raise BatchBusyError(f"batch {batch_id} is being amended by {owner}")


def _journal_lost(batch_id, fence, what):
    return ClaimLostError(f"the journal of batch {batch_id} was taken over by a run with a newer fencing token "
                          f"than {fence}; {what}")


def record_planned_writes(db, batch_id, fence, writes):
    """Store the planned writes and prior values (phase `writing`) before the first data write."""
    document = journal_writes_document(writes)
    size = len(bson.encode(document))
    if size > JOURNAL_LIMIT_BYTES:
        raise DatabaseUpdateError(
            f"the plan of batch {batch_id} ({len(writes.changes)} changed cases) needs {size / 2**20:.1f} MB of "
            f"journal, over MongoDB's 16 MB document limit; split the amend request into smaller ones")
    with _writing(f"journaling the writes of batch {batch_id}"):
        result = db[JOURNAL_COLLECTION].update_one({"_id": batch_id, "fence": fence},
                                                   {"$set": {"phase": "writing", "writes": document}})
    if result.matched_count != 1:
        raise _journal_lost(batch_id, fence, "nothing was written")


def mark_journal_undoing(db, batch_id, fence, reason):
    """From here on, the task's writes are to be undone (also by a run recovering from a crash)."""
    with _writing(f"marking the journal of batch {batch_id} for undo"):
        result = db[JOURNAL_COLLECTION].update_one({"_id": batch_id, "fence": fence},
                                                   {"$set": {"phase": "undoing", "error": reason}})
    if result.matched_count != 1:
        raise _journal_lost(batch_id, fence, "the run that holds it finishes or undoes the writes")


def take_over_journal(db, journal_filter, run, fence):
    """Make a journal this run's: it takes `fence` (newer than any before it), so the run that held it
    writes nothing more. The journal as it is now, or None when it is gone or a newer run holds it."""
    with _writing("taking over a journal"):
        return db[JOURNAL_COLLECTION].find_one_and_update(
            dict(journal_filter, fence={"$not": {"$gt": fence}}),
            {"$set": {"fence": fence, "run": run.document()}}, return_document=ReturnDocument.AFTER)


def journal_fence_held(db, batch_id, fence):
    """Whether the batch's journal still carries `fence` (no other run took it over)."""
    with _writing(f"reading the journal of batch {batch_id}"):
        journal = db[JOURNAL_COLLECTION].find_one({"_id": batch_id}, {"fence": 1})
    return journal is not None and journal.get("fence") == fence


def close_journal(db, batch_id, fence):
    """Free the batch once its task is completed or error."""
    with _writing(f"closing the journal of batch {batch_id}"):
        db[JOURNAL_COLLECTION].delete_one({"_id": batch_id, "fence": fence})


def _priors_key(fields):
    # The BSON encoding is the grouping key, since a prior value may be of any BSON type.
    return bson.encode(fields)


def group_priors(case_priors):
    """[(fields, sorted case ids)]: cases that had the same prior amend fields, grouped."""
    groups = defaultdict(list)
    for case_id, fields in case_priors.items():
        groups[_priors_key(fields)].append(case_id)
    return [(bson.decode(encoded), sorted(case_ids)) for encoded, case_ids in sorted(groups.items())]


def stored_amount(total):
    """A Tot_Arrease as BSON stores it: a decimal as Decimal128, an integer beyond Int64 as Decimal128."""
    if isinstance(total, Decimal):
        return Decimal128(total)
    if isinstance(total, int) and not -INT64_MAX - 1 <= total <= INT64_MAX:
        return Decimal128(Decimal(total))
    return total


def _read_amount(value):
    return value.to_decimal() if isinstance(value, Decimal128) else value


def journal_writes_document(writes):
    """The `writes` field of a journal: a PlannedWrites in BSON types."""
    moves = {}
    for change in writes.changes:
        moves.setdefault((change.old_drc, change.new_drc), []).append(change.case_id)
    request = writes.request
    return {
        "format": JOURNAL_FORMAT,
        "batch_id": writes.batch_id, "now": writes.now, "label": writes.label, "description": writes.description,
        "request": {"transaction_id": request.transaction_id, "batch_seq": request.batch_seq,
                    "seq_index": request.seq_index, "prior_status_on": request.prior_status_on,
                    "prior_status_on_present": request.prior_status_on_present,
                    "prior_summery_status": request.prior_summery_status,
                    "closes_transaction": request.closes_transaction},
        "moves": [{"old": old, "new": new, "case_ids": ids} for (old, new), ids in sorted(moves.items())],
        "summary": [{"drc": c.drc, "rtom": c.rtom, "count": c.count, "total": stored_amount(c.total_arrears),
                     "row_id": writes.summary_row_ids[(c.drc, c.rtom)]} for c in writes.summary],
        "case_priors": [{"fields": fields, "case_ids": ids} for fields, ids in group_priors(writes.case_priors)],
        "summary_rows": list(writes.summary_rows),
    }


def planned_writes_from_journal(journal):
    """The PlannedWrites a journal holds; DatabaseUpdateError for a journal of another layout."""
    document = journal["writes"]
    if document.get("format") != JOURNAL_FORMAT:
        raise DatabaseUpdateError(
            f"the journal of batch {journal['_id']} was written by an earlier DRS Amend release (format "
            f"{document.get('format', 1)}, this release reads {JOURNAL_FORMAT}); finish it with that release")
    return PlannedWrites(
        batch_id=document["batch_id"], now=document["now"], label=document["label"],
        description=document["description"],
        request=AmendRequest(distributions=(), **document["request"]),
        changes=tuple(sorted((CaseChange(case_id, move["old"], move["new"])
                              for move in document["moves"] for case_id in move["case_ids"]),
                             key=lambda change: change.case_id)),
        summary=tuple(SummaryCell(c["drc"], c["rtom"], c["count"], _read_amount(c["total"]))
                      for c in document["summary"]),
        summary_row_ids={(c["drc"], c["rtom"]): c["row_id"] for c in document["summary"]},
        case_priors={case_id: dict(group["fields"])
                     for group in document["case_priors"] for case_id in group["case_ids"]},
        summary_rows=tuple(document["summary_rows"]),
    )


# --- DRS.Tmp_Case_Distribution_DRC -----------------------------------------------------

def _case_chunk_filter(batch_id, case_ids, fence):
    return {"Case_Distribution_Batch_ID": batch_id, "Case_Id": {"$in": case_ids}, **not_newer_than(fence)}


def update_case_distribution_collection(db, batch_id, changes, now, task_label, fence):
    """NEW_DRC_ID and the amend fields of every changed case: one UpdateMany per (old, new) DRC and
    chunk of CASE_CHUNK_SIZE ids (a few hundred KB, far under the 16 MB limit), all in one bulk_write."""
    by_move = defaultdict(list)
    for change in changes:
        by_move[(change.old_drc, change.new_drc)].append(change.case_id)
    requests = [
        UpdateMany(_case_chunk_filter(batch_id, chunk, fence),
                   {"$set": {"NEW_DRC_ID": new_drc, "Proceed_On": now, "Amend_Status": "Completed",
                             "Amend_Description": f"Amended from {old_drc} to {new_drc} by {task_label}",
                             FENCE_FIELD: fence}})
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


def rollback_case_distribution_collection(db, batch_id, case_priors, fence):
    """Put back the amend fields each case had before the task (absent fields are removed again).
    The fence is not put back: fencing tokens only grow."""
    requests = []
    for fields, case_ids in group_priors(case_priors):
        update = {"$set": dict(fields, **{FENCE_FIELD: fence})}
        absent = [field for field in AMEND_FIELDS if field not in fields]
        if absent:
            update["$unset"] = {field: "" for field in absent}
        requests += [UpdateMany(_case_chunk_filter(batch_id, chunk, fence), update)
                     for chunk in _chunks(case_ids, CASE_CHUNK_SIZE)]
    if requests:
        with _writing(f"restoring {len(case_priors)} case(s) of batch {batch_id}"):
            db[CASES_COLLECTION].bulk_write(requests, ordered=True)


# --- DRS_Database.Case_Distribution_DRC_Summary ----------------------------------------

def update_summary_in_mongo(db, batch_id, cells, row_ids, fence):
    """Count and Tot_Arrease of every cell of the batch in one ordered bulk_write.

    Each row is written by its _id (missing rows are upserted with the _id chosen at planning):
    a row that carries a newer fence then fails the upsert with a duplicate key instead of
    being written twice.
    """
    requests = [
        UpdateOne({"_id": row_ids[(cell.drc, cell.rtom)], **not_newer_than(fence)},
                  {"$set": {"Count": cell.count, "Tot_Arrease": stored_amount(cell.total_arrears),
                            FENCE_FIELD: fence},
                   "$setOnInsert": {"Case_Distribution_Batch_ID": batch_id, "DRC_Id": cell.drc, "RTOM": cell.rtom}},
                  upsert=True)
        for cell in cells
    ]
    if requests:
        with _writing(f"rewriting the summary of batch {batch_id}"):
            db[SUMMARY_COLLECTION].bulk_write(requests, ordered=True)


def rollback_summary_in_mongo(db, prior_rows, new_row_ids, fence):
    """Remove the rows the task added and put back every row as it was (with this run's fence)."""
    requests = [DeleteMany({"_id": {"$in": list(new_row_ids)}, **not_newer_than(fence)})] if new_row_ids else []
    requests += [ReplaceOne({"_id": row["_id"], **not_newer_than(fence)}, dict(row, **{FENCE_FIELD: fence}),
                            upsert=True) for row in prior_rows]
    if requests:
        with _writing("restoring the summary rows"):
            db[SUMMARY_COLLECTION].bulk_write(requests, ordered=True)


# --- Case_distribution_drc_transactions ------------------------------------------------

def _seq_filter(request, fence, statuses):
    """The processed seq by its position, checked to be still the same amend seq, in one of `statuses`
    ({status: required CRD_Distribution_Status_on or None for any})."""
    at = f"batch_seq_details.{request.seq_index}"
    alternatives = [{f"{at}.CRD_Distribution_Status": status,
                     **({} if status_on is None else {f"{at}.CRD_Distribution_Status_on": status_on})}
                    for status, status_on in statuses.items()]
    return {"_id": request.transaction_id, f"{at}.batch_seq": request.batch_seq, f"{at}.action_type": "amend",
            "$or": alternatives, **not_newer_than(fence)}


def close_amend_sequence(db, request, now, fence):
    """Close the processed amend seq only (by its position), and the transaction once no amend seq is open.

    The seq must still be open, or closed by this very task (at `now`, the journaled time), so
    a seq closed earlier, or by someone else, never has its close date rewritten.
    """
    at = f"batch_seq_details.{request.seq_index}"
    fields = {f"{at}.CRD_Distribution_Status": "close", f"{at}.CRD_Distribution_Status_on": now, FENCE_FIELD: fence}
    if request.closes_transaction:
        fields["summery_status"] = "close"
    with _writing(f"closing amend seq {request.batch_seq} of transaction {request.transaction_id}"):
        result = db[TRANSACTIONS_COLLECTION].update_one(
            _seq_filter(request, fence, {"open": None, "close": now}), {"$set": fields})
    if result.matched_count != 1:
        raise DatabaseUpdateError(
            f"amend seq {request.batch_seq} (batch_seq_details[{request.seq_index}]) of transaction "
            f"{request.transaction_id} is no longer the open seq the task planned for")


def rollback_amend_sequence(db, request, now, fence):
    """Reopen the seq this task closed (at `now`), with its prior close date and summery_status."""
    at = f"batch_seq_details.{request.seq_index}"
    update = {"$set": {f"{at}.CRD_Distribution_Status": "open", "summery_status": request.prior_summery_status,
                       FENCE_FIELD: fence}}
    if request.prior_status_on_present:
        update["$set"][f"{at}.CRD_Distribution_Status_on"] = request.prior_status_on
    else:
        update["$unset"] = {f"{at}.CRD_Distribution_Status_on": ""}
    with _writing(f"reopening amend seq {request.batch_seq} of transaction {request.transaction_id}"):
        db[TRANSACTIONS_COLLECTION].update_one(_seq_filter(request, fence, {"open": None, "close": now}), update)


# --- one task's writes as a unit -------------------------------------------------------

class AmendWriteUnit:
    """The data writes of one task (a PlannedWrites), fenced with `fence`. apply() lands them; undo()
    reverts every step, so it is safe after a failure at any point, also in another process after a
    crash. When a write fails and the journal no longer carries `fence`, another run took the batch
    over: ClaimLostError, and this run writes nothing more."""

    def __init__(self, db, writes, fence):
        self._db = db
        self._writes = writes
        self._fence = fence
        self._steps = (
            ("cases",
             lambda: update_case_distribution_collection(db, writes.batch_id, writes.changes, writes.now,
                                                         writes.label, fence),
             lambda: rollback_case_distribution_collection(db, writes.batch_id, writes.case_priors, fence)),
            ("summary",
             lambda: update_summary_in_mongo(db, writes.batch_id, writes.summary, writes.summary_row_ids, fence),
             lambda: rollback_summary_in_mongo(db, writes.summary_rows, writes.new_summary_row_ids, fence)),
            ("transaction",
             lambda: close_amend_sequence(db, writes.request, writes.now, fence),
             lambda: rollback_amend_sequence(db, writes.request, writes.now, fence)),
        )

    def _raise_if_fenced_out(self, exc):
        if not journal_fence_held(self._db, self._writes.batch_id, self._fence):
            raise _journal_lost(self._writes.batch_id, self._fence,
                                f"this run stopped writing ({exc})") from exc

    def apply(self):
        for _, write, _ in self._steps:
            try:
                write()
            except DatabaseUpdateError as exc:
                self._raise_if_fenced_out(exc)
                raise

    def undo(self):
        """Undo every step, newest first (each undo is idempotent); report the steps whose undo failed."""
        failures = []
        for name, _, undo in reversed(self._steps):
            try:
                undo()
            except DatabaseUpdateError as exc:
                self._raise_if_fenced_out(exc)
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
