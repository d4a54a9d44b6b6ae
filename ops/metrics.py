"""The node_exporter textfile of [METRICS] TEXTFILE: what Prometheus scrapes of the last run.

Gauges, all prefixed drs_amend_: the last run's and the last successful run's end times, the
last run's duration, exit code, tasks by outcome, cases moved and batch cases, the amend
tasks stuck in processing, and the backlog (open amend tasks, the creation time of the oldest: its age is
`time() - drs_amend_oldest_open_task_timestamp_seconds`). Written with the official client's text-format
writer, through a temporary file and a rename, so the collector never reads half a file.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from ops.backlog import Backlog

# (name of the run-history count, label of the outcome in drs_amend_last_run_tasks)
TASK_COUNTS = (("completed", "completed"), ("errored", "error"), ("deferred", "deferred"),
               ("skipped", "skipped"), ("not_started", "not_started"))


def _timestamp(moment: datetime) -> float:
    """Seconds since the epoch of a database time (naive UTC)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run_metrics(run: Mapping[str, Any], last_success: datetime | None, stuck_tasks: int,
                backlog: Backlog) -> CollectorRegistry:
    """The gauges of one recorded run (a Run_History document), the end of the last successful run
    (None when there is none: the gauge is left out), the number of stuck tasks and the backlog after the
    run (the oldest open task's gauge is left out when none is open)."""
    registry = CollectorRegistry()

    def gauge(name: str, documentation: str, value: float) -> None:
        Gauge(f"drs_amend_{name}", documentation, registry=registry).set(value)

    gauge("last_run_timestamp_seconds", "When the last run ended (Unix time).", _timestamp(run["ended_dtm"]))
    if last_success is not None:
        gauge("last_success_timestamp_seconds", "When the last run with exit code 0 ended (Unix time).",
              _timestamp(last_success))
    gauge("last_run_duration_seconds", "How long the last run took, loading and saving included.",
          run["duration_seconds"])
    gauge("last_run_exit_code", "The exit code of the last run (0 OK, 1 a task in error, 128+n a signal).",
          run["exit_code"])
    tasks = Gauge("drs_amend_last_run_tasks", "Tasks of the last run by outcome.", ["outcome"], registry=registry)
    for count, outcome in TASK_COUNTS:
        tasks.labels(outcome=outcome).set(run.get(count, 0))
    gauge("last_run_cases_moved", "Cases the last run moved to another DRC.", run["cases_moved"])
    gauge("last_run_batch_cases", "Cases in the batches the last run amended.", run.get("batch_cases", 0))
    gauge("stuck_tasks", "Amend tasks in processing whose claim is stale.", stuck_tasks)
    gauge("open_tasks", "Amend tasks open (waiting for a run) after the last run.", backlog.open_tasks)
    if backlog.oldest_open is not None:
        gauge("oldest_open_task_timestamp_seconds", "When the oldest open amend task was created (Unix time).",
              _timestamp(backlog.oldest_open))
    return registry


def write_metrics(path: Path, registry: CollectorRegistry) -> None:
    """Write the gauges to `path` atomically (OSError when it cannot be written)."""
    write_to_textfile(str(path), registry)
