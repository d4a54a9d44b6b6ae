"""The balancing rule of SPEC.md: a pure function of plain data, no database."""

import heapq
from collections import defaultdict
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


def balance_resources(drcs, receiver_drc, donor_drc, rtom, transfer_value, min_share_kept=DEFAULT_MIN_SHARE_KEPT):
    """Move `transfer_value` `rtom` cases donor -> receiver and give back as many round-robin.

    `drcs` maps Case_Id -> (drc, rtom). Returns a new mapping; the input is not modified.
    Raises ResourceBalanceError when a rule of SPEC.md refuses the move.
    """
    if isinstance(transfer_value, bool) or not isinstance(transfer_value, int) or transfer_value < 1:
        raise ResourceBalanceError(f"transfer count must be an integer of at least 1, got {transfer_value!r}")
    if donor_drc == receiver_drc:
        raise ResourceBalanceError(f"donor and receiver are the same DRC {donor_drc!r}")
    share = Fraction(min_share_kept)

    donor_rtom_cases = []
    donor_rtoms = set()
    receiver_cases_by_rtom = defaultdict(list)
    for case_id, (drc, case_rtom) in drcs.items():
        if drc == donor_drc:
            donor_rtoms.add(case_rtom)
            if case_rtom == rtom:
                donor_rtom_cases.append(case_id)
        elif drc == receiver_drc:
            receiver_cases_by_rtom[case_rtom].append(case_id)

    for role, drc, holds_any in (("donor", donor_drc, bool(donor_rtoms)),
                                 ("receiver", receiver_drc, bool(receiver_cases_by_rtom))):
        if not holds_any:
            raise ResourceBalanceError(f"{role} DRC {drc!r} holds no case in this batch")
    if not donor_rtom_cases:
        raise ResourceBalanceError(f"donor DRC {donor_drc!r} holds no {rtom!r} case to give")
    if rtom not in receiver_cases_by_rtom:
        raise ResourceBalanceError(f"receiver DRC {receiver_drc!r} holds no {rtom!r} case")

    _check_keeps_share(len(donor_rtom_cases), transfer_value, share,
                       f"donor DRC {donor_drc!r} in RTOM {rtom!r}")

    shared_rtoms = [r for r in receiver_cases_by_rtom if r != rtom and r in donor_rtoms]
    pool = sum(len(receiver_cases_by_rtom[r]) for r in shared_rtoms)
    if pool == 0:
        raise ResourceBalanceError(
            f"receiver DRC {receiver_drc!r} has no give-back pool: it holds no case in an RTOM other than "
            f"{rtom!r} that donor DRC {donor_drc!r} also holds")
    _check_keeps_share(pool, transfer_value, share,
                       f"receiver DRC {receiver_drc!r} in its give-back pool ({', '.join(sorted(shared_rtoms))})")

    result = dict(drcs)
    for case_id in heapq.nsmallest(transfer_value, donor_rtom_cases):
        result[case_id] = (receiver_drc, rtom)

    visit_order = sorted(shared_rtoms, key=lambda r: (-len(receiver_cases_by_rtom[r]), r))
    # No RTOM can give more than transfer_value cases, so only that many candidates are sorted.
    candidates = {r: iter(sorted(heapq.nsmallest(transfer_value, receiver_cases_by_rtom[r]))) for r in visit_order}
    given_back = 0
    while given_back < transfer_value:
        for give_rtom in list(visit_order):
            case_id = next(candidates[give_rtom], None)
            if case_id is None:
                visit_order.remove(give_rtom)
                continue
            result[case_id] = (donor_drc, give_rtom)
            given_back += 1
            if given_back == transfer_value:
                break
    return result
