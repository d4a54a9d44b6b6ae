"""balance_resources: the worked example, each refusal rule, the give-back order, and properties."""

import math
import random
import re
from collections import Counter
from fractions import Fraction
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from amend_plan import CaseChange, Distribution, SummaryCell, apply_distributions, case_changes, summary_cells
from balance_resources import Cell, apply_moves, balance_resources, index_by_cell, plan_transfer
from database_checks import build_case_maps
from utils.Custom_Exceptions import ResourceBalanceError


def build(layout, first_id=1):
    """Case_Id -> (drc, rtom), ids dealt round-robin across the cells of `layout`."""
    deepest = max(n for counts in layout.values() for n in counts.values())
    mapping, case_id = {}, first_id
    for k in range(deepest):
        for drc, counts in layout.items():
            for rtom, n in counts.items():
                if k < n:
                    mapping[case_id] = (drc, rtom)
                    case_id += 1
    return mapping


def cell_counts(mapping):
    return dict(Counter(mapping.values()))


WORKED = {"D1": {"CW": 8, "AG": 4, "AD": 5}, "D2": {"CW": 3, "AG": 5, "AD": 6}}


def test_worked_example_of_the_spec():
    result = balance_resources(build(WORKED), "D1", "D2", "CW", 2)
    assert cell_counts(result) == {("D1", "CW"): 10, ("D1", "AD"): 4, ("D1", "AG"): 3,
                                   ("D2", "CW"): 1, ("D2", "AD"): 7, ("D2", "AG"): 6}


def test_moves_the_lowest_case_ids_both_ways():
    cases = build(WORKED)
    result = balance_resources(cases, "D1", "D2", "CW", 2)
    donor_cw = sorted(c for c, cell in cases.items() if cell == ("D2", "CW"))
    receiver_ad = sorted(c for c, cell in cases.items() if cell == ("D1", "AD"))
    receiver_ag = sorted(c for c, cell in cases.items() if cell == ("D1", "AG"))
    changed = {c: result[c] for c in cases if result[c] != cases[c]}
    assert changed == {donor_cw[0]: ("D1", "CW"), donor_cw[1]: ("D1", "CW"),
                       receiver_ad[0]: ("D2", "AD"), receiver_ag[0]: ("D2", "AG")}


def test_input_is_not_modified():
    cases = build(WORKED)
    before = dict(cases)
    balance_resources(cases, "D1", "D2", "CW", 2)
    assert cases == before


def test_give_back_order_largest_first_ties_by_code():
    layout = {"R": {"X": 2, "AD": 3, "AG": 3, "GM": 1}, "G": {"X": 10, "AD": 1, "AG": 1, "GM": 1}}
    result = balance_resources(build(layout), "R", "G", "X", 4)
    counts = cell_counts(result)
    # visits AD, AG, GM, AD
    assert (counts[("G", "AD")], counts[("G", "AG")], counts[("G", "GM")]) == (1 + 2, 1 + 1, 1 + 1)


def test_give_back_skips_exhausted_rtoms():
    layout = {"R": {"X": 1, "AD": 5, "GM": 1}, "G": {"X": 10, "AD": 1, "GM": 1}}
    result = balance_resources(build(layout), "R", "G", "X", 4)
    counts = cell_counts(result)
    assert counts[("G", "AD")] == 1 + 3 and counts[("G", "GM")] == 1 + 1
    assert ("R", "GM") not in counts


def test_give_back_uses_only_rtoms_the_donor_holds():
    layout = {"R": {"X": 1, "AD": 5, "ZZ": 50}, "G": {"X": 10, "AD": 1}}
    result = balance_resources(build(layout), "R", "G", "X", 2)
    assert cell_counts(result)[("R", "ZZ")] == 50
    assert cell_counts(result)[("G", "AD")] == 3


