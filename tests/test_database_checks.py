"""The pure validators of database_checks: each rule and the message that names the field."""

import math

import pytest
from bson import Decimal128, Int64, ObjectId

from amounts import AmountKind
from database_checks import (
    build_case_maps,
    parse_transfer_count,
    read_case,
    select_amend_request,
    summary_cell_keys,
    task_batch_id,
    validate_distributions,
    validate_template_task_parameters,
)
from utils.Custom_Exceptions import TaskValidationError

TEMPLATE = {"Template_Task_Id": 3, "task_type": "Case Amend Planning among DRC",
            "parameters": {"Case_Distribution_Batch_ID": "string"}}
TASK = {"_id": ObjectId(), "Task_Id": 1, "Template_Task_Id": 3, "task_type": "Case Amend Planning among DRC",
        "parameters": {"Case_Distribution_Batch_ID": "005"}}


@pytest.mark.parametrize("value, expected", [(1, 1), (5, 5), ("5", 5), ("12", 12), (2.0, 2), (Int64(3), 3)])
def test_transfer_count_accepted(value, expected):
    assert parse_transfer_count(value, "d") == expected


@pytest.mark.parametrize("value", [0, -1, 2.5, True, False, None, "abc", "", " 5", "-3", "0", "2.5", "1e3",
                                   math.nan, math.inf, [2], {"$gt": 0}])
def test_transfer_count_refused(value):
    with pytest.raises(TaskValidationError, match=r"d\.transfer_count must be an integer of at least 1"):
        parse_transfer_count(value, "d")


def test_template_checks():
    validate_template_task_parameters(TASK, TEMPLATE, 3)
    with pytest.raises(TaskValidationError, match="task_type 'Other' does not match"):
        validate_template_task_parameters(dict(TASK, task_type="Other"), TEMPLATE, 3)
    with pytest.raises(TaskValidationError, match="Template_Task_Id is True"):
        validate_template_task_parameters(dict(TASK, Template_Task_Id=True), TEMPLATE, 1)
    with pytest.raises(TaskValidationError, match="parameters must be an object, got list"):
        validate_template_task_parameters(TASK, dict(TEMPLATE, parameters=["Case_Distribution_Batch_ID"]), 3)
    with pytest.raises(TaskValidationError, match="task parameters must be an object, got None"):
        validate_template_task_parameters(dict(TASK, parameters=None), TEMPLATE, 3)
    for empty in (None, "", "   ", [], {}):
        with pytest.raises(TaskValidationError, match="missing or empty: Case_Distribution_Batch_ID"):
            validate_template_task_parameters(dict(TASK, parameters={"Case_Distribution_Batch_ID": empty}),
                                              TEMPLATE, 3)


@pytest.mark.parametrize("batch_id", [{"$ne": None}, ["005"], True, 5.0, " 005", None])
def test_batch_id_is_never_a_query_operator_or_odd_type(batch_id):
    with pytest.raises(TaskValidationError,
                       match="Case_Distribution_Batch_ID must be a non-empty string or an integer"):
        task_batch_id({"parameters": {"Case_Distribution_Batch_ID": batch_id}})


def test_batch_id_string_or_integer():
    assert task_batch_id(TASK) == "005"
    assert task_batch_id({"parameters": {"Case_Distribution_Batch_ID": 5}}) == 5


