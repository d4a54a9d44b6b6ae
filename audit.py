"""The consistency audit of `batch_monitor.py audit`: pure rules over what was read of one batch.

A batch is consistent when its summary rows say what its cases say (one row per (DRC, RTOM)
cell holding cases, with their Count and Tot_Arrease; a row of a cell without cases says 0),
and when its amend seqs and amend tasks agree: every closed amend seq was closed by exactly
one completed task, and no completed task names a seq that is still open.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128

from amend_plan import SummaryCell
from amend_store import SeqStatus

Document = dict[str, Any]
HALF_A_CENT = 0.005  # float totals are rounded to cents by the job, and summed in another order by a server


def _number(value: Any) -> Any:
    return value.to_decimal() if isinstance(value, Decimal128) else value


def same_amount(stored: Any, computed: Any) -> bool:
    """Whether a stored Tot_Arrease equals the total of the cases: exactly for integers and decimals,
    within half a cent when either is a float."""
    stored, computed = _number(stored), _number(computed)
    if isinstance(stored, bool) or not isinstance(stored, (int, float, Decimal)):
        return False
    if isinstance(stored, float) or isinstance(computed, float):
        return math.isclose(float(stored), float(computed), rel_tol=0, abs_tol=HALF_A_CENT)
    return bool(stored == computed)


def summary_mismatches(batch_id: Any, from_cases: Sequence[SummaryCell], rows: Sequence[Document]) -> list[str]:
    """What the batch's summary rows say that its cases (their cells, as the job sums them) do not."""
    found = []
    by_cell: dict[tuple[Any, Any], list[Document]] = defaultdict(list)
    for row in rows:
        by_cell[row.get("DRC_Id"), row.get("RTOM")].append(row)
    computed = {(figures.drc, figures.rtom): figures for figures in from_cases}
    for drc, rtom in sorted(set(by_cell) | set(computed), key=str):
        where = f"batch {batch_id}: summary of DRC {drc} RTOM {rtom}"
        figures, cell_rows = computed.get((drc, rtom), SummaryCell(drc, rtom, 0, 0)), by_cell.get((drc, rtom), [])
        if not cell_rows:
            found.append(f"{where} is missing; the cases hold {figures.count} there")
            continue
        if len(cell_rows) > 1:
            found.append(f"{where} has {len(cell_rows)} rows")
            continue
        (row,) = cell_rows
        if row.get("Count") != figures.count:
            found.append(f"{where} says Count {row.get('Count')!r}; the cases hold {figures.count}")
        elif figures.count and not same_amount(row.get("Tot_Arrease"), figures.total_arrears):
            found.append(f"{where} says Tot_Arrease {_number(row.get('Tot_Arrease'))!r}; the cases sum to "
                         f"{_number(figures.total_arrears)!r}")
    return found


def _closed_amend_seqs(transactions: Sequence[Document]) -> tuple[list[Any], set[Any]]:
    """(numbers of the closed amend seqs, numbers of the open ones) of the batch's transactions."""
    closed, still_open = [], set()
    for transaction in transactions:
        seqs = transaction.get("batch_seq_details")
        for seq in seqs if isinstance(seqs, list) else []:
            if isinstance(seq, dict) and seq.get("action_type") == "amend":
                status = seq.get("CRD_Distribution_Status")
                if status == SeqStatus.CLOSE:
                    closed.append(seq.get("batch_seq"))
                elif status == SeqStatus.OPEN:
                    still_open.add(seq.get("batch_seq"))
    return closed, still_open


def seq_mismatches(batch_id: Any, transactions: Sequence[Document], completed_tasks: Sequence[Document]) -> list[str]:
    """Where the batch's amend seqs and its completed amend tasks disagree.

    A task completed by this release records the seq it closed (`amended_batch_seq`); tasks of
    earlier releases do not, and can only be counted against the closed seqs left unmatched.
    """
    found = []
    closed, still_open = _closed_amend_seqs(transactions)
    closing: dict[Any, list[Document]] = defaultdict(list)
    unrecorded = []
    for task in completed_tasks:
        if "amended_batch_seq" in task:
            closing[task["amended_batch_seq"]].append(task)
        else:
            unrecorded.append(task)

    def names(tasks: Sequence[Document]) -> str:
        return ", ".join(f"{task.get('Task_Id')} ({task.get('_id')})" for task in tasks)

    for number, count in sorted(Counter(closed).items(), key=str):
        if count > 1:
            found.append(f"batch {batch_id}: amend seq {number} is closed {count} times")
    for number, tasks in sorted(closing.items(), key=str):
        if len(tasks) > 1:
            found.append(f"batch {batch_id}: amend seq {number} was closed by {len(tasks)} completed tasks "
                         f"({names(tasks)}): the batch may have been amended twice")
        if number in still_open:
            found.append(f"batch {batch_id}: amend task {names(tasks)} completed seq {number}, which is still open")
        elif number not in closed:
            found.append(f"batch {batch_id}: amend task {names(tasks)} completed seq {number}, which the "
                         f"transaction does not hold")
    unmatched = sorted({number for number in closed if number not in closing}, key=str)
    if len(unmatched) > len(unrecorded):
        found.append(f"batch {batch_id}: amend seq(s) {', '.join(map(str, unmatched))} closed, but only "
                     f"{len(unrecorded)} completed task(s) could have closed them")
    elif len(unrecorded) > len(unmatched):
        found.append(f"batch {batch_id}: {len(unrecorded)} completed amend task(s) ({names(unrecorded)}) "
                     f"for {len(unmatched)} closed seq(s) none records")
    return found
