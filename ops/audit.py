"""The consistency audit of `batch_monitor.py audit`: pure rules over what was read of one batch.

An auditor that says "consistent" of a corrupt batch is worse than none, so every value the job
would refuse as input, and every state the job itself could not have produced, is a finding:

- the cases: each read as the job reads it (a case the job would refuse is a finding naming it);
- the summary rows: each a valid row of this very batch (its batch id exactly the batch, codes,
  a Count that is a non-negative integer, a Tot_Arrease that is a number, 0 with a Count of 0),
  one per cell holding cases, each saying what the cases say; a row of a cell without cases says 0;
- the amend seqs and the completed amend tasks: every closed amend seq closed by exactly one
  completed task, every completed task's seq closed; a task completed by this release names its
  seq exactly (transaction, position and close time), so a reused or renumbered number is no finding;
- the cases and the tasks: a case amended by this release names its task; a task that did not
  complete has no such case (else half of its writes were left, its journal lost), and no task has
  more such cases than it moved (else it was applied twice);
- the open amend request: one, valid as the job validates it.

A batch whose journal is open is not audited (its writes are under way, or left for the next run
to finish): the audit says so and does not call it consistent.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from amend_plan import SummaryCell
from amend_store import AMENDED_BY_FIELD, TaskStatus
from amounts import cell_total, from_stored, is_amount, kind_of_amounts, same_amount
from balance_resources import Cell
from database_checks import (
    is_batch_id,
    open_amend_seqs,
    read_case,
    require_code,
    select_amend_request,
    validate_distributions,
)
from utils.Custom_Exceptions import TaskValidationError
from utils.documents import BatchId, Document

MAX_NAMED = 5  # a finding names at most this many cases or rows; it counts them all


def _named(items: Sequence[Any]) -> str:
    shown = ", ".join(map(str, items[:MAX_NAMED]))
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")


# --- the cases ---------------------------------------------------------------------------------

@dataclass
class CaseFigures:
    """What the audit reads of a batch's cases: the cells as the job sums them, the cases the job would
    refuse, and how many cases name each amend task (AMENDED_BY_FIELD)."""
    cells: list[SummaryCell] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    amended_by: Counter[Any] = field(default_factory=Counter)

    @property
    def summable(self) -> bool:
        return not self.refused


def read_cases(documents: Iterable[Document], batch_id: BatchId) -> CaseFigures:
    """The batch's cases, streamed: each read as the job reads it (database_checks.read_case), summed per
    (current DRC, RTOM) cell exactly as the job sums them (amend_plan.cell_total)."""
    figures = CaseFigures()
    amounts: dict[Cell, list[Any]] = defaultdict(list)
    seen: set[int] = set()
    for document in documents:
        try:
            case_id, drc, rtom, amount = read_case(document, batch_id)
        except TaskValidationError as exc:
            figures.refused.append(str(exc))
            continue
        if case_id in seen:
            figures.refused.append(f"Case_Id {case_id} appears more than once in batch {batch_id}")
            continue
        seen.add(case_id)
        amounts[Cell(drc, rtom)].append(amount)
        if document.get(AMENDED_BY_FIELD) is not None:
            figures.amended_by[document[AMENDED_BY_FIELD]] += 1
    kind = kind_of_amounts(amount for cell_amounts in amounts.values() for amount in cell_amounts)
    for cell in sorted(amounts):
        try:
            total = cell_total(amounts[cell], kind, f"DRC {cell.drc} RTOM {cell.rtom}")
        except TaskValidationError as exc:
            figures.refused.append(str(exc))
            continue
        figures.cells.append(SummaryCell(cell.drc, cell.rtom, len(amounts[cell]), total))
    return figures


def case_findings(batch_id: BatchId, figures: CaseFigures) -> list[str]:
    if not figures.refused:
        return []
    return [f"batch {batch_id}: {len(figures.refused)} case(s) the job would refuse, so its summary cannot be "
            f"checked: {_named(figures.refused)}"]


# --- the summary rows --------------------------------------------------------------------------

def row_problem(row: Document, batch_id: BatchId) -> str | None:
    """Why a summary row is not one the job could have written for this batch, or None."""
    value = row.get("Case_Distribution_Batch_ID")
    if not is_batch_id(value, batch_id):
        return f"its Case_Distribution_Batch_ID is {value!r} ({type(value).__name__}), not exactly {batch_id!r}"
    try:
        require_code(row.get("DRC_Id"), "DRC_Id")
        require_code(row.get("RTOM"), "RTOM")
    except TaskValidationError as exc:
        return str(exc)
    count, total = row.get("Count"), row.get("Tot_Arrease")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return f"its Count is {count!r} ({type(count).__name__}), not a non-negative integer"
    if not is_amount(total):
        return f"its Tot_Arrease is {from_stored(total)!r} ({type(total).__name__}), not a number"
    if count == 0 and from_stored(total) != 0:
        return f"it counts 0 cases but its Tot_Arrease is {from_stored(total)!r}"
    return None


def summary_findings(batch_id: BatchId, figures: CaseFigures, rows: Sequence[Document]) -> list[str]:
    """What the batch's summary rows say that its cases (as the job sums them) do not."""
    found = []
    valid: dict[tuple[Any, Any], list[Document]] = defaultdict(list)
    for row in rows:
        problem = row_problem(row, batch_id)
        if problem:
            found.append(f"batch {batch_id}: summary row {row.get('_id')} (DRC {row.get('DRC_Id')} RTOM "
                         f"{row.get('RTOM')}): {problem}")
        else:
            valid[row["DRC_Id"], row["RTOM"]].append(row)
    if not figures.summable:
        return found
    computed = {(cell.drc, cell.rtom): cell for cell in figures.cells}
    for drc, rtom in sorted(set(valid) | set(computed), key=str):
        where = f"batch {batch_id}: summary of DRC {drc} RTOM {rtom}"
        cell, cell_rows = computed.get((drc, rtom), SummaryCell(drc, rtom, 0, 0)), valid.get((drc, rtom), [])
        if not cell_rows:
            if (drc, rtom) in computed:
                found.append(f"{where} is missing; the cases hold {cell.count} there")
        elif len(cell_rows) > 1:
            found.append(f"{where} has {len(cell_rows)} rows")
        elif cell_rows[0]["Count"] != cell.count:
            found.append(f"{where} says Count {cell_rows[0]['Count']!r}; the cases hold {cell.count}")
        elif cell.count and not same_amount(cell_rows[0]["Tot_Arrease"], cell.total_arrears):
            found.append(f"{where} says Tot_Arrease {from_stored(cell_rows[0]['Tot_Arrease'])!r}; the cases sum to "
                         f"{from_stored(cell.total_arrears)!r}")
    return found


