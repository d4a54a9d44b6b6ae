"""Orchestration of a run: recover what stopped runs left, then select, claim, validate, plan,
journal, write and record each open task's outcome. Every database access goes through the
store (amend_store.AmendStore): reads of database_checks, writes of update_databases."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from bson import ObjectId
from pymongo.errors import PyMongoError

from amend_plan import AmendPlan, AmendRequest, BatchCases, PlannedWrites, plan_amend
from amend_store import COUNTERS_COLLECTION, AmendStore, BatchRead, Clock, JournalPhase, TaskStatus, utc_now
from balance_resources import Cell
from coordination.claims import (
    claim_task,
    fetch_expired_claims,
    release_task,
    renew_claim,
    stale_claim_reason,
    take_over_expired_claim,
)
from coordination.fences import issue_fence
from coordination.journal import (
    close_journal,
    fetch_journals,
    mark_journal_undoing,
    open_journal,
    planned_writes_from_journal,
    record_planned_writes,
    take_over_journal,
)
from database_checks import (
    batch_of,
    fetch_amend_task_statuses,
    fetch_and_validate_template_task,
    fetch_batch_cells,
    fetch_case_count,
    fetch_case_prior_values,
    fetch_cases_for_batch,
    fetch_open_tasks,
    fetch_summary_rows,
    fetch_task,
    fetch_transaction_details,
    summary_cell_keys,
    task_batch_id,
)
from history.run_report import Outcome, RunIdentity, RunReport, TaskOutcome
from update_databases import (
    CASE_CHUNK_SIZE,
    AmendWriteUnit,
    amend_record,
    update_task_status,
)
from utils.collector import collector_paused
from utils.config import JobSettings
from utils.Custom_Exceptions import (
    BatchBusyError,
    ClaimLostError,
    DatabaseUpdateError,
    FullReadNeeded,
    TaskProcessingError,
)
from utils.documents import BatchId, Document
from utils.loggers import get_logger, progress_bar, progress_shown
from utils.secrets import scrub
from utils.shutdown import NO_STOP, StopRequest

log = get_logger("tasks")


def task_label(task: Document) -> str:
    return f"amend task {task.get('Task_Id')} ({task['_id']})"


@dataclass(frozen=True)
class TaskAttempt:
    """One run's attempt at one task it holds: what every step of the attempt needs, bundled."""
    store: AmendStore
    task: Document
    run: RunIdentity
    settings: JobSettings
    clock: Clock = utc_now

    @property
    def label(self) -> str:
        return task_label(self.task)

    def outcome(self, status: Outcome, message: str, cases_moved: int = 0, batch_cases: int = 0) -> TaskOutcome:
        return TaskOutcome(self.task["_id"], self.task.get("Task_Id"), status, message, cases_moved, batch_cases)


def timed(attempt: TaskAttempt, process: Callable[[TaskAttempt], TaskOutcome]) -> TaskOutcome:
    """Run `process` on the attempt; its outcome with the task's batch and the time it took."""
    started = time.monotonic()
    outcome = process(attempt)
    return outcome.timed(batch_of(attempt.task), time.monotonic() - started)


def end_in_error(attempt: TaskAttempt, reason: str, journal: tuple[BatchId, int] | None = None) -> TaskOutcome:
    """Record `reason` on the task, then close the task's journal (batch id, fence) when given.

    A task that cannot be marked stays in processing, its journal kept, for recovery.
    """
    reason = scrub(reason)
    log.error("%s ended in error: %s", attempt.label, reason)
    try:
        update_task_status(attempt.store, attempt.task["_id"], attempt.run, TaskStatus.ERROR, reason, attempt.clock())
    except (DatabaseUpdateError, ClaimLostError) as exc:
        log.critical("%s could not be marked error; it stays in processing until recovered: %s", attempt.label, exc)
    else:
        if journal is not None:
            _close_journal_quietly(attempt, *journal)
    return attempt.outcome(Outcome.ERROR, reason)


def _close_journal_quietly(attempt: TaskAttempt, batch_id: BatchId, fence: int) -> None:
    """A journal left behind only keeps the batch busy until the next run clears it."""
    try:
        close_journal(attempt.store, batch_id, fence)
    except DatabaseUpdateError as exc:
        log.warning("%s: %s; the next run clears it", attempt.label, exc)


def _failure_reason(exc: Exception, label: str) -> str:
    if isinstance(exc, TaskProcessingError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PyMongoError):
        return f"database error: {type(exc).__name__}: {exc}"
    log.exception("%s failed unexpectedly", label)
    return f"internal error: {type(exc).__name__}: {exc}"


