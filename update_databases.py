"""Every write of the job, and the undo of each.

One owner per collection: System_tasks (claim_task, take_over_expired_claim, renew_claim,
release_task, update_task_status), the journal (open_journal, record_planned_writes,
mark_journal_undoing, take_over_journal, close_journal, and the mapping of a
PlannedWrites to its document), the fencing counter (issue_fence), cases
(update_case_distribution_collection), summary (update_summary_in_mongo) and transactions
(close_amend_sequence), each data write with its rollback_*, the run history (record_run)
and a reset from fixtures (reset_collections). Each write is one AmendStore.write: retried
there on a transient fault, a DatabaseUpdateError naming it when it fails for good.

Every write is idempotent: running it twice, as a retry after a lost reply or a recovery
after a crash does, leaves what running it once leaves.

Every data write is fenced (see docs/design.md, "Fencing"): a task's journal carries a fencing
token issued by the database, strictly increasing; each case, summary row and transaction
the task writes records the token in DRS_Amend_Fence, and a write only matches a document
whose token is not newer than the writer's. A run whose journal was taken over holds an
older token, so its late writes match nothing.
"""

import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import bson
from bson.decimal128 import Decimal128
from pymongo import ReplaceOne, ReturnDocument, UpdateMany, UpdateOne
from pymongo.errors import DuplicateKeyError

from amend_plan import AmendRequest, CaseChange, PlannedWrites, SummaryCell
from amend_store import (
    AMEND_FIELDS,
    AMEND_TASK_TYPE,
    AMENDED_BY_FIELD,
    CASES_COLLECTION,
    COUNTERS_COLLECTION,
    FENCE_FIELD,
    FINAL_STATUSES,
    JOURNAL_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TOMBSTONE_FIELD,
    TRANSACTIONS_COLLECTION,
    AmendStore,
    JournalPhase,
    SeqStatus,
    TaskStatus,
)
from balance_resources import Cell
from history.run_report import RunIdentity
from utils.Custom_Exceptions import BatchBusyError, ClaimLostError, DatabaseUpdateError
from utils.documents import INT64_MAX, Document
from utils.loggers import get_logger

Item = TypeVar("Item")

CASE_CHUNK_SIZE = 10_000
INSERT_CHUNK = 10_000
FENCE_COUNTER_ID = "fence"
# The journal's own layout; a journal of another layout (an earlier release) is not rolled forward.
JOURNAL_FORMAT = 2

log = get_logger("writes")


def _chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def not_newer_than(fence: int) -> Document:
    """Matches a document that no writer with a newer fencing token has written."""
    return {FENCE_FIELD: {"$not": {"$gt": fence}}}


def issue_fence(store: AmendStore) -> int:
    """A new fencing token: the database's counter, incremented atomically (never reused, never lower)."""
    def increment() -> int:
        for _ in range(2):
            try:
                counter = store[COUNTERS_COLLECTION].find_one_and_update(
                    {"_id": FENCE_COUNTER_ID}, {"$inc": {"value": 1}}, upsert=True,
                    return_document=ReturnDocument.AFTER)
                return int(counter["value"])
            except DuplicateKeyError:
                continue  # two first-ever upserts raced; the counter exists now
        raise DatabaseUpdateError("issuing a fencing token failed: the counter could not be created")
    return store.write("issuing a fencing token", increment)


# --- System_tasks ----------------------------------------------------------------------

def _claim_fields(run: RunIdentity, now: datetime, lease: timedelta, description: str) -> Document:
    return {"task_status": TaskStatus.PROCESSING, "status_changed_dtm": now, "status_description": description,
            "claimed_by": run.document(), "claim_expires_dtm": now + lease}


