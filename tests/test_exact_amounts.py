"""Tot_Arrease is exact whatever the amounts' BSON type (issue 8, item 10), and a batch id matches
only itself (item 11)."""

from decimal import Decimal

import pytest
from bson import Decimal128, Int64

from amend_store import CASES_COLLECTION, SUMMARY_COLLECTION, TASKS_COLLECTION
from amounts import AmountKind, cell_total
from database_checks import build_case_maps, is_batch_id, validate_distributions
from tests.support import add_batch, run_job
from utils.Custom_Exceptions import TaskValidationError

BIG = 2**53 + 1  # the first integer a float cannot hold


def run_with_amounts(db, settings, amounts):
    """Batch B1 (D1: CW 8, AG 4; D2: CW 3, AG 5, one CW moved D2 -> D1) with the given Arrease per Case_Id order."""
    cases = add_batch(db, "B1", {"D1": {"CW": 8, "AG": 4}, "D2": {"CW": 3, "AG": 5}},
                      [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 1}])
    for case, amount in zip(cases, amounts, strict=False):
        db[CASES_COLLECTION].update_one({"Case_Id": case["Case_Id"]}, {"$set": {"Arrease": amount}})
    report = run_job(db, settings=settings)
    assert [o.status for o in report.outcomes] == ["completed"], report.outcomes
    expected = {}
    for case in db[CASES_COLLECTION].find({"Case_Distribution_Batch_ID": "B1"}):
        cell = (case.get("NEW_DRC_ID") or case["DRC_Id"], case["RTOM"])
        expected.setdefault(cell, []).append(case["Arrease"])
    stored = {(row["DRC_Id"], row["RTOM"]): row["Tot_Arrease"] for row in db[SUMMARY_COLLECTION].find()}
    return expected, stored


def test_int64_amounts_are_summed_exactly_as_integers(empty_db, settings):
    expected, stored = run_with_amounts(empty_db, settings, [Int64(BIG)] * 20)
    for cell, amounts in expected.items():
        assert stored[cell] == sum(int(amount) for amount in amounts)
        assert isinstance(stored[cell], int) and not isinstance(stored[cell], bool)
    assert stored[("D1", "CW")] == 9 * BIG  # a float sum would have rounded each 2**53 + 1


def test_decimal128_amounts_are_summed_exactly_as_decimals(empty_db, settings):
    amounts = [Decimal128("0.10"), Decimal128("0.20"), Decimal128("1234567890123456789.01")] * 7
    expected, stored = run_with_amounts(empty_db, settings, amounts)
    for cell, cell_amounts in expected.items():
        assert stored[cell] == Decimal128(sum((a.to_decimal() for a in cell_amounts), Decimal(0)))


def test_integers_and_decimals_together_are_summed_as_decimals(empty_db, settings):
    expected, stored = run_with_amounts(empty_db, settings, [Decimal128("0.10"), 7, Int64(BIG)] * 7)
    for cell, amounts in expected.items():
        exact = sum((a.to_decimal() if isinstance(a, Decimal128) else Decimal(a) for a in amounts), Decimal(0))
        assert stored[cell] == Decimal128(exact)


def test_an_integer_total_beyond_int64_is_stored_as_an_exact_decimal(empty_db, settings):
    expected, stored = run_with_amounts(empty_db, settings, [Int64(2**62)] * 20)
    assert stored[("D1", "CW")] == Decimal128(Decimal(9 * 2**62))


def test_a_decimal_total_beyond_34_digits_ends_the_task_without_writing(empty_db, settings):
    amounts = [Decimal128("1E+30"), Decimal128("0.0001")] * 10
    cases = add_batch(empty_db, "B1", {"D1": {"CW": 8, "AG": 4}, "D2": {"CW": 3, "AG": 5}},
                      [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 1}])
    for case, amount in zip(cases, amounts, strict=False):
        empty_db[CASES_COLLECTION].update_one({"Case_Id": case["Case_Id"]}, {"$set": {"Arrease": amount}})
    run_job(empty_db, settings=settings)
    task = empty_db[TASKS_COLLECTION].find_one()
    assert task["task_status"] == "error"
    assert "Tot_Arrease cannot be summed exactly in the 34 digits of a Decimal128" in task["status_description"]
    assert task["status_description"].endswith("nothing was written")


def test_cell_total_by_kind():
    assert cell_total([BIG, BIG], AmountKind.INTEGER, "cell") == 2 * BIG
    assert cell_total([Decimal("0.1"), Decimal("0.2"), 1], AmountKind.DECIMAL, "cell") == Decimal("1.3")
    assert cell_total([0.1, 0.2], AmountKind.FLOAT, "cell") == 0.3
    with pytest.raises(TaskValidationError, match="cell: Tot_Arrease cannot be summed exactly"):
        cell_total([Decimal("1E+40"), Decimal("1")], AmountKind.DECIMAL, "cell")


def case(case_id, amount):
    return {"Case_Id": case_id, "Case_Distribution_Batch_ID": "B", "DRC_Id": "D1", "RTOM": "CW", "Arrease": amount}


@pytest.mark.parametrize("amounts, kind", [([1, Int64(2)], AmountKind.INTEGER),
                                           ([1, Decimal128("2.5")], AmountKind.DECIMAL),
                                           ([1, 2.5], AmountKind.FLOAT), ([Decimal128("1"), 2.5], AmountKind.FLOAT)])
def test_the_kind_of_a_batch_follows_its_amounts(amounts, kind):
    cases = build_case_maps([case(i, amount) for i, amount in enumerate(amounts, 1)], "B")
    assert cases.amount_kind is kind


@pytest.mark.parametrize("amount", [Decimal128("NaN"), Decimal128("Infinity"), Decimal128("-Infinity")])
def test_a_decimal128_that_is_no_number_is_refused(amount):
    with pytest.raises(TaskValidationError, match="Arrease must be a number"):
        build_case_maps([case(1, amount)], "B")


@pytest.mark.parametrize("value, batch_id, same", [
    ("005", "005", True), (["005"], "005", False), (5, "005", False), (5, 5, True), (Int64(5), 5, True),
    (5.0, 5, False), (True, 1, False), ([5], 5, False), ("5", 5, False), ({"$eq": 5}, 5, False),
])
def test_a_batch_id_matches_only_itself(value, batch_id, same):
    assert is_batch_id(value, batch_id) is same


def test_a_float_batch_id_on_a_case_is_refused():
    with pytest.raises(TaskValidationError, match="Case_Distribution_Batch_ID must be exactly 5, got 5.0 \\(float\\)"):
        build_case_maps([dict(case(1, 10), Case_Distribution_Batch_ID=5.0)], 5)


def test_a_thousand_distributions_are_validated_and_a_repeat_is_named():
    entries = [{"rtom": f"R{n}", "donor_drc_id": "D1", "receiver_drc_id": "D2", "transfer_count": 1}
               for n in range(999)]
    assert len(validate_distributions(entries, "seq")) == 999
    repeat = r"seq.array_of_distributions\[999\] repeats array_of_distributions\[3\]"
    with pytest.raises(TaskValidationError, match=repeat):
        validate_distributions(entries + [entries[3]], "seq")


def test_a_float_total_beyond_the_largest_float_is_a_validation_error():
    with pytest.raises(TaskValidationError, match="cell: Tot_Arrease exceeds the largest float"):
        cell_total([1e308, 1e308], AmountKind.FLOAT, "cell")
