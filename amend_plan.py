"""Pure planning around balance_resources: from validated inputs to the exact writes of a task."""

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from amounts import AmountKind, CellSum, amounts_total, without
from balance_resources import Cell, Holdings, LowestCases, Move, apply_moves, plan_transfer
from utils.Custom_Exceptions import ResourceBalanceError
from utils.documents import BatchId


@dataclass(frozen=True)
class Distribution:
    """One entry of an amend seq's array_of_distributions, validated."""
    rtom: str
    donor_drc_id: str
    receiver_drc_id: str
    transfer_count: int


@dataclass(frozen=True)
class AmendRequest:
    """The open amend seq a task processes, identified by its position in batch_seq_details
    (batch_seq numbers are not unique: an earlier, closed seq may carry the same number)."""
    transaction_id: Any
    batch_seq: int
    seq_index: int
    distributions: tuple[Distribution, ...]
    prior_status_on: Any
    prior_status_on_present: bool
    prior_summery_status: str | None
    closes_transaction: bool


@dataclass(frozen=True)
class CaseChange:
    case_id: int
    old_drc: str
    new_drc: str


@dataclass(frozen=True)
class SummaryCell:
    drc: str
    rtom: str
    count: int
    total_arrears: Any


@dataclass(frozen=True)
class BatchCases:
    """A batch's cases as read, in the shapes planning needs: every case (database_checks.build_case_maps),
    or only the cases that can move and each cell's count and sum (database_checks.fetch_batch_cells).

    assignment: Case_Id -> (current DRC, RTOM); arrears: Case_Id -> amount (int, float or
    decimal.Decimal); holdings: (DRC, RTOM) -> [Case_Id], or its LowestCases; amounts: (DRC, RTOM) ->
    [amount], or its CellSum; amount_kind: how the totals are summed.
    """
    assignment: dict[int, Cell]
    arrears: dict[int, Any]
    holdings: Holdings
    amounts: Mapping[Cell, list[Any] | CellSum]
    amount_kind: AmountKind


@dataclass(frozen=True)
class AmendPlan:
    batch_id: BatchId
    request: AmendRequest
    changes: tuple[CaseChange, ...]
    summary: tuple[SummaryCell, ...]
    description: str


def _each_distribution(holdings: Holdings, distributions: Sequence[Distribution],
                       min_share_kept: Fraction) -> Iterator[tuple[Holdings, list[Move]]]:
    """(the index after it, its moves) of each distribution applied to the result of the previous one
    (SPEC step 7)."""
    for number, entry in enumerate(distributions, start=1):
        try:
            moves = plan_transfer(holdings, entry.receiver_drc_id, entry.donor_drc_id, entry.rtom,
                                  entry.transfer_count, min_share_kept)
        except ResourceBalanceError as exc:
            if len(distributions) == 1:
                raise
            raise ResourceBalanceError(f"distribution {number} of {len(distributions)}: {exc}") from exc
        holdings = apply_moves(holdings, moves)
        yield holdings, moves


def apply_distributions(holdings: Holdings, distributions: Sequence[Distribution],
                        min_share_kept: Fraction) -> tuple[Holdings, dict[int, Cell]]:
    """Apply each distribution to the result of the previous one (SPEC step 7).

    Returns the final index {(drc, rtom): [Case_Id]} and {Case_Id: final cell} of every case
    a distribution moved.
    """
    moved: dict[int, Cell] = {}
    for holdings_after, moves in _each_distribution(holdings, distributions, min_share_kept):
        moved.update((case_id, to_cell) for case_id, _, to_cell in moves)
        holdings = holdings_after
    return holdings, moved


def cases_taken(counts: Mapping[Cell, int], distributions: Sequence[Distribution],
                min_share_kept: Fraction) -> dict[Cell, int]:
    """{cell: how many cases the request takes out of it, over all its distributions}: the most of a cell's
    lowest Case_Ids a plan can need (the push-down read fetches no more), or the ResourceBalanceError
    the plan gives.

    How many cases leave each cell depends on the counts alone, never on the Case_Ids (the rule takes a
    cell's lowest ones, and visits cells in an order of counts and codes), so the rule runs here on
    stand-in Case_Ids: each cell lists as many as the whole request could take from it.
    """
    wanted = sum(entry.transfer_count for entry in distributions)
    holdings: dict[Cell, LowestCases] = {}
    start = 0
    for cell, count in counts.items():
        listed = min(count, wanted)
        holdings[cell] = LowestCases(count, range(start, start + listed),
                                     math.inf if listed == count else start + listed - 1)
        start += listed
    taken: Counter[Cell] = Counter()
    for _, moves in _each_distribution(holdings, distributions, min_share_kept):
        taken.update(from_cell for _, from_cell, _ in moves)
    return dict(taken)