def claim_task(store: AmendStore, task_object_id: object, run: RunIdentity, now: datetime,
               lease: timedelta) -> Document | None:
    """open -> processing in one atomic update on _id; None when another run claimed it first.

    A retry after a lost reply finds the task claimed by this very run and returns it again.
    """
    return store.write(f"claiming task {task_object_id}", lambda: store[TASKS_COLLECTION].find_one_and_update(
        {"_id": task_object_id, "task_type": AMEND_TASK_TYPE,
         "$or": [{"task_status": TaskStatus.OPEN},
                 {"task_status": TaskStatus.PROCESSING, "claimed_by.run_id": run.run_id}]},
        {"$set": _claim_fields(run, now, lease, f"Claimed by {run.label}")},
        return_document=ReturnDocument.AFTER))


def _as_read(value: object) -> object:
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


def _claim_as_read(task: Mapping[str, Any]) -> Document:
    claimed_by = task.get("claimed_by")
    if isinstance(claimed_by, dict):
        condition = {"claimed_by.run_id": _as_read(claimed_by.get("run_id"))}
    else:
        condition = {"claimed_by": _as_read(claimed_by)}
    condition.update({field: _as_read(task.get(field)) for field in ("claim_expires_dtm", "status_changed_dtm")})
    return condition


def take_over_expired_claim(store: AmendStore, task: Mapping[str, Any], run: RunIdentity, now: datetime,
                            lease: timedelta) -> Document | None:
    """Take a processing task whose claim was found stale (database_checks.stale_claim_reason).

    Compare-and-set on the claim as it was read, so that a renewal or another run's
    takeover in between makes this one fail (None). A retry after a lost reply finds the
    task held by this run and returns it.
    """
    as_read = _claim_as_read(task)
    return store.write(f"taking over task {task['_id']}", lambda: store[TASKS_COLLECTION].find_one_and_update(
        {"_id": task["_id"], "task_type": AMEND_TASK_TYPE, "task_status": TaskStatus.PROCESSING,
         "$or": [as_read, {"claimed_by.run_id": run.run_id}]},
        {"$set": _claim_fields(run, now, lease, f"Being recovered by {run.label}")},
        return_document=ReturnDocument.AFTER))


def renew_claim(store: AmendStore, task_object_id: object, run: RunIdentity, now: datetime,
                lease: timedelta) -> None:
    """Extend this run's lease before writing; ClaimLostError when another run took the task over."""
    result = store.write(f"renewing the claim of task {task_object_id}", lambda: store[TASKS_COLLECTION].update_one(
        {"_id": task_object_id, "task_status": TaskStatus.PROCESSING, "claimed_by.run_id": run.run_id},
        {"$set": {"claim_expires_dtm": now + lease}}))
    if result.matched_count != 1:
        raise ClaimLostError(f"task {task_object_id} is no longer claimed by {run.label}")


def release_task(store: AmendStore, task_object_id: object, run: RunIdentity, now: datetime,
                 description: str) -> None:
    """processing -> open again, for a task that has to wait for a later run."""
    store.write(f"releasing task {task_object_id}", lambda: store[TASKS_COLLECTION].update_one(
        {"_id": task_object_id, "task_status": TaskStatus.PROCESSING, "claimed_by.run_id": run.run_id},
        {"$set": {"task_status": TaskStatus.OPEN, "status_changed_dtm": now, "status_description": description},
         "$unset": {"claimed_by": "", "claim_expires_dtm": ""}}))


def amend_record(writes: PlannedWrites) -> Document:
    """What a completed task records of its amend, for `batch_monitor.py audit`: the seq it closed
    (`amended_seq`: its transaction, position, number and close time, which together name it even when
    a number is reused or the seq renumbered later; `amended_batch_seq`: the number, for people) and
    how many cases it moved (`amended_cases`)."""
    request = writes.request
    return {"amended_batch_seq": request.batch_seq, "amended_cases": len(writes.changes),
            "amended_seq": {"transaction_id": request.transaction_id, "index": request.seq_index,
                            "batch_seq": request.batch_seq, "closed_dtm": writes.now}}


