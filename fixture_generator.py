"""A deterministic generator of large, realistic batches, for trying the job at scale.

Used by `database_update.py --generate N` and by the benchmarks. The same arguments always
give the same documents.
"""

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from amend_store import (
    AMEND_TASK_TYPE,
    CASES_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TEMPLATES_COLLECTION,
    TRANSACTIONS_COLLECTION,
    SeqStatus,
    TaskStatus,
)
from balance_resources import Cell, Holdings, apply_moves, index_by_cell, plan_transfer
from utils.Custom_Exceptions import ResourceBalanceError

# The first cases dealt: donor D01 holds 2 cases of one RTOM and 1 of another, receiver D02 1 and 2,
# so that one distribution at least is always possible (a give-back pool needs a second RTOM).
FEASIBLE_CORE = ((0, 0), (0, 0), (0, 1), (1, 0), (1, 1), (1, 1))
MIN_CASES = len(FEASIBLE_CORE)
RTOM_CODES = ("CW", "AG", "AD", "GM", "KT", "KX", "MH", "NG", "RM", "WE", "BC", "HK", "JA", "KG", "MT", "PH")
CREATED = datetime(2026, 11, 18, 6, 0)


@dataclass(frozen=True)
class BatchShape:
    cases: int
    drcs: int = 10
    rtoms: int = 8
    distributions: int = 3
    seed: int = 1
    batch_id: str = "GEN"
    template_task_id: int = 3
    transfer_share: float = 0.05

    def __post_init__(self) -> None:
        checks = ((self.cases >= MIN_CASES, f"cases must be at least {MIN_CASES}"),
                  (self.drcs >= 2, "drcs must be at least 2"), (self.rtoms >= 2, "rtoms must be at least 2"),
                  (self.distributions >= 1, "distributions must be at least 1"),
                  (0 < self.transfer_share <= 0.5, "transfer_share must be above 0 and at most 0.5"))
        for holds, message in checks:
            if not holds:
                raise ValueError(message)


def rtom_codes(count: int) -> list[str]:
    return [RTOM_CODES[i] if i < len(RTOM_CODES) else f"R{i:02d}" for i in range(count)]


GeneratedCase = tuple[int, str, str, float]


def generate_cells(shape: BatchShape) -> list[GeneratedCase]:
    """(Case_Id, DRC, RTOM, arrears) per case: uneven DRC and RTOM sizes, ids dealt in random order; the
    first cases dealt form FEASIBLE_CORE."""
    rng = random.Random(shape.seed)
    drcs = [f"D{i + 1:02d}" for i in range(shape.drcs)]
    rtoms = rtom_codes(shape.rtoms)
    drc_weights = [rng.uniform(0.5, 1.5) for _ in drcs]
    rtom_weights = [rng.uniform(0.5, 1.5) for _ in rtoms]
    case_ids = list(range(1, shape.cases + 1))
    rng.shuffle(case_ids)
    chosen_drcs = rng.choices(drcs, drc_weights, k=shape.cases)
    chosen_rtoms = rng.choices(rtoms, rtom_weights, k=shape.cases)
    for position, (drc, rtom) in enumerate(FEASIBLE_CORE):
        chosen_drcs[position], chosen_rtoms[position] = drcs[drc], rtoms[rtom]
    return [(case_id, drc, rtom, rng.randrange(50_000, 5_000_000) / 100)
            for case_id, drc, rtom in zip(case_ids, chosen_drcs, chosen_rtoms, strict=True)]


def generate_distributions(shape: BatchShape, cells: Sequence[GeneratedCase]) -> list[dict[str, Any]]:
    """Up to M distinct requests, each moving transfer_share (5% by default) of the donor's RTOM cases as
    the batch stands after the previous ones; a count the rules refuse is halved until they accept it,
    and a (RTOM, donor, receiver) they refuse even one case is passed over. A small batch may allow
    fewer than M; FEASIBLE_CORE allows one at least."""
    rng = random.Random(shape.seed + 1)
    holdings: Holdings = index_by_cell({case_id: (drc, rtom) for case_id, drc, rtom, _ in cells})
    triples = [(rtom, donor, receiver) for (donor, rtom) in holdings for receiver in sorted({d for d, _ in holdings})
               if receiver != donor and (receiver, rtom) in holdings]
    distributions: list[dict[str, Any]] = []
    for rtom, donor, receiver in rng.sample(sorted(triples), len(triples)):
        if len(distributions) == shape.distributions:
            break
        count = max(1, int(len(holdings[Cell(donor, rtom)]) * shape.transfer_share))
        moves = None
        while moves is None and count >= 1:
            try:
                moves = plan_transfer(holdings, receiver, donor, rtom, count)
            except ResourceBalanceError:
                count //= 2
        if moves is None:
            continue
        holdings = apply_moves(holdings, moves)
        distributions.append({"rtom": rtom, "donor_drc_id": donor, "receiver_drc_id": receiver,
                              "transfer_count": count})
    return distributions


def amend_distributions(documents: dict[str, Any]) -> list[dict[str, Any]]:
    """The distributions of the amend request of a generated batch."""
    return list(documents[TRANSACTIONS_COLLECTION][0]["batch_seq_details"][1]["array_of_distributions"])