def test_other_drcs_are_untouched():
    layout = dict(WORKED, D3={"CW": 4, "AG": 4})
    cases = build(layout)
    result = balance_resources(cases, "D1", "D2", "CW", 2)
    assert {c: v for c, v in result.items() if v[0] == "D3"} == {c: v for c, v in cases.items() if v[0] == "D3"}


def test_donor_rule_is_exact_at_the_boundary():
    # 5 - 4 = 1 and 0.2 * 5 = 1: allowed exactly, although 0.2 * 5 is 1.0000000000000002 in floats.
    layout = {"R": {"X": 1, "AD": 10}, "G": {"X": 5, "AD": 1}}
    result = balance_resources(build(layout), "R", "G", "X", 4)
    assert cell_counts(result)[("G", "X")] == 1


@pytest.mark.parametrize("layout, receiver, donor, rtom, count, reason", [
    (WORKED, "D1", "D2", "CW", 3, "donor DRC 'D2' in RTOM 'CW' holds 3; moving 3 leaves 0"),
    ({"R": {"X": 1, "AD": 2}, "G": {"X": 10, "AD": 1}}, "R", "G", "X", 2, "receiver DRC 'R' in its give-back pool"),
    ({"R": {"X": 1, "ZZ": 9}, "G": {"X": 10, "AD": 1}}, "R", "G", "X", 1, "no give-back pool"),
    (WORKED, "D9", "D2", "CW", 1, "receiver DRC 'D9' holds no case"),
    (WORKED, "D1", "D9", "CW", 1, "donor DRC 'D9' holds no case"),
    (WORKED, "D1", "D2", "GM", 1, "donor DRC 'D2' holds no 'GM' case"),
    ({"R": {"AD": 5}, "G": {"X": 10, "AD": 1}}, "R", "G", "X", 1, "receiver DRC 'R' holds no 'X' case"),
    (WORKED, "D2", "D2", "CW", 1, "same DRC"),
    (WORKED, "D1", "D2", "CW", 0, "at least 1"),
    (WORKED, "D1", "D2", "CW", True, "at least 1"),
    (WORKED, "D1", "D2", "CW", 1.0, "at least 1"),
])
def test_refusals(layout, receiver, donor, rtom, count, reason):
    with pytest.raises(ResourceBalanceError, match=reason.replace("(", r"\(")):
        balance_resources(build(layout), receiver, donor, rtom, count)


@pytest.mark.parametrize("layout, receiver, donor, rtom, count, reason", [
    (WORKED, "D2", "D2", "CW", 0, "transfer count must be an integer of at least 1"),
    (WORKED, "D9", "D8", "CW", 1, "donor DRC 'D8' holds no case in this batch"),
    ({"R": {"AD": 5}, "G": {"AD": 5}}, "R", "G", "X", 1, "donor DRC 'G' holds no 'X' case to give"),
    ({"R": {"X": 1, "ZZ": 9}, "G": {"X": 3, "AD": 1}}, "R", "G", "X", 3, "donor DRC 'G' in RTOM 'X' holds 3"),
])
def test_of_several_refusals_the_first_checked_is_reported(layout, receiver, donor, rtom, count, reason):
    """The checks run in plan_transfer's order: the distribution, the donor then the receiver holding cases (of
    the RTOM), the donor's minimum share, then the receiver's give-back pool; every case here fails a later one
    too."""
    with pytest.raises(ResourceBalanceError, match=re.escape(reason)):
        plan_transfer(index_by_cell(build(layout)), receiver, donor, rtom, count)


def test_min_share_is_a_setting():
    layout = {"R": {"X": 1, "AD": 10}, "G": {"X": 4, "AD": 1}}
    balance_resources(build(layout), "R", "G", "X", 2, min_share_kept=Fraction(1, 2))
    with pytest.raises(ResourceBalanceError, match="minimum share of 50%"):
        balance_resources(build(layout), "R", "G", "X", 3, min_share_kept=Fraction(1, 2))


