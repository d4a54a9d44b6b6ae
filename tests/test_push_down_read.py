"""The push-down read (database_checks.fetch_batch_cells, BatchRead.PUSH_DOWN) plans exactly what the full read
plans: the same cases moved, the same refusals and errors, the same summary to the bit, on random batches
(hypothesis), on every fixture and on generated batches; and it reads only the cases that can move, in a number
of commands that does not grow with the batch."""

import math
from contextlib import contextmanager, nullcontext
from decimal import Decimal
from fractions import Fraction
from unittest.mock import patch

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongomock import aggregate as mongomock_aggregate
from pymongo.errors import OperationFailure

import database_checks
from amend_plan import Distribution, apply_distributions, cases_taken
from amend_store import CASES_COLLECTION, SUMMARY_COLLECTION, TASKS_COLLECTION, TRANSACTIONS_COLLECTION, BatchRead
from amounts import AmountKind, CellSum, cell_total
from balance_resources import Cell, LowestCases, index_by_cell, lowest_case_ids
from database_checks import CASE_FIELDS
from fixture_generator import BatchShape, generate_batch
from task_processor import plan_batch
from tests.instruments import CommandLog
from tests.support import (
    FIXTURES,
    SETTINGS,
    add_batch,
    add_template,
    copy_of,
    disturbed,
    fresh_db,
    new_database,
    run_job,
    store_of,
)
from update_databases import reset_collections
from utils.Custom_Exceptions import FullReadNeeded, TaskProcessingError

DRCS = ("D1", "D2", "D3")
RTOMS = ("CW", "AG", "KT")


def planned(db, batch_read, batch_id="B"):
    """What plan_batch gives with `batch_read`: the plan, with every summary total's type and exact value, or the
    error it raised."""
    try:
        _, _, plan = plan_batch(store_of(db, batch_read=batch_read), batch_id, SETTINGS, "test")
    except TaskProcessingError as exc:
        return type(exc).__name__, str(exc)
    totals = [(cell.drc, cell.rtom, cell.count, type(cell.total_arrears), repr(cell.total_arrears))
              for cell in plan.summary]
    return [(type(change.case_id), change) for change in plan.changes], plan.description, totals


def whole_reads(monkeypatch):
    """The number of full reads of a batch, counted as they happen."""
    import task_processor

    calls = []
    real = task_processor.fetch_cases_for_batch
    monkeypatch.setattr(task_processor, "fetch_cases_for_batch", lambda *args: calls.append(args) or real(*args))
    return calls


# --- a server's arithmetic -----------------------------------------------------------------------------------------

_PLAIN_ARITHMETIC = mongomock_aggregate._Parser._handle_arithmetic_operator
_PLAIN_SUM = mongomock_aggregate._GROUPING_OPERATOR_MAP["$sum"]


def _arithmetic_as_a_server(parser, operator, values):
    """$floor and $ceil of a double give a double (mongomock: an exact int); $abs of the smallest Int64 fails."""
    number = parser.parse(values) if operator in ("$floor", "$ceil", "$abs") else None
    if operator == "$abs" and isinstance(number, int) and number == -2**63:
        raise OperationFailure("can't take $abs of long long min", code=28680)
    result = _PLAIN_ARITHMETIC(parser, operator, values)
    return float(result) if isinstance(number, float) and operator != "$abs" else result


def _sum_as_a_server(values):
    """A double as soon as one input is one (correctly rounded, as mongod's double-double summation); of integers,
    an Int64 (as pymongo decodes a BSON long) beyond an int32 or from an Int64 input, a double beyond an Int64."""
    numbers = [value for value in values if isinstance(value, (int, float)) and not isinstance(value, bool)]
    if any(isinstance(value, float) for value in numbers):
        return math.fsum(numbers)
    total = sum(numbers)
    if not -2**63 <= total < 2**63:
        return float(total)
    return Int64(total) if any(isinstance(value, Int64) for value in numbers) or not -2**31 <= total < 2**31 \
        else total


@contextmanager
def server_arithmetic():
    """mongomock answering $floor, $ceil, $abs and $sum as a MongoDB server does, where it answers otherwise."""
    with patch.object(mongomock_aggregate._Parser, "_handle_arithmetic_operator", _arithmetic_as_a_server), \
            patch.dict(mongomock_aggregate._GROUPING_OPERATOR_MAP, {"$sum": _sum_as_a_server}):
        yield


