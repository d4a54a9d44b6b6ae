"""The HTML dashboard of `batch_monitor.py report --html FILE`: one self-contained page (styles, charts
and its small script inline; nothing fetched when it is opened) of the job's last weeks.

report_context() turns what was read into plain figures (pure: tested without a database or a
browser); render() fills templates/dashboard.html.j2 with them (Jinja2, autoescaped).
"""

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2

from database_checks import batch_of
from history.records import History, RunRecord
from history.run_report import Outcome
from ops.backlog import Backlog
from ops.monitoring import (
    STATE_NAMES,
    State,
    claim_host,
    failure_rate,
    health_figures,
    log_rows,
    overall,
    reason_groups,
    seconds_per_thousand_cases,
)
from ops.output_files import DASHBOARD_MARKER, write_atomically
from utils.config import Thresholds
from utils.documents import Document
from utils.one_line import one_line

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_DAYS = 28
MAX_POINTS = 400  # more runs than this in the window are shown one point per day
LATEST_RUNS = 20
PERIOD_PATTERNS = 10
CHART_WIDTH, CHART_HEIGHT = 960, 150


@dataclass(frozen=True)
class Point:
    """One run (or one day of runs) on the charts."""
    label: str
    runs: int
    duration: float
    moved: int
    completed: int
    errored: int
    deferred: int

    @property
    def tip(self) -> str:
        runs = f"{self.runs} runs, median " if self.runs > 1 else ""
        return (f"{self.label}: {runs}{self.duration:.2f} s, {self.moved:,} case(s) moved, {self.completed} "
                f"completed, {self.errored} errored, {self.deferred} deferred")


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    tip: str


@dataclass(frozen=True)
class Chart:
    title: str
    maximum: float
    unit: str
    bars: list[Bar] = field(default_factory=list)


def chart_points(runs: Sequence[RunRecord]) -> list[Point]:
    """The runs, oldest first, as chart points: one per run, or one per day beyond MAX_POINTS runs."""
    def point(label: str, group: Sequence[RunRecord]) -> Point:
        return Point(label, len(group), statistics.median(run.duration_seconds for run in group),
                     sum(run.cases_moved for run in group), sum(run.completed for run in group),
                     sum(run.errored for run in group), sum(run.deferred for run in group))

    ordered = sorted(runs, key=lambda run: run.started)
    if len(ordered) <= MAX_POINTS:
        return [point(f"{run.started:%Y-%m-%d %H:%M}", [run]) for run in ordered]
    days: dict[str, list[RunRecord]] = {}
    for run in ordered:
        days.setdefault(f"{run.started:%Y-%m-%d}", []).append(run)
    return [point(day, group) for day, group in days.items()]


def bar_chart(title: str, unit: str, points: Sequence[Point],
              series: Sequence[tuple[str, Any]]) -> Chart:
    """Stacked bars, one per point: `series` is (css class, value of a point) from the bottom up."""
    totals = [sum(value(point) for _, value in series) for point in points]
    maximum = max(totals, default=0) or 1
    width = CHART_WIDTH / max(len(points), 1)
    bars = []
    for index, point in enumerate(points):
        bottom = CHART_HEIGHT
        for css, value in series:
            height = value(point) / maximum * CHART_HEIGHT
            if height > 0:
                bars.append(Bar(round(index * width, 2), round(bottom - height, 2), round(max(width - 1, 0.6), 2),
                                round(height, 2), css, point.tip))
                bottom -= height
    return Chart(title, maximum if any(totals) else 0, unit, bars)


def _minute(value: Any) -> Any:
    return f"{value:%Y-%m-%d %H:%M}" if isinstance(value, datetime) else value


def _state(code: State) -> str:
    return STATE_NAMES[code].lower()


def report_context(period: History, window: History, success: RunRecord | None,
                   stuck: Sequence[Document], backlog: Backlog, now: datetime, since: datetime, until: datetime,
                   thresholds: Thresholds) -> dict[str, Any]:
    """Every figure of the page: `period` is the history of [since, until), `window` that of check's
    window before `now`, `success` the last successful run, `stuck` the stuck tasks, `backlog` the open ones."""
    runs = period.runs
    figures, _ = health_figures(window, success, len(stuck), backlog, now, thresholds)
    state, check_line = overall(figures)
    points = chart_points(runs)
    period_errors, period_ended = failure_rate(runs)
    newest = sorted(runs, key=lambda run: run.started, reverse=True)
    return {
        "now": f"{now:%Y-%m-%d %H:%M} UTC", "since": f"{since:%Y-%m-%d %H:%M}", "until": f"{until:%Y-%m-%d %H:%M} UTC",
        "state": _state(state), "verdict": STATE_NAMES[state],
        "check_line": check_line,
        "health": [{"name": figure.name, "state": _state(figure.state), "value": figure.text,
                    "limits": figure.limits} for figure in figures],
        "set_apart": period.anomalies(),
        "totals": {"runs": len(runs), "completed": sum(run.completed for run in runs),
                   "errored": sum(run.errored for run in runs), "deferred": sum(run.deferred for run in runs),
                   "moved": sum(run.cases_moved for run in runs),
                   "failure_rate": f"{period_errors / period_ended:.0%}" if period_ended else "no task ended"},
        "per_day": len(points) < len(runs),
        "charts": [
            bar_chart("Duration of each run", "s", points,
                      [("duration", lambda point: point.duration)]),
            bar_chart("Cases moved", "cases", points, [("moved", lambda point: point.moved)]),
            bar_chart("Tasks by outcome", "tasks", points,
                      [("completed", lambda point: point.completed), ("errored", lambda point: point.errored),
                       ("deferred", lambda point: point.deferred)]),
        ],
        "first_label": points[0].label if points else "", "last_label": points[-1].label if points else "",
        "patterns": reason_groups(log_rows(runs, status=Outcome.ERROR))[:PERIOD_PATTERNS],
        "stuck": [{"task_id": task.get("Task_Id"), "object_id": str(task.get("_id")), "batch": batch_of(task),
                   "since": _minute(task.get("status_changed_dtm")), "claimed_by": claim_host(task)}
                  for task in stuck],
        "latest": [{"started": f"{run.started:%Y-%m-%d %H:%M:%S}", "run_id": run.run_id[:12], "host": run.host,
                    "duration": run.duration_seconds, "exit_code": run.exit_code, "moved": run.cases_moved,
                    "per_thousand": seconds_per_thousand_cases(run), "stop_reason": run.stop_reason,
                    "tasks": run.tasks} for run in newest[:LATEST_RUNS]],
    }


def render(context: Mapping[str, Any]) -> str:
    # finalize: every value the page shows (hosts, run ids, batches, messages from the database) on one line,
    # control characters escaped as everywhere else (utils/one_line.py); autoescape then makes it HTML.
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     finalize=lambda value: one_line(value) if isinstance(value, str) else value)
    return environment.get_template("dashboard.html.j2").render(context)


def write_page(path: Path, html: str) -> None:
    """Write the page atomically (a web server serving it never sends half of it), marked in its head as this
    tool's, so that a later report may replace it (ops/output_files.py refuses any other file)."""
    write_atomically(path, html.replace("<head>", f"<head>\n{DASHBOARD_MARKER}", 1))


def default_period(now: datetime, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """[since, until): by default the DEFAULT_DAYS days before `until` (now)."""
    until = until or now
    return since or until - timedelta(days=DEFAULT_DAYS), until
