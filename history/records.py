"""A run of main.py as the run history records it (one document of DRS_Amend.Run_History), as a typed,
validated value.

Every reader of the history (check, status, logs, the dashboard, the metrics) takes records, never
raw documents, and gets them from read_history: a document that is malformed (a field missing or of
the wrong type, a hand edit, a document of another program) is skipped and counted there, never a
KeyError in a monitor; a document dated in the future (written by a host whose clock is ahead) is set
apart and counted too, never taken as evidence that the job is healthy.
"""

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from history.run_report import Outcome
from utils.documents import Document
from utils.reports import timestamp

OUTCOMES = frozenset(Outcome)
COUNTS = ("completed", "errored", "deferred", "skipped", "not_started", "cases_moved", "batch_cases")


class MalformedRecord(ValueError):
    """A run-history document that is not a run as main.py records it; the message says why."""


@dataclass(frozen=True)
class TaskRecord:
    """One task of a run: its outcome, what it moved, its message."""
    object_id: Any
    task_id: Any
    batch: Any
    outcome: str
    cases_moved: int = 0
    batch_cases: int = 0
    message: str = ""
    duration_seconds: float = 0.0


@dataclass(frozen=True)
class RunRecord:
    """One run of main.py."""
    run_id: str
    host: str
    started: datetime
    ended: datetime
    duration_seconds: float
    exit_code: int
    completed: int = 0
    errored: int = 0
    deferred: int = 0
    skipped: int = 0
    not_started: int = 0
    cases_moved: int = 0
    batch_cases: int = 0
    stop_reason: str | None = None
    tasks: tuple[TaskRecord, ...] = ()
    lock_wait_seconds: float = 0.0  # of duration_seconds, the wait for another process's lock (embedded default)

    @property
    def working_seconds(self) -> float:
        """The run's duration without its wait for the lock: what its speed is judged on."""
        return self.duration_seconds - self.lock_wait_seconds

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


def _count(document: Mapping[str, Any], name: str, where: str) -> int:
    value = document.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedRecord(f"{where}: its {name} is {value!r}, not a count")
    return value


def _seconds(document: Mapping[str, Any], name: str, where: str, default: float) -> float:
    value = document.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise MalformedRecord(f"{where}: its {name} is {value!r}, not a number of seconds")
    return float(value)


def _date(document: Mapping[str, Any], name: str, where: str) -> datetime:
    value = document.get(name)
    if not isinstance(value, datetime):
        raise MalformedRecord(f"{where}: its {name} is {value!r}, not a date" if name in document else
                              f"{where}: it has no {name}")
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_task(document: Any, where: str) -> TaskRecord:
    if not isinstance(document, Mapping):
        raise MalformedRecord(f"{where}: a task is {document!r}, not a document")
    outcome = document.get("outcome")
    if outcome not in OUTCOMES:
        raise MalformedRecord(f"{where}: a task's outcome is {outcome!r}, not one of {', '.join(sorted(OUTCOMES))}")
    return TaskRecord(object_id=document.get("_id"), task_id=document.get("Task_Id"), batch=document.get("batch"),
                      outcome=str(outcome), cases_moved=_count(document, "cases_moved", where),
                      batch_cases=_count(document, "batch_cases", where), message=_text(document.get("message")),
                      duration_seconds=_seconds(document, "duration_seconds", where, 0.0))


