"""Reads of the job and the validation of what they return.

The fetch_* functions read through the store (amend_store.AmendStore.read: one call per
query, retried there); the validators are pure functions of the documents, so every rule
is tested without a database. Every failure is a TaskValidationError whose message names
the document and the field to fix.
"""

import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeVar

from amend_plan import AmendRequest, BatchCases, Distribution, cases_taken
from amend_store import (
    AMEND_FIELDS,
    AMEND_TASK_TYPE,
    AMENDED_BY_FIELD,
    CASES_COLLECTION,
    OPERATOR_ACTIONS_FIELD,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TEMPLATES_COLLECTION,
    TRANSACTIONS_COLLECTION,
    AmendStore,
    SeqStatus,
    TaskStatus,
)
from amounts import Amount, AmountKind, CellSum, kind_of, read_arrears
from balance_resources import Cell, LowestCases, distribution_error, is_transfer_count
from utils.cli import INT64_MAX
from utils.Custom_Exceptions import FullReadNeeded, TaskValidationError
from utils.documents import BatchId, Document

Result = TypeVar("Result")

DISTRIBUTION_KEYS = ("rtom", "donor_drc_id", "receiver_drc_id", "transfer_count")
CASE_FIELDS = {"_id": 1, "Case_Id": 1, "Case_Distribution_Batch_ID": 1, "DRC_Id": 1, "NEW_DRC_ID": 1, "RTOM": 1,
               "Arrease": 1}
# One amend seq holds a handful of distributions; thousands are a malformed request, refused before planning.
MAX_DISTRIBUTIONS = 1_000
OLDEST_FIRST = [("created_dtm", 1), ("Task_Id", 1), ("_id", 1)]
_INTEGRAL_TEXT = re.compile(r"[0-9]+")


def _kind(value: object) -> str:
    return type(value).__name__


def is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or \
        (isinstance(value, (list, dict, tuple)) and not value)


def require_code(value: object, where: str) -> str:
    """A DRC id or RTOM code: a non-empty string without surrounding whitespace."""
    if not isinstance(value, str) or not value.strip():
        raise TaskValidationError(f"{where} must be a non-empty string, got {value!r} ({_kind(value)})")
    if value != value.strip():
        raise TaskValidationError(f"{where} {value!r} has surrounding whitespace")
    return value


# --- tasks and templates -------------------------------------------------------------

def amend_tasks_filter(query: Document, task_id: int | None = None) -> Document:
    query = dict(query, task_type=AMEND_TASK_TYPE)
    if task_id is not None:
        query["Task_Id"] = task_id
    return query


def holds_the_job(store: AmendStore) -> bool:
    """Whether the database holds any task or template: one without either is not the job's (a wrong
    DB_NAME or URI, or an embedded file never loaded), and a run there must not pass for a successful one."""
    def holds_a_document(name: str) -> bool:
        return store.read(f"looking for a document in {name}", lambda: store[name].find_one({}, {"_id": 1})) is not None
    return holds_a_document(TASKS_COLLECTION) or holds_a_document(TEMPLATES_COLLECTION)


def fetch_open_tasks(store: AmendStore, task_id: int | None = None) -> list[Document]:
    """Open amend tasks, oldest first (created_dtm, then Task_Id); other task types are never read.
    With `task_id`, only the amend task(s) of that Task_Id."""
    return store.read("selecting open tasks", lambda: list(store[TASKS_COLLECTION].find(
        amend_tasks_filter({"task_status": TaskStatus.OPEN}, task_id), {"_id": 1, "Task_Id": 1, "created_dtm": 1},
    ).sort(OLDEST_FIRST)))


def fetch_amend_task_statuses(store: AmendStore, task_id: int) -> list[str]:
    """The task_status of every amend task with this Task_Id; a TaskValidationError when there is none
    (main.py --task-id naming no amend task is a mistake, not a run with nothing to do)."""
    statuses = store.read(f"reading the amend tasks {task_id}", lambda: [
        str(task.get("task_status")) for task in store[TASKS_COLLECTION].find(amend_tasks_filter({}, task_id),
                                                                               {"task_status": 1})])
    if not statuses:
        raise TaskValidationError(f"no amend task has Task_Id {task_id} (task_type {AMEND_TASK_TYPE!r}); "
                                  f"nothing was done")
    return statuses


def fetch_tasks_by_task_id(store: AmendStore, task_id: int) -> list[Document]:
    """Every task with this Task_Id, of any type (an operator's action names a task by it), oldest first."""
    return store.read(f"reading the tasks {task_id}", lambda: list(store[TASKS_COLLECTION].find(
        {"Task_Id": task_id}).sort(OLDEST_FIRST)))


def fetch_task(store: AmendStore, task_object_id: object) -> Document | None:
    return store.read(f"reading task {task_object_id}",
                      lambda: store[TASKS_COLLECTION].find_one({"_id": task_object_id}))


def task_parameters(task: Document) -> Document:
    parameters = task.get("parameters")
    if not isinstance(parameters, dict):
        raise TaskValidationError(f"task parameters must be an object, got {parameters!r} ({_kind(parameters)})")
    return parameters


