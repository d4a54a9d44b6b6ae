"""Claims: a run's hold on an amend task, in one place (see docs/design.md, "Leases").

A run claims an open task (open -> processing, with its identity and a lease), renews the lease before it
writes, releases a task that must wait, and takes over a task whose claim is stale (as an operator's release
does, ops/task_actions.py). stale_claim_reason is the one rule that recovery, `batch_monitor.py check` and
`status` apply.
"""

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument

from amend_store import AMEND_TASK_TYPE, OPERATOR_ACTIONS_FIELD, TASKS_COLLECTION, AmendStore, TaskStatus
from database_checks import OLDEST_FIRST, amend_tasks_filter
from history.run_report import RunIdentity
from utils.Custom_Exceptions import ClaimLostError
from utils.documents import Document
from utils.reports import timestamp

CLAIM_FIELDS = {"_id": 1, "Task_Id": 1, "parameters": 1, "claimed_by": 1, "status_changed_dtm": 1,
                "claim_expires_dtm": 1, "created_dtm": 1}


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
    """Take a processing task whose claim was found stale (database_checks.stale_claim_reason), or that an
    operator releases (batch_monitor.py task release, --force: a live claim too).

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
                 description: str, record: Document | None = None) -> bool:
    """processing -> open again, for a task that has to wait for a later run, or that an operator releases
    (`record` appended to its OPERATOR_ACTIONS_FIELD). False when the run no longer held it."""
    update: Document = {
        "$set": {"task_status": TaskStatus.OPEN, "status_changed_dtm": now, "status_description": description},
        "$unset": {"claimed_by": "", "claim_expires_dtm": ""}}
    if record is not None:
        update["$push"] = {OPERATOR_ACTIONS_FIELD: record}
    result = store.write(f"releasing task {task_object_id}", lambda: store[TASKS_COLLECTION].update_one(
        {"_id": task_object_id, "task_status": TaskStatus.PROCESSING, "claimed_by.run_id": run.run_id}, update))
    return bool(result.matched_count == 1)


def status_as_read(task: Mapping[str, Any]) -> Document:
    """A filter condition that matches a task (not in processing: take_over_expired_claim compares its
    claim) only while its status is as it was read: the same task_status and status_changed_dtm, so that
    a change and back in between makes it fail too."""
    return {field: _as_read(task.get(field)) for field in ("task_status", "status_changed_dtm")}



def stale_claim_reason(task: Mapping[str, Any], now: datetime, lease: timedelta,
                       clock_skew: timedelta) -> str | None:
    """Why a processing task's claim no longer protects it, or None while it is live.

    A claim is live while its claim_expires_dtm lies between now and now + lease (+ the
    clock skew allowed between hosts). A lease already past, one further ahead than any run
    could have set it (a host whose clock is ahead), or a value that is not a date never
    protects a task: such a claim is taken over, which fencing makes safe (see docs/design.md, "Fencing").
    A claim without a lease (set by hand or by another tool) holds for one lease after its
    status_changed_dtm.
    """
    expires = task.get("claim_expires_dtm")
    if isinstance(expires, datetime):
        if expires < now:
            return f"its lease expired at {timestamp(expires)}"
        if expires > now + lease + clock_skew:
            return (f"its lease ends {timestamp(expires)}, further ahead than LEASE_MINUTES from now "
                    f"(written by a host whose clock is ahead?)")
        return None
    if expires is not None:
        return f"its claim_expires_dtm is not a date: {expires!r}"
    changed = task.get("status_changed_dtm")
    if not isinstance(changed, datetime):
        return f"it has no lease and its status_changed_dtm is not a date: {changed!r}"
    if changed < now - lease:
        return f"it has no lease and has been processing since {timestamp(changed)}"
    if changed > now + clock_skew:
        return f"it has no lease and its status_changed_dtm {timestamp(changed)} lies in the future"
    return None


def fetch_expired_claims(store: AmendStore, now: datetime, lease: timedelta, clock_skew: timedelta,
                         task_id: int | None = None) -> list[Document]:
    """Amend tasks in processing whose claim no longer protects them (stale_claim_reason), oldest first."""
    processing = store.read("selecting tasks in processing", lambda: list(store[TASKS_COLLECTION].find(
        amend_tasks_filter({"task_status": TaskStatus.PROCESSING}, task_id), CLAIM_FIELDS).sort(OLDEST_FIRST)))
    return [task for task in processing if stale_claim_reason(task, now, lease, clock_skew)]