def test_the_server_arithmetic_stand_in_answers_as_a_server():
    db = new_database()
    db["numbers"].insert_many([{"x": 2.5}, {"x": Int64(3)}, {"x": 2**40}])
    with server_arithmetic():
        (floored,) = db["numbers"].aggregate([{"$match": {"x": 2.5}}, {"$project": {"f": {"$floor": "$x"}}}])
        (longs,) = db["numbers"].aggregate([{"$match": {"x": {"$gt": 2.5}}},
                                            {"$group": {"_id": 0, "t": {"$sum": "$x"}}}])
    assert type(floored["f"]) is float and type(longs["t"]) is Int64
    assert (_PLAIN_ARITHMETIC, _PLAIN_SUM) == (mongomock_aggregate._Parser._handle_arithmetic_operator,
                                              mongomock_aggregate._GROUPING_OPERATOR_MAP["$sum"])


# --- random batches ---------------------------------------------------------------------------------------------

CENTS = st.integers(-10**6, 10**9).map(lambda cents: cents / 100)
AMOUNTS = {
    "cents": CENTS,
    "integers": st.integers(-10**6, 10**9),
    "long integers": st.one_of(st.integers(-2**63, 2**63 - 1).map(Int64), st.integers(2**31, 2**40)),
    "cents and integers": st.one_of(CENTS, st.integers(-10**6, 10**6), st.none()),
    "any float": st.floats(-1e12, 1e12, allow_nan=False),
    "huge": st.one_of(CENTS, st.sampled_from([2**62, 2**63 - 1, 1e300, 9.99e15])),
    "decimals": st.one_of(CENTS, st.decimals(-10**6, 10**6, places=3).map(Decimal128)),
}
# A document the full read refuses, or whose amount only the full read sums: any of them is read whole.
HOSTILE = {
    "Case_Id as text": {"Case_Id": "7"}, "Case_Id a float": {"Case_Id": 7.0}, "Case_Id a bool": {"Case_Id": True},
    "no RTOM": {"RTOM": None}, "RTOM padded": {"RTOM": " CW"}, "DRC_Id empty": {"DRC_Id": ""},
    "DRC_Id a number": {"DRC_Id": 4}, "NEW_DRC_ID a number": {"NEW_DRC_ID": 5},
    "NEW_DRC_ID a list": {"NEW_DRC_ID": ["D1"]}, "NEW_DRC_ID blank": {"NEW_DRC_ID": "  "},
    "Arrease text": {"Arrease": "12"}, "Arrease NaN": {"Arrease": math.nan}, "Arrease infinite": {"Arrease": -math.inf},
    "Arrease a bool": {"Arrease": True}, "batch in a list": {"batch": ["B"]}, "Arrease a list": {"Arrease": [1]},
    "Arrease a decimal": {"Arrease": Decimal128("1.5")},
}


@st.composite
def batches(draw):
    """(case documents, distributions) of a batch "B" with 1 to 80 cases over 3 DRCs and 3 RTOMs."""
    size = draw(st.integers(1, 80))
    case_ids = draw(st.lists(st.integers(1, 10**6), min_size=size, max_size=size, unique=True))
    if draw(st.booleans()):
        case_ids = [Int64(case_id) for case_id in case_ids]  # as a BSON long decodes
    amounts = AMOUNTS[draw(st.sampled_from(sorted(AMOUNTS)))]
    cases = []
    for case_id in case_ids:
        case = {"Case_Id": case_id, "Case_Distribution_Batch_ID": "B", "DRC_Id": draw(st.sampled_from(DRCS)),
                "RTOM": draw(st.sampled_from(RTOMS))}
        amended = draw(st.sampled_from(["absent", None, "", *DRCS]))
        if amended != "absent":
            case["NEW_DRC_ID"] = amended
        amount = draw(amounts)
        if amount is not None:
            case["Arrease"] = amount
        cases.append(case)
    if draw(st.integers(0, 9)) == 0:
        hostile = dict(HOSTILE[draw(st.sampled_from(sorted(HOSTILE)))])
        if "batch" in hostile:
            hostile["Case_Distribution_Batch_ID"] = hostile.pop("batch")
        cases[draw(st.integers(0, size - 1))].update(hostile)
    if draw(st.integers(0, 19)) == 0:
        cases.append(dict(draw(st.sampled_from(cases)), DRC_Id=draw(st.sampled_from(DRCS))))  # a duplicated Case_Id
    distributions = []
    for _ in range(draw(st.integers(1, 3))):
        donor = draw(st.sampled_from(DRCS))
        receiver = draw(st.sampled_from([drc for drc in DRCS if drc != donor] if draw(st.integers(0, 19)) else DRCS))
        distributions.append({"rtom": draw(st.sampled_from(RTOMS)), "donor_drc_id": donor,
                              "receiver_drc_id": receiver, "transfer_count": draw(st.integers(1, 4))})
    return cases, distributions


