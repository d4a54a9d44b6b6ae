"""What the tests share: the fixtures' data and ids, a fixed clock, database builders, the job run on
a store, the hooks that disturb a database (faults, crashes, stalls, one command at a time),
comparisons of batches, and the scripts run in-process or as subprocesses."""

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import mongomock
from bson import ObjectId
from pymongo.errors import AutoReconnect, OperationFailure

from amend_store import (
    AMEND_TASK_TYPE,
    CASES_COLLECTION,
    FENCE_FIELD,
    SUMMARY_COLLECTION,
    TASKS_COLLECTION,
    TEMPLATES_COLLECTION,
    TRANSACTIONS_COLLECTION,
    WRITE_COMMANDS,
    AmendStore,
    BatchRead,
)
from database_update import read_fixtures
from history.records import History, parse_run
from ops.backlog import Backlog
from task_processor import amend_task_processing
from tests.instruments import InstrumentedDatabase
from update_databases import reset_collections
from utils.config import JobSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXED_NOW = datetime(2026, 11, 25, 10, 30, 0, 123000)
# Every date in the fixtures is older; every date a run writes (fixed clock or real one) is newer.
RUN_TIMES_START = datetime(2026, 11, 21)
TEMPLATE_TASK_ID = 3
SETTINGS = JobSettings(template_task_id=TEMPLATE_TASK_ID, min_share_kept=Fraction(1, 5))
FIXTURES = read_fixtures(PROJECT_ROOT / "data")
# The amend tasks of the fixtures (batches 005 and 006) and the task of another type sharing Task_Id 101.
TASK_005 = ObjectId("6740a0000000000000000101")
TASK_006 = ObjectId("6740a0000000000000000102")
OTHER_TYPE_TASK = ObjectId("6740a0000000000000000901")
TASKS = {"005": TASK_005, "006": TASK_006}


def uri_with_password(user: str, password: str, location: str, scheme: str = "mongodb") -> str:
    """A test URI carrying a made-up password, built from parts so that no credentialed
    connection string is ever written out in the repository."""
    return f"{scheme}://{user}:{password}@{location}"


def fixed_clock() -> datetime:
    return FIXED_NOW


