"""The job's one door to the database: collection names, the values stored in them, indexes, and
the single layer that retries transient faults.

Every read (database_checks.fetch_*) and every write (update_databases) goes through
`AmendStore.read` or `AmendStore.write`, one call per database operation: a transient
fault is retried there, and nowhere else, so `[RETRY] ATTEMPTS = 5` means five attempts.
An operation never runs another operation inside it (the store refuses), so retries
cannot nest. The store wraps a pymongo Database, or anything that behaves like one
(mongomock for the embedded default and the tests, a fault-injecting fake in the tests).
"""

import enum
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo.errors import PyMongoError

from utils.Custom_Exceptions import DatabaseUpdateError
from utils.documents import Document
from utils.retry import RetryPolicy
from utils.shutdown import StopRequest

TASKS_COLLECTION = "System_tasks"
TEMPLATES_COLLECTION = "Template_task"
TRANSACTIONS_COLLECTION = "Case_distribution_drc_transactions"
CASES_COLLECTION = "DRS.Tmp_Case_Distribution_DRC"
SUMMARY_COLLECTION = "DRS_Database.Case_Distribution_DRC_Summary"
JOB_COLLECTIONS = (TASKS_COLLECTION, TEMPLATES_COLLECTION, TRANSACTIONS_COLLECTION,
                   CASES_COLLECTION, SUMMARY_COLLECTION)
# The job's own collections: one document per batch being amended, the counter of fencing
# tokens, one document per run of main.py.
JOURNAL_COLLECTION = "DRS_Amend.Task_Journal"
COUNTERS_COLLECTION = "DRS_Amend.Counters"
RUN_HISTORY_COLLECTION = "DRS_Amend.Run_History"

AMEND_TASK_TYPE = "Case Amend Planning among DRC"
# The amend task whose writes last changed a case: what the audit matches cases with (a case naming a
# task that did not complete is half of an amend; more cases naming a task than it moved, an amend applied twice).
AMENDED_BY_FIELD = "DRS_Amend_Task"
# The case fields an amend writes (and its undo restores).
AMEND_FIELDS = ("NEW_DRC_ID", "Proceed_On", "Amend_Status", "Amend_Description", AMENDED_BY_FIELD)
# The fencing token of the last run that wrote a case, summary row or transaction.
FENCE_FIELD = "DRS_Amend_Fence"
# The record of what operators did to a task (batch_monitor.py task): one entry per action, appended.
OPERATOR_ACTIONS_FIELD = "operator_actions"
# A summary row an undo removed is left as a tombstone: its _id, the undoer's token, and this field (the
# batch, DRC and RTOM it was for) instead of the row's fields (update_databases.summary_tombstone).
TOMBSTONE_FIELD = "DRS_Amend_Removed"

# (collection, keys, name): created idempotently by database_update.py; create them on production too.
INDEXES = (
    (TASKS_COLLECTION, [("task_status", 1), ("task_type", 1), ("created_dtm", 1), ("Task_Id", 1)], "open_tasks"),
    (TEMPLATES_COLLECTION, [("Template_Task_Id", 1), ("task_type", 1)], "template_id_type"),
    (TRANSACTIONS_COLLECTION, [("Case_Distribution_Batch_ID", 1), ("summery_status", 1)], "batch_status"),
    (CASES_COLLECTION, [("Case_Distribution_Batch_ID", 1), ("Case_Id", 1)], "batch_case"),
    # The push-down read's cell reads (database_checks.fetch_batch_cells): a cell's lowest Case_Ids, in order,
    # among its amended cases and among its cases never amended.
    (CASES_COLLECTION, [("Case_Distribution_Batch_ID", 1), ("RTOM", 1), ("NEW_DRC_ID", 1), ("Case_Id", 1)],
     "batch_cell_amended"),
    (CASES_COLLECTION, [("Case_Distribution_Batch_ID", 1), ("RTOM", 1), ("DRC_Id", 1), ("NEW_DRC_ID", 1),
                        ("Case_Id", 1)], "batch_cell_original"),
    (SUMMARY_COLLECTION, [("Case_Distribution_Batch_ID", 1), ("DRC_Id", 1), ("RTOM", 1)], "batch_drc_rtom"),
    (JOURNAL_COLLECTION, [("task_object_id", 1)], "journal_task"),
    (RUN_HISTORY_COLLECTION, [("started_dtm", -1)], "run_started"),
)

# The driver methods the store's operations call, for the test doubles that stand in for a database.
READ_COMMANDS = frozenset({"find", "find_one", "count_documents", "aggregate"})
WRITE_COMMANDS = frozenset({"find_one_and_update", "update_one", "update_many", "bulk_write", "replace_one",
                            "delete_one", "delete_many", "insert_one", "insert_many", "create_index"})