def batch_database(cases, distributions):
    db = new_database()
    add_template(db)
    add_batch(db, "B", {}, distributions)
    db[CASES_COLLECTION].insert_many([dict(case) for case in cases])
    return db


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.sampled_from([database_checks.MAX_CELL_FINDS, 0]), st.booleans())
def test_both_reads_plan_the_same_on_random_batches(batch, cell_finds, as_a_server):
    """With the cells' lowest cases read by one find each, and by one aggregation (no find allowed); with
    mongomock's arithmetic, and with a server's."""
    db = batch_database(*batch)
    with patch.object(database_checks, "MAX_CELL_FINDS", cell_finds), \
            server_arithmetic() if as_a_server else nullcontext():
        pushed = planned(db, BatchRead.PUSH_DOWN)
    assert pushed == planned(db, BatchRead.FULL)


# --- whole runs, fixtures and generated batches --------------------------------------------------------------------

def outcome_of_a_run(db, batch_read):
    """What a run leaves in the data collections, the fields a run chooses afresh (its identity, new rows' _ids,
    its claim) left out."""
    db = copy_of(db)
    run_job(db, batch_read=batch_read)
    return {
        CASES_COLLECTION: sorted(db[CASES_COLLECTION].find({}, {"_id": 0}), key=repr),
        SUMMARY_COLLECTION: sorted(db[SUMMARY_COLLECTION].find({}, {"_id": 0}), key=repr),
        TRANSACTIONS_COLLECTION: list(db[TRANSACTIONS_COLLECTION].find()),
        TASKS_COLLECTION: [(task["_id"], task["task_status"], task.get("status_description"))
                           for task in db[TASKS_COLLECTION].find()],
    }


def test_both_reads_leave_the_fixtures_the_same(monkeypatch):
    db = fresh_db()
    full = outcome_of_a_run(db, BatchRead.FULL)
    reads = whole_reads(monkeypatch)
    assert outcome_of_a_run(db, BatchRead.PUSH_DOWN) == full
    assert reads == []
    # both open amend tasks completed, beside the one completed before; the other type's task stays open
    assert sorted(task[1] for task in full[TASKS_COLLECTION]) == ["completed"] * 3 + ["open"]


@pytest.mark.parametrize("shape", [
    BatchShape(3_000, drcs=4, rtoms=4, distributions=3, seed=1),
    BatchShape(3_000, drcs=6, rtoms=16, distributions=4, seed=5),
    BatchShape(3_000, drcs=2, rtoms=3, distributions=3, transfer_share=0.3, seed=2),
    BatchShape(2_000, drcs=10, rtoms=16, distributions=3, seed=3),
], ids=["few-moves", "cells-read-by-one-aggregation", "a-third-moves", "many-cells"])
def test_both_reads_leave_a_generated_batch_the_same(shape, monkeypatch):
    db = new_database()
    reset_collections(store_of(db), generate_batch(shape))
    full = outcome_of_a_run(db, BatchRead.FULL)
    reads = whole_reads(monkeypatch)
    assert outcome_of_a_run(db, BatchRead.PUSH_DOWN) == full
    assert reads == []
    assert full[TASKS_COLLECTION][0][1] == "completed"


# --- what it reads ----------------------------------------------------------------------------------------------