def update_task_status(store: AmendStore, task_object_id: object, run: RunIdentity, status: TaskStatus,
                       description: str, now: datetime, amended: Document | None = None) -> None:
    """Move a task this run holds to `status`; a final status also sets end_dtm, a completed one what it
    amended (amend_record).

    When the reply is lost the task is read back: a status that landed counts as written,
    so a completed task is never undone because its acknowledgement went missing.
    """
    fields: Document = {"task_status": status, "status_description": description, "status_changed_dtm": now}
    if status in FINAL_STATUSES:
        fields["end_dtm"] = now
    fields.update(amended or {})
    held = {"_id": task_object_id, "claimed_by.run_id": run.run_id}
    try:
        result = store.write(f"setting task {task_object_id} to {status}", lambda: store[TASKS_COLLECTION].update_one(
            dict(held, task_status={"$in": [TaskStatus.PROCESSING, status]}), {"$set": fields}))
    except DatabaseUpdateError:
        landed = store.write(f"reading back task {task_object_id}", lambda: store[TASKS_COLLECTION].find_one(
            dict(held, task_status=status, status_changed_dtm=now)))
        if landed is None:
            raise
        log.warning("task %s: the reply to setting it %s was lost, but the write landed", task_object_id, status)
        return
    if result.matched_count != 1:
        raise ClaimLostError(f"task {task_object_id} is no longer held by {run.label}; not set to {status}")


# --- the journal: one document per batch being amended ---------------------------------

def open_journal(store: AmendStore, batch_id: object, task: Document, run: RunIdentity, now: datetime,
                 fence: int) -> None:
    """Take the batch for this task: insert its journal (phase `planning`, this run's fence).

    BatchBusyError when another task holds the batch, or when a journal of an earlier
    attempt of this very task is left: that one is finished first (by the recovery of a
    run, see task_processor.recover_interrupted_tasks), never adopted.
    """
    document = {"_id": batch_id, "task_object_id": task["_id"], "Task_Id": task.get("Task_Id"),
                "run": run.document(), "fence": fence, "phase": JournalPhase.PLANNING, "created_dtm": now}

    def insert() -> Document | None:
        """None when inserted; the journal that holds the batch otherwise ({} when it vanished meanwhile)."""
        try:
            store[JOURNAL_COLLECTION].insert_one(document)
            return None
        except DuplicateKeyError:
            return store[JOURNAL_COLLECTION].find_one({"_id": batch_id}) or {}
    holder = store.write(f"opening the journal of batch {batch_id}", insert)
    if holder is None or holder.get("fence") == fence:
        return  # inserted, or our own insert whose reply was lost
    if holder.get("task_object_id") == task["_id"]:
        raise BatchBusyError(
            f"batch {batch_id} holds the unfinished journal (phase {holder.get('phase')}) of an earlier attempt "
            f"of this task; the next run finishes it first")
    owner = f"amend task {holder.get('Task_Id')} ({holder.get('task_object_id')})" if holder else "another task"
    raise BatchBusyError(f"batch {batch_id} is being amended by {owner}")


def _journal_lost(batch_id: object, fence: int, what: str) -> ClaimLostError:
    return ClaimLostError(f"the journal of batch {batch_id} was taken over by a run with a newer fencing token "
                          f"than {fence}; {what}")


def record_planned_writes(store: AmendStore, batch_id: object, fence: int, writes: PlannedWrites) -> None:
    """Store the planned writes and prior values (phase `writing`) before the first data write."""
    document = journal_writes_document(writes)
    size = len(bson.encode(document))
    if size > store.journal_limit_bytes:
        raise DatabaseUpdateError(
            f"the plan of batch {batch_id} ({len(writes.changes)} changed cases) needs {size / 2**20:.1f} MB of "
            f"journal, over MongoDB's 16 MB document limit; split the amend request into smaller ones")
    result = store.write(f"journaling the writes of batch {batch_id}", lambda: store[JOURNAL_COLLECTION].update_one(
        {"_id": batch_id, "fence": fence}, {"$set": {"phase": JournalPhase.WRITING, "writes": document}}))
    if result.matched_count != 1:
        raise _journal_lost(batch_id, fence, "nothing was written")