def entry(**fields):
    base = {"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 2}
    base.update(fields)
    return base


@pytest.mark.parametrize("raw, message", [
    ([entry(rtom=" CW")], "rtom ' CW' has surrounding whitespace"),
    ([entry(donor_drc_id={"$ne": None})], r"donor_drc_id must be a non-empty string, got \{'\$ne': None\} \(dict\)"),
    ([entry(receiver_drc_id=7)], r"receiver_drc_id must be a non-empty string, got 7 \(int\)"),
    ([entry(), entry(transfer_count=0)], r"array_of_distributions\[1\]\.transfer_count"),
    (None, "must be a non-empty array"),
])
def test_distribution_refusals(raw, message):
    with pytest.raises(TaskValidationError, match=message):
        validate_distributions(raw, "batch 005 seq 2")


def seq(number, status="open", action="amend", distributions=None):
    return {"batch_seq": number, "action_type": action, "CRD_Distribution_Status": status,
            "array_of_distributions": distributions or [entry()]}


def test_lowest_open_amend_seq_is_selected():
    transaction = {"_id": 1, "summery_status": "open",
                   "batch_seq_details": [seq(1, action="distribution"), seq(4), seq(3), seq(2, status="close")]}
    request = select_amend_request(transaction, "005")
    assert request.batch_seq == 3 and not request.closes_transaction
    assert request.prior_status_on_present is False
    only = select_amend_request({"_id": 1, "summery_status": "open", "batch_seq_details": [seq(2)]}, "005")
    assert only.closes_transaction


@pytest.mark.parametrize("details, message", [
    (None, "batch_seq_details must be an array"),
    ([seq(1, action="distribution")], "no open amend seq"),
    ([seq("2")], "has batch_seq '2'; expected an integer"),
    ([seq(2), seq(2)], "more than one open amend seq numbered 2"),
])
def test_transaction_refusals(details, message):
    with pytest.raises(TaskValidationError, match=message):
        select_amend_request({"_id": 1, "summery_status": "open", "batch_seq_details": details}, "005")


def case(**fields):
    base = {"_id": 9, "Case_Id": 7, "Case_Distribution_Batch_ID": "005", "DRC_Id": "D1", "RTOM": "CW", "Arrease": 10.5}
    base.update(fields)
    return base


def test_read_case():
    assert read_case(case(), "005") == (7, "D1", "CW", 10.5)
    assert read_case(case(NEW_DRC_ID="D2"), "005")[1] == "D2"
    assert read_case(case(NEW_DRC_ID=""), "005")[1] == "D1"
    assert read_case(case(Arrease=None), "005")[3] == 0
    assert read_case(case(Arrease=Decimal128("12.25")), "005")[3] == 12.25
    assert read_case(case(Case_Id=Int64(7)), "005")[0] == 7


@pytest.mark.parametrize("document, message", [
    (case(Case_Id="7"), r"case _id 9 in batch 005: Case_Id must be an integer, got '7' \(str\)"),
    (case(Case_Id=7.0), r"got 7.0 \(float\)"),
    (case(Case_Id=True), r"got True \(bool\)"),
    (case(DRC_Id=" D1"), "DRC_Id ' D1' has surrounding whitespace"),
    (case(DRC_Id=None), "DRC_Id must be a non-empty string"),
    (case(RTOM=3), "RTOM must be a non-empty string"),
    (case(NEW_DRC_ID=5), "NEW_DRC_ID must be a non-empty string"),
    (case(Arrease="100"), r"Arrease must be a number, got '100' \(str\)"),
    (case(Arrease=math.nan), "Arrease must be a number"),
])
def test_case_refusals(document, message):
    with pytest.raises(TaskValidationError, match=message):
        read_case(document, "005")


def test_build_case_maps_shapes():
    cases = build_case_maps([case(), case(Case_Id=8, DRC_Id="D2", NEW_DRC_ID="D1", Arrease=2),
                             case(Case_Id=9, RTOM="AG", Arrease=1)], "005")
    assert cases.assignment == {7: ("D1", "CW"), 8: ("D1", "CW"), 9: ("D1", "AG")}
    assert cases.assignment[7] is cases.assignment[8]
    assert cases.holdings == {("D1", "CW"): [7, 8], ("D1", "AG"): [9]}
    assert cases.amounts == {("D1", "CW"): [10.5, 2], ("D1", "AG"): [1]}
    assert cases.arrears == {7: 10.5, 8: 2, 9: 1} and cases.amount_kind is AmountKind.FLOAT
    assert build_case_maps([case(Arrease=3)], "005").amount_kind is AmountKind.INTEGER


def test_the_fast_path_validates_like_the_slow_one():
    valid = case()
    for bad, message in ((case(Case_Id=8, DRC_Id=" D1"), "surrounding whitespace"),
                         (case(Case_Id=8, NEW_DRC_ID=0), "NEW_DRC_ID must be a non-empty string"),
                         (case(Case_Id=8, Arrease=True), "Arrease must be a number"),
                         (case(Case_Id=8, RTOM=["CW"]), "RTOM must be a non-empty string"),
                         (case(Case_Id=True), "Case_Id must be an integer")):
        with pytest.raises(TaskValidationError, match=message):
            build_case_maps([valid, bad], "005")


def test_duplicate_case_ids_are_refused():
    with pytest.raises(TaskValidationError, match="Case_Id 7 appears more than once in batch 005"):
        build_case_maps([case(), case(DRC_Id="D2")], "005")


def test_summary_rows_must_be_one_per_cell():
    batch = {"Case_Distribution_Batch_ID": "005"}
    rows = [{"_id": 1, "DRC_Id": "D1", "RTOM": "CW", **batch}, {"_id": 2, "DRC_Id": "D1", "RTOM": "AG", **batch}]
    assert summary_cell_keys(rows, "005") == {("D1", "CW"), ("D1", "AG")}
    with pytest.raises(TaskValidationError, match="more than one summary row for DRC D1 RTOM CW"):
        summary_cell_keys(rows + [{"_id": 3, "DRC_Id": "D1", "RTOM": "CW", **batch}], "005")
    with pytest.raises(TaskValidationError, match="summary row 4 of batch 005: RTOM"):
        summary_cell_keys([{"_id": 4, "DRC_Id": "D1", **batch}], "005")