def _left_to_the_run_that_took_over(attempt: TaskAttempt, exc: ClaimLostError) -> TaskOutcome:
    """This run lost the task (or its batch) to another run: it touches neither any more."""
    log.error("%s: %s; left to the run that took it over", attempt.label, exc)
    return attempt.outcome(Outcome.ERROR, scrub(str(exc)))


def undo_and_end(attempt: TaskAttempt, writes: PlannedWrites, fence: int, reason: str) -> TaskOutcome:
    """Journal the undo, undo every write of the task, then end it in error.

    When the undo itself fails the journal stays `undoing` and the task stays in processing:
    a later run restores the batch once the lease expired.
    """
    reason = scrub(reason)
    try:
        mark_journal_undoing(attempt.store, writes.batch_id, fence, reason)
        AmendWriteUnit(attempt.store, writes, fence).undo()
    except ClaimLostError as exc:
        return _left_to_the_run_that_took_over(attempt, exc)
    except DatabaseUpdateError as exc:
        log.critical("%s: %s; a later run restores batch %s after the lease", attempt.label, exc, writes.batch_id)
        return attempt.outcome(Outcome.ERROR, f"{reason}; undo incomplete, left for recovery")
    return end_in_error(attempt, f"{reason}; every write of the task was undone", journal=(writes.batch_id, fence))


def land_writes(attempt: TaskAttempt, writes: PlannedWrites, fence: int, note: str = "") -> TaskOutcome:
    """Apply journaled writes and complete the task; on a failed data write undo them and end in error.

    Once every data write landed the task is only ever rolled forward: when marking it
    completed fails, it stays in processing with its journal, and the next run after the
    lease completes it.
    """
    label = attempt.label
    started = time.monotonic()
    try:
        AmendWriteUnit(attempt.store, writes, fence).apply()
    except ClaimLostError as exc:
        return _left_to_the_run_that_took_over(attempt, exc)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the writes must be undone
        return undo_and_end(attempt, writes, fence, _failure_reason(exc, label) + note)
    log.info("%s: wrote %d case(s) and %d summary row(s), closed seq %s in %.2f s", label, len(writes.changes),
             len(writes.summary), writes.request.batch_seq, time.monotonic() - started)
    try:
        update_task_status(attempt.store, attempt.task["_id"], attempt.run, TaskStatus.COMPLETED,
                           writes.description + note, attempt.clock(), amended=amend_record(writes))
    except ClaimLostError as exc:
        return _left_to_the_run_that_took_over(attempt, exc)
    except DatabaseUpdateError as exc:
        message = (f"every write landed but the task could not be marked completed ({exc}); it stays in "
                   f"processing and the next run after its lease completes it")
        log.critical("%s: %s", label, message)
        return attempt.outcome(Outcome.ERROR, scrub(message))
    _close_journal_quietly(attempt, writes.batch_id, fence)
    log.info("%s completed: %s", label, writes.description + note)
    # The summary counts every case of the batch once.
    return attempt.outcome(Outcome.COMPLETED, writes.description + note, len(writes.changes),
                           sum(cell.count for cell in writes.summary))


def plan_batch(store: AmendStore, batch_id: BatchId, settings: JobSettings,
               label: str) -> tuple[BatchCases, list[Document], AmendPlan]:
    """Read a batch's amend request, cases and summary, and plan the request: (cases, summary rows, plan).

    The cases are read as the store says (AmendStore.batch_read): all of them, or on the server's side,
    then all of them when that cannot vouch for the plan (logged with the reason). Logs one line per
    phase with its counts and duration, never one per case.
    """
    request = fetch_transaction_details(store, batch_id)
    push_down = store.batch_read is BatchRead.PUSH_DOWN
    try:
        cases = _read_cases(store, batch_id, request, settings, label, push_down)
    except FullReadNeeded as reason:
        cases, push_down = _read_whole_batch(store, batch_id, request, settings, label, reason), False
    summary_rows = fetch_summary_rows(store, batch_id)
    existing_cells = summary_cell_keys(summary_rows, batch_id)
    try:
        plan = _plan(batch_id, request, cases, existing_cells, settings, label)
    except FullReadNeeded as reason:
        if not push_down:
            raise
        cases = _read_whole_batch(store, batch_id, request, settings, label, reason)
        plan = _plan(batch_id, request, cases, existing_cells, settings, label)
    return cases, summary_rows, plan


