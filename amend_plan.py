"""Pure planning around balance_resources: from validated inputs to the exact writes of a task."""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import bson

from balance_resources import apply_moves, plan_transfer
from utils.Custom_Exceptions import ResourceBalanceError


@dataclass(frozen=True)
class Distribution:
    """One entry of an amend seq's array_of_distributions, validated."""
    rtom: str
    donor_drc_id: str
    receiver_drc_id: str
    transfer_count: int


@dataclass(frozen=True)
class AmendRequest:
    """The open amend seq a task processes."""
    transaction_id: object
    batch_seq: int
    distributions: tuple
    prior_status_on: object
    prior_status_on_present: bool
    prior_summery_status: str
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
    total_arrears: object


@dataclass(frozen=True)
class BatchCases:
    """A batch's cases as read, in the shapes planning needs (see database_checks.build_case_maps).

    assignment: Case_Id -> (current DRC, RTOM); arrears: Case_Id -> amount;
    holdings: (DRC, RTOM) -> [Case_Id]; amounts: (DRC, RTOM) -> [amount];
    integral: every amount is an integer (totals are then exact integers).
    """
    assignment: dict
    arrears: dict
    holdings: dict
    amounts: dict
    integral: bool


@dataclass(frozen=True)
class AmendPlan:
    batch_id: object
    request: AmendRequest
    changes: tuple
    summary: tuple
    description: str


def apply_distributions(holdings, distributions, min_share_kept):
    """Apply each distribution to the result of the previous one (SPEC step 7).

    Returns the final index {(drc, rtom): [Case_Id]} and {Case_Id: final cell} of every case
    a distribution moved.
    """
    moved = {}
    for number, entry in enumerate(distributions, start=1):
        try:
            moves = plan_transfer(holdings, entry.receiver_drc_id, entry.donor_drc_id, entry.rtom,
                                  entry.transfer_count, min_share_kept)
        except ResourceBalanceError as exc:
            if len(distributions) == 1:
                raise
            raise ResourceBalanceError(f"distribution {number} of {len(distributions)}: {exc}") from exc
        holdings = apply_moves(holdings, moves)
        moved.update((case_id, to_cell) for case_id, _, to_cell in moves)
    return holdings, moved


def case_changes(initial, moved):
    """The moved cases whose DRC differs from their initial one (a case moved back is unchanged)."""
    return tuple(CaseChange(case_id, initial[case_id][0], cell[0])
                 for case_id, cell in sorted(moved.items()) if cell[0] != initial[case_id][0])


def _without(amounts, removed):
    """`amounts` less one occurrence of each value in `removed` (equal amounts are interchangeable)."""
    left = Counter(amounts)
    left.subtract(removed)
    return list(left.elements())


def summary_cells(cases, changes, existing_cells):
    """Count and Tot_Arrease of every cell of the batch after `changes`; emptied cells get 0.

    Only the cells a change touches are recomputed. Floats are summed with math.fsum,
    exact whatever the order, and rounded to cents; integers are summed exactly.
    """
    leaving, arriving = defaultdict(list), defaultdict(list)
    for change in changes:
        rtom = cases.assignment[change.case_id][1]
        amount = cases.arrears[change.case_id]
        leaving[(change.old_drc, rtom)].append(amount)
        arriving[(change.new_drc, rtom)].append(amount)
    cells = []
    for cell in sorted(set(cases.amounts) | set(existing_cells) | set(arriving)):
        amounts = cases.amounts.get(cell, [])
        if cell in leaving:
            amounts = _without(amounts, leaving[cell])
        amounts = amounts + arriving.get(cell, [])
        total = sum(amounts) if cases.integral else round(math.fsum(amounts), 2)
        cells.append(SummaryCell(cell[0], cell[1], len(amounts), total))
    return tuple(cells)


def describe_amend(batch_id, request, changes):
    """The status_description of a completed task: what moved where."""
    moves = Counter((change.old_drc, change.new_drc) for change in changes)
    requested = "; ".join(
        f"{entry.transfer_count} {entry.rtom} from {entry.donor_drc_id} to {entry.receiver_drc_id}"
        for entry in request.distributions)
    moved = ", ".join(f"{old}->{new} {count}" for (old, new), count in sorted(moves.items()))
    return (f"Amended batch {batch_id} seq {request.batch_seq}: requested {requested}; "
            f"{len(changes)} case(s) reassigned ({moved or 'none'})")


def plan_amend(batch_id, request, cases, existing_cells, min_share_kept):
    """The complete, validated plan of one task: which cases move, the summary, the description."""
    _, moved = apply_distributions(cases.holdings, request.distributions, min_share_kept)
    changes = case_changes(cases.assignment, moved)
    return AmendPlan(batch_id=batch_id, request=request, changes=changes,
                     summary=summary_cells(cases, changes, existing_cells),
                     description=describe_amend(batch_id, request, changes))


def group_priors(case_priors):
    """[(fields, sorted case ids)]: cases that had the same prior amend fields, grouped.

    The BSON encoding is the grouping key, since a prior value may be of any BSON type.
    """
    groups = defaultdict(list)
    for case_id, fields in case_priors.items():
        groups[bson.encode(fields)].append(case_id)
    return [(bson.decode(encoded), sorted(case_ids)) for encoded, case_ids in sorted(groups.items())]


@dataclass(frozen=True)
class PlannedWrites:
    """Everything needed to land a task's writes or to undo them, also after a crash.

    It is stored in the task's journal before the first data write (to_document) and read
    back by a recovering run (from_document).
    """
    batch_id: object
    request: AmendRequest
    changes: tuple
    summary: tuple
    description: str
    case_priors: dict
    summary_rows: tuple
    now: object
    label: str

    def to_document(self):
        moves = {}
        for change in self.changes:
            moves.setdefault((change.old_drc, change.new_drc), []).append(change.case_id)
        request = self.request
        return {
            "batch_id": self.batch_id, "now": self.now, "label": self.label, "description": self.description,
            "request": {"transaction_id": request.transaction_id, "batch_seq": request.batch_seq,
                        "prior_status_on": request.prior_status_on,
                        "prior_status_on_present": request.prior_status_on_present,
                        "prior_summery_status": request.prior_summery_status,
                        "closes_transaction": request.closes_transaction},
            "moves": [{"old": old, "new": new, "case_ids": ids} for (old, new), ids in sorted(moves.items())],
            "summary": [{"drc": c.drc, "rtom": c.rtom, "count": c.count, "total": c.total_arrears}
                        for c in self.summary],
            "case_priors": [{"fields": fields, "case_ids": ids} for fields, ids in group_priors(self.case_priors)],
            "summary_rows": list(self.summary_rows),
        }

    @classmethod
    def from_document(cls, document):
        request = document["request"]
        return cls(
            batch_id=document["batch_id"], now=document["now"], label=document["label"],
            description=document["description"],
            request=AmendRequest(distributions=(), **request),
            changes=tuple(sorted((CaseChange(case_id, move["old"], move["new"])
                                  for move in document["moves"] for case_id in move["case_ids"]),
                                 key=lambda change: change.case_id)),
            summary=tuple(SummaryCell(c["drc"], c["rtom"], c["count"], c["total"]) for c in document["summary"]),
            case_priors={case_id: dict(group["fields"])
                         for group in document["case_priors"] for case_id in group["case_ids"]},
            summary_rows=tuple(document["summary_rows"]),
        )