# --- the amend seqs, the amend request and the tasks -------------------------------------------

@dataclass(frozen=True)
class ClosedSeq:
    """A closed amend seq: where it is (its transaction and position), its number and close time."""
    transaction_id: Any
    index: int
    batch_seq: Any
    closed_on: Any

    @property
    def label(self) -> str:
        return f"amend seq {self.batch_seq} (batch_seq_details[{self.index}] of transaction {self.transaction_id})"


def _task_name(task: Document) -> str:
    return f"amend task {task.get('Task_Id')} ({task.get('_id')})"


def transaction_findings(batch_id: BatchId, transactions: Sequence[Document]) -> tuple[list[str], list[ClosedSeq]]:
    """(what is malformed in the batch's transactions or its open amend request, its closed amend seqs)."""
    found, closed = [], []
    requests = 0
    for transaction in transactions:
        where = f"batch {batch_id}: transaction {transaction.get('_id')}"
        if not is_batch_id(transaction.get("Case_Distribution_Batch_ID"), batch_id):
            found.append(f"{where}: its Case_Distribution_Batch_ID is "
                         f"{transaction.get('Case_Distribution_Batch_ID')!r}, not exactly {batch_id!r}")
            continue
        try:
            open_seqs = open_amend_seqs(transaction, batch_id)
        except TaskValidationError as exc:
            found.append(f"batch {batch_id}: {exc}")
            continue
        for index, seq in enumerate(transaction["batch_seq_details"]):
            if seq.get("action_type") != "amend" or seq.get("CRD_Distribution_Status") == "open":
                continue
            if seq.get("CRD_Distribution_Status") != "close":
                found.append(f"{where}: amend seq {seq.get('batch_seq')!r} has CRD_Distribution_Status "
                             f"{seq.get('CRD_Distribution_Status')!r}, neither open nor close")
                continue
            label = f"{where}: closed amend seq {seq.get('batch_seq')!r}"
            if not isinstance(seq.get("CRD_Distribution_Status_on"), datetime):
                found.append(f"{label} has no close time (CRD_Distribution_Status_on "
                             f"{seq.get('CRD_Distribution_Status_on')!r}); the job always writes one")
            try:
                validate_distributions(seq.get("array_of_distributions"), label)
            except TaskValidationError as exc:
                found.append(f"{exc}: the job would never have applied it")
            closed.append(ClosedSeq(transaction.get("_id"), index, seq.get("batch_seq"),
                                    seq.get("CRD_Distribution_Status_on")))
        if open_seqs and transaction.get("summery_status") == "open":
            requests += 1
            try:
                select_amend_request(transaction, batch_id)
            except TaskValidationError as exc:
                found.append(f"{where}: the job would refuse its open amend request: {exc}")
    if requests > 1:
        found.append(f"batch {batch_id}: {requests} open transactions hold an open amend seq; the job refuses "
                     f"such a batch")
    return found, closed


