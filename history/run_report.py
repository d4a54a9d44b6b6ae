"""What a run of main.py reports: who ran (RunIdentity), what became of each task (TaskOutcome, Outcome),
and the run as the run history records it (RunReport.document; history/records.py reads it back)."""

import enum
import os
import socket
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from utils.cli import ExitStatus
from utils.documents import BatchId


@dataclass(frozen=True)
class RunIdentity:
    """Who holds a claim: written into the task and the journal."""
    run_id: str
    host: str
    pid: int

    @classmethod
    def new(cls) -> "RunIdentity":
        return cls(uuid.uuid4().hex, socket.gethostname(), os.getpid())

    @property
    def label(self) -> str:
        return f"DRS Amend run {self.run_id[:12]} on {self.host} pid {self.pid}"

    def document(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "host": self.host, "pid": self.pid}


class Outcome(enum.StrEnum):
    """What became of a task in a run."""
    COMPLETED = "completed"
    ERROR = "error"
    DEFERRED = "deferred"


@dataclass(frozen=True)
class TaskOutcome:
    object_id: Any
    task_id: Any
    status: Outcome
    message: str
    cases_moved: int = 0
    batch_cases: int = 0  # the cases of its batch, when it was planned (what its duration is compared with)
    batch_id: BatchId | None = None
    duration_seconds: float = 0.0

    def timed(self, batch_id: BatchId | None, duration_seconds: float) -> "TaskOutcome":
        return replace(self, batch_id=batch_id, duration_seconds=round(duration_seconds, 3))

    def document(self) -> dict[str, Any]:
        return {"_id": self.object_id, "Task_Id": self.task_id, "batch": self.batch_id, "outcome": self.status,
                "cases_moved": self.cases_moved, "batch_cases": self.batch_cases, "message": self.message,
                "duration_seconds": self.duration_seconds}


@dataclass
class RunReport:
    run: RunIdentity
    started: datetime
    ended: datetime | None = None
    outcomes: list[TaskOutcome] = field(default_factory=list)
    skipped: int = 0
    stop_reason: str | None = None  # why the run ended before every open task was processed
    not_started: int = 0  # open tasks it left for the next run
    stop_signal: int | None = None  # the SIGTERM or SIGINT that asked it to stop
    lock_wait_seconds: float = 0.0  # of its duration, the wait for another process's lock (embedded default)

    def count(self, status: Outcome) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def cases_moved(self) -> int:
        return sum(outcome.cases_moved for outcome in self.outcomes)

    @property
    def batch_cases(self) -> int:
        return sum(outcome.batch_cases for outcome in self.outcomes)

    @property
    def exit_code(self) -> int:
        """128 + the signal that stopped the run, else 1 when a task ended in error, else 0."""
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        return ExitStatus.TASK_ERROR if self.count(Outcome.ERROR) else ExitStatus.OK

    def document(self) -> dict[str, Any]:
        """The run as recorded in the run history and printed by --json."""
        ended = self.ended or self.started
        return {"run_id": self.run.run_id, "host": self.run.host, "pid": self.run.pid,
                "started_dtm": self.started, "ended_dtm": ended,
                "duration_seconds": round((ended - self.started).total_seconds(), 3),
                "lock_wait_seconds": round(self.lock_wait_seconds, 3),
                "exit_code": self.exit_code, "completed": self.count(Outcome.COMPLETED),
                "errored": self.count(Outcome.ERROR), "deferred": self.count(Outcome.DEFERRED),
                "skipped": self.skipped, "cases_moved": self.cases_moved, "batch_cases": self.batch_cases,
                "stop_reason": self.stop_reason,
                "not_started": self.not_started, "tasks": [outcome.document() for outcome in self.outcomes]}

    def summary_line(self) -> str:
        stopped = (f"; {self.stop_reason}: {self.not_started} open task(s) left for the next run"
                   if self.stop_reason else "")
        return (f"DRS Amend run finished: {self.count(Outcome.COMPLETED)} task(s) completed, "
                f"{self.count(Outcome.ERROR)} errored, {self.count(Outcome.DEFERRED)} deferred (batch busy), "
                f"{self.skipped} skipped (claimed by another run), {self.cases_moved} case(s) moved{stopped}")