def mark_journal_undoing(store: AmendStore, batch_id: object, fence: int, reason: str) -> None:
    """From here on, the task's writes are to be undone (also by a run recovering from a crash)."""
    result = store.write(f"marking the journal of batch {batch_id} for undo",
                         lambda: store[JOURNAL_COLLECTION].update_one(
                             {"_id": batch_id, "fence": fence},
                             {"$set": {"phase": JournalPhase.UNDOING, "error": reason}}))
    if result.matched_count != 1:
        raise _journal_lost(batch_id, fence, "the run that holds it finishes or undoes the writes")


def take_over_journal(store: AmendStore, journal_filter: Document, run: RunIdentity, fence: int) -> Document | None:
    """Make a journal this run's: it takes `fence` (newer than any before it), so the run that held it
    writes nothing more. The journal as it is now, or None when it is gone or a newer run holds it."""
    return store.write("taking over a journal", lambda: store[JOURNAL_COLLECTION].find_one_and_update(
        dict(journal_filter, fence={"$not": {"$gt": fence}}),
        {"$set": {"fence": fence, "run": run.document()}}, return_document=ReturnDocument.AFTER))


def journal_fence_held(store: AmendStore, batch_id: object, fence: int) -> bool:
    """Whether the batch's journal still carries `fence` (no other run took it over)."""
    journal = store.write(f"reading the journal of batch {batch_id}",
                          lambda: store[JOURNAL_COLLECTION].find_one({"_id": batch_id}, {"fence": 1}))
    return journal is not None and journal.get("fence") == fence


def close_journal(store: AmendStore, batch_id: object, fence: int) -> None:
    """Free the batch once its task is completed or error."""
    store.write(f"closing the journal of batch {batch_id}",
                lambda: store[JOURNAL_COLLECTION].delete_one({"_id": batch_id, "fence": fence}))


def _priors_key(fields: Document) -> bytes:
    # The BSON encoding is the grouping key, since a prior value may be of any BSON type.
    return bson.encode(fields)


def group_priors(case_priors: Mapping[int, Document]) -> list[tuple[Document, list[int]]]:
    """[(fields, sorted case ids)]: cases that had the same prior amend fields, grouped."""
    groups: dict[bytes, list[int]] = defaultdict(list)
    for case_id, fields in case_priors.items():
        groups[_priors_key(fields)].append(case_id)
    return [(bson.decode(encoded), sorted(case_ids)) for encoded, case_ids in sorted(groups.items())]


def stored_amount(total: object) -> object:
    """A Tot_Arrease as BSON stores it: a decimal as Decimal128, an integer beyond Int64 as Decimal128."""
    if isinstance(total, Decimal):
        return Decimal128(total)
    if isinstance(total, int) and not -INT64_MAX - 1 <= total <= INT64_MAX:
        return Decimal128(Decimal(total))
    return total


def _read_amount(value: object) -> object:
    return value.to_decimal() if isinstance(value, Decimal128) else value


def journal_writes_document(writes: PlannedWrites) -> Document:
    """The `writes` field of a journal: a PlannedWrites in BSON types."""
    moves: dict[tuple[str, str], list[int]] = {}
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
                     "row_id": writes.summary_row_ids[Cell(c.drc, c.rtom)]} for c in writes.summary],
        "case_priors": [{"fields": fields, "case_ids": ids} for fields, ids in group_priors(writes.case_priors)],
        "summary_rows": list(writes.summary_rows),
    }


def planned_writes_from_journal(journal: Document) -> PlannedWrites:
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
        summary_row_ids={Cell(c["drc"], c["rtom"]): c["row_id"] for c in document["summary"]},
        case_priors={case_id: dict(group["fields"])
                     for group in document["case_priors"] for case_id in group["case_ids"]},
        summary_rows=tuple(document["summary_rows"]),
        task_object_id=journal.get("task_object_id"),
    )