def parse_run(document: Document) -> RunRecord:
    """The record of a run-history document; MalformedRecord naming the document and the field otherwise."""
    where = f"run record {document.get('_id', document.get('run_id'))}"
    run_id = document.get("run_id")
    if not isinstance(run_id, str) or not run_id:
        raise MalformedRecord(f"{where}: its run_id is {run_id!r}, not a text")
    started, ended = _date(document, "started_dtm", where), _date(document, "ended_dtm", where)
    if ended < started:
        raise MalformedRecord(f"{where}: it ends ({timestamp(ended)}) before it starts "
                              f"({timestamp(started)})")
    exit_code = document.get("exit_code")
    if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not 0 <= exit_code <= 255:
        raise MalformedRecord(f"{where}: its exit_code is {exit_code!r}, not an exit code")
    tasks = document.get("tasks", [])
    if not isinstance(tasks, list):
        raise MalformedRecord(f"{where}: its tasks are {tasks!r}, not a list")
    stop_reason = document.get("stop_reason")
    run = RunRecord(
        run_id=run_id, host=_text(document.get("host")), started=started, ended=ended,
        duration_seconds=_seconds(document, "duration_seconds", where, (ended - started).total_seconds()),
        lock_wait_seconds=_seconds(document, "lock_wait_seconds", where, 0.0),
        exit_code=exit_code, **{name: _count(document, name, where) for name in COUNTS},
        stop_reason=None if stop_reason is None else str(stop_reason),
        tasks=tuple(parse_task(task, where) for task in tasks))
    if disagreement := _disagreement(run):
        raise MalformedRecord(f"{where}: {disagreement}, which main.py never records")
    return run


def _disagreement(run: RunRecord) -> str | None:
    """How the figures of a run contradict one another or its exit code (None: they agree), as main.py
    records them: the counts are those of its tasks, the exit code 1 exactly when a task ended in error,
    unless a signal stopped the run (128 + its number), and its wait for the lock is part of its duration."""
    if run.lock_wait_seconds > run.duration_seconds:
        return (f"its lock_wait_seconds is {run.lock_wait_seconds:g}, more than its duration_seconds "
                f"{run.duration_seconds:g}")
    outcomes = [task.outcome for task in run.tasks]
    for name, outcome in (("completed", Outcome.COMPLETED), ("errored", Outcome.ERROR),
                          ("deferred", Outcome.DEFERRED)):
        if getattr(run, name) != outcomes.count(outcome):
            return f"its {name} is {getattr(run, name)} while {outcomes.count(outcome)} of its tasks say so"
    for name in ("cases_moved", "batch_cases"):
        total = sum(getattr(task, name) for task in run.tasks)
        if getattr(run, name) != total:
            return f"its {name} is {getattr(run, name)} while its tasks' sum to {total}"
    expected = 1 if run.errored else 0
    if run.exit_code != expected and not (run.exit_code > 128 and run.stop_reason):
        return f"its exit_code is {run.exit_code} with {run.errored} task(s) in error"
    return None


@dataclass
class History:
    """Runs read from the history, newest first, and what was set apart: documents that are no run
    (`malformed`, each with why) and runs dated after now (`future`, a host whose clock is ahead)."""
    runs: list[RunRecord] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    future: list[RunRecord] = field(default_factory=list)

    @property
    def set_apart(self) -> int:
        return len(self.malformed) + len(self.future)

    def anomalies(self) -> str:
        """What was set apart, in one line ("" when nothing was)."""
        parts = []
        if self.malformed:
            parts.append(f"{len(self.malformed)} malformed (first: {self.malformed[0]})")
        if self.future:
            hosts = ", ".join(sorted({run.host for run in self.future}))
            parts.append(f"{len(self.future)} dated in the future (host {hosts}: is its clock ahead?)")
        return f"{self.set_apart} run record(s) set apart: " + "; ".join(parts) if parts else ""


def read_history(documents: Iterable[Document], now: datetime, allowance: timedelta) -> History:
    """The records of `documents` (newest first), the malformed and the future ones set apart. A run is
    in the future when it started or ended later than `now` plus `allowance` (the clock skew allowed
    between hosts)."""
    history = History()
    horizon = now + allowance
    for document in documents:
        try:
            run = parse_run(document)
        except MalformedRecord as exc:
            history.malformed.append(str(exc))
            continue
        (history.future if run.ended > horizon else history.runs).append(run)
    history.runs.sort(key=lambda run: run.started, reverse=True)
    return history