def case_changes(initial: Mapping[int, Cell], moved: Mapping[int, Cell]) -> tuple[CaseChange, ...]:
    """The moved cases whose DRC differs from their initial one (a case moved back is unchanged)."""
    return tuple(CaseChange(case_id, initial[case_id][0], cell[0])
                 for case_id, cell in sorted(moved.items()) if cell[0] != initial[case_id][0])


def summary_cells(cases: BatchCases, changes: Sequence[CaseChange],
                  existing_cells: Collection[tuple[str, str]]) -> tuple[SummaryCell, ...]:
    """Count and Tot_Arrease of every cell of the batch after `changes`; emptied cells get 0.

    Integer and decimal amounts are summed exactly (see cell_total); floats with math.fsum,
    exact whatever the order, then rounded to cents.
    """
    leaving: dict[Cell, list[Any]] = defaultdict(list)
    arriving: dict[Cell, list[Any]] = defaultdict(list)
    for change in changes:
        rtom = cases.assignment[change.case_id].rtom
        amount = cases.arrears[change.case_id]
        leaving[Cell(change.old_drc, rtom)].append(amount)
        arriving[Cell(change.new_drc, rtom)].append(amount)
    cells = []
    for cell in sorted(set(cases.amounts) | {Cell(*cell) for cell in existing_cells} | set(arriving)):
        amounts = cases.amounts.get(cell, [])
        if isinstance(amounts, CellSum):
            amounts = amounts.moved(leaving.get(cell, []), arriving.get(cell, []), cases.amount_kind)
        else:
            amounts = (without(amounts, leaving[cell]) if cell in leaving else amounts) + arriving.get(cell, [])
        count, total = amounts_total(amounts, cases.amount_kind, f"DRC {cell[0]} RTOM {cell[1]}")
        cells.append(SummaryCell(cell[0], cell[1], count, total))
    return tuple(cells)


def describe_amend(batch_id: BatchId, request: AmendRequest, changes: Sequence[CaseChange]) -> str:
    """The status_description of a completed task: what moved where."""
    moves = Counter((change.old_drc, change.new_drc) for change in changes)
    requested = "; ".join(
        f"{entry.transfer_count} {entry.rtom} from {entry.donor_drc_id} to {entry.receiver_drc_id}"
        for entry in request.distributions)
    moved = ", ".join(f"{old}->{new} {count}" for (old, new), count in sorted(moves.items()))
    return (f"Amended batch {batch_id} seq {request.batch_seq}: requested {requested}; "
            f"{len(changes)} case(s) reassigned ({moved or 'none'})")


def plan_amend(batch_id: BatchId, request: AmendRequest, cases: BatchCases, existing_cells: Collection[tuple[str, str]],
               min_share_kept: Fraction) -> AmendPlan:
    """The complete, validated plan of one task: which cases move, the summary, the description."""
    _, moved = apply_distributions(cases.holdings, request.distributions, min_share_kept)
    changes = case_changes(cases.assignment, moved)
    return AmendPlan(batch_id=batch_id, request=request, changes=changes,
                     summary=summary_cells(cases, changes, existing_cells),
                     description=describe_amend(batch_id, request, changes))


@dataclass(frozen=True)
class PlannedWrites(AmendPlan):
    """Everything needed to land a task's writes or to undo them, also after a crash: the plan, and what
    was read around it.

    It is stored in the task's journal before the first data write and read back by a
    recovering run (coordination/journal.py: journal_writes_document, planned_writes_from_journal).
    summary_row_ids gives the _id of every cell's summary row: the existing row's, or a new
    one chosen before the write, so that a row is only ever written by its _id.
    """
    case_priors: dict[int, dict[str, Any]]
    summary_rows: tuple[dict[str, Any], ...]
    summary_row_ids: dict[Cell, Any]
    now: datetime
    label: str
    task_object_id: Any

    @property
    def new_summary_rows(self) -> dict[Any, Cell]:
        """{_id: cell} of the summary rows this task adds (absent before it)."""
        existing = {row["_id"] for row in self.summary_rows}
        return {row_id: cell for cell, row_id in sorted(self.summary_row_ids.items()) if row_id not in existing}
