"""Orchestration of a run: recover stopped runs' tasks, then select, claim, validate, plan, journal,
write and record each open task's outcome."""

import gc
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial

from bson import ObjectId
from pymongo.errors import PyMongoError

from amend_plan import PlannedWrites, plan_amend
from database_checks import (
    fetch_and_validate_template_task,
    fetch_case_prior_values,
    fetch_cases_for_batch,
    fetch_expired_claims,
    fetch_journal,
    fetch_journals,
    fetch_open_tasks,
    fetch_summary_rows,
    fetch_task,
    fetch_transaction_details,
    stale_claim_reason,
    summary_cell_keys,
    task_batch_id,
)
from update_databases import (
    CASE_CHUNK_SIZE,
    AmendWriteUnit,
    claim_task,
    close_journal,
    issue_fence,
    mark_journal_undoing,
    open_journal,
    planned_writes_from_journal,
    record_planned_writes,
    release_task,
    renew_claim,
    take_over_expired_claim,
    take_over_journal,
    update_task_status,
)
from utils.Custom_Exceptions import BatchBusyError, ClaimLostError, DatabaseUpdateError, TaskProcessingError
from utils.loggers import get_logger, progress_bar
from utils.retry import RetryingDatabase
from utils.secrets import scrub

log = get_logger("tasks")


def utc_now():
    """Now in UTC as MongoDB stores it: naive, millisecond precision."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class RunIdentity:
    """Who holds a claim: written into the task and the journal."""
    run_id: str
    host: str
    pid: int

    @classmethod
    def new(cls):
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid())

    @property
    def label(self):
        return f"DRS Amend run {self.run_id[:12]} on {self.host} pid {self.pid}"

    def document(self):
        return {"run_id": self.run_id, "host": self.host, "pid": self.pid}


@dataclass(frozen=True)
class TaskOutcome:
    object_id: object
    task_id: object
    status: str
    message: str
    cases_moved: int = 0
    batch_id: object = None
    duration_seconds: float = 0.0

    def document(self):
        return {"_id": self.object_id, "Task_Id": self.task_id, "batch": self.batch_id, "outcome": self.status,
                "cases_moved": self.cases_moved, "message": self.message, "duration_seconds": self.duration_seconds}


@dataclass
class RunReport:
    run: RunIdentity
    started: datetime
    ended: datetime = None
    outcomes: list = field(default_factory=list)
    skipped: int = 0

    def count(self, status):
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def cases_moved(self):
        return sum(outcome.cases_moved for outcome in self.outcomes)

    @property
    def exit_code(self):
        return 1 if self.count("error") else 0

    def document(self):
        """The run as recorded in the run history and printed by --json."""
        return {"run_id": self.run.run_id, "host": self.run.host, "pid": self.run.pid,
                "started_dtm": self.started, "ended_dtm": self.ended,
                "duration_seconds": round((self.ended - self.started).total_seconds(), 3),
                "exit_code": self.exit_code, "completed": self.count("completed"), "errored": self.count("error"),
                "deferred": self.count("deferred"), "skipped": self.skipped, "cases_moved": self.cases_moved,
                "tasks": [outcome.document() for outcome in self.outcomes]}

    def summary_line(self):
        return (f"DRS Amend run finished: {self.count('completed')} task(s) completed, {self.count('error')} errored, "
                f"{self.count('deferred')} deferred (batch busy), {self.skipped} skipped (claimed by another run), "
                f"{self.cases_moved} case(s) moved")


def task_label(task):
    return f"amend task {task.get('Task_Id')} ({task['_id']})"


def _batch_of(task):
    parameters = task.get("parameters")
    batch_id = parameters.get("Case_Distribution_Batch_ID") if isinstance(parameters, dict) else None
    return batch_id if isinstance(batch_id, (str, int)) and not isinstance(batch_id, bool) else None


def timed(task, process):
    """Run `process` for `task`; its outcome with the task's batch and the time it took."""
    started = time.monotonic()
    outcome = process()
    return replace(outcome, batch_id=_batch_of(task), duration_seconds=round(time.monotonic() - started, 3))