# --- DRS.Tmp_Case_Distribution_DRC -----------------------------------------------------

def _case_chunk_filter(batch_id: object, case_ids: Sequence[int], fence: int) -> Document:
    return {"Case_Distribution_Batch_ID": batch_id, "Case_Id": {"$in": case_ids}, **not_newer_than(fence)}


def update_case_distribution_collection(store: AmendStore, batch_id: object, changes: Sequence[CaseChange],
                                        now: datetime, task_label: str, fence: int, task_object_id: object) -> None:
    """NEW_DRC_ID and the amend fields of every changed case (the task's _id in AMENDED_BY_FIELD): one
    UpdateMany per (old, new) DRC and chunk of CASE_CHUNK_SIZE ids (a few hundred KB, far under the 16 MB
    limit), all in one bulk_write."""
    by_move: dict[tuple[str, str], list[int]] = defaultdict(list)
    for change in changes:
        by_move[(change.old_drc, change.new_drc)].append(change.case_id)
    requests = [
        UpdateMany(_case_chunk_filter(batch_id, chunk, fence),
                   {"$set": {"NEW_DRC_ID": new_drc, "Proceed_On": now, "Amend_Status": "Completed",
                             "Amend_Description": f"Amended from {old_drc} to {new_drc} by {task_label}",
                             AMENDED_BY_FIELD: task_object_id, FENCE_FIELD: fence}})
        for (old_drc, new_drc), case_ids in sorted(by_move.items())
        for chunk in _chunks(case_ids, CASE_CHUNK_SIZE)
    ]
    if not requests:
        return
    result = store.write(f"updating {len(changes)} case(s) of batch {batch_id}",
                         lambda: store[CASES_COLLECTION].bulk_write(requests, ordered=True))
    # Each Case_Id is unique in the batch and named once, so every case must be matched once.
    if result.matched_count != len(changes):
        raise DatabaseUpdateError(
            f"updating cases of batch {batch_id}: matched {result.matched_count} of {len(changes)}; "
            f"the batch changed while the task ran")


def rollback_case_distribution_collection(store: AmendStore, batch_id: object, case_priors: Mapping[int, Document],
                                          fence: int) -> None:
    """Put back the amend fields each case had before the task (absent fields are removed again).
    The fence is not put back: fencing tokens only grow."""
    requests = []
    for fields, case_ids in group_priors(case_priors):
        update: Document = {"$set": dict(fields, **{FENCE_FIELD: fence})}
        absent = [field for field in AMEND_FIELDS if field not in fields]
        if absent:
            update["$unset"] = {field: "" for field in absent}
        requests += [UpdateMany(_case_chunk_filter(batch_id, chunk, fence), update)
                     for chunk in _chunks(case_ids, CASE_CHUNK_SIZE)]
    if requests:
        store.write(f"restoring {len(case_priors)} case(s) of batch {batch_id}",
                    lambda: store[CASES_COLLECTION].bulk_write(requests, ordered=True))


# --- DRS_Database.Case_Distribution_DRC_Summary ----------------------------------------

def update_summary_in_mongo(store: AmendStore, batch_id: object, cells: Sequence[SummaryCell],
                            row_ids: Mapping[Cell, object], fence: int) -> None:
    """Count and Tot_Arrease of every cell of the batch in one ordered bulk_write.

    Each row is written by its _id (missing rows are upserted with the _id chosen at planning):
    a row that carries a newer fence, a tombstone of a newer undo included (see
    rollback_summary_in_mongo), then fails the upsert with a duplicate key instead of being
    written twice or brought back. Every field of the row is set, so an upsert and an update
    leave the same row.
    """
    requests = [
        UpdateOne({"_id": row_ids[Cell(cell.drc, cell.rtom)], **not_newer_than(fence)},
                  {"$set": {"Case_Distribution_Batch_ID": batch_id, "DRC_Id": cell.drc, "RTOM": cell.rtom,
                            "Count": cell.count, "Tot_Arrease": stored_amount(cell.total_arrears),
                            FENCE_FIELD: fence}},
                  upsert=True)
        for cell in cells
    ]
    if requests:
        store.write(f"rewriting the summary of batch {batch_id}",
                    lambda: store[SUMMARY_COLLECTION].bulk_write(requests, ordered=True))