def test_distributions_apply_in_sequence_and_name_the_failing_one():
    cases = build({"D1": {"CW": 6, "AG": 5, "AD": 4}, "D2": {"CW": 5, "AG": 4, "AD": 6}})
    first, second = Distribution("CW", "D2", "D1", 2), Distribution("AG", "D1", "D2", 1)
    holdings, moved = apply_distributions(index_by_cell(cases), (first, second), Fraction(1, 5))
    expected = balance_resources(balance_resources(cases, "D1", "D2", "CW", 2), "D2", "D1", "AG", 1)
    assert {cell: sorted(ids) for cell, ids in holdings.items()} == \
           {cell: sorted(ids) for cell, ids in index_by_cell(expected).items()}
    assert {c: cell for c, cell in moved.items() if cell != cases[c]} == \
           {c: cell for c, cell in expected.items() if cell != cases[c]}
    with pytest.raises(ResourceBalanceError, match="distribution 2 of 2: donor DRC 'D2'"):
        apply_distributions(index_by_cell(cases), (first, Distribution("CW", "D2", "D1", 3)), Fraction(1, 5))


def test_a_case_moved_back_is_not_a_change():
    cases = build({"D1": {"CW": 6, "AG": 5}, "D2": {"CW": 5, "AG": 4}})
    there, back = Distribution("CW", "D2", "D1", 1), Distribution("CW", "D1", "D2", 1)
    holdings, moved = apply_distributions(index_by_cell(cases), (there, back), Fraction(1, 5))
    changes = case_changes(cases, moved)
    assert len(moved) > len(changes)
    assert all(cases[change.case_id][0] == change.old_drc != change.new_drc for change in changes)


def cases_of(documents):
    return build_case_maps(documents, "B")


def doc(case_id, drc, rtom, amount):
    return {"Case_Id": case_id, "Case_Distribution_Batch_ID": "B", "DRC_Id": drc, "RTOM": rtom, "Arrease": amount}


def test_summary_cells_count_every_cell_and_zero_the_emptied_ones():
    cases = cases_of([doc(1, "D1", "CW", 10), doc(2, "D1", "CW", 2.5), doc(3, "D1", "AG", 4)])
    changes = (CaseChange(3, "D1", "D2"),)
    assert summary_cells(cases, changes, {("D9", "GM")}) == (
        SummaryCell("D1", "AG", 0, 0), SummaryCell("D1", "CW", 2, 12.5), SummaryCell("D2", "AG", 1, 4),
        SummaryCell("D9", "GM", 0, 0))


def test_summary_totals_are_exact_integers_or_cents():
    integral = summary_cells(cases_of([doc(1, "D1", "CW", 10), doc(2, "D1", "CW", 5)]), (), set())
    assert integral[0].total_arrears == 15 and type(integral[0].total_arrears) is int
    floats = summary_cells(cases_of([doc(i, "D1", "CW", a) for i, a in enumerate([0.1, 0.2, 0.3], 1)]), (), set())
    assert floats[0].total_arrears == 0.6


def test_summary_after_moves_equals_a_full_recount():
    rng = random.Random(3)
    documents = [doc(i, rng.choice(["D1", "D2", "D3"]), rng.choice(["CW", "AG", "AD"]),
                     rng.choice([1.5, 2.25, 7.0, 0.1])) for i in range(1, 400)]
    cases = cases_of(documents)
    holdings, moved = apply_distributions(cases.holdings, (Distribution("CW", "D2", "D1", 5),
                                                           Distribution("AG", "D1", "D3", 4)), Fraction(1, 5))
    changes = case_changes(cases.assignment, moved)
    final = dict(cases.assignment)
    final.update((change.case_id, (change.new_drc, final[change.case_id][1])) for change in changes)
    recount = {}
    for case_id, cell in final.items():
        recount.setdefault(cell, []).append(cases.arrears[case_id])
    assert {(c.drc, c.rtom): (c.count, c.total_arrears) for c in summary_cells(cases, changes, set())} == \
           {cell: (len(v), round(math.fsum(v), 2)) for cell, v in recount.items()}
    assert {cell: sorted(ids) for cell, ids in holdings.items() if ids} == \
           {cell: sorted(c for c, v in final.items() if v == cell) for cell in recount}