def documents_read(shape, batch_read):
    """(commands of the task, documents its commands returned, cases it moved) of one run on a generated batch."""
    db = new_database()
    reset_collections(store_of(db), generate_batch(shape))
    counting = CommandLog()
    report = run_job(disturbed(db, counting), batch_read=batch_read)
    assert [outcome.status for outcome in report.outcomes] == ["completed"]
    return counting.commands_of_first_task(), counting.documents_returned_to_first_task()[0], report.cases_moved


def test_a_task_reads_only_the_cases_that_can_move_in_few_commands():
    shape = BatchShape(5_000, distributions=3, seed=4)
    commands, read, moved = documents_read(shape, BatchRead.PUSH_DOWN)
    full_commands, full_read, full_moved = documents_read(shape, BatchRead.FULL)
    assert moved == full_moved and full_read > 5_000
    # one $group row per cell (10 DRCs x 8 RTOMs, none amended yet); the cases the three distributions take, some
    # of them twice (a case given and given back), then the prior values of the changed ones; the task, its
    # template, transaction, summary rows (80) and journal
    assert read <= 2 * 10 * 8 + 4 * moved + 10, (read, moved)
    assert len(commands) <= 40, commands
    assert len(full_commands) < len(commands)


# --- the parts ----------------------------------------------------------------------------------------------------