def generate_batch(shape: BatchShape) -> dict[str, Iterable[dict[str, Any]]]:
    """The documents of the five collections for one generated batch and its open amend task."""
    cells = generate_cells(shape)
    cases = ({"Case_Id": case_id, "Case_Distribution_Batch_ID": shape.batch_id, "DRC_Id": drc, "RTOM": rtom,
              "Arrease": arrears, "NEW_DRC_ID": None, "Proceed_On": None, "Amend_Status": None,
              "Amend_Description": None, "created_dtm": CREATED}
             for case_id, drc, rtom, arrears in cells)
    totals: dict[tuple[str, str], tuple[int, float]] = {}
    for _, drc, rtom, arrears in cells:
        count, total = totals.get((drc, rtom), (0, 0.0))
        totals[(drc, rtom)] = (count + 1, total + arrears)
    return {
        TASKS_COLLECTION: [{
            "Task_Id": shape.seed, "Template_Task_Id": shape.template_task_id, "task_type": AMEND_TASK_TYPE,
            "parameters": {"Case_Distribution_Batch_ID": shape.batch_id}, "task_status": TaskStatus.OPEN,
            "created_dtm": CREATED, "status_changed_dtm": CREATED, "status_description": "Amend request queued",
            "end_dtm": None}],
        TEMPLATES_COLLECTION: [{
            "Template_Task_Id": shape.template_task_id, "task_type": AMEND_TASK_TYPE,
            "parameters": {"Case_Distribution_Batch_ID": "string"}, "created_dtm": CREATED,
            "last_updated_dtm": CREATED}],
        TRANSACTIONS_COLLECTION: [{
            "Case_Distribution_Batch_ID": shape.batch_id, "summery_status": SeqStatus.OPEN, "created_dtm": CREATED,
            "batch_seq_details": [
                {"batch_seq": 1, "action_type": "distribution", "CRD_Distribution_Status": SeqStatus.CLOSE,
                 "CRD_Distribution_Status_on": CREATED, "array_of_distributions": []},
                {"batch_seq": 2, "action_type": "amend", "CRD_Distribution_Status": SeqStatus.OPEN,
                 "CRD_Distribution_Status_on": None,
                 "array_of_distributions": generate_distributions(shape, cells)}]}],
        CASES_COLLECTION: cases,
        SUMMARY_COLLECTION: [{"Case_Distribution_Batch_ID": shape.batch_id, "DRC_Id": drc, "RTOM": rtom,
                              "Count": count, "Tot_Arrease": round(total, 2), "created_dtm": CREATED}
                             for (drc, rtom), (count, total) in sorted(totals.items())],
    }


# --- a run history, for the dashboard and the monitor ----------------------------------------

# Failure reasons as the job words them, with the parts that vary between occurrences as fields.
_FAILURES = (
    "ResourceBalanceError: donor DRC {drc!r} holds {held} {rtom!r} case(s); moving {moved} leaves {left}, below the "
    "minimum share of 20% ({floor:g}) it must keep",
    "ResourceBalanceError: receiver DRC {drc!r} holds no {rtom!r} case",
    "TaskValidationError: batch {batch} seq 2: array_of_distributions must be a non-empty array, got []",
    "TaskValidationError: no open transaction for batch {batch}",
)
_DEFERRAL = "batch {batch} is being amended by amend task {other}; waiting for a later run"


def generate_history(runs: int, end: datetime, seed: int = 1, every: timedelta = timedelta(hours=2),
                     host: str = "cron-1") -> list[dict[str, Any]]:
    """`runs` Run_History documents, one every `every` up to `end`, as main.py records them: most tasks
    complete, some fail for a handful of recurring reasons, a few are deferred; for two days in the
    middle every run is four times slower per case, as after an index was dropped."""
    rng = random.Random(seed)
    history = []
    slow_from, slow_to = runs // 2, runs // 2 + int(timedelta(days=2) / every)
    for number in range(runs):
        started = end - every * (runs - number) + timedelta(seconds=rng.randint(0, 40))
        tasks: list[dict[str, Any]] = []
        seconds = rng.uniform(0.8, 1.6)
        for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 3))):
            batch = f"{rng.randint(100, 999):04d}"
            cases = rng.randint(2_000, 120_000)
            per_thousand = rng.uniform(0.018, 0.026) * (4 if slow_from <= number < slow_to else 1)
            duration = round(cases / 1000 * per_thousand + rng.uniform(0.05, 0.3), 3)
            seconds += duration
            draw = rng.random()
            if draw < 0.08:
                held = rng.randint(2, 9)
                message = rng.choice(_FAILURES).format(drc=f"D{rng.randint(1, 12)}", rtom=rng.choice(RTOM_CODES[:6]),
                                                       held=held, moved=held, left=0, floor=held * 0.2, batch=batch)
                outcome, moved, batch_cases = "error", 0, 0
            elif draw < 0.12:
                message = _DEFERRAL.format(batch=batch, other=rng.randint(100, 999))
                outcome, moved, batch_cases = "deferred", 0, 0
            else:
                moved = rng.randint(2, 400)
                message = f"Amended batch {batch} seq 2: {moved} case(s) reassigned"
                outcome, batch_cases = "completed", cases
            tasks.append({"_id": f"generated-{number}-{len(tasks)}", "Task_Id": 1000 + number, "batch": batch,
                          "outcome": outcome, "cases_moved": moved, "batch_cases": batch_cases, "message": message,
                          "duration_seconds": duration})
        counts = {outcome: sum(task["outcome"] == outcome for task in tasks)
                  for outcome in ("completed", "error", "deferred")}
        history.append({
            "run_id": f"{rng.getrandbits(128):032x}", "host": host, "pid": rng.randint(1000, 60000),
            "started_dtm": started, "ended_dtm": started + timedelta(seconds=round(seconds, 3)),
            "duration_seconds": round(seconds, 3), "lock_wait_seconds": 0.0, "exit_code": 1 if counts["error"] else 0,
            "completed": counts["completed"], "errored": counts["error"], "deferred": counts["deferred"],
            "skipped": 0, "cases_moved": sum(task["cases_moved"] for task in tasks),
            "batch_cases": sum(task["batch_cases"] for task in tasks), "stop_reason": None, "not_started": 0,
            "tasks": tasks, "generated": True})
    return history