def summary_tombstone(batch_id: object, cell: Cell, fence: int) -> Document:
    """What an undo leaves of a summary row its task added: the row's _id with the undoer's fencing token,
    and no field of a row (a query on the batch never sees it). A deleted row would let a stalled run
    with an older token insert it again (an upsert's filter on the token passes when nothing is there);
    the tombstone's newer token refuses that insert as a duplicate key."""
    return {FENCE_FIELD: fence, TOMBSTONE_FIELD: {"Case_Distribution_Batch_ID": batch_id, "DRC_Id": cell.drc,
                                                  "RTOM": cell.rtom}}


def rollback_summary_in_mongo(store: AmendStore, batch_id: object, prior_rows: Sequence[Document],
                              new_rows: Mapping[object, Cell], fence: int) -> None:
    """Put back every row as it was, and leave a tombstone (summary_tombstone) where the task added a row,
    whether or not that row was written yet; all with this run's fence."""
    requests: list[ReplaceOne] = [
        ReplaceOne({"_id": row_id, **not_newer_than(fence)}, summary_tombstone(batch_id, cell, fence), upsert=True)
        for row_id, cell in new_rows.items()]
    requests += [ReplaceOne({"_id": row["_id"], **not_newer_than(fence)}, dict(row, **{FENCE_FIELD: fence}),
                            upsert=True) for row in prior_rows]
    if requests:
        store.write("restoring the summary rows", lambda: store[SUMMARY_COLLECTION].bulk_write(requests, ordered=True))


# --- Case_distribution_drc_transactions ------------------------------------------------

def _seq_filter(request: AmendRequest, fence: int, statuses: Mapping[str, datetime | None]) -> Document:
    """The processed seq by its position, checked to be still the same amend seq, in one of `statuses`
    ({status: required CRD_Distribution_Status_on or None for any})."""
    at = f"batch_seq_details.{request.seq_index}"
    alternatives = [{f"{at}.CRD_Distribution_Status": status,
                     **({} if status_on is None else {f"{at}.CRD_Distribution_Status_on": status_on})}
                    for status, status_on in statuses.items()]
    return {"_id": request.transaction_id, f"{at}.batch_seq": request.batch_seq, f"{at}.action_type": "amend",
            "$or": alternatives, **not_newer_than(fence)}


def close_amend_sequence(store: AmendStore, request: AmendRequest, now: datetime, fence: int) -> None:
    """Close the processed amend seq only (by its position), and the transaction once no amend seq is open.

    The seq must still be open, or closed by this very task (at `now`, the journaled time), so
    a seq closed earlier, or by someone else, never has its close date rewritten.
    """
    at = f"batch_seq_details.{request.seq_index}"
    fields: Document = {f"{at}.CRD_Distribution_Status": SeqStatus.CLOSE, f"{at}.CRD_Distribution_Status_on": now,
                        FENCE_FIELD: fence}
    if request.closes_transaction:
        fields["summery_status"] = SeqStatus.CLOSE
    result = store.write(f"closing amend seq {request.batch_seq} of transaction {request.transaction_id}",
                         lambda: store[TRANSACTIONS_COLLECTION].update_one(
                             _seq_filter(request, fence, {SeqStatus.OPEN: None, SeqStatus.CLOSE: now}),
                             {"$set": fields}))
    if result.matched_count != 1:
        raise DatabaseUpdateError(
            f"amend seq {request.batch_seq} (batch_seq_details[{request.seq_index}]) of transaction "
            f"{request.transaction_id} is no longer the open seq the task planned for")


