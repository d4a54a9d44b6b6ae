"""The pure core of the operations view (batch_monitor.py and its HTML report): health figures and
their states, failure patterns, the history as rows. Plain data in, plain data out; no database."""

import csv
import enum
import io
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from database_checks import batch_of
from history.records import History, RunRecord
from history.run_report import Outcome
from ops.backlog import Backlog
from utils.config import Thresholds
from utils.documents import Document
from utils.one_line import one_line
from utils.reports import text_table, timestamp, to_json


class State(enum.IntEnum):
    """A health figure's state and check's verdict, in the monitoring-plugin convention (Nagios, Icinga):
    also check's exit code. Apart from the job's exit codes (utils/cli.State), which mean other things."""
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


OK, WARNING, CRITICAL, UNKNOWN = State.OK, State.WARNING, State.CRITICAL, State.UNKNOWN
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
LOG_COLUMNS = ("run_id", "run_started", "host", "run_exit_code", "Task_Id", "task_object_id", "batch", "outcome",
               "cases_moved", "duration_seconds", "message")


def level(value: float, warning: float, critical: float) -> State:
    return CRITICAL if value >= critical else WARNING if value >= warning else OK


def failure_rate(runs: Iterable[RunRecord]) -> tuple[int, int]:
    """(tasks ended in error, tasks ended) over the given runs."""
    ended = [task for run in runs for task in run.tasks if task.outcome in (Outcome.COMPLETED, Outcome.ERROR)]
    return sum(1 for task in ended if task.outcome == Outcome.ERROR), len(ended)


def seconds_per_thousand_cases(run: RunRecord) -> float | None:
    """A run's working time (its duration without its wait for the lock) per 1,000 cases of the batches it
    processed; None for a run without cases."""
    return run.working_seconds * 1000 / run.batch_cases if run.batch_cases > 0 else None


def slowdown(window_runs: Sequence[RunRecord], thresholds: Thresholds) -> tuple[State, str, float | None,
                                                                             float | None]:
    """(state, text, seconds per 1,000 cases of the last comparable run, its ratio to the median of the
    earlier ones) over the runs of the window, newest first. A run is comparable when its batches held
    at least COMPARABLE_CASES cases; OK and None while fewer than COMPARABLE_RUNS earlier ones are."""
    comparable = [run for run in window_runs if run.batch_cases >= thresholds.comparable_cases]
    figures = [figure for figure in map(seconds_per_thousand_cases, comparable) if figure is not None]
    if len(figures) <= thresholds.comparable_runs:
        return OK, f"speed not judged ({max(len(figures) - 1, 0)} of {thresholds.comparable_runs} earlier runs)", \
            (figures[0] if figures else None), None
    last, median = figures[0], statistics.median(figures[1:])
    ratio = last / median if median > 0 else 1.0
    state = level(ratio, thresholds.slowdown_warning, thresholds.slowdown_critical)
    return state, f"last comparable run {ratio:.1f}x the median time per 1,000 cases", last, ratio


@dataclass(frozen=True)
class HealthFigure:
    """One figure `check` judges: its state, its text in the status line, and its thresholds."""
    name: str
    state: State
    text: str
    limits: str


def backlog_figure(backlog: Backlog, now: datetime, thresholds: Thresholds) -> HealthFigure:
    """The backlog judged: the worse of the number of open tasks and the wait of the oldest."""
    hours = backlog.oldest_open_hours(now)
    state = max(level(backlog.open_tasks, thresholds.open_tasks_warning, thresholds.open_tasks_critical),
                level(hours or 0.0, thresholds.oldest_open_warning_hours, thresholds.oldest_open_critical_hours))
    return HealthFigure("Backlog", state, backlog.text(now),
                        f"warning {thresholds.open_tasks_warning} task(s) or {thresholds.oldest_open_warning_hours:g} "
                        f"h, critical {thresholds.open_tasks_critical} or {thresholds.oldest_open_critical_hours:g} h")