def _read_whole_batch(store: AmendStore, batch_id: BatchId, request: AmendRequest, settings: JobSettings,
                      label: str, reason: FullReadNeeded) -> BatchCases:
    log.info("%s: reading the whole batch %s: %s", label, batch_id, reason)
    return _read_cases(store, batch_id, request, settings, label, push_down=False)


def _read_cases(store: AmendStore, batch_id: BatchId, request: AmendRequest, settings: JobSettings, label: str,
                push_down: bool) -> BatchCases:
    started = time.monotonic()
    with collector_paused():
        if push_down:
            cases = fetch_batch_cells(store, batch_id, request.distributions, settings.min_share_kept)
        else:
            # The bar shows the share read and the time left; the count it needs is only asked for when shown.
            total = fetch_case_count(store, batch_id) if progress_shown() else None
            cases = fetch_cases_for_batch(store, batch_id, lambda cursor: progress_bar(
                cursor, f"reading batch {batch_id}", "case", total=total))
    batch_size = sum(map(len, cases.holdings.values()))
    log.info("%s: read %s case(s) in %d cell(s) of batch %s in %.2f s", label,
             f"{len(cases.assignment)} of the {batch_size}" if push_down else batch_size, len(cases.holdings),
             batch_id, time.monotonic() - started)
    return cases


def _plan(batch_id: BatchId, request: AmendRequest, cases: BatchCases, existing_cells: set[Cell],
          settings: JobSettings, label: str) -> AmendPlan:
    started = time.monotonic()
    with collector_paused():
        plan = plan_amend(batch_id, request, cases, existing_cells, settings.min_share_kept)
    log.info("%s: planned %d distribution(s): %d case(s) to reassign, %d summary cell(s) in %.2f s", label,
             len(request.distributions), len(plan.changes), len(plan.summary), time.monotonic() - started)
    return plan


def read_and_plan(attempt: TaskAttempt, batch_id: BatchId) -> PlannedWrites:
    """The read phase of a task: the plan, with the prior values an undo needs and the _id of every
    summary row it writes (existing rows keep theirs; a new row's is chosen here)."""
    _, summary_rows, plan = plan_batch(attempt.store, batch_id, attempt.settings, attempt.label)
    case_priors = fetch_case_prior_values(attempt.store, batch_id, [change.case_id for change in plan.changes],
                                          CASE_CHUNK_SIZE)
    row_ids: dict[Cell, object] = {Cell(row["DRC_Id"], row["RTOM"]): row["_id"] for row in summary_rows}
    row_ids.update({Cell(cell.drc, cell.rtom): ObjectId() for cell in plan.summary
                    if Cell(cell.drc, cell.rtom) not in row_ids})
    return PlannedWrites(**vars(plan), case_priors=case_priors, summary_rows=tuple(summary_rows),
                         summary_row_ids=row_ids, now=attempt.clock(), label=attempt.label,
                         task_object_id=attempt.task["_id"])


def process_single_batch(attempt: TaskAttempt) -> TaskOutcome:
    """Validate, plan and write one claimed task: it ends `completed`, or `error` with nothing of it left.

    The batch's journal, carrying a new fencing token, is opened before the batch is read,
    so no other task amends the batch meanwhile; the claim is then renewed, which proves no
    run took the task over before the journal existed (a run that takes it over later finds
    the journal and takes it over too, fencing this run out). The journal holds the planned
    writes and the prior values before the first data write, so that a crash at any point
    can be recovered.
    """
    store, task, run, clock = attempt.store, attempt.task, attempt.run, attempt.clock
    try:
        fetch_and_validate_template_task(store, task, attempt.settings.template_task_id)
        batch_id = task_batch_id(task)
        fence = issue_fence(store)
        open_journal(store, batch_id, task, run, clock(), fence)
    except BatchBusyError as exc:
        release_task(store, task["_id"], run, clock(), f"Waiting for a later run: {exc}")
        log.info("%s deferred: %s", attempt.label, exc)
        return attempt.outcome(Outcome.DEFERRED, str(exc))
    except Exception as exc:  # noqa: BLE001 - any failure before the journal ends the task, nothing written
        return end_in_error(attempt, _failure_reason(exc, attempt.label) + "; nothing was written")

    try:
        writes = read_and_plan(attempt, batch_id)
        renew_claim(store, task["_id"], run, clock(), attempt.settings.lease)
        record_planned_writes(store, batch_id, fence, writes)
    except ClaimLostError as exc:
        _close_journal_quietly(attempt, batch_id, fence)
        return _left_to_the_run_that_took_over(attempt, exc)
    except Exception as exc:  # noqa: BLE001 - no data was written yet
        return end_in_error(attempt, _failure_reason(exc, attempt.label) + "; nothing was written",
                            journal=(batch_id, fence))
    return land_writes(attempt, writes, fence)


