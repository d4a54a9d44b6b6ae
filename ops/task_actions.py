"""An operator's actions on one amend task (`batch_monitor.py task`), safe and recorded (issue 17).

- requeue: a task in error or cancelled back to open, for the next run to process afresh; refused while a
  journal of the task or of its batch is left (a run finishes that first, see docs/design.md, "Crash
  recovery").
- cancel: an open task becomes cancelled. The job selects open tasks only, so it is never processed; a
  journal it left (a task re-queued by hand while its journal was unfinished) is finished by the next run
  as that of a task in error is: the batch is restored.
- release: a task in processing back to open. Its claim is taken over as the job's recovery takes a stale
  one (a compare-and-set on the claim as it was read), its journal, if any, is taken over with a new fencing
  token, and the task is released: the run that held it can no longer end the task, and the next run finishes
  that journal first, as it does for a re-queued task (a write the old run still makes is one of that
  journal's, and is refused once a newer run wrote the document). A live claim is released only with --force.

Each action is a compare-and-set on the task as it was read: a task that changed in between is left as it
is, and the operator is told. Each is appended to the task's OPERATOR_ACTIONS_FIELD: what, why, who (OS user
and host), when (the command's clock) and the status the task had.
"""

import getpass
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from amend_store import AMEND_TASK_TYPE, OPERATOR_ACTIONS_FIELD, TASKS_COLLECTION, AmendStore, TaskStatus
from coordination.claims import release_task, stale_claim_reason, status_as_read, take_over_expired_claim
from coordination.fences import issue_fence
from coordination.journal import fetch_journal_of_task, take_over_journal
from database_checks import batch_of, fetch_task, fetch_tasks_by_task_id
from history.run_report import RunIdentity
from ops.monitoring import ACTION_COLUMNS
from task_processor import task_label
from utils.config import JobSettings
from utils.Custom_Exceptions import ConfigurationError, DatabaseUpdateError, TaskValidationError
from utils.documents import Document
from utils.reports import text_table, timestamp
from utils.shutdown import work_in_hand

REQUEUE, CANCEL, RELEASE = "requeue", "cancel", "release"
# The statuses each action applies to.
APPLIES_TO: dict[str, tuple[TaskStatus, ...]] = {
    REQUEUE: (TaskStatus.ERROR, TaskStatus.CANCELLED), CANCEL: (TaskStatus.OPEN,), RELEASE: (TaskStatus.PROCESSING,)}
ACTIONS = tuple(APPLIES_TO)
# What `status` shows of the operator actions: the latest few, each reason cut to a table's width.
RECENT_ACTIONS = 5
REASON_SHOWN = 60


