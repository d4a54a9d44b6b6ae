"""A deterministic simulation of the job under an adversarial world, in the style of FoundationDB's:
several runs of the real job (amend_task_processing) in one process over one database, interleaved
one database command at a time by a seeded scheduler, with a clock it controls, stalls, transient
and permanent faults, crashes at any command, SIGTERMs (a first one: the run finishes its task and
claims no other; a second: it stops at its next command), operator re-queues and new amend requests; after
every step, invariants checked by code of this module only (never the job's):

- a batch no journal holds has a summary equal to its cases (one row per cell holding cases,
  its Count and Tot_Arrease exact; a row of an empty cell says 0);
- its cases are exactly the replay of its closed amend seqs (in batch_seq order, from the
  original DRC_Id, by this module's own implementation of the rule): every seq applied once,
  none half applied, nothing applied that no closed seq asked for;
- it has as many completed amend tasks as closed amend seqs;
- at the end, once every run has finished and later runs recovered what they left: no task in
  processing, no journal, and the job's audit finds every batch consistent.

Run it with tests/test_simulation.py (a fixed seed, in CI) or tools/simulate.py (any number of seeds).
"""

import random
import signal
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import mongomock
from bson import ObjectId
from pymongo.errors import AutoReconnect, OperationFailure, PyMongoError

from amend_store import (
    AMEND_TASK_TYPE,
    CASES_COLLECTION,
    JOURNAL_COLLECTION,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TEMPLATES_COLLECTION,
    TRANSACTIONS_COLLECTION,
    WRITE_COMMANDS,
    AmendStore,
    StoppingStore,
)
from embedded.mongomock_compat import stored_documents
from task_processor import amend_task_processing
from tests.instruments import InstrumentedDatabase
from update_databases import reset_collections
from utils.config import JobSettings
from utils.Custom_Exceptions import TaskProcessingError
from utils.retry import RetryPolicy
from utils.shutdown import Interrupted, Phase, SignalRecord, StopRequest

TEMPLATE_TASK_ID = 3
START = datetime(2030, 1, 1, 8, 0)
LEASE = timedelta(minutes=30)
SETTINGS = JobSettings(template_task_id=TEMPLATE_TASK_ID, lease=LEASE,
                       retry=RetryPolicy(attempts=2, initial_delay_seconds=0.0, max_delay_seconds=0.0))
MAX_RUNS = 3  # runs awake at once
# How long a stall lasts: within the lease, past it, or past many later runs' whole work.
STALL_MINUTES = (10, 35, 60, 120, 480, 1440)
COMMAND_TIME = timedelta(seconds=1)  # the clock moves on with every command a run executes


class SimulatedCrash(BaseException):
    """The run's process dies at this command: a BaseException, which the job does not catch."""


class InvariantViolation(AssertionError):
    """The world is in a state the job promises never to leave it in."""


def no_sleep(_seconds: float) -> None:
    """Retries do not wait: the simulation's clock is the scheduler's."""


# --- the world: batches of small random shape ---------------------------------------------------

DRCS = ("D1", "D2", "D3")
RTOMS = ("AD", "AG", "CW", "GM")


def random_batch(rng: random.Random, batch_id: str, first_case_id: int) -> tuple[list[dict[str, Any]],
                                                                               list[dict[str, Any]]]:
    """(cases, summary rows) of a batch: 2-3 DRCs, 3-4 RTOMs, 1-9 cases per cell, integer amounts; now
    and then a summary row is missing (the job inserts it when it rewrites the summary)."""
    drcs = DRCS[:rng.randint(2, 3)]
    rtoms = RTOMS[:rng.randint(3, 4)]
    cells: list[tuple[str, str]] = []
    while len({drc for drc, _ in cells}) < 2:
        cells = [(drc, rtom) for drc in drcs for rtom in rtoms if rng.random() < 0.9]
    cases = []
    for drc, rtom in cells:
        cases += [{"Case_Distribution_Batch_ID": batch_id, "DRC_Id": drc, "RTOM": rtom,
                   "Arrease": rng.randint(1, 900), "NEW_DRC_ID": None} for _ in range(rng.randint(1, 9))]
    rng.shuffle(cases)
    for offset, case in enumerate(cases):
        case["Case_Id"] = first_case_id + offset
    rows = [{"_id": ObjectId(), "Case_Distribution_Batch_ID": batch_id, "DRC_Id": drc, "RTOM": rtom,
             "Count": len(amounts), "Tot_Arrease": sum(amounts)}
            for (drc, rtom), amounts in cells_of(cases).items()]
    if rows and rng.random() < 0.8:
        rows.pop(rng.randrange(len(rows)))
    return cases, rows