# --- recovery of runs that stopped ------------------------------------------------------

def recover_task(attempt: TaskAttempt, requeued: bool = False) -> TaskOutcome:
    """Bring a task this run now holds to a consistent end (see docs/design.md, "Crash recovery"): one whose
    claim went stale, or one an operator set back to open while its journal was unfinished (`requeued`).

    The task's journal is taken over first, with a new fencing token, so the run that wrote
    it can write nothing more; the claim is then renewed, which proves that no run took the task
    over before this run had its journal (a run that stalled after claiming a re-queued task must
    not undo what the run that recovered the task meanwhile completed). Phase `writing`: roll
    forward, the writes are idempotent; the task ends completed. Phase `undoing`: the restore is
    finished; the task ends in error, or, re-queued, is processed afresh. Nothing journaled or
    only planned: nothing was written; the task ends in error, or, re-queued, is processed afresh.
    """
    store, run = attempt.store, attempt.run
    prefix = f"recovered by {run.label} after the run that claimed it stopped"
    fence = issue_fence(store)
    journal = take_over_journal(store, {"task_object_id": attempt.task["_id"]}, run, fence)
    renew_claim(store, attempt.task["_id"], run, attempt.clock(), attempt.settings.lease)
    if journal is not None and "writes" in journal and journal.get("phase") == JournalPhase.WRITING:
        note = (f" (an earlier attempt left its writes unfinished when the task was re-queued; {run.label} "
                f"finished them)" if requeued else f" ({prefix}; its writes were finished)")
        return land_writes(attempt, planned_writes_from_journal(journal), fence, note=note)
    if journal is not None and "writes" in journal and journal.get("phase") == JournalPhase.UNDOING:
        if not requeued:
            return undo_and_end(attempt, planned_writes_from_journal(journal), fence,
                                f"{journal.get('error')} ({prefix})")
        AmendWriteUnit(store, planned_writes_from_journal(journal), fence).undo()
    if requeued:
        if journal is not None:
            close_journal(store, journal["_id"], fence)
        log.info("%s: the earlier attempt's journal is finished; processing the re-queued task", attempt.label)
        return process_single_batch(attempt)
    return end_in_error(attempt, f"Interrupted before any write, nothing changed; {prefix}. "
                                 "Queue the amend again to retry it.",
                        journal=None if journal is None else (journal["_id"], fence))


def finish_orphaned_journal(store: AmendStore, journal: Document, task_status: str | None,
                            run: RunIdentity) -> None:
    """A journal whose task already ended (or is gone) is finished, never just deleted: rolled forward
    when its task completed, otherwise restored, so the batch agrees with what the task says (`task_status`,
    read with the journal: a journal that changed since is left to the next run)."""
    fence = issue_fence(store)
    # Only the journal as it was read (its token), or this run's own takeover retried after a lost reply: a
    # newer journal of the same task (re-queued and processed meanwhile) is judged by a status read before it.
    taken = take_over_journal(store, {"_id": journal["_id"], "task_object_id": journal.get("task_object_id"),
                                      "$or": [{"fence": journal.get("fence")}, {"fence": fence}]}, run, fence)
    if taken is None:
        held = journal.get("fence")
        if isinstance(held, int) and not isinstance(held, bool) and held > fence:
            # No run can ever take it: its batch would wait for ever, every run saying only "deferred".
            log.critical("the journal of batch %s carries fencing token %s, higher than any this database issues "
                         "now (%s): %s was lowered or reset; set its value above %s (docs/design.md, Fencing), "
                         "then the next run finishes the journal",
                         journal["_id"], held, fence, COUNTERS_COLLECTION, held)
        return
    if "writes" in taken and taken.get("phase") in (JournalPhase.WRITING, JournalPhase.UNDOING):
        unit = AmendWriteUnit(store, planned_writes_from_journal(taken), fence)
        if taken["phase"] == JournalPhase.WRITING and task_status == TaskStatus.COMPLETED:
            unit.apply()
        else:
            unit.undo()
    close_journal(store, taken["_id"], fence)
    log.warning("finished the journal (phase %s) of batch %s left by amend task %s (%s), which is %s",
                taken.get("phase"), taken["_id"], taken.get("Task_Id"), taken.get("task_object_id"),
                task_status or "gone")


