"""The balancing rule of SPEC.md: pure functions of plain data, no database.

`balance_resources` is the rule with the specification's signature: a Case_Id -> (drc,
rtom) mapping in, the new mapping out. Production applies the very same rule through
`plan_transfer`, which works on the batch indexed by (DRC, RTOM) cell, so that a task
applying several distributions to a million cases indexes the batch once and then touches
only the donor's and receiver's cells; `balance_resources` is `plan_transfer` on the index
of its mapping's donor and receiver cells (the only cells `plan_transfer` reads). To change
the rule, change `plan_transfer`.
"""

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import compress
from typing import NamedTuple

from utils.Custom_Exceptions import FullReadNeeded, ResourceBalanceError

DEFAULT_MIN_SHARE_KEPT = Fraction(1, 5)


class Cell(NamedTuple):
    """A (DRC, RTOM) pair: where a case is assigned."""
    drc: str
    rtom: str


@dataclass(frozen=True)
class LowestCases:
    """A cell's cases known by their number and their lowest Case_Ids only (the push-down read: the rule
    only ever takes a cell's lowest Case_Ids, so a plan needs no more of a cell than it takes from it).

    `lowest` holds, sorted, every Case_Id of the cell up to `known_up_to` (math.inf: all of them;
    -math.inf: none was read). Moving cases in and out keeps that true: the cases taken are the lowest,
    and an arriving Case_Id above `known_up_to` is counted, not listed.
    """
    count: int
    lowest: Sequence[int]
    known_up_to: float

    def __len__(self) -> int:
        return self.count

    def first(self, wanted: int) -> Iterator[int]:
        """Up to `wanted` lowest Case_Ids, in order; FullReadNeeded on taking one that was not read (the
        push-down read asked too little: never seen, a guard)."""
        yield from self.lowest[:wanted]
        if wanted > len(self.lowest) and self.known_up_to != math.inf:
            raise FullReadNeeded(f"more than the {len(self.lowest)} lowest Case_Id(s) read of a cell of "
                                 f"{self.count} taken")

    def moved(self, departing: Collection[int], arriving: Iterable[int]) -> "LowestCases":
        arriving = list(arriving)
        listed = [case_id for case_id in arriving if case_id <= self.known_up_to]
        lowest = sorted([case_id for case_id in self.lowest if case_id not in departing] + listed)
        return LowestCases(self.count - len(departing) + len(arriving), lowest, self.known_up_to)


CellCases = Sequence[int] | LowestCases
Holdings = Mapping[Cell, CellCases]
Move = tuple[int, Cell, Cell]


def lowest_case_ids(case_ids: CellCases, wanted: int) -> Iterator[int]:
    """The `wanted` lowest Case_Ids of a cell (all of them when it holds fewer), lowest first: the round robin
    takes only as many as it needs."""
    if isinstance(case_ids, LowestCases):
        return case_ids.first(wanted)
    return iter(sorted(case_ids)[:wanted])


