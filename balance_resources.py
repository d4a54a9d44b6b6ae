"""The balancing rule of SPEC.md: pure functions of plain data, no database.

The rule itself (plan_transfer) works on the batch indexed by (DRC, RTOM) cell, so that a
task applying several distributions to a million cases indexes the batch once and then
touches only the donor's and receiver's cells. balance_resources is the rule on the
Case_Id -> (drc, rtom) mapping of the specification.
"""

from fractions import Fraction

from utils.Custom_Exceptions import ResourceBalanceError

DEFAULT_MIN_SHARE_KEPT = Fraction(1, 5)


def _percent(share):
    return f"{float(share) * 100:g}%"


def _check_keeps_share(held, moved, share, what):
    # Exact: Fraction arithmetic, so 5 - 4 >= 0.2 * 5 is not lost to binary rounding.
    if held - moved < share * held:
        raise ResourceBalanceError(
            f"{what} holds {held}; moving {moved} leaves {held - moved}, below the minimum share "
            f"of {_percent(share)} ({float(share * held):g}) it must keep")


def index_by_cell(drcs):
    """{(drc, rtom): [Case_Id, ...]} of a Case_Id -> (drc, rtom) mapping, in one pass."""
    holdings = {}
    for case_id, cell in drcs.items():
        holdings.setdefault(cell, []).append(case_id)
    return holdings


def plan_transfer(holdings, receiver_drc, donor_drc, rtom, transfer_value, min_share_kept=DEFAULT_MIN_SHARE_KEPT):
    """The moves [(Case_Id, from_cell, to_cell)] of one distribution, or ResourceBalanceError.

    `holdings` maps (drc, rtom) -> Case_Ids. Every choice depends on Case_Id order and on
    counts only, never on the order of the lists, so the result is deterministic.
    """
    if isinstance(transfer_value, bool) or not isinstance(transfer_value, int) or transfer_value < 1:
        raise ResourceBalanceError(f"transfer count must be an integer of at least 1, got {transfer_value!r}")
    if donor_drc == receiver_drc:
        raise ResourceBalanceError(f"donor and receiver are the same DRC {donor_drc!r}")
    share = Fraction(min_share_kept)
    donor_rtoms = {r for (drc, r), ids in holdings.items() if drc == donor_drc and ids}
    receiver_counts = {r: len(ids) for (drc, r), ids in holdings.items() if drc == receiver_drc and ids}

    for role, drc, holds_any in (("donor", donor_drc, bool(donor_rtoms)),
                                 ("receiver", receiver_drc, bool(receiver_counts))):
        if not holds_any:
            raise ResourceBalanceError(f"{role} DRC {drc!r} holds no case in this batch")
    if rtom not in donor_rtoms:
        raise ResourceBalanceError(f"donor DRC {donor_drc!r} holds no {rtom!r} case to give")
    if rtom not in receiver_counts:
        raise ResourceBalanceError(f"receiver DRC {receiver_drc!r} holds no {rtom!r} case")

    donor_cell = (donor_drc, rtom)
    _check_keeps_share(len(holdings[donor_cell]), transfer_value, share,
                       f"donor DRC {donor_drc!r} in RTOM {rtom!r}")

    shared_rtoms = [r for r in receiver_counts if r != rtom and r in donor_rtoms]
    pool = sum(receiver_counts[r] for r in shared_rtoms)
    if pool == 0:
        raise ResourceBalanceError(
            f"receiver DRC {receiver_drc!r} has no give-back pool: it holds no case in an RTOM other than "
            f"{rtom!r} that donor DRC {donor_drc!r} also holds")
    _check_keeps_share(pool, transfer_value, share,
                       f"receiver DRC {receiver_drc!r} in its give-back pool ({', '.join(sorted(shared_rtoms))})")

    moves = [(case_id, donor_cell, (receiver_drc, rtom))
             for case_id in sorted(holdings[donor_cell])[:transfer_value]]

    visit_order = sorted(shared_rtoms, key=lambda r: (-receiver_counts[r], r))
    candidates = {r: iter(sorted(holdings[(receiver_drc, r)])[:transfer_value]) for r in visit_order}
    given_back = 0
    while given_back < transfer_value:
        for give_rtom in list(visit_order):
            case_id = next(candidates[give_rtom], None)
            if case_id is None:
                visit_order.remove(give_rtom)
                continue
            moves.append((case_id, (receiver_drc, give_rtom), (donor_drc, give_rtom)))
            given_back += 1
            if given_back == transfer_value:
                break
    return moves


def apply_moves(holdings, moves):
    """A new index with `moves` applied; only the cells they touch are copied."""
    leaving, arriving = {}, {}
    for case_id, from_cell, to_cell in moves:
        leaving.setdefault(from_cell, set()).add(case_id)
        arriving.setdefault(to_cell, []).append(case_id)
    result = dict(holdings)
    for cell, case_ids in leaving.items():
        result[cell] = [case_id for case_id in result[cell] if case_id not in case_ids]
    for cell, case_ids in arriving.items():
        result[cell] = result.get(cell, []) + case_ids
    return result


def balance_resources(drcs, receiver_drc, donor_drc, rtom, transfer_value, min_share_kept=DEFAULT_MIN_SHARE_KEPT):
    """Move `transfer_value` `rtom` cases donor -> receiver and give back as many round-robin.

    `drcs` maps Case_Id -> (drc, rtom). Returns a new mapping; the input is not modified.
    Raises ResourceBalanceError when a rule of SPEC.md refuses the move.
    """
    moves = plan_transfer(index_by_cell(drcs), receiver_drc, donor_drc, rtom, transfer_value, min_share_kept)
    result = dict(drcs)
    for case_id, _, to_cell in moves:
        result[case_id] = to_cell
    return result