def rollback_amend_sequence(store: AmendStore, request: AmendRequest, now: datetime, fence: int) -> None:
    """Reopen the seq this task closed (at `now`), with its prior close date and summery_status."""
    at = f"batch_seq_details.{request.seq_index}"
    update: Document = {"$set": {f"{at}.CRD_Distribution_Status": SeqStatus.OPEN,
                                 "summery_status": request.prior_summery_status,
                       FENCE_FIELD: fence}}
    if request.prior_status_on_present:
        update["$set"][f"{at}.CRD_Distribution_Status_on"] = request.prior_status_on
    else:
        update["$unset"] = {f"{at}.CRD_Distribution_Status_on": ""}
    store.write(f"reopening amend seq {request.batch_seq} of transaction {request.transaction_id}",
                lambda: store[TRANSACTIONS_COLLECTION].update_one(
                    _seq_filter(request, fence, {SeqStatus.OPEN: None, SeqStatus.CLOSE: now}), update))


# --- one task's writes as a unit -------------------------------------------------------

class AmendWriteUnit:
    """The data writes of one task (a PlannedWrites), fenced with `fence`. apply() lands them; undo()
    reverts every step, so it is safe after a failure at any point, also in another process after a
    crash. When a write fails and the journal no longer carries `fence`, another run took the batch
    over: ClaimLostError, and this run writes nothing more."""

    def __init__(self, store: AmendStore, writes: PlannedWrites, fence: int):
        self._store = store
        self._writes = writes
        self._fence = fence
        self._steps = (
            ("cases",
             lambda: update_case_distribution_collection(store, writes.batch_id, writes.changes, writes.now,
                                                         writes.label, fence, writes.task_object_id),
             lambda: rollback_case_distribution_collection(store, writes.batch_id, writes.case_priors, fence)),
            ("summary",
             lambda: update_summary_in_mongo(store, writes.batch_id, writes.summary, writes.summary_row_ids, fence),
             lambda: rollback_summary_in_mongo(store, writes.batch_id, writes.summary_rows, writes.new_summary_rows,
                                               fence)),
            ("transaction",
             lambda: close_amend_sequence(store, writes.request, writes.now, fence),
             lambda: rollback_amend_sequence(store, writes.request, writes.now, fence)),
        )

    def _raise_if_fenced_out(self, exc: DatabaseUpdateError) -> None:
        if not journal_fence_held(self._store, self._writes.batch_id, self._fence):
            raise _journal_lost(self._writes.batch_id, self._fence,
                                f"this run stopped writing ({exc})") from exc

    def apply(self) -> None:
        for _, write, _ in self._steps:
            try:
                write()
            except DatabaseUpdateError as exc:
                self._raise_if_fenced_out(exc)
                raise

    def undo(self) -> None:
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


# --- a reset from fixtures (database_update.py) ---------------------------------------------

def reset_collections(store: AmendStore, fixtures: Mapping[str, Iterable[Document]]) -> dict[str, int]:
    """Delete the documents of the given collections and the job's journal, insert the fixtures (any
    iterable, inserted in chunks so a generated million cases never sit in memory at once), create the
    indexes. The run history and the fencing counter are kept. {collection: documents inserted}."""
    def empty(name: str) -> None:
        store.write(f"emptying {name}", lambda: store[name].delete_many({}))

    def insert(name: str, chunk: list[Document]) -> None:
        store.write(f"importing into {name}", lambda: store[name].insert_many(chunk))

    empty(JOURNAL_COLLECTION)
    counts = {}
    for name, documents in fixtures.items():
        empty(name)
        counts[name] = 0
        iterator = iter(documents)
        while chunk := list(itertools.islice(iterator, INSERT_CHUNK)):
            insert(name, chunk)
            counts[name] += len(chunk)
    store.create_indexes()
    return counts