def end_in_error(db, task, run, reason, clock, journal=None):
    """Record `reason` on the task, then close the task's journal (batch id, fence) when given.

    A task that cannot be marked stays in processing, its journal kept, for recovery.
    """
    reason = scrub(reason)
    log.error("%s ended in error: %s", task_label(task), reason)
    try:
        update_task_status(db, task["_id"], run, "error", reason, clock())
    except (DatabaseUpdateError, ClaimLostError) as exc:
        log.critical("%s could not be marked error; it stays in processing until recovered: %s",
                     task_label(task), exc)
    else:
        if journal is not None:
            _close_journal_quietly(db, *journal, task)
    return TaskOutcome(task["_id"], task.get("Task_Id"), "error", reason)


def _close_journal_quietly(db, batch_id, fence, task):
    """A journal left behind only keeps the batch busy until the next run clears it."""
    try:
        close_journal(db, batch_id, fence)
    except DatabaseUpdateError as exc:
        log.warning("%s: %s; the next run clears it", task_label(task), exc)


def _failure_reason(exc, label):
    if isinstance(exc, TaskProcessingError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PyMongoError):
        return f"database error: {type(exc).__name__}: {exc}"
    log.exception("%s failed unexpectedly", label)
    return f"internal error: {type(exc).__name__}: {exc}"


def _left_to_the_run_that_took_over(task, exc):
    """This run lost the task (or its batch) to another run: it touches neither any more."""
    log.error("%s: %s; left to the run that took it over", task_label(task), exc)
    return TaskOutcome(task["_id"], task.get("Task_Id"), "error", scrub(str(exc)))


def undo_and_end(db, task, run, writes, fence, reason, clock):
    """Journal the undo, undo every write of the task, then end it in error.

    When the undo itself fails the journal stays `undoing` and the task stays in processing:
    a later run restores the batch once the lease expired.
    """
    reason = scrub(reason)
    try:
        mark_journal_undoing(db, writes.batch_id, fence, reason)
        AmendWriteUnit(db, writes, fence).undo()
    except ClaimLostError as exc:
        return _left_to_the_run_that_took_over(task, exc)
    except DatabaseUpdateError as exc:
        log.critical("%s: %s; a later run restores batch %s after the lease", task_label(task), exc, writes.batch_id)
        return TaskOutcome(task["_id"], task.get("Task_Id"), "error", f"{reason}; undo incomplete, left for recovery")
    return end_in_error(db, task, run, f"{reason}; every write of the task was undone", clock,
                        journal=(writes.batch_id, fence))


def land_writes(db, task, run, writes, fence, clock, note=""):
    """Apply journaled writes and complete the task; on a failed data write undo them and end in error.

    Once every data write landed the task is only ever rolled forward: when marking it
    completed fails, it stays in processing with its journal, and the next run after the
    lease completes it.
    """
    label = task_label(task)
    started = time.monotonic()
    try:
        AmendWriteUnit(db, writes, fence).apply()
    except ClaimLostError as exc:
        return _left_to_the_run_that_took_over(task, exc)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the writes must be undone
        return undo_and_end(db, task, run, writes, fence, _failure_reason(exc, label) + note, clock)
    log.info("%s: wrote %d case(s) and %d summary row(s), closed seq %s in %.2f s", label, len(writes.changes),
             len(writes.summary), writes.request.batch_seq, time.monotonic() - started)
    try:
        update_task_status(db, task["_id"], run, "completed", writes.description + note, clock())
    except ClaimLostError as exc:
        return _left_to_the_run_that_took_over(task, exc)
    except DatabaseUpdateError as exc:
        message = (f"every write landed but the task could not be marked completed ({exc}); it stays in "
                   f"processing and the next run after its lease completes it")
        log.critical("%s: %s", label, message)
        return TaskOutcome(task["_id"], task.get("Task_Id"), "error", scrub(message))
    _close_journal_quietly(db, writes.batch_id, fence, task)
    log.info("%s completed: %s", label, writes.description + note)
    return TaskOutcome(task["_id"], task.get("Task_Id"), "completed", writes.description + note, len(writes.changes))