def _stored_batch(task: Document) -> Any:
    parameters = task.get("parameters")
    return parameters.get("Case_Distribution_Batch_ID") if isinstance(parameters, Mapping) else parameters


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _names_exactly(task: Document, seq: ClosedSeq) -> bool:
    amended = task.get("amended_seq")
    # The close time identifies the close; the number or the position confirms it (a seq inserted before it
    # by hand shifts the position, a renumbering changes the number, rarely both).
    return isinstance(amended, dict) and amended.get("transaction_id") == seq.transaction_id \
        and seq.closed_on is not None and amended.get("closed_dtm") == seq.closed_on \
        and (amended.get("index") == seq.index or amended.get("batch_seq") == seq.batch_seq)


def seq_findings(batch_id: BatchId, closed: Sequence[ClosedSeq], completed_tasks: Sequence[Document]) -> list[str]:
    """Where the batch's closed amend seqs and its completed amend tasks disagree.

    A task completed by this release names its seq exactly (`amended_seq`); one of the release before
    only by number (`amended_batch_seq`), matched with a closed seq of that number no exact task took;
    tasks of earlier releases record no seq, and can only be counted against the closed seqs left.
    """
    found = [finding for task in completed_tasks for finding in _task_record_findings(batch_id, task)]
    closers: dict[ClosedSeq, list[Document]] = defaultdict(list)
    releases: dict[str, list[Document]] = {"exact": [], "by number": [], "unrecorded": []}
    for task in completed_tasks:
        releases[_record_kind(task)].append(task)
    for task in releases["exact"]:
        seq = next((seq for seq in closed if _names_exactly(task, seq)), None)
        if seq is None:
            found.append(_not_held_closed(batch_id, task))
        else:
            closers[seq].append(task)
    found += [finding for task in releases["by number"] for finding in _match_byfrom_stored(batch_id, task, closed,
                                                                                        closers)]
    return found + _closer_findings(batch_id, closed, closers, releases["unrecorded"])


def _record_kind(task: Document) -> str:
    """How a completed task records its seq: exactly (this release), by number (the one before), or not."""
    if isinstance(task.get("amended_seq"), dict):
        return "exact"
    return "by number" if "amended_batch_seq" in task else "unrecorded"


def _match_byfrom_stored(batch_id: BatchId, task: Document, closed: Sequence[ClosedSeq],
                     closers: dict[ClosedSeq, list[Document]]) -> list[str]:
    """A task of the release before: the closed seq of its number that no other task took (or any of them)."""
    candidates = [seq for seq in closed if seq.batch_seq == task["amended_batch_seq"]]
    free = [seq for seq in candidates if seq not in closers] or candidates
    if not free:
        return [f"batch {batch_id}: {_task_name(task)} completed amend seq {task['amended_batch_seq']}, which the "
                f"transaction does not hold closed"]
    closers[free[0]].append(task)
    return []


