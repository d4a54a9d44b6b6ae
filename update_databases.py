"""The job's data writes, and the undo of each.

One owner per collection: System_tasks' status (update_task_status), cases
(update_case_distribution_collection), summary (update_summary_in_mongo) and transactions
(close_amend_sequence), each data write with its rollback_*, the whole set as one AmendWriteUnit, and a
reset from fixtures (reset_collections). Claims, the journal and fencing tokens live in coordination/, the
run history in history/store.py. Each write is one AmendStore.write: retried there on a transient fault, a
DatabaseUpdateError naming it when it fails for good.

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
from datetime import datetime
from typing import TypeVar

from pymongo import ReplaceOne, UpdateMany, UpdateOne

from amend_plan import AmendRequest, CaseChange, PlannedWrites, SummaryCell
from amend_store import (
    AMEND_FIELDS,
    AMENDED_BY_FIELD,
    CASES_COLLECTION,
    FENCE_FIELD,
    FINAL_STATUSES,
    JOURNAL_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TOMBSTONE_FIELD,
    TRANSACTIONS_COLLECTION,
    AmendStore,
    SeqStatus,
    TaskStatus,
)
from amounts import stored_amount
from balance_resources import Cell
from coordination.fences import not_newer_than
from coordination.journal import group_priors, journal_fence_held, journal_taken_over
from history.run_report import RunIdentity
from utils.Custom_Exceptions import ClaimLostError, DatabaseUpdateError
from utils.documents import BatchId, Document
from utils.loggers import get_logger

Item = TypeVar("Item")

CASE_CHUNK_SIZE = 10_000
INSERT_CHUNK = 10_000

log = get_logger("writes")


def _chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- System_tasks ----------------------------------------------------------------------

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


# --- DRS.Tmp_Case_Distribution_DRC -----------------------------------------------------

def _case_chunk_filter(batch_id: BatchId, case_ids: Sequence[int], fence: int) -> Document:
    return {"Case_Distribution_Batch_ID": batch_id, "Case_Id": {"$in": case_ids}, **not_newer_than(fence)}


def update_case_distribution_collection(store: AmendStore, batch_id: BatchId, changes: Sequence[CaseChange],
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


def rollback_case_distribution_collection(store: AmendStore, batch_id: BatchId, case_priors: Mapping[int, Document],
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

def update_summary_in_mongo(store: AmendStore, batch_id: BatchId, cells: Sequence[SummaryCell],
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


def summary_tombstone(batch_id: BatchId, cell: Cell, fence: int) -> Document:
    """What an undo leaves of a summary row its task added: the row's _id with the undoer's fencing token,
    and no field of a row (a query on the batch never sees it). A deleted row would let a stalled run
    with an older token insert it again (an upsert's filter on the token passes when nothing is there);
    the tombstone's newer token refuses that insert as a duplicate key."""
    return {FENCE_FIELD: fence, TOMBSTONE_FIELD: {"Case_Distribution_Batch_ID": batch_id, "DRC_Id": cell.drc,
                                                  "RTOM": cell.rtom}}


def rollback_summary_in_mongo(store: AmendStore, batch_id: BatchId, prior_rows: Sequence[Document],
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
            raise journal_taken_over(self._writes.batch_id, self._fence,
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