# --- properties on random batches ------------------------------------------------------

DRCS = ["D1", "D2", "D3", "D4"]
RTOMS = ["AD", "AG", "CW", "GM", "KT"]


@st.composite
def amend_inputs(draw):
    layout = {drc: {rtom: draw(st.integers(0, 9)) for rtom in RTOMS} for drc in DRCS}
    rnd = draw(st.randoms(use_true_random=False))
    ids = rnd.sample(range(1, 10**9), sum(n for counts in layout.values() for n in counts.values()))
    cells = [(drc, rtom) for drc in DRCS for rtom in RTOMS for _ in range(layout[drc][rtom])]
    mapping = dict(zip(ids, cells, strict=True))
    # Mostly distinct DRCs and small counts, so that most examples pass the rules.
    donor, receiver = draw(st.permutations(DRCS))[:2]
    return mapping, receiver, donor, draw(st.sampled_from(RTOMS)), draw(st.integers(1, 4)), rnd


def expected_refusal(mapping, receiver, donor, rtom, count, share=Fraction(1, 5)):
    """The rules of SPEC.md, computed independently: True when the move must be refused."""
    held = Counter(mapping.values())
    donor_rtoms = {r for (d, r) in held if d == donor}
    receiver_rtoms = {r for (d, r) in held if d == receiver}
    if donor == receiver or rtom not in donor_rtoms or rtom not in receiver_rtoms:
        return True
    d = held[(donor, rtom)]
    pool = sum(held[(receiver, r)] for r in receiver_rtoms & donor_rtoms if r != rtom)
    return d - count < share * d or pool == 0 or pool - count < share * pool


def assert_cases_drcs_and_rtoms_kept(mapping, result):
    """The same cases, as many per DRC and per RTOM as before, and every case in its RTOM."""
    assert result.keys() == mapping.keys()
    assert Counter(d for d, _ in result.values()) == Counter(d for d, _ in mapping.values())
    assert Counter(r for _, r in result.values()) == Counter(r for _, r in mapping.values())
    assert all(result[c][1] == mapping[c][1] for c in mapping)


def moved_cases(mapping, result, receiver, donor, rtom):
    """(every case moved, those of the donor's `rtom` that went to the receiver, those of the receiver's other
    RTOMs that went to the donor)."""
    moved = {c for c in mapping if result[c] != mapping[c]}
    to_receiver = {c for c in moved if mapping[c] == (donor, rtom) and result[c][0] == receiver}
    to_donor = {c for c in moved if mapping[c][0] == receiver and mapping[c][1] != rtom and result[c][0] == donor}
    return moved, to_receiver, to_donor


def assert_the_lowest_ids_moved_both_ways(mapping, result, receiver, donor, rtom, count):
    """Exactly `count` cases moved to the receiver, the donor's lowest ids of `rtom`, and `count` back to the
    donor, and no other case."""
    moved, to_receiver, to_donor = moved_cases(mapping, result, receiver, donor, rtom)
    assert moved == to_receiver | to_donor
    assert len(to_receiver) == count and len(to_donor) == count
    assert to_receiver == set(sorted(c for c in mapping if mapping[c] == (donor, rtom))[:count])
    assert_the_receivers_lowest_ids_went_back(mapping, receiver, to_donor)


def assert_the_receivers_lowest_ids_went_back(mapping, receiver, to_donor):
    """Within each give-back RTOM, the receiver's lowest ids went back."""
    for give_rtom in {mapping[c][1] for c in to_donor}:
        given = sorted(c for c in to_donor if mapping[c][1] == give_rtom)
        assert given == sorted(c for c in mapping if mapping[c] == (receiver, give_rtom))[:len(given)]