def health_figures(window: History, success: RunRecord | None, stuck_tasks: int, backlog: Backlog, now: datetime,
                   thresholds: Thresholds) -> tuple[list[HealthFigure], str]:
    """The six figures of `check` (last success, failure rate, speed, stuck tasks, backlog, run records set
    apart) from the history of the window (its runs newest first, and what was set apart), the last
    successful run (or None), the number of stuck tasks and the backlog; and their performance data."""
    window_runs = window.runs
    errors, ended = failure_rate(window_runs)
    rate = errors / ended if ended else 0.0
    if success is None:
        age_hours, age_state, age_text = None, CRITICAL, "no successful run recorded"
    else:
        # A success within the allowed clock skew ahead of now is a success of now, never a negative age.
        age_hours = max((now - success.ended).total_seconds() / 3600, 0.0)
        age_state = level(age_hours, thresholds.last_success_warning_hours, thresholds.last_success_critical_hours)
        age_text = f"last successful run {age_hours:.1f} h ago"
    speed_state, speed_text, per_thousand, ratio = slowdown(window_runs, thresholds)
    figures = [
        HealthFigure("Last successful run", age_state, age_text,
                     f"warning {thresholds.last_success_warning_hours:g} h, "
                     f"critical {thresholds.last_success_critical_hours:g} h"),
        HealthFigure(f"Failure rate over {thresholds.window_hours} h",
                     level(rate, thresholds.failure_rate_warning, thresholds.failure_rate_critical),
                     f"failure rate {rate:.0%} over {thresholds.window_hours} h ({errors} of {ended} task(s))",
                     f"warning {thresholds.failure_rate_warning:.0%}, critical {thresholds.failure_rate_critical:.0%}"),
        HealthFigure("Speed", speed_state, speed_text,
                     f"warning {thresholds.slowdown_warning:g}x, critical {thresholds.slowdown_critical:g}x the median "
                     f"of runs over {thresholds.comparable_cases:,} cases"),
        HealthFigure("Stuck tasks", level(stuck_tasks, thresholds.stuck_tasks_warning, thresholds.stuck_tasks_critical),
                     f"{stuck_tasks} stuck task(s)",
                     f"warning {thresholds.stuck_tasks_warning}, critical {thresholds.stuck_tasks_critical}"),
        backlog_figure(backlog, now, thresholds),
        HealthFigure("Run records set apart", WARNING if window.set_apart else OK,
                     window.anomalies() or "0 run record(s) set apart",
                     "warning 1: a record that cannot be read, or dated in the future, is never evidence of health"),
    ]
    perfdata = (f"last_success_hours={_perfdata(age_hours, 2)} failure_rate={rate:.3f} stuck_tasks={stuck_tasks}"
                f" seconds_per_1000_cases={_perfdata(per_thousand, 3)} slowdown={_perfdata(ratio, 2)}"
                f" open_tasks={backlog.open_tasks} oldest_open_hours={_perfdata(backlog.oldest_open_hours(now), 2)}"
                f" records_set_apart={window.set_apart}")
    return figures, perfdata


def evaluate_health(window: History, success: RunRecord | None, stuck_tasks: int, backlog: Backlog, now: datetime,
                    thresholds: Thresholds) -> tuple[State, str]:
    """(state, one status line with performance data): the worst of the health figures decides."""
    figures, perfdata = health_figures(window, success, stuck_tasks, backlog, now, thresholds)
    state, verdict = overall(figures)
    return state, one_line(f"{verdict} | {perfdata}")


def overall(figures: Sequence[HealthFigure]) -> tuple[State, str]:
    """The worst state of the figures, and check's status line (without its performance data)."""
    state = max(figure.state for figure in figures)
    return state, f"DRS-AMEND {STATE_NAMES[state]} - {'; '.join(figure.text for figure in figures)}"


def _perfdata(value: float | None, decimals: int) -> str:
    """A performance-data value; U (unknown) when there is none, as the plugin convention asks."""
    return "U" if value is None or not math.isfinite(value) else f"{value:.{decimals}f}"


def log_rows(runs: Iterable[RunRecord], status: str | None = None, batch: str | None = None,
             task_id: int | None = None) -> list[dict[str, Any]]:
    """One row per task outcome of the runs (a run without tasks gives one row when no task filter is set)."""
    rows = []
    task_filtered = status is not None or batch is not None or task_id is not None
    for run in sorted(runs, key=lambda r: r.started):
        base = {"run_id": run.run_id, "run_started": run.started, "host": run.host, "run_exit_code": run.exit_code}
        if not run.tasks and not task_filtered:
            rows.append(dict(base, outcome="(no task)"))
        for task in run.tasks:
            if (status is not None and task.outcome != status) or \
                    (batch is not None and str(task.batch) != batch) or \
                    (task_id is not None and task.task_id != task_id):
                continue
            rows.append(dict(base, Task_Id=task.task_id, task_object_id=task.object_id, batch=task.batch,
                             outcome=task.outcome, cases_moved=task.cases_moved,
                             duration_seconds=task.duration_seconds, message=task.message))
    return [{column: row.get(column) for column in LOG_COLUMNS} for row in rows]


def _cell(value: object) -> str:
    return timestamp(value) if isinstance(value, datetime) else "" if value is None else one_line(value)


def export(rows: Sequence[Mapping[str, Any]], form: str, columns: Sequence[str] = LOG_COLUMNS) -> str:
    """The rows (with the given columns) as csv, json or txt; times as utils/reports.timestamp writes them."""
    if form == "json":
        return to_json(list(rows)) + "\n"
    if form == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([_cell(row[column]) for column in columns] for row in rows)
        return buffer.getvalue()
    return text_table(columns, [[row[column] for column in columns] for row in rows]) + "\n"


