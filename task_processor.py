"""Orchestration of a run: select, claim, validate, plan, write, and record each task's outcome."""

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction

from pymongo.errors import PyMongoError

from amend_plan import plan_amend
from database_checks import (fetch_and_validate_template_task, fetch_case_prior_values, fetch_cases_for_batch,
                             fetch_open_tasks, fetch_summary_rows, fetch_transaction_details, summary_cell_keys,
                             task_batch_id)
from update_databases import CASE_CHUNK_SIZE, AmendWriteUnit, claim_task, update_task_status
from utils.Custom_Exceptions import DatabaseUpdateError, TaskProcessingError
from utils.loggers import get_logger

log = get_logger("tasks")


def utc_now():
    """Now in UTC as MongoDB stores it: naive, millisecond precision."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class JobSettings:
    template_task_id: int
    min_share_kept: Fraction


@dataclass(frozen=True)
class TaskOutcome:
    object_id: object
    task_id: object
    status: str
    message: str
    cases_moved: int = 0


@dataclass
class RunReport:
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

    def summary_line(self):
        return (f"DRS Amend run finished: {self.count('completed')} task(s) completed, {self.count('error')} errored, "
                f"{self.skipped} skipped (claimed by another run), {self.cases_moved} case(s) moved")


def _task_label(task):
    return f"amend task {task.get('Task_Id')} ({task['_id']})"


def _undo(unit):
    """Undo a task's started writes; the sentence to append to its error description."""
    if unit is None:
        return "nothing was written"
    try:
        unit.undo()
    except DatabaseUpdateError as exc:
        return str(exc)
    return "every write of the task was undone"


def process_single_batch(db, task, settings, clock=utc_now):
    """Validate, plan and write one claimed task; it ends `completed`, or `error` with nothing of it left."""
    label = _task_label(task)
    unit = None
    try:
        fetch_and_validate_template_task(db, task, settings.template_task_id)
        batch_id = task_batch_id(task)
        request = fetch_transaction_details(db, batch_id)
        assignment, arrears = fetch_cases_for_batch(db, batch_id)
        summary_rows = fetch_summary_rows(db, batch_id)
        plan = plan_amend(batch_id, request, assignment, arrears, summary_cell_keys(summary_rows, batch_id),
                          settings.min_share_kept)
        case_priors = fetch_case_prior_values(db, batch_id, [change.case_id for change in plan.changes],
                                              CASE_CHUNK_SIZE)
        now = clock()
        unit = AmendWriteUnit(db, plan, case_priors, summary_rows, now, label)
        unit.apply()
        update_task_status(db, task["_id"], "completed", plan.description, now)
    except TaskProcessingError as exc:
        reason = f"{type(exc).__name__}: {exc}"
    except PyMongoError as exc:
        reason = f"database error: {type(exc).__name__}: {exc}"
    except Exception as exc:  # a defect must end this task in error, not the whole run
        log.exception("%s failed unexpectedly", label)
        reason = f"internal error: {type(exc).__name__}: {exc}"
    else:
        log.info("%s completed: %s", label, plan.description)
        return TaskOutcome(task["_id"], task.get("Task_Id"), "completed", plan.description, len(plan.changes))

    reason = f"{reason}; {_undo(unit)}"
    log.error("%s ended in error: %s", label, reason)
    try:
        update_task_status(db, task["_id"], "error", reason, clock(), expected_statuses=("processing", "completed"))
    except (DatabaseUpdateError, PyMongoError) as exc:
        log.critical("%s could not be marked error, it stays in processing: %s", label, exc)
    return TaskOutcome(task["_id"], task.get("Task_Id"), "error", reason)


def amend_task_processing(db, settings, clock=utc_now):
    """Process every open amend task, oldest first; each task is claimed atomically on its _id."""
    report = RunReport()
    claimant = f"Claimed by DRS Amend on {socket.gethostname()} pid {os.getpid()}"
    open_tasks = fetch_open_tasks(db)
    log.info("%d open amend task(s)", len(open_tasks))
    for reference in open_tasks:
        task = claim_task(db, reference["_id"], clock(), claimant)
        if task is None:
            report.skipped += 1
            log.info("task %s (%s) was claimed by another run; skipped", reference.get("Task_Id"), reference["_id"])
            continue
        report.outcomes.append(process_single_batch(db, task, settings, clock))
    return report