def is_transfer_count(value: object) -> bool:
    """A distribution moves an integer number of cases, at least one (a bool is no count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def distribution_error(receiver_drc: str, donor_drc: str, transfer_value: object) -> str | None:
    """Why a distribution can never be applied, whatever the batch; None when it can."""
    if not is_transfer_count(transfer_value):
        return f"transfer count must be an integer of at least 1, got {transfer_value!r}"
    if donor_drc == receiver_drc:
        return f"donor and receiver are the same DRC {donor_drc!r}"
    return None


def _percent(share: Fraction) -> str:
    return f"{float(share) * 100:g}%"


def _check_keeps_share(held: int, moved: int, share: Fraction, what: str) -> None:
    # Exact: Fraction arithmetic, so 5 - 4 >= 0.2 * 5 is not lost to binary rounding.
    if held - moved < share * held:
        raise ResourceBalanceError(
            f"{what} holds {held}; moving {moved} leaves {held - moved}, below the minimum share "
            f"of {_percent(share)} ({float(share * held):g}) it must keep")


def index_by_cell(drcs: Mapping[int, tuple[str, str]], of_drcs: Collection[str] | None = None) -> dict[Cell, list[int]]:
    """{(drc, rtom): [Case_Id, ...]} of a Case_Id -> (drc, rtom) mapping; of the DRCs `of_drcs` only when given.

    Built for a million cases: they are grouped under the caller's own (drc, rtom) tuples, which hash
    and compare equal to the Cell of the same pair, and one Cell is made per cell, not per case. The
    cases of other DRCs never reach the grouping loop: one comprehension marks the cases to keep (it
    only reads each value's DRC) and `compress` picks their ids and cells at C speed (a mapping iterates
    its keys and its values in the same order).
    """
    cases: Iterable[tuple[int, tuple[str, str]]] = drcs.items()
    if of_drcs is not None:
        wanted = frozenset(of_drcs)
        chosen = [cell[0] in wanted for cell in drcs.values()]
        cases = zip(compress(drcs, chosen), compress(drcs.values(), chosen), strict=True)
    grouped: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for case_id, cell in cases:
        grouped[cell].append(case_id)
    return {Cell(*cell): case_ids for cell, case_ids in grouped.items()}


def _rtoms_held(holdings: Holdings, donor_drc: str, receiver_drc: str) -> tuple[set[str], dict[str, int]]:
    """(the RTOMs the donor holds cases of, {RTOM: number of cases} of the receiver); empty cells left out."""
    donor_rtoms = {r for (drc, r), ids in holdings.items() if drc == donor_drc and ids}
    receiver_counts = {r: len(ids) for (drc, r), ids in holdings.items() if drc == receiver_drc and ids}
    return donor_rtoms, receiver_counts


def _check_both_hold(donor_rtoms: Collection[str], receiver_counts: Mapping[str, int], receiver_drc: str,
                     donor_drc: str, rtom: str) -> None:
    """Both DRCs hold cases in the batch, and both hold cases of `rtom`."""
    for role, drc, holds_any in (("donor", donor_drc, bool(donor_rtoms)),
                                 ("receiver", receiver_drc, bool(receiver_counts))):
        if not holds_any:
            raise ResourceBalanceError(f"{role} DRC {drc!r} holds no case in this batch")
    if rtom not in donor_rtoms:
        raise ResourceBalanceError(f"donor DRC {donor_drc!r} holds no {rtom!r} case to give")
    if rtom not in receiver_counts:
        raise ResourceBalanceError(f"receiver DRC {receiver_drc!r} holds no {rtom!r} case")


def _give_back_rtoms(donor_rtoms: Collection[str], receiver_counts: Mapping[str, int], receiver_drc: str,
                     donor_drc: str, rtom: str, transfer_value: int, share: Fraction) -> list[str]:
    """The RTOMs of the receiver's give-back pool (other than `rtom`, held by both DRCs), once the pool is
    known to keep its minimum share after giving `transfer_value` cases back."""
    shared_rtoms = [r for r in receiver_counts if r != rtom and r in donor_rtoms]
    pool = sum(receiver_counts[r] for r in shared_rtoms)
    if pool == 0:
        raise ResourceBalanceError(
            f"receiver DRC {receiver_drc!r} has no give-back pool: it holds no case in an RTOM other than "
            f"{rtom!r} that donor DRC {donor_drc!r} also holds")
    _check_keeps_share(pool, transfer_value, share,
                       f"receiver DRC {receiver_drc!r} in its give-back pool ({', '.join(sorted(shared_rtoms))})")
    return shared_rtoms


def _give_backs(holdings: Holdings, receiver_drc: str, donor_drc: str, shared_rtoms: list[str],
                receiver_counts: Mapping[str, int], transfer_value: int) -> list[Move]:
    """The receiver's `transfer_value` give-back moves, round robin over its pool's RTOMs (the fullest
    first, then by name), each RTOM giving its lowest Case_Ids first."""
    visit_order = sorted(shared_rtoms, key=lambda r: (-receiver_counts[r], r))
    candidates = {r: lowest_case_ids(holdings[Cell(receiver_drc, r)], transfer_value) for r in visit_order}
    moves: list[Move] = []
    given_back = 0
    while given_back < transfer_value:
        for give_rtom in list(visit_order):
            case_id = next(candidates[give_rtom], None)
            if case_id is None:
                visit_order.remove(give_rtom)
                continue
            moves.append((case_id, Cell(receiver_drc, give_rtom), Cell(donor_drc, give_rtom)))
            given_back += 1
            if given_back == transfer_value:
                break
    return moves


def plan_transfer(holdings: Holdings, receiver_drc: str, donor_drc: str, rtom: str, transfer_value: int,
                  min_share_kept: Fraction = DEFAULT_MIN_SHARE_KEPT) -> list[Move]:
    """The moves [(Case_Id, from_cell, to_cell)] of one distribution, or ResourceBalanceError.

    `holdings` maps (drc, rtom) -> Case_Ids. Every choice depends on Case_Id order and on
    counts only, never on the order of the lists, so the result is deterministic. The checks
    come in this order: the distribution itself, both DRCs holding `rtom` cases, the donor's
    minimum share, then the receiver's give-back pool and its minimum share.
    """
    problem = distribution_error(receiver_drc, donor_drc, transfer_value)
    if problem:
        raise ResourceBalanceError(problem)
    share = Fraction(min_share_kept)
    donor_rtoms, receiver_counts = _rtoms_held(holdings, donor_drc, receiver_drc)
    _check_both_hold(donor_rtoms, receiver_counts, receiver_drc, donor_drc, rtom)

    donor_cell = Cell(donor_drc, rtom)
    _check_keeps_share(len(holdings[donor_cell]), transfer_value, share,
                       f"donor DRC {donor_drc!r} in RTOM {rtom!r}")
    shared_rtoms = _give_back_rtoms(donor_rtoms, receiver_counts, receiver_drc, donor_drc, rtom, transfer_value,
                                    share)

    moves = [(case_id, donor_cell, Cell(receiver_drc, rtom))
             for case_id in lowest_case_ids(holdings[donor_cell], transfer_value)]
    moves.extend(_give_backs(holdings, receiver_drc, donor_drc, shared_rtoms, receiver_counts, transfer_value))
    return moves


def apply_moves(holdings: Holdings, moves: Iterable[Move]) -> dict[Cell, CellCases]:
    """A new index with `moves` applied; only the cells they touch are copied."""
    leaving: dict[Cell, set[int]] = {}
    arriving: dict[Cell, list[int]] = {}
    for case_id, from_cell, to_cell in moves:
        leaving.setdefault(from_cell, set()).add(case_id)
        arriving.setdefault(to_cell, []).append(case_id)
    result: dict[Cell, CellCases] = dict(holdings)
    for cell in [*leaving, *(cell for cell in arriving if cell not in leaving)]:
        result[cell] = _moved(result.get(cell, []), leaving.get(cell, set()), arriving.get(cell, []))
    return result


def _moved(case_ids: CellCases, departing: set[int], incoming: list[int]) -> CellCases:
    if isinstance(case_ids, LowestCases):
        return case_ids.moved(departing, incoming)
    return [case_id for case_id in case_ids if case_id not in departing] + incoming


def balance_resources(drcs: Mapping[int, tuple[str, str]], receiver_drc: str, donor_drc: str, rtom: str,
                      transfer_value: int,
                      min_share_kept: Fraction = DEFAULT_MIN_SHARE_KEPT) -> dict[int, tuple[str, str]]:
    """Move `transfer_value` `rtom` cases donor -> receiver and give back as many round-robin.

    `drcs` maps Case_Id -> (drc, rtom). Returns a new mapping; the input is not modified.
    Raises ResourceBalanceError when a rule of SPEC.md refuses the move.

    `plan_transfer` reads the donor's and the receiver's cells only, so only they are indexed, and
    the result is a copy of `drcs` with the moved cases overwritten: the other cases keep the
    caller's (drc, rtom) values, the moved ones get a Cell (a tuple equal to the plain pair). So a
    million cases cost less than a plain index of every case would (benchmarks/run_benchmarks.py
    measures both).
    """
    holdings = index_by_cell(drcs, of_drcs=(donor_drc, receiver_drc))
    moves = plan_transfer(holdings, receiver_drc, donor_drc, rtom, transfer_value, min_share_kept)
    result = dict(drcs)
    result.update((case_id, to_cell) for case_id, _, to_cell in moves)
    return result