class Clock:
    """A clock a test moves."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def no_sleep(_seconds: float) -> None:
    """Retries in tests do not wait."""


def new_database() -> mongomock.Database:
    return mongomock.MongoClient()["drs_case_distribution_db"]


# How the suite's stores read a batch: the full read unless DRS_TEST_BATCH_READ=push-down (one of CI's passes runs
# the whole suite so, which proves the push-down read gives every outcome the full read gives).
BATCH_READ = BatchRead(os.environ.get("DRS_TEST_BATCH_READ", BatchRead.FULL))


def store_of(database, sleep=no_sleep, settings=SETTINGS, **options) -> AmendStore:
    return AmendStore(database, settings.retry, sleep, **{"batch_read": BATCH_READ, **options})


def fresh_db() -> mongomock.Database:
    """A new in-memory database holding the shipped fixtures of data/."""
    database = new_database()
    reset_collections(store_of(database), FIXTURES)
    return database


def copy_of(database) -> mongomock.Database:
    """An independent copy of a mongomock database."""
    copy: mongomock.Database = mongomock.MongoClient()[database.name]
    for name in database.list_collection_names():
        documents = list(database[name].find())
        if documents:
            copy[name].insert_many(documents)
    return copy


def run_job(database, clock=fixed_clock, sleep=no_sleep, settings=SETTINGS, task_id=None, **store_options):
    """One run of the job on `database` (a mongomock database or an instrumented one)."""
    return amend_task_processing(store_of(database, sleep, settings, **store_options), settings, clock=clock,
                                 task_id=task_id)


def add_batch(db, batch_id, layout, distributions, first_case_id=1, task_id=1, arrears=100):
    """Insert a batch: cases per layout {drc: {rtom: n}}, its summary, an open amend seq and an open task.

    Case_Ids are dealt round-robin over the (drc, rtom) cells so that each cell's ids interleave.
    """
    deepest = max((n for counts in layout.values() for n in counts.values()), default=0)
    layout_cells = [(drc, rtom) for k in range(deepest) for drc, counts in layout.items()
                    for rtom, n in counts.items() if k < n]
    cases = [{"Case_Id": first_case_id + index, "Case_Distribution_Batch_ID": batch_id, "DRC_Id": drc, "RTOM": rtom,
              "Arrease": arrears, "NEW_DRC_ID": None} for index, (drc, rtom) in enumerate(layout_cells)]
    if cases:
        db[CASES_COLLECTION].insert_many(cases)
    summary = {}
    for case in cases:
        summary.setdefault((case["DRC_Id"], case["RTOM"]), []).append(case["Arrease"])
    if summary:
        db[SUMMARY_COLLECTION].insert_many([
            {"Case_Distribution_Batch_ID": batch_id, "DRC_Id": drc, "RTOM": rtom, "Count": len(amounts),
             "Tot_Arrease": sum(amounts)} for (drc, rtom), amounts in summary.items()])
    db[TRANSACTIONS_COLLECTION].insert_one({
        "Case_Distribution_Batch_ID": batch_id, "summery_status": "open",
        "batch_seq_details": [
            {"batch_seq": 1, "action_type": "distribution", "CRD_Distribution_Status": "close"},
            {"batch_seq": 2, "action_type": "amend", "CRD_Distribution_Status": "open",
             "array_of_distributions": distributions}]})
    db[TASKS_COLLECTION].insert_one({
        "_id": ObjectId(f"{task_id:024x}"), "Task_Id": task_id, "Template_Task_Id": TEMPLATE_TASK_ID,
        "task_type": AMEND_TASK_TYPE, "parameters": {"Case_Distribution_Batch_ID": batch_id}, "task_status": "open",
        "created_dtm": datetime(2026, 11, 20, 8, 0, task_id % 60)})
    return cases


def add_template(db) -> None:
    db[TEMPLATES_COLLECTION].insert_one({
        "Template_Task_Id": TEMPLATE_TASK_ID, "task_type": AMEND_TASK_TYPE,
        "parameters": {"Case_Distribution_Batch_ID": "string"}})


def current_drc(case) -> str:
    return case.get("NEW_DRC_ID") or case["DRC_Id"]


def cells(db, batch_id) -> Counter:
    """Cases per (current DRC, RTOM) of a batch."""
    return Counter((current_drc(case), case["RTOM"])
                   for case in db[CASES_COLLECTION].find({"Case_Distribution_Batch_ID": batch_id}))


def snapshot(db, batch_id=None):
    """Every document of the data collections (of one batch when given), for before/after comparisons."""
    batch_filter = {} if batch_id is None else {"Case_Distribution_Batch_ID": batch_id}
    return {
        name: sorted(db[name].find(batch_filter), key=lambda doc: str(doc["_id"]))
        for name in (CASES_COLLECTION, SUMMARY_COLLECTION, TRANSACTIONS_COLLECTION)
    } | {TEMPLATES_COLLECTION: list(db[TEMPLATES_COLLECTION].find())}


def normalized(value):
    """A document with the times written by a run replaced by a marker and without _id or fencing
    token, so that the results of runs at different times, or with upserted rows, compare equal
    (a token only grows: an undo leaves the undoer's, see docs/design.md, "Fencing")."""
    if isinstance(value, datetime) and value >= RUN_TIMES_START:
        return "<run time>"
    if isinstance(value, dict):
        return {key: normalized(item) for key, item in value.items() if key not in ("_id", FENCE_FIELD)}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    return value


def batch_state(db, batch_id):
    """Cases, summary and transaction of one batch, normalized."""
    query = {"Case_Distribution_Batch_ID": batch_id}
    return normalized({
        "cases": list(db[CASES_COLLECTION].find(query).sort("Case_Id", 1)),
        "summary": list(db[SUMMARY_COLLECTION].find(query).sort([("DRC_Id", 1), ("RTOM", 1)])),
        "transaction": db[TRANSACTIONS_COLLECTION].find_one(query),
    })


# --- hooks that disturb a database (see tests/instruments.InstrumentedDatabase) ---------------

class SimulatedCrash(BaseException):
    """The process dies here: a BaseException, which the job does not (and must not) catch."""


def transient(message):
    return AutoReconnect(message)


def permanent(message):
    return OperationFailure(message, code=8000)


def crash(message):
    return SimulatedCrash(message)


class WriteHook:
    """Numbers the write commands (1 is the first) and lets a subclass act on one of them."""

    def __init__(self):
        self.writes = []

    def __call__(self, collection, command, call, args=()):
        if command not in WRITE_COMMANDS:
            return call()
        self.writes.append((collection, command))
        return self.on_write(len(self.writes), collection, command, call)

    def on_write(self, number, collection, command, call):
        return call()


class FaultInjector(WriteHook):
    """At the write numbers in `fail_at` raises `error(message)`, before the write reaches the data or,
    with after_write, after it landed (a lost reply)."""

    def __init__(self, fail_at=(), after_write=False, error=transient):
        super().__init__()
        self.fail_at = frozenset(fail_at)
        self.after_write = after_write
        self.error = error

    def on_write(self, number, collection, command, call):
        if number not in self.fail_at:
            return call()
        if self.after_write:
            call()
        raise self.error(f"injected fault at write {number} ({collection}.{command})")


class StallInjector(WriteHook):
    """At write `at` the run stalls: `during_stall()` runs (other runs, an operator) before that write
    reaches the data or, with after_write, after it landed; then the stalled run goes on as if
    nothing had happened, as a run resumed after a long GC pause or a suspended VM does."""

    def __init__(self, at, during_stall, after_write=False):
        super().__init__()
        self.at = at
        self.during_stall = during_stall
        self.after_write = after_write

    def on_write(self, number, collection, command, call):
        if number != self.at:
            return call()
        if self.after_write:
            result = call()
            self.during_stall()
            return result
        self.during_stall()
        return call()


class AtFirst(WriteHook):
    """At the first write command `command` to `collection`: `act(call)` instead of the plain write."""

    def __init__(self, collection, command, act):
        super().__init__()
        self.target, self.act, self.done = (collection, command), act, False

    def on_write(self, number, collection, command, call):
        if self.done or (collection, command) != self.target:
            return call()
        self.done = True
        return self.act(call)


def disturbed(database, hook):
    """`database` with every command going through `hook`."""
    return InstrumentedDatabase(database, hook)


class _LockedCursor:
    """A find() whose result is read at once under the lock (sort and limit applied first)."""

    def __init__(self, lock, make_cursor):
        self._lock = lock
        self._make_cursor = make_cursor
        self._steps = []

    def sort(self, *args, **kwargs):
        self._steps.append(("sort", args, kwargs))
        return self

    def limit(self, *args, **kwargs):
        self._steps.append(("limit", args, kwargs))
        return self

    def __iter__(self):
        with self._lock:
            cursor = self._make_cursor()
            for name, args, kwargs in self._steps:
                cursor = getattr(cursor, name)(*args, **kwargs)
            return iter(list(cursor))


def one_command_at_a_time(database):
    """mongomock runs find_one_and_update as a read then a write, so two threads could both claim one
    task; a server runs each command atomically. This gives mongomock the server's guarantee: one
    command at a time (a find's whole cursor included), nothing more."""
    lock = threading.RLock()

    def serialized(collection, command, call, args):
        if command == "find":
            return _LockedCursor(lock, call)
        with lock:
            return call()
    return disturbed(database, serialized)


# --- the scripts -------------------------------------------------------------------------------

def run_script(script, *args, env=None, cwd=None, timeout=120):
    """A script run as an operator runs it: a subprocess, DRS_* variables only from `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DRS_")}
    environment.update(env or {})
    return subprocess.run([sys.executable, str(PROJECT_ROOT / script), *args], capture_output=True, text=True,
                          env=environment, cwd=cwd, timeout=timeout)


def one_line(output):
    """The single non-empty line of a script's output (and no traceback)."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def load(path):
    """The content of an embedded data file, in a new mongomock database."""
    from embedded.data_file import load_database

    database = new_database()
    load_database(database, path)
    return database


class FakeStream:
    """A stream that is a terminal or not, keeping what is written to it."""

    def __init__(self, terminal):
        self.terminal = terminal
        self.text = ""

    def isatty(self):
        return self.terminal

    def write(self, text):
        self.text += text

    def flush(self):
        pass


class After(threading.Thread):
    """threading.Timer without its timed wait: under libfaketime (the suite's pass with the clock 400 days ahead)
    a wait with a timeout on a lock or an Event never returns, while time.sleep does. Polls every 0.01 s."""

    def __init__(self, seconds, action, *args):
        super().__init__(daemon=True)
        self.seconds, self.action, self.args = seconds, action, args
        self.cancelled = False

    def run(self):
        deadline = time.monotonic() + self.seconds
        while not self.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.cancelled:
            self.action(*self.args)

    def cancel(self):
        self.cancelled = True


NO_BACKLOG = Backlog(open_tasks=0, oldest_open=None)  # no amend task open


def history_of(documents):
    """The History of run-history documents that are all well formed (a test's own), newest first."""
    return History(runs=sorted(map(parse_run, documents), key=lambda run: run.started, reverse=True))