def is_batch_id(value: object, batch_id: BatchId) -> bool:
    """`value` is exactly `batch_id`: the same string, or the same integer (an array holding it,
    or a float equal to it, is not, although a MongoDB query on the batch matches both)."""
    if isinstance(batch_id, str):
        return type(value) is str and value == batch_id
    return isinstance(value, int) and not isinstance(value, bool) and value == batch_id


def require_batch_id(document: Document, batch_id: BatchId, what: str) -> None:
    value = document.get("Case_Distribution_Batch_ID")
    if not is_batch_id(value, batch_id):
        raise TaskValidationError(
            f"{what}: Case_Distribution_Batch_ID must be exactly {batch_id!r}, got {value!r} ({_kind(value)})")


def task_batch_id(task: Document) -> BatchId:
    """parameters.Case_Distribution_Batch_ID: a non-empty string or an integer, never a query operator."""
    batch_id = task_parameters(task).get("Case_Distribution_Batch_ID")
    if isinstance(batch_id, str) and batch_id.strip() and batch_id == batch_id.strip():
        return batch_id
    if isinstance(batch_id, int) and not isinstance(batch_id, bool):
        return batch_id
    raise TaskValidationError(
        f"parameters.Case_Distribution_Batch_ID must be a non-empty string or an integer, "
        f"got {batch_id!r} ({_kind(batch_id)})")


def batch_of(task: Document) -> BatchId | None:
    """The task's batch id, or None when it has none that task_batch_id accepts (for reports)."""
    try:
        return task_batch_id(task)
    except TaskValidationError:
        return None


def validate_template_task_parameters(task: Document, template: Document, template_task_id: int) -> None:
    """The task must follow the configured template: same id, same type, every parameter present."""
    task_template_id = task.get("Template_Task_Id")
    if isinstance(task_template_id, bool) or task_template_id != template_task_id:
        raise TaskValidationError(
            f"task Template_Task_Id is {task_template_id!r}; TEMPLATE_TASK_ID is {template_task_id}")
    if task.get("task_type") != template.get("task_type"):
        raise TaskValidationError(
            f"task_type {task.get('task_type')!r} does not match the template's {template.get('task_type')!r}")
    required = template.get("parameters")
    if not isinstance(required, dict):
        raise TaskValidationError(
            f"Template_task {template_task_id} parameters must be an object, got {_kind(required)}")
    parameters = task_parameters(task)
    missing = sorted(key for key in required if is_empty(parameters.get(key)))
    if missing:
        raise TaskValidationError(f"task parameters missing or empty: {', '.join(missing)}")


def fetch_and_validate_template_task(store: AmendStore, task: Document, template_task_id: int) -> Document:
    """The configured Template_task of the amend type, checked against the task; templates are only read."""
    templates = store.read("reading the template", lambda: list(store[TEMPLATES_COLLECTION].find(
        {"Template_Task_Id": template_task_id, "task_type": AMEND_TASK_TYPE}).limit(2)))
    if not templates:
        raise TaskValidationError(
            f"no Template_task with Template_Task_Id {template_task_id} and task_type {AMEND_TASK_TYPE!r}")
    if len(templates) > 1:
        raise TaskValidationError(
            f"more than one Template_task has Template_Task_Id {template_task_id} and task_type {AMEND_TASK_TYPE!r}")
    validate_template_task_parameters(task, templates[0], template_task_id)
    return templates[0]


# --- the amend request ---------------------------------------------------------------

