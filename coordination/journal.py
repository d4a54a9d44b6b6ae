"""The journal: one document per batch being amended, in one place (see docs/design.md, "Crash recovery").

A task opens its batch's journal before it reads the batch (the batch is then busy for any other task),
records its planned writes and the prior values before the first data write, marks it for undo when it
has to undo, and closes it once the task is completed or error. A recovering run takes a journal over
with a newer fencing token. The journal's document is the PlannedWrites in BSON types.
"""

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime

import bson
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from amend_plan import AmendRequest, CaseChange, PlannedWrites, SummaryCell
from amend_store import JOURNAL_COLLECTION, AmendStore, JournalPhase
from amounts import from_stored, stored_amount
from balance_resources import Cell
from history.run_report import RunIdentity
from utils.Custom_Exceptions import BatchBusyError, ClaimLostError, DatabaseUpdateError
from utils.documents import BatchId, Document

# The journal's own layout; a journal of another layout (an earlier release) is not rolled forward.
JOURNAL_FORMAT = 2
JOURNAL_FIELDS = {"_id": 1, "task_object_id": 1, "Task_Id": 1, "phase": 1, "fence": 1}


def open_journal(store: AmendStore, batch_id: BatchId, task: Document, run: RunIdentity, now: datetime,
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


def journal_taken_over(batch_id: BatchId, fence: int, what: str) -> ClaimLostError:
    return ClaimLostError(f"the journal of batch {batch_id} was taken over by a run with a newer fencing token "
                          f"than {fence}; {what}")


def record_planned_writes(store: AmendStore, batch_id: BatchId, fence: int, writes: PlannedWrites) -> None:
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
        raise journal_taken_over(batch_id, fence, "nothing was written")


def mark_journal_undoing(store: AmendStore, batch_id: BatchId, fence: int, reason: str) -> None:
    """From here on, the task's writes are to be undone (also by a run recovering from a crash)."""
    result = store.write(f"marking the journal of batch {batch_id} for undo",
                         lambda: store[JOURNAL_COLLECTION].update_one(
                             {"_id": batch_id, "fence": fence},
                             {"$set": {"phase": JournalPhase.UNDOING, "error": reason}}))
    if result.matched_count != 1:
        raise journal_taken_over(batch_id, fence, "the run that holds it finishes or undoes the writes")


def take_over_journal(store: AmendStore, journal_filter: Document, run: RunIdentity, fence: int) -> Document | None:
    """Make a journal this run's: it takes `fence` (newer than any before it), so the run that held it
    writes nothing more. The journal as it is now, or None when it is gone or a newer run holds it."""
    return store.write("taking over a journal", lambda: store[JOURNAL_COLLECTION].find_one_and_update(
        dict(journal_filter, fence={"$not": {"$gt": fence}}),
        {"$set": {"fence": fence, "run": run.document()}}, return_document=ReturnDocument.AFTER))


def journal_fence_held(store: AmendStore, batch_id: BatchId, fence: int) -> bool:
    """Whether the batch's journal still carries `fence` (no other run took it over)."""
    journal = store.write(f"reading the journal of batch {batch_id}",
                          lambda: store[JOURNAL_COLLECTION].find_one({"_id": batch_id}, {"fence": 1}))
    return journal is not None and journal.get("fence") == fence


def close_journal(store: AmendStore, batch_id: BatchId, fence: int) -> None:
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
        summary=tuple(SummaryCell(c["drc"], c["rtom"], c["count"], from_stored(c["total"]))
                      for c in document["summary"]),
        summary_row_ids={Cell(c["drc"], c["rtom"]): c["row_id"] for c in document["summary"]},
        case_priors={case_id: dict(group["fields"])
                     for group in document["case_priors"] for case_id in group["case_ids"]},
        summary_rows=tuple(document["summary_rows"]),
        task_object_id=journal.get("task_object_id"),
    )


def fetch_journal(store: AmendStore, batch_id: BatchId) -> Document | None:
    return store.read(f"reading the journal of batch {batch_id}", lambda: store[JOURNAL_COLLECTION].find_one(
        {"_id": batch_id}, JOURNAL_FIELDS))


def fetch_journal_of_task(store: AmendStore, task_object_id: object, batch_id: BatchId | None) -> Document | None:
    """A journal of the task, or of its batch (None: the task names no valid batch), if any is left."""
    held: list[Document] = [{"task_object_id": task_object_id}]
    if batch_id is not None:
        held.append({"_id": batch_id})
    return store.read(f"reading the journals of task {task_object_id}", lambda: store[JOURNAL_COLLECTION].find_one(
        {"$or": held}, JOURNAL_FIELDS))


def fetch_journals(store: AmendStore) -> list[Document]:
    return store.read("reading the journals", lambda: list(store[JOURNAL_COLLECTION].find(
        {}, JOURNAL_FIELDS)))