def cells_of(cases: list[dict[str, Any]]) -> dict[tuple[str, str], list[int]]:
    """{(current DRC, RTOM): [Arrease]} of cases."""
    cells: dict[tuple[str, str], list[int]] = defaultdict(list)
    for case in cases:
        cells[current_drc(case), case["RTOM"]].append(case.get("Arrease") or 0)
    return cells


def current_drc(case: dict[str, Any]) -> str:
    return case.get("NEW_DRC_ID") or case["DRC_Id"]


def random_distributions(rng: random.Random, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """1-2 distributions between DRCs of the batch: mostly ones the rule accepts on the batch as it is now
    (a later amend may still be refused once earlier ones moved cases), now and then any."""
    held = Counter((current_drc(case), case["RTOM"]) for case in cases)
    drcs = sorted({drc for drc, _ in held})
    chosen: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 2)):
        donor, receiver = rng.sample(drcs, 2)
        shared = sorted(rtom for drc, rtom in held if drc == donor and (receiver, rtom) in held)
        if not shared or rng.random() < 0.1:
            rtom = rng.choice(sorted(rtom for drc, rtom in held if drc == donor))
            count = rng.randint(1, 5)
        else:
            rtom = rng.choice(shared)
            pool = sum(held[receiver, other] for other in shared if other != rtom)
            count = rng.randint(1, max(1, min(held[donor, rtom], pool) * 4 // 5))
        entry = {"rtom": rtom, "donor_drc_id": donor, "receiver_drc_id": receiver, "transfer_count": count}
        if entry not in chosen:
            chosen.append(entry)
    return chosen


def new_transaction(rng: random.Random, batch_id: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch's transaction: its distribution, closed, and an open amend request."""
    return {"Case_Distribution_Batch_ID": batch_id, "summery_status": "open",
            "batch_seq_details": [{"batch_seq": 1, "action_type": "distribution", "CRD_Distribution_Status": "close"},
                                  {"batch_seq": 2, "action_type": "amend", "CRD_Distribution_Status": "open",
                                   "array_of_distributions": random_distributions(rng, cases)}]}


# --- the independent reference: the rule of SPEC.md, and the checks ------------------------------

def reference_transfer(assignment: dict[int, tuple[str, str]], distribution: dict[str, Any]) -> None:
    """Apply one accepted distribution in place, as SPEC.md words the rule (no share check: a closed
    seq was accepted when it was applied, and the moves do not depend on the share)."""
    donor, receiver, rtom = distribution["donor_drc_id"], distribution["receiver_drc_id"], distribution["rtom"]
    count = int(distribution["transfer_count"])
    by_cell: dict[tuple[str, str], list[int]] = defaultdict(list)
    for case_id, cell in assignment.items():
        by_cell[cell].append(case_id)
    for case_id in sorted(by_cell[donor, rtom])[:count]:
        assignment[case_id] = (receiver, rtom)
    order = give_back_order(by_cell, donor, receiver, rtom)
    give_back(assignment, order, {r: sorted(by_cell[receiver, r]) for r in order}, donor, count)


def give_back_order(by_cell: dict[tuple[str, str], list[int]], donor: str, receiver: str, rtom: str) -> list[str]:
    """The RTOMs other than `rtom` that both DRCs hold, the receiver's largest first, ties by code."""
    donor_rtoms = {r for (d, r), ids in by_cell.items() if d == donor and ids}
    receiver_counts = {r: len(ids) for (d, r), ids in by_cell.items() if d == receiver and ids}
    return sorted((r for r in receiver_counts if r != rtom and r in donor_rtoms),
                  key=lambda r: (-receiver_counts[r], r))


def give_back(assignment: dict[int, tuple[str, str]], order: list[str], queues: dict[str, list[int]], donor: str,
              count: int) -> None:
    """Round robin over `order`: the lowest case left in each RTOM's queue goes to the donor, an RTOM whose
    queue is empty drops out, until `count` cases went back or no RTOM is left."""
    order = list(order)
    given = 0
    while given < count and order:
        for r in list(order):
            if not queues[r]:
                order.remove(r)
                continue
            assignment[queues[r].pop(0)] = (donor, r)
            given += 1
            if given == count:
                break


def closed_amend_seqs(transaction: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The closed amend seqs in the order they were applied: by their close time (the simulation's clock
    moves on with every command, so no two closes share one; numbers may be reused or renumbered)."""
    seqs = (transaction or {}).get("batch_seq_details") or []
    return sorted((seq for seq in seqs if seq.get("action_type") == "amend"
                   and seq.get("CRD_Distribution_Status") == "close"),
                  key=lambda seq: (seq.get("CRD_Distribution_Status_on") or START, seq["batch_seq"]))


SummaryRows = dict[tuple[Any, Any], list[tuple[Any, Any]]]


@dataclass
class BatchView:
    """What the checks read of one batch."""
    cases: list[dict[str, Any]] = field(default_factory=list)
    rows: SummaryRows = field(default_factory=lambda: defaultdict(list))
    transaction: dict[str, Any] | None = None
    completed_tasks: int = 0


def read_world(db: Any) -> dict[Any, BatchView]:
    """Every batch's view. The checks run after every step, so the documents are read as the engine holds
    them (embedded/mongomock_compat.stored_documents: no query, no copy; they are only read)."""
    views: dict[Any, BatchView] = defaultdict(BatchView)
    for case in stored_documents(db[CASES_COLLECTION]):
        views[case["Case_Distribution_Batch_ID"]].cases.append(case)
    for row in stored_documents(db[SUMMARY_COLLECTION]):
        if "Case_Distribution_Batch_ID" in row:
            views[row["Case_Distribution_Batch_ID"]].rows[row.get("DRC_Id"), row.get("RTOM")].append(
                (row.get("Count"), row.get("Tot_Arrease")))
    for transaction in stored_documents(db[TRANSACTIONS_COLLECTION]):
        views[transaction["Case_Distribution_Batch_ID"]].transaction = transaction
    for task in stored_documents(db[TASKS_COLLECTION]):
        if task.get("task_type") == AMEND_TASK_TYPE and task.get("task_status") == "completed":
            views[task["parameters"]["Case_Distribution_Batch_ID"]].completed_tasks += 1
    return views


def ambiguous_request(transaction: dict[str, Any] | None) -> bool:
    """Two open amend seqs with the same number: the job cannot tell which one is asked for."""
    numbers = [seq["batch_seq"] for seq in (transaction or {}).get("batch_seq_details") or []
               if seq.get("action_type") == "amend" and seq.get("CRD_Distribution_Status") == "open"]
    return len(numbers) != len(set(numbers))


def summary_disagreements(batch_id: str, cases: list[dict[str, Any]], rows: SummaryRows) -> list[str]:
    """Where the rows differ from the cells of the cases (a cell without cases may have a row saying 0)."""
    expected = {cell: (len(amounts), sum(amounts)) for cell, amounts in cells_of(cases).items()}
    problems = []
    for cell in sorted(set(rows) | set(expected)):
        want = expected.get(cell, (0, 0))
        found = rows.get(cell, [])
        if len(found) > 1 or (not found and cell in expected) or (found and found[0] != want):
            problems.append(f"batch {batch_id} summary of {cell}: rows {found}, cases {want}")
    return problems


def check_batch(batch_id: str, view: BatchView, initial_rows: SummaryRows) -> list[str]:
    """What is wrong with a batch that no journal holds (see the module's docstring). Until an amend of
    the batch completed, its summary is still `initial_rows` (a batch may start with a row missing, which
    the first completed amend repairs); after, it equals its cases."""
    closed = closed_amend_seqs(view.transaction)
    problems = []
    if closed:
        problems += summary_disagreements(batch_id, view.cases, view.rows)
    elif view.rows != initial_rows:
        problems.append(f"batch {batch_id}: no amend completed, yet its summary changed from {dict(initial_rows)} "
                        f"to {dict(view.rows)}")
    replayed = {case["Case_Id"]: (case["DRC_Id"], case["RTOM"]) for case in view.cases}
    for seq in closed:
        for distribution in seq.get("array_of_distributions") or []:
            reference_transfer(replayed, distribution)
    moved = sorted(case["Case_Id"] for case in view.cases
                   if (current_drc(case), case["RTOM"]) != replayed[case["Case_Id"]])
    if moved:
        problems.append(f"batch {batch_id}: cases {moved} are not where its closed seqs "
                        f"{[seq['batch_seq'] for seq in closed]} put them")
    if view.completed_tasks != len(closed):
        problems.append(f"batch {batch_id}: {view.completed_tasks} completed task(s) for {len(closed)} closed amend "
                        f"seq(s)")
    return problems


# --- runs of the job, one database command at a time -------------------------------------------

FAULTS = ("transient before", "transient after", "permanent", "crash before", "crash after")


class Run:
    """One run of the job in a thread that pauses before each database command until the scheduler
    lets it go on: only one run ever executes at a time, so the interleaving is the scheduler's."""

    def __init__(self, name: str, db: Any, clock: Callable[[], datetime], settings: JobSettings = SETTINGS):
        self.name = name
        self.settings = settings
        self.pending: tuple[str, str] | None = None
        self.finished = False
        self.crashed = False
        self.failure: BaseException | None = None
        self.gave_up: Exception | None = None
        self.interrupted = False
        # The run's signals, as main.py's handler records them while the run works (see Simulation.signal).
        self.signals = SignalRecord()
        self.signals.enter(Phase.WORKING)
        self.stop = StopRequest(signals=self.signals, sleep=no_sleep)
        self._fault: str | None = None
        self.stalled_until: datetime | None = None  # a run stalled (a GC pause, a suspended VM) is not scheduled
        self._go = threading.Semaphore(0)
        self._paused = threading.Semaphore(0)
        store = StoppingStore(InstrumentedDatabase(db, self._command), settings.retry, self.stop)
        self._thread = threading.Thread(target=self._main, args=(store, clock), name=name, daemon=True)
        self._thread.start()
        self.step()

    def _main(self, store: AmendStore, clock: Callable[[], datetime]) -> None:
        self._go.acquire()
        try:
            amend_task_processing(store, self.settings, clock, stop=self.stop)
        except SimulatedCrash:
            self.crashed = True
        except Interrupted:  # a second signal: stopped at once, before a command, as a crash would
            self.interrupted = True
        except (TaskProcessingError, PyMongoError) as exc:
            self.gave_up = exc  # as main.py: the run ends with exit code 2 (a claim that failed for good)
        except BaseException as exc:  # noqa: BLE001 - the scheduler reports it as the run's failure
            self.failure = exc
        finally:
            self.finished = True
            self.pending = None
            self._paused.release()

    def _command(self, collection: str, command: str, call: Callable[[], Any], args: tuple[Any, ...]) -> Any:
        if self.crashed:
            raise SimulatedCrash("the process is gone")
        self.pending = (collection, command)
        self._paused.release()
        self._go.acquire()
        if self.crashed:  # killed while paused (the simulation ends)
            raise SimulatedCrash("the process is gone")
        fault, self._fault = self._fault, None
        if fault is None:
            return call()
        if fault.endswith("after"):
            call()
        if fault.startswith("crash"):
            self.crashed = True
            raise SimulatedCrash(f"{self.name} crashed at {collection}.{command}")
        if fault.startswith("transient"):
            raise AutoReconnect(f"injected at {collection}.{command}")
        raise OperationFailure(f"injected at {collection}.{command}", code=8000)

    @property
    def at_write(self) -> bool:
        return self.pending is not None and self.pending[1] in WRITE_COMMANDS

    def step(self, fault: str | None = None) -> None:
        """Let the run execute its pending command (with `fault`) and go on to its next one, or end."""
        self._fault = fault
        self._go.release()
        self._paused.acquire()

    def step_until(self, collection: str, command: str) -> None:
        """Step until the run's next command is `command` on `collection` (a scripted interleaving)."""
        while self.pending != (collection, command):
            if self.finished:
                raise AssertionError(f"{self.name} ended before {collection}.{command}")
            self.step()

    def finish(self) -> None:
        while not self.finished:
            self.step()


# --- the scheduler -------------------------------------------------------------------------------

@dataclass
class Simulation:
    seed: int
    batches: int = 3
    # Swarm testing: each seed draws, for each kind of write (collection, command) when first met, how
    # often a run stalls before it and how often it faults, so that some worlds are calm and others
    # hammer a few points hard (a uniform rate rarely lines up the two or three events a defect needs).
    stall_rates: dict[tuple[str, str], float] = field(default_factory=dict)
    fault_rates: dict[tuple[str, str], float] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.now = START
        self.db: Any = mongomock.MongoClient()["drs_simulation"]
        self.runs: list[Run] = []
        self.started_runs = 0
        self.next_task_id = 1
        self.batch_ids = [f"S{number}" for number in range(1, self.batches + 1)]
        fixtures: dict[str, list[dict[str, Any]]] = {
            TEMPLATES_COLLECTION: [{"Template_Task_Id": TEMPLATE_TASK_ID, "task_type": AMEND_TASK_TYPE,
                                    "parameters": {"Case_Distribution_Batch_ID": "string"}}],
            CASES_COLLECTION: [], SUMMARY_COLLECTION: [], TRANSACTIONS_COLLECTION: [], TASKS_COLLECTION: []}
        for number, batch_id in enumerate(self.batch_ids):
            cases, rows = random_batch(self.rng, batch_id, 1000 * (number + 1))
            fixtures[CASES_COLLECTION] += cases
            fixtures[SUMMARY_COLLECTION] += rows
            fixtures[TRANSACTIONS_COLLECTION].append(new_transaction(self.rng, batch_id, cases))
            fixtures[TASKS_COLLECTION].append(self._task(batch_id))
        reset_collections(AmendStore(self.db, SETTINGS.retry, no_sleep), fixtures)
        world = read_world(self.db)
        self.initial_rows = {batch_id: world[batch_id].rows for batch_id in self.batch_ids}

    def clock(self) -> datetime:
        return self.now

    def ticking_clock(self) -> datetime:
        """The clock of a run left alone: a second passes with every reading."""
        self.now += COMMAND_TIME
        return self.now

    def _task(self, batch_id: str) -> dict[str, Any]:
        task_id, self.next_task_id = self.next_task_id, self.next_task_id + 1
        return {"_id": ObjectId(f"{task_id:024x}"), "Task_Id": task_id, "Template_Task_Id": TEMPLATE_TASK_ID,
                "task_type": AMEND_TASK_TYPE, "parameters": {"Case_Distribution_Batch_ID": batch_id},
                "task_status": "open", "created_dtm": self.now}

    # the moves of the world

    def _rate(self, rates: dict[tuple[str, str], float], kind: tuple[str, str] | None) -> float:
        assert kind is not None
        if kind not in rates:
            rates[kind] = self.rng.choice((0.0, 0.0, 0.05, 0.3, 0.6))
        return rates[kind]

    def awake_runs(self) -> list[Run]:
        return [run for run in self.runs if run.stalled_until is None or run.stalled_until <= self.now]

    def start_run(self) -> None:
        self.started_runs += 1
        self.runs.append(Run(f"run{self.started_runs}", self.db, self.clock))
        self.log.append(f"start run{self.started_runs}")

    def advance_run(self) -> None:
        run = self.rng.choice(self.awake_runs())
        run.stalled_until = None
        self.now += COMMAND_TIME
        if run.at_write and self.rng.random() < self._rate(self.stall_rates, run.pending):
            run.stalled_until = self.now + timedelta(minutes=self.rng.choice(STALL_MINUTES))
            self.log.append(f"{run.name} stalls before {run.pending} until {run.stalled_until:%H:%M}")
            return
        fault = self.rng.choice(FAULTS) if run.at_write and self.rng.random() < self._rate(
            self.fault_rates, run.pending) else None
        self.log.append(f"{run.name} {run.pending}" + (f" {fault}" if fault else ""))
        run.step(fault)

    def renumber(self) -> None:
        """An operator renumbers an open amend seq: to a new number, or to one a closed seq already has (the
        README calls such a reuse legitimate). A run whose plan named the old number is refused and undone."""
        batch_id = self.rng.choice(self.batch_ids)
        query = {"Case_Distribution_Batch_ID": batch_id}
        seqs = self.db[TRANSACTIONS_COLLECTION].find_one(query)["batch_seq_details"]
        open_ones = [index for index, seq in enumerate(seqs) if seq["action_type"] == "amend"
                     and seq["CRD_Distribution_Status"] == "open"]
        if not open_ones:
            return
        index = self.rng.choice(open_ones)
        closed = [seq["batch_seq"] for seq in seqs if seq["CRD_Distribution_Status"] == "close"
                  and seq["action_type"] == "amend"]
        number = self.rng.choice(closed) if closed and self.rng.random() < 0.5 else \
            max(seq["batch_seq"] for seq in seqs) + 1
        self.db[TRANSACTIONS_COLLECTION].update_one(query, {"$set": {f"batch_seq_details.{index}.batch_seq": number}})
        self.log.append(f"operator renumbers seq {seqs[index]['batch_seq']} of batch {batch_id} to {number}")

    def new_batch(self) -> None:
        """A new batch is distributed, with its amend request (its summary may lack a row, as some do)."""
        batch_id = f"S{len(self.batch_ids) + 1}"
        cases, rows = random_batch(self.rng, batch_id, 1000 * (len(self.batch_ids) + 1))
        self.db[CASES_COLLECTION].insert_many(cases)
        if rows:
            self.db[SUMMARY_COLLECTION].insert_many(rows)
        self.db[TRANSACTIONS_COLLECTION].insert_one(new_transaction(self.rng, batch_id, cases))
        self.db[TASKS_COLLECTION].insert_one(self._task(batch_id))
        self.batch_ids.append(batch_id)
        self.initial_rows[batch_id] = read_world(self.db)[batch_id].rows
        self.log.append(f"batch {batch_id} arrives with {len(cases)} cases and {len(rows)} summary rows")

    def advance_clock(self) -> None:
        minutes = self.rng.choice((1, 5, 20, 40))
        self.now += timedelta(minutes=minutes)
        self.log.append(f"clock +{minutes} min")

    def requeue(self) -> None:
        """An operator sets an ended-in-error or hanging task back to open (README: queue it again)."""
        tasks = list(self.db[TASKS_COLLECTION].find({"task_status": {"$in": ["error", "processing"]}}))
        if tasks:
            task = self.rng.choice(tasks)
            self.db[TASKS_COLLECTION].update_one({"_id": task["_id"]}, {"$set": {"task_status": "open"}})
            self.log.append(f"operator re-queues task {task['Task_Id']} ({task['task_status']})")

    def signal(self) -> None:
        """SIGTERM to a run (systemctl stop, a container runtime): the handler only records it."""
        run = self.rng.choice(self.awake_runs())
        run.signals.record(signal.SIGTERM, None)
        self.log.append(f"SIGTERM to {run.name} ({run.signals.count} so far)")

    def new_amend(self) -> None:
        """An operator asks for one more amend of a batch: a new open amend seq and its task."""
        batch_id = self.rng.choice(self.batch_ids)
        query = {"Case_Distribution_Batch_ID": batch_id}
        transaction = self.db[TRANSACTIONS_COLLECTION].find_one(query)
        number = max(seq["batch_seq"] for seq in transaction["batch_seq_details"]) + 1
        cases = list(self.db[CASES_COLLECTION].find(query))
        self.db[TRANSACTIONS_COLLECTION].update_one(query, {"$set": {"summery_status": "open"}, "$push": {
            "batch_seq_details": {"batch_seq": number, "action_type": "amend", "CRD_Distribution_Status": "open",
                                  "array_of_distributions": random_distributions(self.rng, cases)}}})
        self.db[TASKS_COLLECTION].insert_one(self._task(batch_id))
        self.log.append(f"operator asks for amend seq {number} of batch {batch_id}")

    def step(self) -> None:
        moves: list[tuple[float, Callable[[], None]]] = [
            (1.0, self.advance_clock), (0.2, self.new_amend), (0.15, self.requeue), (0.1, self.new_batch),
            (0.1, self.renumber)]
        if len(self.awake_runs()) < MAX_RUNS:
            moves.append((1.0, self.start_run))
        if self.awake_runs():
            moves += [(8.0, self.advance_run), (0.4, self.signal)]
        weights, actions = zip(*moves, strict=True)
        self.rng.choices(actions, weights)[0]()
        self.reap()

    def reap(self) -> None:
        for run in [run for run in self.runs if run.finished]:
            self.runs.remove(run)
            if run.failure is not None:
                raise InvariantViolation(f"{run.name} failed: {type(run.failure).__name__}: {run.failure}") \
                    from run.failure
            self.log.append(f"{run.name} " + ("crashed" if run.crashed else "stopped by its second SIGTERM"
                                                if run.interrupted else f"gave up: {run.gave_up}"
                                                if run.gave_up else "ended"))

    # the invariants

    def check(self) -> None:
        held = {journal["_id"] for journal in self.db[JOURNAL_COLLECTION].find({}, {"_id": 1})}
        world = read_world(self.db)
        problems = [problem for batch_id in self.batch_ids if batch_id not in held
                    for problem in check_batch(batch_id, world[batch_id], self.initial_rows[batch_id])]
        if problems:
            raise InvariantViolation("; ".join(problems))

    def settle(self) -> None:
        """Every run left goes on undisturbed to its end (a stalled one wakes up late), then, the clock
        past every lease, runs without faults recover what crashed runs left."""
        while self.runs:
            awake = self.awake_runs()
            run = self.rng.choice(awake) if awake else min(self.runs, key=lambda r: r.stalled_until or self.now)
            self.now = max(self.now, run.stalled_until or self.now) + COMMAND_TIME
            run.stalled_until = None
            self.log.append(f"{run.name} {run.pending} (settling)")
            run.step()
            self.reap()
            self.check()
        for _ in range(3):
            self.now += LEASE + timedelta(minutes=1)
            self.log.append("a run without faults, the clock past every lease (settling)")
            amend_task_processing(AmendStore(self.db, SETTINGS.retry, no_sleep), SETTINGS, self.ticking_clock)
            self.check()
        processing = self.db[TASKS_COLLECTION].count_documents({"task_status": "processing"})
        journals = self.db[JOURNAL_COLLECTION].count_documents({})
        if processing or journals:
            raise InvariantViolation(f"settled with {processing} task(s) in processing and {journals} journal(s)")

    def audit_agrees(self) -> None:
        """The job's audit calls consistent exactly the batches whose summary equals their cases (a batch
        that started with a row missing and was never amended is not) and whose open amend request the job
        can apply (renumbering can leave two open seqs with one number, which the job refuses)."""
        from batch_monitor import audit_batches

        report, _ = audit_batches(AmendStore(self.db, SETTINGS.retry, no_sleep), None, self.now, SETTINGS)
        audited = {batch_id for batch_id in self.batch_ids if f"batch {batch_id}: consistent" in report.splitlines()}
        world = read_world(self.db)
        expected = {batch_id for batch_id in self.batch_ids
                    if not summary_disagreements(batch_id, world[batch_id].cases, world[batch_id].rows)
                    and not ambiguous_request(world[batch_id].transaction)}
        if audited != expected:
            raise InvariantViolation(f"the audit calls {sorted(audited)} consistent, the simulation's checks "
                                     f"{sorted(expected)}: {report}")

    def run(self, steps: int) -> None:
        """`steps` moves of the world, the invariants checked after each; then settle and audit."""
        try:
            for _ in range(steps):
                self.step()
                self.check()
            self.settle()
            self.audit_agrees()
        except InvariantViolation as violation:
            raise InvariantViolation(f"seed {self.seed}: {violation}\nlast moves:\n  "
                                     + "\n  ".join(self.log[-40:])) from None
        finally:
            for run in self.runs:  # unblock any thread still paused, so none is left behind
                run.crashed = True
                run.step()


def simulate(seed: int, steps: int) -> Simulation:
    simulation = Simulation(seed)
    simulation.run(steps)
    return simulation