class TaskStatus(enum.StrEnum):
    """System_tasks.task_status."""
    OPEN = "open"
    PROCESSING = "processing"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"  # by an operator (batch_monitor.py task cancel): never processed


FINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.ERROR)


class SeqStatus(enum.StrEnum):
    """CRD_Distribution_Status of a seq, and summery_status of a transaction."""
    OPEN = "open"
    CLOSE = "close"


class BatchRead(enum.StrEnum):
    """How a task reads its batch (docs/scale.md): every case, or on the server's side (each cell's count
    and sum, then only the cases that can move; the whole batch when that cannot vouch for the plan)."""
    FULL = "full"
    PUSH_DOWN = "push-down"


class JournalPhase(enum.StrEnum):
    """Where a task's writes stand (DRS_Amend.Task_Journal.phase)."""
    PLANNING = "planning"
    WRITING = "writing"
    UNDOING = "undoing"


def utc_now() -> datetime:
    """Now in UTC as MongoDB stores it: naive, millisecond precision. The default clock of every entry
    point; each takes a Clock instead, so that tests (and a replay) give it their own time."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# What every entry point and every function that reads the time takes: a function giving now (utc_now).
Clock = Callable[[], datetime]
# An engine's read of the documents a query matches, as they are (embedded/mongomock_compat.matching_documents).
InPlaceRead = Callable[[Any, Document], Iterable[Document]]

Result = TypeVar("Result")


class AmendStore:
    """A database, the retry policy of its operations, and the limits of what the job stores."""

    # MongoDB's limit is 16 MB for the whole journal document; the rest of it is a few hundred bytes.
    JOURNAL_LIMIT_BYTES = 16 * 2**20 - 64 * 2**10

    def __init__(self, database: Any, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep, journal_limit_bytes: int = JOURNAL_LIMIT_BYTES,
                 batch_read: BatchRead = BatchRead.FULL, in_place: InPlaceRead | None = None):
        self.database = database
        self.batch_read = batch_read
        self._in_place = in_place
        self.retry_policy = retry or RetryPolicy()
        self.journal_limit_bytes = journal_limit_bytes
        self._sleep = sleep
        self._in_operation = False

    def __getitem__(self, name: str) -> Any:
        """A collection, for an operation of database_checks or update_databases to use."""
        return self.database[name]

    def _run(self, what: str, operation: Callable[[], Result]) -> Result:
        if self._in_operation:
            raise RuntimeError(f"{what}: a store operation ran inside another one, so retries would nest")
        self._in_operation = True
        try:
            return self.retry_policy.call(operation, what, self._sleep)
        finally:
            self._in_operation = False

    def read(self, what: str, operation: Callable[[], Result]) -> Result:
        """Run one read (a find and its whole cursor, say), retrying transient faults; a driver error
        that remains is raised as is."""
        return self._run(what, operation)

    def write(self, what: str, operation: Callable[[], Result]) -> Result:
        """Run one write command, retrying transient faults; a driver error that remains becomes a
        DatabaseUpdateError saying which write failed."""
        try:
            return self._run(what, operation)
        except PyMongoError as exc:
            raise DatabaseUpdateError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

    def matching(self, name: str, query: Document, projection: Document) -> Iterable[Document]:
        """The documents of collection `name` that `query` matches, for a caller that only reads them: the
        engine's own documents, not copied, when the store was given `in_place` (the embedded default, whose
        documents are in memory), otherwise a find with `projection`."""
        if self._in_place is not None:
            return self._in_place(self.database[name], query)
        return self[name].find(query, projection)

    def create_indexes(self) -> None:
        """The indexes of INDEXES (an index that exists already is left as it is)."""
        for collection, keys, name in INDEXES:
            self._create_index(collection, keys, name)

    def _create_index(self, collection: str, keys: list[tuple[str, int]], name: str) -> None:
        self.write(f"creating index {name} of {collection}", lambda: self[collection].create_index(keys, name=name))


class StoppingStore(AmendStore):
    """An AmendStore whose every database operation is a check point of `stop` (and every tenth of a second
    of a retry's pause): a second signal stops the run between two commands, as a crash would, and a
    later run finishes or undoes the task in hand (see docs/design.md, "Crash recovery")."""

    def __init__(self, database: Any, retry: RetryPolicy | None, stop: StopRequest,
                 batch_read: BatchRead = BatchRead.FULL, in_place: InPlaceRead | None = None):
        super().__init__(database, retry, sleep=stop.pause, batch_read=batch_read, in_place=in_place)
        self._stop = stop

    def read(self, what: str, operation: Callable[[], Result]) -> Result:
        self._stop.check()
        return super().read(what, operation)

    def write(self, what: str, operation: Callable[[], Result]) -> Result:
        self._stop.check()
        return super().write(what, operation)