def operator_user() -> str:
    """The OS user who runs the command; "unknown" when the system cannot tell (no login variable and no
    password entry for the uid, as in some containers)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


@dataclass(frozen=True)
class ActionRequest:
    """What the operator asked: the action on the amend task with Task_Id `task_id`, why, when (the
    command's clock), whether by force, and who asks."""
    action: str
    task_id: int
    reason: str
    now: datetime
    force: bool = False
    user: str = field(default_factory=operator_user)
    host: str = field(default_factory=socket.gethostname)

    @property
    def operator(self) -> str:
        return f"{self.user}@{self.host}"

    def record(self, task: Document, **details: object) -> Document:
        """The entry appended to the task's OPERATOR_ACTIONS_FIELD."""
        return {"action": self.action, "reason": self.reason, "user": self.user, "host": self.host,
                "action_dtm": self.now, "previous_status": task.get("task_status"),
                "previous_description": task.get("status_description"), **details}


def fetch_amend_task(store: AmendStore, task_id: int) -> Document:
    """The one amend task with this Task_Id; a TaskValidationError when there is none (saying what has the
    Task_Id, if anything) or more than one."""
    tasks = fetch_tasks_by_task_id(store, task_id)
    amend = [task for task in tasks if task.get("task_type") == AMEND_TASK_TYPE]
    if not tasks:
        raise TaskValidationError(f"no task has Task_Id {task_id}")
    if not amend:
        types = ", ".join(sorted({repr(task.get("task_type")) for task in tasks}))
        raise TaskValidationError(f"task {task_id} is of task_type {types}, not an amend task "
                                  f"({AMEND_TASK_TYPE!r}): only amend tasks are re-queued, cancelled or released here")
    if len(amend) > 1:
        raise TaskValidationError(f"{len(amend)} amend tasks have Task_Id {task_id} "
                                  f"({', '.join(str(task['_id']) for task in amend)}): an action names one task; "
                                  f"give each a Task_Id of its own")
    return amend[0]


def require_status(task: Document, action: str) -> None:
    """A TaskValidationError saying the task's status and what it allows, when `action` does not apply to it."""
    status = task.get("task_status")
    if status in APPLIES_TO[action]:
        return
    allowed = [f"`task {name}`" for name, statuses in APPLIES_TO.items() if status in statuses]
    raise TaskValidationError(f"{task_label(task)} is {status}: `task {action}` applies only to a task in status "
                              f"{' or '.join(APPLIES_TO[action])}; a task in status {status} allows "
                              f"{' or '.join(allowed) or 'no action'}")


def changed_meanwhile(store: AmendStore, task: Document, doing: str) -> DatabaseUpdateError:
    """The error of a compare-and-set that found the task changed since it was read (nothing was written)."""
    current = fetch_task(store, task["_id"])
    now = "is gone" if current is None else f"is now {current.get('task_status')}"
    return DatabaseUpdateError(f"{task_label(task)} changed while it was being {doing} (it was "
                               f"{task.get('task_status')}, it {now}): nothing was changed; look at it again")


def set_as_read(store: AmendStore, task: Document, update: Document, doing: str) -> None:
    """Apply `update` to the task while its status is as it was read; changed_meanwhile otherwise."""
    result = store.write(f"{doing} task {task['_id']}", lambda: store[TASKS_COLLECTION].update_one(
        {"_id": task["_id"], "task_type": AMEND_TASK_TYPE, **status_as_read(task)}, update))
    if result.matched_count != 1:
        raise changed_meanwhile(store, task, doing)


def requeue(store: AmendStore, task: Document, request: ActionRequest, job: JobSettings) -> str:
    journal = fetch_journal_of_task(store, task["_id"], batch_of(task))
    if journal is not None:
        raise TaskValidationError(
            f"{task_label(task)} cannot be re-queued yet: batch {journal['_id']} holds the unfinished journal "
            f"(phase {journal.get('phase')}) of amend task {journal.get('Task_Id')} ({journal.get('task_object_id')}); "
            f"the next run of the job finishes it first (unless a run is finishing it now): re-queue the task then")
    set_as_read(store, task, {
        "$set": {"task_status": TaskStatus.OPEN, "status_changed_dtm": request.now,
                 "status_description": f"Re-queued by {request.operator}: {request.reason}"},
        "$unset": {"claimed_by": "", "claim_expires_dtm": "", "end_dtm": ""},
        "$push": {OPERATOR_ACTIONS_FIELD: request.record(task)}}, "re-queued")
    return f"{task_label(task)}: {task.get('task_status')} -> open; the next run processes it"


def cancel(store: AmendStore, task: Document, request: ActionRequest, job: JobSettings) -> str:
    set_as_read(store, task, {
        "$set": {"task_status": TaskStatus.CANCELLED, "status_changed_dtm": request.now, "end_dtm": request.now,
                 "status_description": f"Cancelled by {request.operator}: {request.reason}"},
        "$unset": {"claimed_by": "", "claim_expires_dtm": ""},
        "$push": {OPERATOR_ACTIONS_FIELD: request.record(task)}}, "cancelled")
    return f"{task_label(task)}: open -> cancelled; no run processes it (`task requeue` queues it again)"


def live_claim(task: Document) -> TaskValidationError:
    holder = task.get("claimed_by")
    who = (f"run {holder.get('run_id')} on {holder.get('host')} pid {holder.get('pid')}"
           if isinstance(holder, dict) else repr(holder))
    return TaskValidationError(
        f"{task_label(task)} is processing, claimed by {who}, whose lease is live (claim_expires_dtm "
        f"{_shown_time(task.get('claim_expires_dtm'))}): its run may still be working on it; wait until the lease "
        f"ends (the "
        f"next run then recovers the task), or release it with --force (that run can then no longer end the task; "
        f"the next run finishes its journal)")


def release(store: AmendStore, task: Document, request: ActionRequest, job: JobSettings) -> str:
    """Take the claim over (compare-and-set on the claim as read), then the journal (a new fencing token),
    then release the task; the order of the job's recovery (task_processor.recover_task), so that the run
    that held the task either fails to renew its claim or finds its journal taken."""
    stale = stale_claim_reason(task, request.now, job.lease, job.clock_skew)
    if stale is None and not request.force:
        raise live_claim(task)
    run = RunIdentity.new()
    # A hold that ends at once: should a later step fail (a server gone), the next job run recovers the task
    # without waiting for a lease of this command, which holds no task.
    if take_over_expired_claim(store, task, run, request.now, timedelta(0)) is None:
        raise changed_meanwhile(store, task, "released")
    journal = take_over_journal(store, {"task_object_id": task["_id"]}, run, issue_fence(store))
    record = request.record(task, previous_claim=task.get("claimed_by"), forced=stale is None)
    if not release_task(store, task["_id"], run, request.now, f"Released by {request.operator}: {request.reason}",
                        record):
        raise DatabaseUpdateError(f"{task_label(task)} was taken over by another run while it was being released: "
                                  f"the task and its journal are that run's now")
    claim = "its claim was live, released with --force" if stale is None else f"its claim was stale: {stale}"
    then = ("the next run processes it" if journal is None else
            f"the next run finishes its journal of batch {journal['_id']} (phase {journal.get('phase')}) first")
    return f"{task_label(task)}: processing -> open ({claim}); {then}"


PERFORMERS: dict[str, Callable[[AmendStore, Document, ActionRequest, JobSettings], str]] = {
    REQUEUE: requeue, CANCEL: cancel, RELEASE: release}


def perform(store: AmendStore, request: ActionRequest, job: JobSettings) -> str:
    """Do the action the operator asked, recorded on the task; the line saying what was done.

    Nothing is written when the task is missing, is not one amend task, is in a status the action does not
    apply to (TaskValidationError), or changed since it was read (DatabaseUpdateError). Once the first write
    is near, a signal is only recorded: an action begun is finished (on the embedded default, a signal still
    stops the command before the file is saved, nothing changed).
    """
    if request.force and request.action != RELEASE:
        raise ConfigurationError(f"--force applies to `task {RELEASE}` only, not to `task {request.action}`")
    task = fetch_amend_task(store, request.task_id)
    require_status(task, request.action)
    work_in_hand()
    return PERFORMERS[request.action](store, task, request, job)


def _shown_time(value: object) -> str:
    return timestamp(value) if isinstance(value, datetime) else repr(value)


def _shortened(text: object) -> object:
    if isinstance(text, str) and len(text) > REASON_SHOWN:
        return text[:REASON_SHOWN - 1] + "…"
    return text


def action_rows(rows: Sequence[Document]) -> list[dict[str, Any]]:
    """The operator actions (database_checks.fetch_operator_actions) as rows of ACTION_COLUMNS."""
    return [{"time": entry.get("action_dtm"), "action": entry.get("action"), "Task_Id": row.get("Task_Id"),
             "was": entry.get("previous_status"), "by": f"{entry.get('user')}@{entry.get('host')}",
             "reason": entry.get("reason")} for row in rows for entry in (row["action"],)]


def recent_actions_text(rows: Sequence[Document]) -> str:
    """`status`'s table of the latest operator actions, each reason cut to REASON_SHOWN characters."""
    if not rows:
        return "Recent operator actions: none"
    return "Recent operator actions:\n" + text_table(
        ACTION_COLUMNS, [[_shortened(row[column]) if column == "reason" else row[column] for column in ACTION_COLUMNS]
                         for row in action_rows(rows)])