def _shown(value: object) -> str:
    """A value for a message, short; a huge integer is never turned into text (Python refuses beyond 4300 digits)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:20]!r}... ({len(value)} characters)"
    return repr(value)


def parse_transfer_count(value: object, where: str) -> int:
    """An integer from 1 to INT64_MAX (what MongoDB's Int64 holds); an integral numeric string ("5") or an
    integral float (5.0) is accepted."""
    count: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        count = int(value)
    elif isinstance(value, str) and _INTEGRAL_TEXT.fullmatch(value):
        # Text of more digits than INT64_MAX is beyond it, and never given to int(), which refuses more than
        # 4300 digits (ValueError) and slows down long before; leading zeros are no digits.
        digits = value.lstrip("0") or "0"
        count = int(digits) if len(digits) <= len(str(INT64_MAX)) else INT64_MAX + 1
    if count is not None and count > INT64_MAX:
        raise TaskValidationError(f"{where}.transfer_count must be at most {INT64_MAX} (2**63-1, the largest Int64), "
                                  f"got {_shown(value)} ({_kind(value)})")
    if count is None or not is_transfer_count(count):
        raise TaskValidationError(
            f"{where}.transfer_count must be an integer of at least 1, got {_shown(value)} ({_kind(value)})")
    return count


def validate_distributions(raw: object, where: str) -> tuple[Distribution, ...]:
    if not isinstance(raw, list) or not raw:
        raise TaskValidationError(f"{where}.array_of_distributions must be a non-empty array, got {raw!r}")
    if len(raw) > MAX_DISTRIBUTIONS:
        raise TaskValidationError(
            f"{where}.array_of_distributions holds {len(raw)} entries, more than the {MAX_DISTRIBUTIONS} one "
            f"amend request may hold; split the request")
    distributions: dict[Distribution, int] = {}
    for index, entry in enumerate(raw):
        at = f"{where}.array_of_distributions[{index}]"
        if not isinstance(entry, dict):
            raise TaskValidationError(f"{at} must be an object, got {entry!r}")
        missing = [key for key in DISTRIBUTION_KEYS if key not in entry]
        if missing:
            raise TaskValidationError(f"{at} lacks {', '.join(missing)}")
        distribution = Distribution(
            rtom=require_code(entry["rtom"], f"{at}.rtom"),
            donor_drc_id=require_code(entry["donor_drc_id"], f"{at}.donor_drc_id"),
            receiver_drc_id=require_code(entry["receiver_drc_id"], f"{at}.receiver_drc_id"),
            transfer_count=parse_transfer_count(entry["transfer_count"], at),
        )
        problem = distribution_error(distribution.receiver_drc_id, distribution.donor_drc_id,
                                     distribution.transfer_count)
        if problem:
            raise TaskValidationError(f"{at}: {problem}")
        if distribution in distributions:
            # Most likely a request submitted twice; applying it twice would move twice the cases.
            raise TaskValidationError(f"{at} repeats array_of_distributions[{distributions[distribution]}]")
        distributions[distribution] = index
    return tuple(distributions)


def _is_open_amend(seq: Document) -> bool:
    return seq.get("action_type") == "amend" and seq.get("CRD_Distribution_Status") == SeqStatus.OPEN


def open_amend_seqs(transaction: Document, batch_id: BatchId) -> list[tuple[int, Document]]:
    """[(position, seq)] of the open amend seqs of a transaction; a malformed batch_seq_details is an
    error naming it."""
    where = f"transaction {transaction.get('_id')} of batch {batch_id}"
    seqs = transaction.get("batch_seq_details")
    if not isinstance(seqs, list):
        raise TaskValidationError(f"{where}: batch_seq_details must be an array, got {_kind(seqs)}")
    for index, seq in enumerate(seqs):
        if not isinstance(seq, dict):
            raise TaskValidationError(f"{where}: batch_seq_details[{index}] must be an object, got {seq!r}")
    return [(index, seq) for index, seq in enumerate(seqs) if _is_open_amend(seq)]


def select_amend_request(transaction: Document, batch_id: BatchId) -> AmendRequest:
    """The lowest open amend seq of the transaction, validated, with its position in batch_seq_details."""
    open_amends = open_amend_seqs(transaction, batch_id)
    if not open_amends:
        raise TaskValidationError(f"transaction of batch {batch_id} has no open amend seq")
    for _, seq in open_amends:
        number = seq.get("batch_seq")
        if isinstance(number, bool) or not isinstance(number, int):
            raise TaskValidationError(
                f"transaction of batch {batch_id}: an open amend seq has batch_seq {number!r}; expected an integer")
    index, chosen = min(open_amends, key=lambda entry: (entry[1]["batch_seq"], entry[0]))
    if sum(1 for _, seq in open_amends if seq["batch_seq"] == chosen["batch_seq"]) > 1:
        raise TaskValidationError(
            f"transaction of batch {batch_id} has more than one open amend seq numbered {chosen['batch_seq']}")
    where = f"batch {batch_id} seq {chosen['batch_seq']}"
    return AmendRequest(
        transaction_id=transaction["_id"],
        batch_seq=chosen["batch_seq"],
        seq_index=index,
        distributions=validate_distributions(chosen.get("array_of_distributions"), where),
        prior_status_on=chosen.get("CRD_Distribution_Status_on"),
        prior_status_on_present="CRD_Distribution_Status_on" in chosen,
        prior_summery_status=transaction.get("summery_status"),
        closes_transaction=len(open_amends) == 1,
    )


def fetch_transaction_details(store: AmendStore, batch_id: BatchId) -> AmendRequest:
    """The batch's open transaction that holds an open amend seq, and that seq validated."""
    transactions = store.read(f"reading the transaction of batch {batch_id}", lambda: list(
        store[TRANSACTIONS_COLLECTION].find({"Case_Distribution_Batch_ID": batch_id,
                                             "summery_status": SeqStatus.OPEN})))
    if not transactions:
        raise TaskValidationError(f"no open transaction for batch {batch_id}")
    for transaction in transactions:
        require_batch_id(transaction, batch_id, f"transaction {transaction.get('_id')}")
    with_open_amend = [t for t in transactions if open_amend_seqs(t, batch_id)]
    if not with_open_amend:
        raise TaskValidationError(f"the open transaction of batch {batch_id} has no open amend seq")
    if len(with_open_amend) > 1:
        raise TaskValidationError(f"more than one open transaction with an open amend seq for batch {batch_id}")
    return select_amend_request(with_open_amend[0], batch_id)


# --- cases and summary ---------------------------------------------------------------

_NUMBER_TYPES = (int, float)
_OPTIONAL_TEXT = (type(None), str)


def read_case(document: Document, batch_id: BatchId) -> tuple[int, str, str, Amount]:
    """(Case_Id, current DRC, RTOM, arrears) of one case document, or a TaskValidationError naming it."""
    case_id = document.get("Case_Id")
    if isinstance(case_id, bool) or not isinstance(case_id, int):
        raise TaskValidationError(
            f"case _id {document.get('_id')} in batch {batch_id}: Case_Id must be an integer, "
            f"got {case_id!r} ({_kind(case_id)})")
    where = f"case {case_id} in batch {batch_id}"
    require_batch_id(document, batch_id, where)
    if "DRC_Id" not in document or "RTOM" not in document:
        missing = [field for field in ("DRC_Id", "RTOM") if field not in document]
        raise TaskValidationError(f"{where} lacks {', '.join(missing)}")
    original = require_code(document["DRC_Id"], f"{where}: DRC_Id")
    rtom = require_code(document["RTOM"], f"{where}: RTOM")
    amended = document.get("NEW_DRC_ID")
    current = original if amended in (None, "") else require_code(amended, f"{where}: NEW_DRC_ID")
    return int(case_id), current, rtom, read_arrears(document.get("Arrease"), where)


def build_case_maps(documents: Iterable[Document], batch_id: BatchId) -> BatchCases:
    """The batch's cases as a BatchCases, in one pass; a duplicated Case_Id is an error.

    A batch holds up to millions of cases with a handful of distinct codes, so a case whose
    fields are of the plain expected types and whose codes were already validated takes a
    fast path; any other case goes through read_case, which validates it field by field and
    names what is wrong. Cases of one (DRC, RTOM) cell share one Cell.
    """
    assignment: dict[int, Cell] = {}
    arrears: dict[int, Amount] = {}
    cells: dict[tuple[str, str], tuple[Cell, list[int], list[Amount]]] = {}
    valid_codes: set[str] = set()
    batch_type = type(batch_id)
    inf = math.inf
    for document in documents:
        get = document.get
        case_id, original, amended, rtom, amount, batch = (
            get("Case_Id"), get("DRC_Id"), get("NEW_DRC_ID"), get("RTOM"), get("Arrease", 0),
            get("Case_Distribution_Batch_ID"))
        current = amended or original
        if not (type(case_id) is int and type(original) is str and original in valid_codes
                and type(amended) in _OPTIONAL_TEXT and current in valid_codes
                and type(rtom) is str and rtom in valid_codes
                and type(batch) is batch_type and batch == batch_id
                and type(amount) in _NUMBER_TYPES and -inf < amount < inf):
            case_id, current, rtom, amount = read_case(document, batch_id)
            valid_codes.update((document["DRC_Id"], current, rtom))
        entry = cells.get((current, rtom))
        if entry is None:
            entry = cells[(current, rtom)] = (Cell(current, rtom), [], [])
        cell, case_ids, amounts = entry
        assignment[case_id] = cell
        arrears[case_id] = amount
        case_ids.append(case_id)
        amounts.append(amount)
    return _batch_cases(assignment, arrears, cells.values(), batch_id)


def _batch_cases(assignment: dict[int, Cell], arrears: dict[int, Amount],
                 cells: Iterable[tuple[Cell, list[int], list[Amount]]], batch_id: BatchId) -> BatchCases:
    """The BatchCases of what build_case_maps gathered: each cell's cases and amounts, the batch's
    AmountKind; a TaskValidationError when a Case_Id appeared twice."""
    cells = list(cells)
    holdings = {cell: case_ids for cell, case_ids, _ in cells}
    _refuse_duplicates(holdings, len(assignment), batch_id)
    amount_types = set(map(type, arrears.values()))
    return BatchCases(assignment=assignment, arrears=arrears, holdings=holdings,
                      amounts={cell: amounts for cell, _, amounts in cells},
                      amount_kind=kind_of(float in amount_types, Decimal in amount_types))


def _refuse_duplicates(holdings: Mapping[Cell, list[int]], distinct: int, batch_id: BatchId) -> None:
    """TaskValidationError naming a Case_Id that appears more than once (the index then holds more
    entries than there are distinct ids)."""
    if sum(map(len, holdings.values())) == distinct:
        return
    seen: set[int] = set()
    for case_ids in holdings.values():
        for case_id in case_ids:
            if case_id in seen:
                raise TaskValidationError(f"Case_Id {case_id} appears more than once in batch {batch_id}")
            seen.add(case_id)


def fetch_cases_for_batch(store: AmendStore, batch_id: BatchId,
                          progress: Callable[[Iterable[Document]], Iterator[Document]] = iter) -> BatchCases:
    """The batch's cases as a BatchCases, read with a projection and streamed from the cursor
    (through `progress`, which may show a progress bar); a fault midway reads the batch again."""
    cases = store.read(f"reading the cases of batch {batch_id}", lambda: build_case_maps(
        progress(store.matching(CASES_COLLECTION, {"Case_Distribution_Batch_ID": batch_id}, CASE_FIELDS)), batch_id))
    if not cases.assignment:
        raise TaskValidationError(f"batch {batch_id} has no cases in {CASES_COLLECTION}")
    return cases


# --- the push-down read: each cell's count and sum from the server, then only the cases that can move ---

# A case's current DRC, as read_case takes it: NEW_DRC_ID unless absent, null or empty, then DRC_Id.
_CURRENT_DRC = {"$cond": [{"$in": [{"$ifNull": ["$NEW_DRC_ID", ""]}, [""]]}, "$DRC_Id", "$NEW_DRC_ID"]}
_AMOUNT = {"$ifNull": ["$Arrease", 0]}
# An amount in cents, rounded: for the double nearest a whole number of cents, that number, exactly while the
# amount stays under 2**53 cents (a server's $floor gives a double); summed as Int64, exactly (a server's $sum of
# doubles rounds once they pass 2**53, its $sum of Int64 becomes a double on overflow, which is refused).
_CENTS = {"$floor": {"$add": [{"$multiply": [_AMOUNT, 100]}, 0.5]}}
_CENTS_LIMIT = 2**53 / 100
_IN_CENTS_LIMIT = {"$and": [{"$gt": [_AMOUNT, -_CENTS_LIMIT]}, {"$lt": [_AMOUNT, _CENTS_LIMIT]}]}
_CELL_GROUP = {"$group": {
    "_id": {"drc": _CURRENT_DRC, "rtom": "$RTOM", "original": "$DRC_Id"},
    "count": {"$sum": 1},
    "total": {"$sum": "$Arrease"},
    "cents": {"$sum": {"$cond": [_IN_CENTS_LIMIT, {"$toLong": _CENTS}, 0]}},
    "beyond_cents": {"$sum": {"$cond": [_IN_CENTS_LIMIT, 0, 1]}},
    "not_cents": {"$sum": {"$cond": [{"$eq": [_AMOUNT, {"$divide": [_CENTS, 100]}]}, 0, 1]}},
    # not $abs, which a server refuses for the smallest Int64
    "highest": {"$max": _AMOUNT},
    "lowest": {"$min": _AMOUNT},
}}
_LARGEST_DOUBLE = sys.float_info.max
# Codes compared byte for byte, as Python compares them, whatever default collation the collection was given
# ("D1" and "d1" are two DRCs).
SIMPLE_COLLATION = {"locale": "simple"}
# A request taking from more cells than this reads their lowest cases in one aggregation, not one find each, so
# that a task's commands stay under 40 whatever the number of RTOMs; unless the cases it takes would make that
# aggregation's one answer larger than this (a server refuses one over 16 MB).
MAX_CELL_FINDS = 12
MAX_AGGREGATED_BYTES = 8 * 2**20
# What a case read for the cells weighs in BSON beyond its batch id and its three codes (its _id, Case_Id,
# Arrease, the field names, a Decimal128 at most), rounded up.
_CASE_BYTES_BEYOND_TEXT = 160


def _of_none_of(field: str, *types: str) -> Document:
    return {"$nor": [{field: {"$type": kind}} for kind in types]}


def _unplain_case_filter(batch_id: BatchId) -> Document:
    """The cases of the batch that build_case_maps would refuse, or whose amounts only it sums exactly (a
    decimal, a non-finite double): any of them sends the batch to the full read, which decides."""
    batch_types = ("string",) if isinstance(batch_id, str) else ("int", "long")
    return {"Case_Distribution_Batch_ID": batch_id, "$or": [
        *({field: {"$type": "array"}} for field in ("Case_Distribution_Batch_ID", "Case_Id", "DRC_Id", "RTOM",
                                                    "NEW_DRC_ID", "Arrease")),
        _of_none_of("Case_Distribution_Batch_ID", *batch_types),
        _of_none_of("Case_Id", "int", "long"),
        _of_none_of("DRC_Id", "string"),
        _of_none_of("RTOM", "string"),
        {"$and": [{"NEW_DRC_ID": {"$ne": None}}, _of_none_of("NEW_DRC_ID", "string")]},
        {"$and": [{"Arrease": {"$ne": None}}, _of_none_of("Arrease", "int", "long", "double")]},
        {"Arrease": {"$type": "double", "$not": {"$gte": -_LARGEST_DOUBLE, "$lte": _LARGEST_DOUBLE}}},
    ]}


def _cell_condition(cell: Cell) -> Document:
    """The cases whose current DRC and RTOM are the cell's."""
    return {"RTOM": cell.rtom,
            "$or": [{"NEW_DRC_ID": cell.drc}, {"NEW_DRC_ID": {"$in": [None, ""]}, "DRC_Id": cell.drc}]}


def _cell_sums(groups: Iterable[Document], kind: AmountKind) -> dict[Cell, CellSum]:
    """{cell: CellSum} of the $group rows (one per cell and original DRC), their codes checked as read_case
    checks them; FullReadNeeded when a code or a sum is not what the full read would take as is."""
    sums: dict[Cell, CellSum] = {}
    for group in groups:
        key = group["_id"]
        try:
            cell = Cell(require_code(key.get("drc"), "DRC"), require_code(key.get("rtom"), "RTOM"))
            require_code(key.get("original"), "DRC_Id")
        except TaskValidationError as exc:
            raise FullReadNeeded(f"a case has a malformed code ({exc})") from None
        units = _units(group, kind)
        known = sums.get(cell, CellSum(0, 0, 0.0))
        sums[cell] = CellSum(known.count + group["count"], known.units + units,
                             max(known.largest, abs(float(group["highest"])), abs(float(group["lowest"]))))
    return sums


def _is_integer(value: object) -> bool:
    """An integer as the server returns one: int, or bson's Int64 (a BSON long)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _units(group: Document, kind: AmountKind) -> int:
    """A $group row's exact sum: of its integers, or of its amounts in cents."""
    where = f"DRC {group['_id'].get('drc')} RTOM {group['_id'].get('rtom')}"
    if kind is AmountKind.INTEGER:
        if not _is_integer(group["total"]):
            raise FullReadNeeded(f"the server's integer total of {where} is a {_kind(group['total'])} (beyond Int64)")
        return int(group["total"])
    if group["not_cents"] or group["beyond_cents"]:
        raise FullReadNeeded(f"{group['not_cents'] or group['beyond_cents']} amount(s) of {where} are no whole "
                             f"number of cents a double holds exactly")
    if not _is_integer(group["cents"]):
        raise FullReadNeeded(f"the server's sum of cents of {where} is a {_kind(group['cents'])} (beyond Int64)")
    return int(group["cents"])


def _read_cell_figures(store: AmendStore, batch_id: BatchId) -> tuple[dict[Cell, CellSum], AmountKind, int]:
    """Each cell's count and exact sum, the batch's AmountKind, and the most a case it reads weighs in BSON, from
    the server in two commands whatever the batch's size: FullReadNeeded when a case is one the full read must
    judge (found first, so that the sums only ever meet plain numbers)."""
    cases = store[CASES_COLLECTION]
    (found,) = store.read(f"looking for cases of batch {batch_id} only the full read judges", lambda: list(
        cases.aggregate([{"$match": {"Case_Distribution_Batch_ID": batch_id}}, {"$facet": {
            "unplain": [{"$match": _unplain_case_filter(batch_id)}, {"$limit": 1}, {"$project": {"_id": 1}}],
            "duplicated": [{"$group": {"_id": "$Case_Id", "n": {"$sum": 1}}}, {"$match": {"n": {"$gt": 1}}},
                           {"$limit": 1}],
            "float": [{"$match": {"Arrease": {"$type": "double"}}}, {"$limit": 1}, {"$project": {"_id": 1}}]}}],
            allowDiskUse=True, collation=SIMPLE_COLLATION)))
    if found["unplain"]:
        raise FullReadNeeded(f"case _id {found['unplain'][0]['_id']} is one the server's sums cannot vouch for")
    if found["duplicated"]:
        raise FullReadNeeded(f"Case_Id {found['duplicated'][0]['_id']} appears more than once")
    kind = kind_of(bool(found["float"]), False)
    groups = store.read(f"counting the cases of batch {batch_id} by cell", lambda: list(cases.aggregate(
        [{"$match": {"Case_Distribution_Batch_ID": batch_id}}, _CELL_GROUP], allowDiskUse=True,
        collation=SIMPLE_COLLATION)))
    if not groups:
        raise TaskValidationError(f"batch {batch_id} has no cases in {CASES_COLLECTION}")
    sums = _cell_sums(groups, kind)
    longest_code = max(len(str(code).encode()) for group in groups for code in group["_id"].values())
    return sums, kind, _CASE_BYTES_BEYOND_TEXT + len(str(batch_id).encode()) + 3 * longest_code


def _fetch_lowest_cases_of_cell(store: AmendStore, batch_id: BatchId, cell: Cell, count: int) -> list[Document]:
    return store.read(f"reading the {count} lowest cases of DRC {cell.drc} RTOM {cell.rtom} of batch {batch_id}",
                      lambda: list(store[CASES_COLLECTION].find(
                          {"Case_Distribution_Batch_ID": batch_id, **_cell_condition(cell)}, CASE_FIELDS,
                          collation=SIMPLE_COLLATION).sort("Case_Id", 1).limit(count)))


def _fetch_lowest_cases(store: AmendStore, batch_id: BatchId, wanted: Mapping[Cell, int],
                        case_bytes: int) -> dict[Cell, list[Document]]:
    """{cell: its `wanted` lowest cases by Case_Id}: one indexed find per cell (indexes batch_cell_*), or, for
    more cells than MAX_CELL_FINDS, one aggregation that reads them all (the batch's cases of those cells in
    Case_Id order, each cell taking its first ones) while its one answer, at `case_bytes` a case at most, stays
    under MAX_AGGREGATED_BYTES."""
    cells = sorted(wanted)
    if len(cells) <= MAX_CELL_FINDS or sum(wanted.values()) * case_bytes > MAX_AGGREGATED_BYTES:
        return {cell: _fetch_lowest_cases_of_cell(store, batch_id, cell, wanted[cell]) for cell in cells}
    facets = {f"cell{number}": [{"$match": _cell_condition(cell)}, {"$limit": wanted[cell]}]
              for number, cell in enumerate(cells)}
    (found,) = store.read(f"reading the lowest cases of {len(cells)} cells of batch {batch_id}", lambda: list(
        store[CASES_COLLECTION].aggregate([
            {"$match": {"Case_Distribution_Batch_ID": batch_id, "$or": [_cell_condition(cell) for cell in cells]}},
            {"$project": CASE_FIELDS}, {"$sort": {"Case_Id": 1}}, {"$facet": facets}], allowDiskUse=True,
            collation=SIMPLE_COLLATION)))
    return {cell: found[f"cell{number}"] for number, cell in enumerate(cells)}


def fetch_batch_cells(store: AmendStore, batch_id: BatchId, distributions: Sequence[Distribution],
                      min_share_kept: Fraction) -> BatchCases:
    """The batch as planning needs it, read on the server's side: each cell's count and exact sum, then
    per cell the lowest Case_Ids the request can take from it (amend_plan.cases_taken, from the counts
    alone). The plan on it is the plan on the full read (tests prove it); FullReadNeeded when that cannot
    be vouched for (a malformed or duplicated case, decimal amounts, sums a server cannot give exactly):
    the caller then reads the batch whole."""
    sums, kind, case_bytes = _read_cell_figures(store, batch_id)
    counts = {cell: figures.count for cell, figures in sums.items()}
    assignment: dict[int, Cell] = {}
    arrears: dict[int, Amount] = {}
    holdings: dict[Cell, LowestCases] = {cell: LowestCases(count, (), -math.inf) for cell, count in counts.items()}
    wanted = cases_taken(counts, distributions, min_share_kept)
    for cell, documents in _fetch_lowest_cases(store, batch_id, wanted, case_bytes).items():
        lowest = []
        for document in documents:
            case_id, drc, rtom, amount = read_case(document, batch_id)
            if (drc, rtom) != cell:
                raise FullReadNeeded(f"case {case_id} left DRC {cell.drc} RTOM {cell.rtom} while the batch was read")
            assignment[case_id], arrears[case_id] = cell, amount
            lowest.append(case_id)
        if len(lowest) != wanted[cell]:
            raise FullReadNeeded(f"DRC {cell.drc} RTOM {cell.rtom} held {len(lowest)} of the {wanted[cell]} cases "
                                 f"counted a moment before: the batch changed while it was read")
        holdings[cell] = LowestCases(counts[cell], lowest, math.inf if len(lowest) == counts[cell] else lowest[-1])
    return BatchCases(assignment=assignment, arrears=arrears, holdings=holdings, amounts=sums, amount_kind=kind)


def fetch_case_count(store: AmendStore, batch_id: BatchId) -> int:
    return store.read(f"counting the cases of batch {batch_id}", lambda: int(
        store[CASES_COLLECTION].count_documents({"Case_Distribution_Batch_ID": batch_id})))


def fetch_case_prior_values(store: AmendStore, batch_id: BatchId, case_ids: list[int],
                            chunk_size: int) -> dict[int, Document]:
    """The amend fields of the given cases as they are now, to undo the case writes."""
    priors: dict[int, Document] = {}
    projection = {"_id": 0, "Case_Id": 1, **{field: 1 for field in AMEND_FIELDS}}

    def read_chunk(chunk: list[int]) -> list[Document]:
        query = {"Case_Distribution_Batch_ID": batch_id, "Case_Id": {"$in": chunk}}
        return store.read(f"reading the amend fields of batch {batch_id}",
                          lambda: list(store[CASES_COLLECTION].find(query, projection)))

    for start in range(0, len(case_ids), chunk_size):
        for document in read_chunk(case_ids[start:start + chunk_size]):
            priors[document["Case_Id"]] = {field: document[field] for field in AMEND_FIELDS if field in document}
    return priors


def summary_cell_keys(rows: Iterable[Document], batch_id: BatchId) -> set[Cell]:
    """The (DRC, RTOM) cells of the batch's summary rows; two rows for one cell is an error."""
    cells: set[Cell] = set()
    for row in rows:
        require_batch_id(row, batch_id, f"summary row {row.get('_id')}")
        cell = Cell(require_code(row.get("DRC_Id"), f"summary row {row.get('_id')} of batch {batch_id}: DRC_Id"),
                    require_code(row.get("RTOM"), f"summary row {row.get('_id')} of batch {batch_id}: RTOM"))
        if cell in cells:
            raise TaskValidationError(
                f"batch {batch_id} has more than one summary row for DRC {cell.drc} RTOM {cell.rtom}")
        cells.add(cell)
    return cells


def fetch_summary_rows(store: AmendStore, batch_id: BatchId) -> list[Document]:
    return store.read(f"reading the summary of batch {batch_id}", lambda: list(
        store[SUMMARY_COLLECTION].find({"Case_Distribution_Batch_ID": batch_id})))


# --- run history and monitoring --------------------------------------------------------

def fetch_task_status_counts(store: AmendStore) -> dict[str, int]:
    """{task_status: number} of the amend tasks."""
    return store.read("counting the tasks", lambda: {row["_id"]: row["count"] for row in store[
        TASKS_COLLECTION].aggregate([{"$match": {"task_type": AMEND_TASK_TYPE}},
                                     {"$group": {"_id": "$task_status", "count": {"$sum": 1}}}])})


def fetch_recent_operator_actions(store: AmendStore, limit: int) -> list[Document]:
    """The latest `limit` operator actions recorded on amend tasks (OPERATOR_ACTIONS_FIELD), newest first:
    {_id, Task_Id, action: the entry}; an entry that is not a document (a hand edit) is left out."""
    return fetch_operator_actions(store, limit=limit)


def fetch_operator_actions(store: AmendStore, since: datetime | None = None, until: datetime | None = None,
                           task_id: int | None = None, limit: int | None = None) -> list[Document]:
    """The operator actions recorded on amend tasks, newest first, taken in [since, until) and on the amend
    task(s) `task_id` when given: {_id, Task_Id, action: the entry}; an entry that is not a document is left
    out."""
    taken: Document = {"$type": "date"}
    if since is not None:
        taken["$gte"] = since
    if until is not None:
        taken["$lt"] = until
    pipeline: list[Document] = [
        {"$match": amend_tasks_filter({}, task_id)},
        {"$unwind": f"${OPERATOR_ACTIONS_FIELD}"},
        {"$match": {OPERATOR_ACTIONS_FIELD: {"$type": "object"}} if since is None and until is None else
         {OPERATOR_ACTIONS_FIELD: {"$type": "object"}, f"{OPERATOR_ACTIONS_FIELD}.action_dtm": taken}},
        {"$sort": {f"{OPERATOR_ACTIONS_FIELD}.action_dtm": -1}},
        *([{"$limit": limit}] if limit is not None else []),
        {"$project": {"Task_Id": 1, "action": f"${OPERATOR_ACTIONS_FIELD}"}}]
    return store.read("reading the operator actions",
                      lambda: list(store[TASKS_COLLECTION].aggregate(pipeline)))


# --- the audit -----------------------------------------------------------------------

BATCHED_COLLECTIONS = (TRANSACTIONS_COLLECTION, SUMMARY_COLLECTION, CASES_COLLECTION)


def fetch_batch_ids(store: AmendStore) -> dict[str, list[Any]]:
    """{collection: the distinct Case_Distribution_Batch_ID values} of the transactions, summary rows and
    cases (a value in an array counts as itself, as a query on the batch would match it; a tombstone,
    which has no batch id, does not count)."""
    def read() -> dict[str, list[Any]]:
        return {name: list(store[name].distinct("Case_Distribution_Batch_ID",
                                                {"Case_Distribution_Batch_ID": {"$exists": True}}))
                for name in BATCHED_COLLECTIONS}
    return store.read("listing the batches", read)


def fetch_transactions(store: AmendStore, batch_id: BatchId) -> list[Document]:
    return store.read(f"reading the transactions of batch {batch_id}", lambda: list(
        store[TRANSACTIONS_COLLECTION].find({"Case_Distribution_Batch_ID": batch_id})))


def fetch_completed_amend_tasks(store: AmendStore, batch_id: BatchId) -> list[Document]:
    """The amend tasks of the batch that completed, or that record the amend they applied (an operator may
    have set a completed task back to open since), with their batch id as stored."""
    return store.read(f"reading the completed amend tasks of batch {batch_id}", lambda: list(
        store[TASKS_COLLECTION].find(amend_tasks_filter({"$or": [{"task_status": TaskStatus.COMPLETED},
                                                           {"amended_seq": {"$exists": True}}],
                                                   "parameters.Case_Distribution_Batch_ID": batch_id}),
                                     {"Task_Id": 1, "task_status": 1, "amended_batch_seq": 1, "amended_seq": 1,
                                      "amended_cases": 1, "parameters": 1}).sort(OLDEST_FIRST)))


def fetch_tasks(store: AmendStore, task_object_ids: Iterable[Any]) -> dict[Any, Document]:
    """{_id: task} of the given tasks that exist (status, claim and amend record only)."""
    wanted = list(task_object_ids)
    return store.read("reading the amend tasks the cases name", lambda: {task["_id"]: task for task in store[
        TASKS_COLLECTION].find({"_id": {"$in": wanted}}, {"Task_Id": 1, "task_status": 1, "amended_cases": 1,
                                                           "amended_seq": 1, "parameters": 1,
                                                           "claim_expires_dtm": 1, "status_changed_dtm": 1})})


def fetch_batch_cases(store: AmendStore, batch_id: BatchId, read: Callable[[Iterable[Document]], Result]) -> Result:
    """read(the batch's cases, streamed), with the fields the job reads and the task that amended each."""
    return store.read(f"reading the cases of batch {batch_id}", lambda: read(store[CASES_COLLECTION].find(
        {"Case_Distribution_Batch_ID": batch_id}, dict(CASE_FIELDS, **{AMENDED_BY_FIELD: 1}))))