def dashboard(recent: History, window: History, success: RunRecord | None,
              status_counts: Mapping[str, int], stuck: Sequence[Document], backlog: Backlog, now: datetime,
              thresholds: Thresholds) -> str:
    """The text of `status`: the given recent runs, then the state of the tasks and the health figures."""
    runs, window_runs = recent.runs, window.runs
    errors, ended = failure_rate(window_runs)
    lines = [f"DRS Amend at {timestamp(now)}", "", "Last runs:"]
    lines.append(text_table(
        ("started", "duration s", "exit", "completed", "errored", "deferred", "moved", "host", "run id"),
        [(run.started, run.duration_seconds, run.exit_code, run.completed, run.errored,
          run.deferred, run.cases_moved, run.host, run.run_id[:12]) for run in runs]) if runs else "  none recorded")
    for history in (recent, window):
        if history.set_apart:
            lines.append(f"  WARNING: {one_line(history.anomalies())}")
            break
    lines += ["", "Amend tasks by status: " + (", ".join(f"{one_line(status)} {count}" for status, count in
                                                       sorted(status_counts.items())) or "none")]
    lines += [f"Backlog: {backlog.text(now)}"]
    lines += ["Stuck in processing (lease expired): " + (str(len(stuck)) if stuck else "none")]
    if stuck:
        lines.append(text_table(("Task_Id", "_id", "batch", "since", "claimed by"),
                                [(task.get("Task_Id"), task["_id"], batch_of(task), task.get("status_changed_dtm"),
                                  claim_host(task)) for task in stuck]))
    lines.append(f"Failure rate over {thresholds.window_hours} h: "
                 + (f"{errors / ended:.0%} ({errors} of {ended} task(s))" if ended else "no task ended"))
    lines.append("Last successful run: " + (
        f"{max((now - success.ended).total_seconds() / 3600, 0.0):.1f} h ago (run {one_line(success.run_id[:12])})"
        if success else "none recorded"))
    groups = reason_groups(log_rows(window_runs, status=Outcome.ERROR))
    lines.append(f"Failure patterns over {thresholds.window_hours} h:" + ("" if groups else " none"))
    lines += [f"  {group.count} x {one_line(group.pattern)}\n      latest ({timestamp(group.last_seen)}): "
              f"{one_line(group.latest_example)}" for group in groups[:TOP_PATTERNS]]
    return "\n".join(lines)


def claim_host(task: Document) -> object:
    claimed_by = task.get("claimed_by")
    return claimed_by.get("host") if isinstance(claimed_by, dict) else claimed_by


# --- failure patterns: a reason with its variable parts folded -------------------------------

_VARIABLE_PARTS = (
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),  # quoted values: DRC ids, field values
    (re.compile(r"\b[0-9a-f]{24}\b"), "<id>"),  # ObjectIds
    (re.compile(r"\d+(?:[.,:]\d+)*"), "<n>"),  # counts, ids, amounts, times
)


def reason_pattern(reason: str) -> str:
    """A failure reason with what varies between occurrences folded: "donor DRC 'D4' ... holds 3" and
    "donor DRC 'D7' ... holds 5" give the same pattern."""
    for expression, placeholder in _VARIABLE_PARTS:
        reason = expression.sub(placeholder, reason)
    return reason


@dataclass(frozen=True)
class ReasonGroup:
    outcome: str
    pattern: str
    count: int
    first_seen: datetime
    last_seen: datetime
    latest_example: str


def failure_rows(rows: Iterable[Mapping[str, Any]], status: str | None) -> list[Mapping[str, Any]]:
    """What `logs --group-by reason` groups: the tasks that did not complete (ended in error, or deferred),
    or, when an outcome is asked for (`--status`), the tasks of that outcome, completed ones included."""
    return [row for row in rows if row.get("outcome") != Outcome.COMPLETED or status is not None]


def reason_groups(rows: Iterable[Mapping[str, Any]]) -> list[ReasonGroup]:
    """The log rows that carry a message, grouped by outcome and pattern: most frequent first, then newest."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("message"):
            grouped.setdefault((str(row.get("outcome")), reason_pattern(str(row["message"]))), []).append(row)
    groups = [ReasonGroup(outcome, pattern, len(members), min(row["run_started"] for row in members),
                          max(row["run_started"] for row in members),
                          str(max(members, key=lambda row: row["run_started"])["message"]))
              for (outcome, pattern), members in grouped.items()]
    return sorted(groups, key=lambda group: (-group.count, -group.last_seen.timestamp(), group.pattern))


TOP_PATTERNS = 5  # in `status`; `logs --group-by reason` lists them all
# The columns of `logs --actions` (ops/task_actions.action_rows).
ACTION_COLUMNS = ("time", "action", "Task_Id", "was", "by", "reason")
GROUP_COLUMNS = ("outcome", "count", "first_seen", "last_seen", "pattern", "latest_example")


def export_groups(groups: Sequence[ReasonGroup], form: str) -> str:
    """The reason groups as csv, json or txt, as `export` renders the rows."""
    rows = [{column: getattr(group, column) for column in GROUP_COLUMNS} for group in groups]
    return export(rows, form, GROUP_COLUMNS)