def test_cases_taken_counts_what_the_rule_takes_from_each_cell():
    holdings = index_by_cell({case_id: (DRCS[case_id % 3], RTOMS[case_id // 3 % 3]) for case_id in range(90)})
    distributions = (Distribution("CW", "D2", "D1", 3), Distribution("AG", "D1", "D3", 2),
                     Distribution("CW", "D1", "D2", 1))
    _, moved = apply_distributions(holdings, distributions, Fraction(1, 5))
    taken = cases_taken({cell: len(ids) for cell, ids in holdings.items()}, distributions, Fraction(1, 5))
    assert sum(taken.values()) == 2 * (3 + 2 + 1)
    assert {cell for cell in taken} >= {Cell("D2", "CW"), Cell("D1", "AG")}
    assert len(moved) <= sum(taken.values())


def test_lowest_cases_gives_what_was_read_and_refuses_more():
    cell = LowestCases(10, [3, 5, 8], known_up_to=8)
    assert list(lowest_case_ids(cell, 2)) == [3, 5]
    with pytest.raises(FullReadNeeded):
        list(lowest_case_ids(cell, 4))
    assert list(lowest_case_ids(LowestCases(3, [3, 5, 8], known_up_to=math.inf), 4)) == [3, 5, 8]
    moved = cell.moved({3}, [4, 20])
    assert (moved.count, list(moved.lowest)) == (11, [4, 5, 8])  # 20 is above what was read: counted only


@pytest.mark.parametrize("amounts", [[0.1, 0.2, 12.34], [1e9 / 100, -5.55, 7], [19.99] * 1000, [3], [-0.0],
                                     [0.5, -0.5]])
def test_a_cell_sum_gives_cell_totals_float_total(amounts):
    cents = sum(round(Fraction(amount) * 100) for amount in amounts)
    figures = CellSum(len(amounts), cents, max(abs(amount) for amount in amounts))
    assert repr(figures.total(AmountKind.FLOAT)) == repr(cell_total(amounts, AmountKind.FLOAT, "cell"))


def test_a_cell_sum_refuses_what_it_cannot_vouch_for():
    with pytest.raises(FullReadNeeded, match="too large"):
        CellSum(10**6, 10**16, 1e14).total(AmountKind.FLOAT)
    with pytest.raises(FullReadNeeded, match="decimal"):
        CellSum(1, 5, 5.0).total(AmountKind.DECIMAL)
    assert CellSum(2, 2**70, 2.0**69).total(AmountKind.INTEGER) == 2**70
    assert CellSum(0, 0, 0.0).total(AmountKind.FLOAT) == 0.0


@pytest.mark.parametrize("hostile, reason", [
    ({"Arrease": Decimal128("1.25")}, "cannot vouch"), ({"Arrease": 0.3000000001}, "no whole number of cents"),
    ({"Case_Id": 2}, "appears more than once"), ({"DRC_Id": " D1"}, "malformed code"), ({"RTOM": 5}, "cannot vouch"),
])
def test_a_batch_the_push_down_read_cannot_vouch_for_is_read_whole_and_says_why(hostile, reason, caplog, monkeypatch):
    db = new_database()
    add_template(db)
    add_batch(db, "B", {"D1": {"CW": 5, "AG": 5}, "D2": {"CW": 5, "AG": 5}},
              [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 1}])
    db[CASES_COLLECTION].update_one({"Case_Id": 1}, {"$set": hostile})
    reads = whole_reads(monkeypatch)
    with caplog.at_level("INFO", logger="drs_amend"):
        pushed = planned(db, BatchRead.PUSH_DOWN)
    assert len(reads) == 1
    assert pushed == planned(db, BatchRead.FULL)
    assert any("reading the whole batch B: " in message and reason in message for message in caplog.messages)


def test_an_amend_of_a_batch_of_decimals_is_exact_either_way():
    db = new_database()
    add_template(db)
    add_batch(db, "B", {"D1": {"CW": 3, "AG": 3}, "D2": {"CW": 3, "AG": 3}},
              [{"rtom": "CW", "donor_drc_id": "D2", "receiver_drc_id": "D1", "transfer_count": 1}])
    db[CASES_COLLECTION].update_many({}, {"$set": {"Arrease": Decimal128(Decimal("0.1"))}})
    assert planned(db, BatchRead.PUSH_DOWN) == planned(db, BatchRead.FULL)


def test_main_reads_batches_on_a_server_with_the_push_down_read(script, monkeypatch, tmp_path):
    """main.py against a mongodb:// URI (mongomock standing in for pymongo's client): each task reads only the
    cases it moves, and the run completes both fixture tasks as the embedded default does."""
    import mongomock

    import utils.connectDB

    client = mongomock.MongoClient()
    reset_collections(store_of(client["drs_case_distribution_db"]), FIXTURES)
    monkeypatch.setattr(utils.connectDB, "MongoClient", lambda uri, **options: client)
    result = script("main.py", "--log-dir", str(tmp_path), env={"DRS_MONGO_URI": "mongodb://db.example.org/"})
    assert result.returncode == 0, result.stderr
    log = "\n".join(path.read_text() for path in tmp_path.glob("*.log"))
    assert "read 4 of the 31 case(s) in 6 cell(s) of batch 005" in log
    assert "read 6 of the 49 case(s) in 10 cell(s) of batch 006" in log
    assert "reading the whole batch" not in log


# --- what a hostile review found ----------------------------------------------------------------------------------

def reviewed_batch(cases, distributions):
    db = new_database()
    add_template(db)
    add_batch(db, "B", {}, distributions)
    db[CASES_COLLECTION].insert_many([{"Case_Distribution_Batch_ID": "B", **case} for case in cases])
    return db


def test_cents_summed_beyond_two_to_the_53_on_a_server_stay_exact():
    """Six amounts near 1.76e13 leave a cell one by one: a server summing their cents as doubles was a cent off."""
    large = 17592186044409.99
    cases = [{"Case_Id": n + 1, "DRC_Id": "D1", "RTOM": "CW", "Arrease": amount}
             for n, amount in enumerate([large] * 5 + [17592186044409.98])]
    cases += [{"Case_Id": 100, "DRC_Id": "D1", "RTOM": "CW", "Arrease": 0.02},
              {"Case_Id": 101, "DRC_Id": "D1", "RTOM": "AG", "Arrease": 1.0}]
    case_id = 200
    for receiver in range(2, 8):
        for rtom, count in (("CW", 1), ("AG", 2)):
            for _ in range(count):
                cases.append({"Case_Id": case_id, "DRC_Id": f"D{receiver}", "RTOM": rtom, "Arrease": 0.0})
                case_id += 1
    db = reviewed_batch(cases, [{"rtom": "CW", "donor_drc_id": "D1", "receiver_drc_id": f"D{receiver}",
                                 "transfer_count": 1} for receiver in range(2, 8)])
    with server_arithmetic():
        assert planned(db, BatchRead.PUSH_DOWN) == planned(db, BatchRead.FULL)


def test_integer_totals_a_server_returns_as_int64_are_read_on_the_server(monkeypatch):
    cases = [{"Case_Id": n, "DRC_Id": f"D{n % 2 + 1}", "RTOM": ("CW", "AG")[n // 2 % 2], "Arrease": Int64(2**40)}
             for n in range(40)]
    db = reviewed_batch(cases, [{"rtom": "CW", "donor_drc_id": "D1", "receiver_drc_id": "D2", "transfer_count": 1}])
    reads = whole_reads(monkeypatch)
    with server_arithmetic():
        pushed = planned(db, BatchRead.PUSH_DOWN)
    assert reads == []
    assert pushed == planned(db, BatchRead.FULL)


def test_the_smallest_int64_amount_does_not_fail_the_read_on_a_server():
    cases = [{"Case_Id": n, "DRC_Id": f"D{n % 2 + 1}", "RTOM": ("CW", "AG")[n // 2 % 2], "Arrease": 5}
             for n in range(40)]
    cases[7]["Arrease"] = Int64(-2**63)
    db = reviewed_batch(cases, [{"rtom": "CW", "donor_drc_id": "D1", "receiver_drc_id": "D2", "transfer_count": 1}])
    with server_arithmetic():
        assert planned(db, BatchRead.PUSH_DOWN) == planned(db, BatchRead.FULL)


@pytest.mark.parametrize("emptied", ["D1", "D3"])
def test_a_write_between_the_reads_sends_the_task_to_the_full_read(emptied, monkeypatch):
    """Another process amends the donor's cases between the count and the cell's read: the full read decides on
    what is there then (the donor's cell emptied failed with an IndexError). A write to a cell the plan does not
    read goes unseen, as a write behind the full read's cursor would (docs/scale.md: neither is a snapshot)."""
    cases = [{"Case_Id": n, "DRC_Id": f"D{n % 2 + 1}", "RTOM": ("CW", "AG")[n // 2 % 2], "Arrease": 10}
             for n in range(1, 41)]
    db = reviewed_batch(cases, [{"rtom": "CW", "donor_drc_id": "D1", "receiver_drc_id": "D2", "transfer_count": 1}])
    real = database_checks.cases_taken

    def taken_then_a_write(*args):
        taken = real(*args)
        db[CASES_COLLECTION].update_many({"DRC_Id": emptied, "RTOM": "CW"}, {"$set": {"NEW_DRC_ID": "D3"}})
        return taken

    monkeypatch.setattr(database_checks, "cases_taken", taken_then_a_write)
    reads = whole_reads(monkeypatch)
    pushed = planned(db, BatchRead.PUSH_DOWN)
    assert len(reads) == (1 if emptied == "D1" else 0)
    assert pushed == planned(db, BatchRead.FULL)


def test_cells_read_by_one_aggregation_only_while_its_answer_stays_small(monkeypatch):
    """The weight of a case read, estimated from the batch id and the longest code, bounds its BSON size (long
    codes included), and the cells are read one find each once the one answer would pass MAX_AGGREGATED_BYTES."""
    long_code = "D" * 2_000
    cases = [{"Case_Id": n, "DRC_Id": ("D1", long_code)[n % 2], "RTOM": f"R{n // 2 % 14}", "Arrease": 1.25,
              "NEW_DRC_ID": long_code if n % 6 == 1 else None} for n in range(1_000)]
    db = reviewed_batch(cases, [{"rtom": "R0", "donor_drc_id": "D1", "receiver_drc_id": long_code,
                                 "transfer_count": 13}])
    _, _, case_bytes = database_checks._read_cell_figures(store_of(db), "B")
    assert case_bytes >= max(len(bson.encode(case)) for case in db[CASES_COLLECTION].find({}, CASE_FIELDS))

    def cell_reads(limit):
        monkeypatch.setattr(database_checks, "MAX_AGGREGATED_BYTES", limit)
        counting = CommandLog()
        plan_batch(store_of(disturbed(db, counting), batch_read=BatchRead.PUSH_DOWN), "B", SETTINGS, "test")
        return [command for collection, command in counting.commands if collection == CASES_COLLECTION]

    taken = 26  # the donor's 13, the receiver's 13, one from each of its other RTOMs: 14 cells
    assert cell_reads(taken * case_bytes) == ["aggregate"] * 3
    assert cell_reads(taken * case_bytes - 1) == ["aggregate"] * 2 + ["find"] * 14