@contextmanager
def collector_paused():
    """Reading and planning a large batch allocate millions of objects that form no reference
    cycles; the cyclic garbage collector would only traverse them again and again (it more than
    doubled the planning time of a million cases). Reference counting still frees everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def plan_batch(db, batch_id, settings, label):
    """Read a batch's amend request, cases and summary, and plan the request: (cases, summary rows, plan).

    Logs one line per phase with its counts and duration, never one per case.
    """
    started = time.monotonic()
    request = fetch_transaction_details(db, batch_id)
    with collector_paused():
        cases = fetch_cases_for_batch(db, batch_id, lambda cursor: progress_bar(cursor, f"batch {batch_id}", "case"))
    summary_rows = fetch_summary_rows(db, batch_id)
    log.info("%s: read %d case(s) in %d cell(s) of batch %s in %.2f s", label, len(cases.assignment),
             len(cases.holdings), batch_id, time.monotonic() - started)
    started = time.monotonic()
    with collector_paused():
        plan = plan_amend(batch_id, request, cases, summary_cell_keys(summary_rows, batch_id),
                          settings.min_share_kept)
    log.info("%s: planned %d distribution(s): %d case(s) to reassign, %d summary cell(s) in %.2f s", label,
             len(request.distributions), len(plan.changes), len(plan.summary), time.monotonic() - started)
    return cases, summary_rows, plan


def read_and_plan(db, task, batch_id, settings, clock):
    """The read phase of a task: the plan, with the prior values an undo needs and the _id of every
    summary row it writes (existing rows keep theirs; a new row's is chosen here)."""
    _, summary_rows, plan = plan_batch(db, batch_id, settings, task_label(task))
    case_priors = fetch_case_prior_values(db, batch_id, [change.case_id for change in plan.changes],
                                          CASE_CHUNK_SIZE)
    row_ids = {(row["DRC_Id"], row["RTOM"]): row["_id"] for row in summary_rows}
    row_ids.update({(cell.drc, cell.rtom): ObjectId() for cell in plan.summary
                    if (cell.drc, cell.rtom) not in row_ids})
    return PlannedWrites(batch_id=batch_id, request=plan.request, changes=plan.changes, summary=plan.summary,
                         description=plan.description, case_priors=case_priors, summary_rows=tuple(summary_rows),
                         summary_row_ids=row_ids, now=clock(), label=task_label(task))


def process_single_batch(db, task, settings, run, clock=utc_now):
    """Validate, plan and write one claimed task: it ends `completed`, or `error` with nothing of it left.

    `db` is a RetryingDatabase. The batch's journal, carrying a new fencing token, is opened
    before the batch is read, so no other task amends the batch meanwhile; the claim is
    then renewed, which proves no run took the task over before the journal existed (a run
    that takes it over later finds the journal and takes it over too, fencing this run
    out). The journal holds the planned writes and the prior values before the first data
    write, so that a crash at any point can be recovered.
    """
    label = task_label(task)
    try:
        db.retry(lambda: fetch_and_validate_template_task(db, task, settings.template_task_id), "reading the template")
        batch_id = task_batch_id(task)
        fence = issue_fence(db)
        open_journal(db, batch_id, task, run, clock(), fence)
    except BatchBusyError as exc:
        release_task(db, task["_id"], run, clock(), f"Waiting for a later run: {exc}")
        log.info("%s deferred: %s", label, exc)
        return TaskOutcome(task["_id"], task.get("Task_Id"), "deferred", str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure before the journal ends the task, nothing written
        return end_in_error(db, task, run, _failure_reason(exc, label) + "; nothing was written", clock)

    try:
        writes = db.retry(lambda: read_and_plan(db, task, batch_id, settings, clock), f"reading batch {batch_id}")
        renew_claim(db, task["_id"], run, clock(), settings.lease)
        record_planned_writes(db, batch_id, fence, writes)
    except ClaimLostError as exc:
        _close_journal_quietly(db, batch_id, fence, task)
        return _left_to_the_run_that_took_over(task, exc)
    except Exception as exc:  # noqa: BLE001 - no data was written yet
        return end_in_error(db, task, run, _failure_reason(exc, label) + "; nothing was written", clock,
                            journal=(batch_id, fence))
    return land_writes(db, task, run, writes, fence, clock)


# --- recovery of runs that stopped ------------------------------------------------------

def recover_task(db, task, settings, run, clock, requeued=False):
    """Bring a task this run now holds to a consistent end (see README, "Crash recovery"): one whose
    claim went stale, or one an operator set back to open while its journal was unfinished (`requeued`).

    The task's journal is taken over first, with a new fencing token, so the run that wrote
    it can write nothing more. Phase `writing`: roll forward, the writes are idempotent; the
    task ends completed. Phase `undoing`: the restore is finished; the task ends in error, or,
    re-queued, is processed afresh. Nothing journaled or only planned: nothing was written;
    the task ends in error, or, re-queued, is processed afresh.
    """
    prefix = f"recovered by {run.label} after the run that claimed it stopped"
    fence = issue_fence(db)
    journal = take_over_journal(db, {"task_object_id": task["_id"]}, run, fence)
    phase = None if journal is None or "writes" not in journal else journal.get("phase")
    if phase == "writing":
        note = (f" (an earlier attempt left its writes unfinished when the task was re-queued; {run.label} "
                f"finished them)" if requeued else f" ({prefix}; its writes were finished)")
        return land_writes(db, task, run, planned_writes_from_journal(journal), fence, clock, note=note)
    if phase == "undoing" and not requeued:
        return undo_and_end(db, task, run, planned_writes_from_journal(journal), fence,
                            f"{journal.get('error')} ({prefix})", clock)
    if phase == "undoing":
        AmendWriteUnit(db, planned_writes_from_journal(journal), fence).undo()
    if requeued:
        if journal is not None:
            close_journal(db, journal["_id"], fence)
        log.info("%s: the earlier attempt's journal is finished; processing the re-queued task", task_label(task))
        return process_single_batch(db, task, settings, run, clock)
    return end_in_error(db, task, run, f"Interrupted before any write, nothing changed; {prefix}. "
                                       "Queue the amend again to retry it.", clock,
                        journal=None if journal is None else (journal["_id"], fence))


def finish_orphaned_journal(db, journal, task_status, run):
    """A journal whose task already ended (or is gone) is finished, never just deleted: rolled forward
    when its task completed, otherwise restored, so the batch agrees with what the task says."""
    fence = issue_fence(db)
    taken = take_over_journal(db, {"_id": journal["_id"], "task_object_id": journal.get("task_object_id")}, run,
                              fence)
    if taken is None:
        return
    if "writes" in taken and taken.get("phase") in ("writing", "undoing"):
        unit = AmendWriteUnit(db, planned_writes_from_journal(taken), fence)
        if taken["phase"] == "writing" and task_status == "completed":
            unit.apply()
        else:
            unit.undo()
    close_journal(db, taken["_id"], fence)
    log.warning("finished the journal (phase %s) of batch %s left by amend task %s (%s), which is %s",
                taken.get("phase"), taken["_id"], taken.get("Task_Id"), taken.get("task_object_id"),
                task_status or "gone")


def recover_interrupted_tasks(db, settings, run, clock=utc_now, task_id=None):
    """Bring every task a stopped run left behind to an end before new work starts.

    Tasks in processing whose claim is stale are taken over, one run each. Then every journal
    left without a live claim is finished: a re-queued (open) task is claimed and finished
    first; the journal of a task that already ended is rolled forward or restored.
    """
    now = clock()
    outcomes = []
    stale = db.retry(lambda: fetch_expired_claims(db, now, settings.lease, settings.clock_skew, task_id),
                     "selecting stale claims")
    for reference in stale:
        task = take_over_expired_claim(db, reference, run, clock(), settings.lease)
        if task is None:
            continue
        log.warning("%s: %s; recovering it", task_label(task),
                    stale_claim_reason(reference, now, settings.lease, settings.clock_skew))
        outcomes.append(timed(task, partial(_recover_or_report, db, task, settings, run, clock)))
    for journal in db.retry(lambda: fetch_journals(db), "reading the journals"):
        if task_id is not None and journal.get("Task_Id") != task_id:
            continue
        task = db.retry(partial(fetch_task, db, journal.get("task_object_id")), "reading a task")
        status = None if task is None else task.get("task_status")
        if status == "processing":
            continue  # held; recovered once its claim is stale
        if status == "open":
            claimed = claim_task(db, task["_id"], run, clock(), settings.lease)
            if claimed is not None:
                log.warning("%s was re-queued while its journal of batch %s was unfinished; finishing that first",
                            task_label(claimed), journal["_id"])
                outcomes.append(timed(claimed, partial(_recover_or_report, db, claimed, settings, run, clock,
                                                       requeued=True)))
            continue
        try:
            finish_orphaned_journal(db, journal, status, run)
        except Exception as exc:  # noqa: BLE001 - one unreadable journal must not stop the run
            log.critical("the journal of batch %s could not be finished; the batch stays reserved: %s",
                         journal["_id"], _failure_reason(exc, f"the journal of batch {journal['_id']}"))
    return outcomes


def _recover_or_report(db, task, settings, run, clock, requeued=False):
    try:
        return recover_task(db, task, settings, run, clock, requeued)
    except ClaimLostError as exc:
        return _left_to_the_run_that_took_over(task, exc)
    except Exception as exc:  # noqa: BLE001 - one unrecoverable journal must not stop the run
        reason = _failure_reason(exc, task_label(task))
        log.critical("%s could not be recovered, it stays in processing: %s", task_label(task), reason)
        return TaskOutcome(task["_id"], task.get("Task_Id"), "error", f"recovery failed: {reason}")


def amend_task_processing(db, settings, clock=utc_now, run=None, sleep=time.sleep, task_id=None):
    """Recover interrupted tasks, then process every open amend task once, oldest first
    (only the amend task(s) with Task_Id `task_id` when given)."""
    run = run or RunIdentity.new()
    db = RetryingDatabase(db, settings.retry, sleep)
    report = RunReport(run=run, started=clock())
    report.outcomes.extend(recover_interrupted_tasks(db, settings, run, clock, task_id))
    open_tasks = db.retry(lambda: fetch_open_tasks(db, task_id), "selecting open tasks")
    log.info("%d open amend task(s)", len(open_tasks))
    for reference in open_tasks:
        task = claim_task(db, reference["_id"], run, clock(), settings.lease)
        if task is None:
            report.skipped += 1
            log.info("task %s (%s) was claimed by another run; skipped", reference.get("Task_Id"), reference["_id"])
            continue
        report.outcomes.append(timed(task, partial(process_single_batch, db, task, settings, run, clock)))
    report.ended = clock()
    return report


# --- dry run ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DryRunResult:
    """What processing a task would do: case counts per (DRC, RTOM) before and after, or the refusal."""
    object_id: object
    task_id: object
    batch_id: object
    refusal: str = None
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    changes: int = 0

    def document(self):
        cells = sorted(set(self.before) | set(self.after))
        return {"_id": self.object_id, "Task_Id": self.task_id, "batch": self.batch_id, "refusal": self.refusal,
                "cases_to_reassign": self.changes,
                "cells": [{"DRC_Id": drc, "RTOM": rtom, "before": self.before.get((drc, rtom), 0),
                           "after": self.after.get((drc, rtom), 0)} for drc, rtom in cells]}


def dry_run(db, settings, task_id=None):
    """Plan every open amend task (or the one of `task_id`) without claiming or writing anything."""
    results = []
    for reference in fetch_open_tasks(db, task_id):
        task = fetch_task(db, reference["_id"])
        try:
            fetch_and_validate_template_task(db, task, settings.template_task_id)
            batch_id = task_batch_id(task)
            journal = fetch_journal(db, batch_id)
            if journal is not None:
                raise BatchBusyError(f"batch {batch_id} holds the journal (phase {journal.get('phase')}) of amend "
                                     f"task {journal.get('Task_Id')} ({journal.get('task_object_id')}); a run "
                                     f"finishes it before this task is planned")
            cases, _, plan = plan_batch(db, batch_id, settings, task_label(task))
        except TaskProcessingError as exc:
            results.append(DryRunResult(task["_id"], task.get("Task_Id"), _batch_of(task),
                                        refusal=f"{type(exc).__name__}: {exc}"))
            continue
        results.append(DryRunResult(task["_id"], task.get("Task_Id"), batch_id,
                                    before={cell: len(ids) for cell, ids in cases.holdings.items()},
                                    after={(cell.drc, cell.rtom): cell.count for cell in plan.summary},
                                    changes=len(plan.changes)))
    return results