def _task_record_findings(batch_id: BatchId, task: Document) -> list[str]:
    """What a completed task records that the job could not have written: a batch id not exactly the
    batch, an amended_cases that is no count."""
    found = []
    if "parameters" in task and not is_batch_id(_stored_batch(task), batch_id):
        found.append(f"batch {batch_id}: {_task_name(task)} has Case_Distribution_Batch_ID "
                     f"{_stored_batch(task)!r}, not exactly {batch_id!r}: the job refuses such a task")
    if isinstance(task.get("amended_seq"), dict) and not _is_count(task.get("amended_cases")):
        found.append(f"batch {batch_id}: {_task_name(task)} records amended_cases "
                     f"{task.get('amended_cases')!r}, not a count of cases")
    return found


def _not_held_closed(batch_id: BatchId, task: Document) -> str:
    amended = task["amended_seq"]
    return (f"batch {batch_id}: {_task_name(task)} completed amend seq {amended.get('batch_seq')} "
            f"(batch_seq_details[{amended.get('index')}] of transaction {amended.get('transaction_id')}, closed "
            f"{amended.get('closed_dtm')}), which the transaction does not hold closed")


def _closer_findings(batch_id: BatchId, closed: Sequence[ClosedSeq], closers: Mapping[ClosedSeq, list[Document]],
                     unrecorded: Sequence[Document]) -> list[str]:
    """Seqs closed by more than one task, and the closed seqs no task accounts for against the tasks of
    earlier releases (which record no seq)."""
    found = [f"batch {batch_id}: {seq.label} was closed by {len(tasks)} completed tasks "
             f"({', '.join(map(_task_name, tasks))}): the batch may have been amended twice"
             for seq, tasks in closers.items() if len(tasks) > 1]
    left = [seq for seq in closed if seq not in closers]
    if len(left) > len(unrecorded):
        found.append(f"batch {batch_id}: {_named([seq.label for seq in left])} closed, but only "
                     f"{len(unrecorded)} completed task(s) could have closed them")
    elif len(unrecorded) > len(left):
        found.append(f"batch {batch_id}: {len(unrecorded)} completed amend task(s) "
                     f"({_named([_task_name(task) for task in unrecorded])}) for {len(left)} closed seq(s) none "
                     f"records")
    return found


def amended_case_findings(batch_id: BatchId, amended_by: Mapping[Any, int],
                          tasks: Mapping[Any, Document | None]) -> list[str]:
    """Cases that name a task (AMENDED_BY_FIELD) against that task: it must have completed, and have moved
    at least as many cases as still name it (a later amend may have moved some of them again)."""
    found = []
    for task_id, count in sorted(amended_by.items(), key=lambda item: str(item[0])):
        task = tasks.get(task_id)
        if task is None:
            found.append(f"batch {batch_id}: {count} case(s) carry the amend of task {task_id}, which does not "
                         f"exist: writes of an amend no task accounts for")
        elif "parameters" in task and not is_batch_id(_stored_batch(task), batch_id):
            found.append(f"batch {batch_id}: {count} case(s) carry the amend of {_task_name(task)}, a task of "
                         f"batch {_stored_batch(task)!r}: writes of an amend no task of this batch accounts for")
        elif task.get("task_status") != TaskStatus.COMPLETED and not isinstance(task.get("amended_seq"), dict):
            found.append(f"batch {batch_id}: {count} case(s) carry the amend of {_task_name(task)}, which is "
                         f"{str(task.get('task_status'))!r}, not completed: half of an amend's writes were left, its "
                         f"journal lost; a new attempt would move cases again")
        elif _is_count(task.get("amended_cases")) and count > task["amended_cases"]:
            found.append(f"batch {batch_id}: {count} case(s) carry the amend of {_task_name(task)}, which moved "
                         f"{task['amended_cases']}: the amend was applied more than once")
    return found