@hypothesis_settings(max_examples=400, deadline=None)
@given(amend_inputs())
def test_invariants_on_random_batches(inputs):
    mapping, receiver, donor, rtom, count, rnd = inputs
    if expected_refusal(mapping, receiver, donor, rtom, count):
        with pytest.raises(ResourceBalanceError):
            balance_resources(mapping, receiver, donor, rtom, count)
        return
    result = balance_resources(mapping, receiver, donor, rtom, count)
    assert_cases_drcs_and_rtoms_kept(mapping, result)
    assert_the_lowest_ids_moved_both_ways(mapping, result, receiver, donor, rtom, count)
    shuffled_items = list(mapping.items())  # the order of the mapping does not matter
    rnd.shuffle(shuffled_items)
    assert balance_resources(dict(shuffled_items), receiver, donor, rtom, count) == result


@st.composite
def any_transfers(draw):
    """amend_inputs, half of them with any donor, receiver (the same one, one absent from the batch) and count."""
    mapping, receiver, donor, rtom, count, _ = draw(amend_inputs())
    if draw(st.booleans()):
        receiver, donor = draw(st.sampled_from([*DRCS, "D9"])), draw(st.sampled_from([*DRCS, "D9"]))
        count = draw(st.integers(0, 12))
    return mapping, receiver, donor, rtom, count


@hypothesis_settings(max_examples=400, deadline=None)
@given(any_transfers())
def test_balance_resources_is_plan_transfer_on_the_index_of_every_cell(inputs):
    """balance_resources indexes the donor's and the receiver's cells only: plan_transfer's moves applied to
    the index of every cell must give the same mapping, and a refusal the same message."""
    mapping, receiver, donor, rtom, count = inputs
    try:
        moves = plan_transfer(index_by_cell(mapping), receiver, donor, rtom, count)
    except ResourceBalanceError as refusal:
        with pytest.raises(ResourceBalanceError) as raised:
            balance_resources(mapping, receiver, donor, rtom, count)
        assert str(raised.value) == str(refusal)
        return
    expected = {case_id: cell for cell, ids in apply_moves(index_by_cell(mapping), moves).items() for case_id in ids}
    assert balance_resources(mapping, receiver, donor, rtom, count) == expected
    assert balance_resources(MappingProxyType(mapping), receiver, donor, rtom, count) == expected


def test_index_of_some_drcs_is_the_full_index_restricted_to_them():
    cases = build(dict(WORKED, D3={"CW": 4, "AG": 2}))
    full = index_by_cell(cases)
    assert index_by_cell(cases, of_drcs=("D3", "D1", "D9")) == {cell: ids for cell, ids in full.items()
                                                                if cell.drc in ("D1", "D3")}
    assert all(isinstance(cell, Cell) for cell in index_by_cell(cases, of_drcs=("D2",)))


def test_round_robin_matches_an_independent_simulation():
    rng = random.Random(7)
    for _ in range(200):
        layout = {"R": {r: rng.randint(1, 9) for r in RTOMS}, "G": {r: rng.randint(1, 9) for r in RTOMS}}
        cases = build(layout)
        count = rng.randint(1, 5)
        rtom = rng.choice(RTOMS)
        if expected_refusal(cases, "R", "G", rtom, count):
            continue
        result = balance_resources(cases, "R", "G", rtom, count)
        remaining = {r: layout["R"][r] for r in RTOMS if r != rtom}
        order = sorted(remaining, key=lambda r: (-remaining[r], r))
        expected_back = Counter()
        while sum(expected_back.values()) < count:
            for r in order:
                if sum(expected_back.values()) < count and expected_back[r] < remaining[r]:
                    expected_back[r] += 1
        got_back = Counter(r for c, (d, r) in result.items() if d == "G" and cases[c][0] == "R")
        assert got_back == expected_back