def recover_interrupted_tasks(store: AmendStore, settings: JobSettings, run: RunIdentity, clock: Clock = utc_now,
                              task_id: int | None = None, stop: StopRequest = NO_STOP) -> list[TaskOutcome]:
    """Bring every task a stopped run left behind to an end before new work starts.

    Tasks in processing whose claim is stale are taken over, one run each. Then every journal
    left without a live claim is finished: a re-queued (open) task is claimed and finished
    first; the journal of a task that already ended is rolled forward or restored. Once `stop`
    has a reason, nothing more is taken over: the next run does it.
    """
    now = clock()
    outcomes: list[TaskOutcome] = []
    for reference in fetch_expired_claims(store, now, settings.lease, settings.clock_skew, task_id):
        if stop.reason():
            return outcomes
        task = take_over_expired_claim(store, reference, run, clock(), settings.lease)
        if task is None:
            continue
        log.warning("%s: %s; recovering it", task_label(task),
                    stale_claim_reason(reference, now, settings.lease, settings.clock_skew))
        outcomes.append(timed(TaskAttempt(store, task, run, settings, clock), _recover_or_report))
    for journal in fetch_journals(store):
        if stop.reason():
            return outcomes
        if task_id is not None and journal.get("Task_Id") != task_id:
            continue
        task = fetch_task(store, journal.get("task_object_id"))
        status = None if task is None else task.get("task_status")
        if status == TaskStatus.PROCESSING:
            continue  # held; recovered once its claim is stale
        if task is not None and status == TaskStatus.OPEN:
            claimed = claim_task(store, task["_id"], run, clock(), settings.lease)
            if claimed is not None:
                log.warning("%s was re-queued while its journal of batch %s was unfinished; finishing that first",
                            task_label(claimed), journal["_id"])
                outcomes.append(timed(TaskAttempt(store, claimed, run, settings, clock),
                                      partial(_recover_or_report, requeued=True)))
            continue
        try:
            finish_orphaned_journal(store, journal, status, run)
        except Exception as exc:  # noqa: BLE001 - one unreadable journal must not stop the run
            log.critical("the journal of batch %s could not be finished; the batch stays reserved: %s",
                         journal["_id"], _failure_reason(exc, f"the journal of batch {journal['_id']}"))
    return outcomes


def _recover_or_report(attempt: TaskAttempt, requeued: bool = False) -> TaskOutcome:
    try:
        return recover_task(attempt, requeued)
    except ClaimLostError as exc:
        return _left_to_the_run_that_took_over(attempt, exc)
    except Exception as exc:  # noqa: BLE001 - one unrecoverable journal must not stop the run
        reason = _failure_reason(exc, attempt.label)
        log.critical("%s could not be recovered, it stays in processing: %s", attempt.label, reason)
        return attempt.outcome(Outcome.ERROR, f"recovery failed: {reason}")


def amend_task_processing(store: AmendStore, settings: JobSettings, clock: Clock = utc_now,
                          run: RunIdentity | None = None, task_id: int | None = None,
                          started: datetime | None = None, stop: StopRequest = NO_STOP) -> RunReport:
    """Recover interrupted tasks, then process every open amend task once, oldest first
    (only the amend task(s) with Task_Id `task_id` when given: a TaskValidationError before anything is
    written when no amend task has it). `started`: when the run began, if before this call (main.py counts
    the loading of the embedded file). Once `stop` gives a reason (a signal, the time limit), the task in
    hand is finished and no other is claimed."""
    statuses = None if task_id is None else fetch_amend_task_statuses(store, task_id)
    run = run or RunIdentity.new()
    report = RunReport(run=run, started=started or clock())
    report.outcomes.extend(recover_interrupted_tasks(store, settings, run, clock, task_id, stop))
    open_tasks = fetch_open_tasks(store, task_id)
    log.info("%d open amend task(s)", len(open_tasks))
    if statuses is not None and not open_tasks and not report.outcomes:
        log.warning(f"amend task {task_id} is {', '.join(statuses)}: nothing to do")
    for position, reference in enumerate(open_tasks):
        if reason := stop.reason():
            report.stop_reason, report.not_started = reason, len(open_tasks) - position
            log.warning("%s: %d open amend task(s) left for the next run", reason, report.not_started)
            break
        task = claim_task(store, reference["_id"], run, clock(), settings.lease)
        if task is None:
            report.skipped += 1
            log.info("task %s (%s) was claimed by another run; skipped", reference.get("Task_Id"), reference["_id"])
            continue
        report.outcomes.append(timed(TaskAttempt(store, task, run, settings, clock), process_single_batch))
    report.ended = clock()
    return report
