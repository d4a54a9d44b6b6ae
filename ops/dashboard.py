"""The HTML dashboard of `batch_monitor.py report --html FILE`: one self-contained page (styles, charts
and its small script inline; nothing fetched when it is opened) of the job's last weeks.

report_context() turns what was read into plain figures (pure: tested without a database or a
browser), the charts' geometry included; render() fills templates/dashboard.html.j2 with them
(Jinja2, autoescaped).

The charts, read at a glance:
- a bar is a run while the period holds at most MAX_BARS runs; beyond, a bar is an hour, a day, a
  week, a month, a quarter or a year: the finest of these that gives at most MAX_BARS bars over the
  period (choose_grouping), every bucket of the period drawn, an empty one as a gap;
- the time a run worked is its duration less its wait for another process's lock
  (RunRecord.working_seconds); per bucket, the median of its runs;
- the working-time chart's scale ends at a robust maximum (robust_maximum): one slow run does not
  flatten the others; a bar above the scale is drawn to the top, cut and marked with a triangle, and
  the chart says how many were cut and the highest value;
- each axis has ticks: 3 to 5 labelled values from 0 on the y axis (nice_ticks, the unit on the
  top one), the first, the last and a few bars between on the x axis;
- hovering a bar's column shows its figures (an SVG <title>, which the page's script turns into a
  tooltip).
"""

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2

from database_checks import batch_of
from history.records import History, RunRecord
from history.run_report import Outcome
from ops.backlog import Backlog
from ops.monitoring import (
    OK,
    STATE_NAMES,
    HealthFigure,
    State,
    claim_host,
    failure_rate,
    health_figures,
    log_rows,
    overall,
    reason_groups,
    seconds_per_thousand_cases,
    slowdown,
)
from ops.output_files import DASHBOARD_MARKER, write_atomically
from utils.config import Thresholds
from utils.documents import Document
from utils.one_line import one_line
from utils.reports import timestamp

TEMPLATES = Path(__file__).resolve().parent / "templates"
DEFAULT_DAYS = 28
MAX_BARS = 120  # up to this many runs one bar per run; beyond, runs grouped into at most this many bars
LATEST_RUNS = 20
PERIOD_PATTERNS = 10
CLIP_PERCENTILE, CLIP_FACTOR = 0.95, 1.5  # the working-time scale ends at most at 1.5 x the 95th percentile

# A chart's geometry, in SVG user units: the page scales a chart to its width, text included.
WIDTH, HEIGHT = 1040, 190
LEFT, RIGHT, TOP, BOTTOM = 86, 16, 24, 28
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_BAR_WIDTH = 36  # a lone bar is a bar, not a block
CHARACTER_WIDTH = 6.6  # of an axis label (12 units of system-ui), to keep the x-axis labels apart

GROUPINGS = ("hour", "day", "week", "month", "quarter", "year")
NOUNS = {"hour": "hour", "day": "day", "week": "week (Monday to Sunday)", "month": "month", "quarter": "quarter",
         "year": "year"}
MONTHS = {"month": 1, "quarter": 3, "year": 12}
TICK_STEPS = {"run": (1, 2, 5, 10, 20, 25, 50), "hour": (1, 2, 3, 6, 12, 24, 48), "day": (1, 2, 7, 14, 28, 56),
              "week": (1, 2, 4, 13, 26, 52), "month": (1, 2, 3, 6, 12, 24), "quarter": (1, 2, 4, 8, 20),
              "year": (1, 2, 5, 10, 20, 50)}  # bars between two labels of the x axis


# --- the bars: a run each, or the runs of an hour, day, week, month, quarter or year -----------

def bucket_start(grouping: str, moment: datetime) -> datetime:
    """The start of the hour, day, week (a Monday), month, quarter or year holding `moment`."""
    if grouping == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = datetime(moment.year, moment.month, moment.day)
    if grouping == "day":
        return day
    if grouping == "week":
        return day - timedelta(days=day.weekday())
    months = MONTHS[grouping]
    return datetime(moment.year, (moment.month - 1) // months * months + 1, 1)


def next_bucket(grouping: str, start: datetime) -> datetime:
    if grouping in MONTHS:
        index = start.year * 12 + start.month - 1 + MONTHS[grouping]
        return datetime(index // 12, index % 12 + 1, 1)
    return start + {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}[grouping]


def bucket_label(grouping: str, start: datetime) -> str:
    if grouping == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    return start.strftime({"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "week": "%Y-%m-%d", "month": "%Y-%m",
                           "year": "%Y"}[grouping])


def bucket_starts(grouping: str, first: datetime, last: datetime, limit: int | None = None) -> list[datetime]:
    """The starts of the buckets from first's to last's, both included (no more than limit + 1 of them)."""
    starts: list[datetime] = []
    start = bucket_start(grouping, first)
    while start <= last and (limit is None or len(starts) <= limit):
        starts.append(start)
        start = next_bucket(grouping, start)
    return starts


def choose_grouping(runs: int, first: datetime, last: datetime) -> str:
    """What a bar is: "run" for up to MAX_BARS runs; beyond, the finest of hour, day, week, month and
    quarter that cuts first..last into at most MAX_BARS buckets; "year" beyond that."""
    if runs <= MAX_BARS:
        return "run"
    return next((grouping for grouping in GROUPINGS[:-1]
                 if len(bucket_starts(grouping, first, last, MAX_BARS)) <= MAX_BARS), "year")


@dataclass(frozen=True)
class Slot:
    """One bar's place on the x axis: a run (`single`) or a bucket of runs (possibly none)."""
    label: str
    runs: tuple[RunRecord, ...]
    single: bool = False
    partial: bool = False  # a bucket the period holds only part of
    heading: str = ""  # of its tip, when not its label

    @property
    def working(self) -> float:
        return statistics.median(run.working_seconds for run in self.runs) if self.runs else 0.0

    def total(self, name: str) -> int:
        return sum(getattr(run, name) for run in self.runs)

    @property
    def tip(self) -> str:
        label = f"{self.heading or self.label}{' (only part of it in the period)' if self.partial else ''}"
        if not self.runs:
            return f"{label}: no run"
        counts = (f"{self.total('cases_moved'):,} case(s) moved, {self.total('completed')} completed, "
                  f"{self.total('errored')} errored, {self.total('deferred')} deferred")
        if self.single:
            run = self.runs[0]
            wait = (f" of its {run.duration_seconds:.2f} s ({run.lock_wait_seconds:.2f} s waiting for the lock)"
                    if run.lock_wait_seconds > 0 else "")
            return f"{self.label}, run {run.run_id[:12]}: working {run.working_seconds:.2f} s{wait}, {counts}"
        waited = sum(run.lock_wait_seconds for run in self.runs)
        wait = f" (besides {waited:.2f} s waiting for the lock)" if waited > 0 else ""
        return (f"{label}: {len(self.runs)} run(s), median working time {self.working:.2f} s, longest "
                f"{max(run.working_seconds for run in self.runs):.2f} s{wait}, {counts}")


def period_slots(runs: Sequence[RunRecord], since: datetime, until: datetime) -> tuple[str, list[Slot]]:
    """(what a bar is, the bars' slots oldest first) of the runs of [since, until)."""
    ordered = sorted(runs, key=lambda run: run.started)
    if not ordered:
        return "run", []
    first = min(since, ordered[0].started)
    last = max(until - timedelta(microseconds=1), ordered[-1].started)
    grouping = choose_grouping(len(ordered), first, last)
    if grouping == "run":
        return grouping, [Slot(f"{run.started:%Y-%m-%d %H:%M}", (run,), single=True) for run in ordered]
    buckets: dict[datetime, list[RunRecord]] = {start: [] for start in bucket_starts(grouping, first, last)}
    for run in ordered:
        buckets[bucket_start(grouping, run.started)].append(run)
    return grouping, [Slot(bucket_label(grouping, start), tuple(group),
                           partial=start < since or next_bucket(grouping, start) > until,
                           heading=f"week of {start:%Y-%m-%d}" if grouping == "week" else "")
                      for start, group in buckets.items()]


# --- the scales ---------------------------------------------------------------------------------

def nice_ticks(maximum: float, whole: bool = False) -> list[float]:
    """3 to 5 evenly spaced values from 0, the last at or above `maximum`, a step of 1, 2, 2.5 or 5 times a
    power of ten (a whole number when `whole`)."""
    maximum = maximum if maximum > 0 else 1.0
    exponent = math.floor(math.log10(maximum / 4))
    steps = (mantissa * 10.0 ** power for power in range(exponent, max(exponent, 0) + 3)
             for mantissa in (1, 2, 2.5, 5))
    step, count = next((step, math.ceil(maximum / step - 1e-9)) for step in steps
                       if (not whole or step == int(step) >= 1) and math.ceil(maximum / step - 1e-9) <= 4)
    return [round(step * index, 10) for index in range(max(count, 2) + 1)]


def tick_labels(ticks: Sequence[float], unit: str) -> list[str]:
    """The ticks with as many decimals as they need (in thousands or millions from 10,000 on: 250k, 1.5M), the
    top one with the unit."""
    top = max(ticks, default=0)
    size, suffix = (1e6, "M") if top >= 1e7 else (1e3, "k") if top >= 1e4 else (1.0, "")
    ticks = [tick / size for tick in ticks]
    tolerance = top / size * 1e-6
    decimals = next((digits for digits in range(7)
                     if all(abs(tick - round(tick, digits)) <= tolerance for tick in ticks)), 6)
    labels = [f"{tick:,.{decimals}f}{suffix if tick else ''}" for tick in ticks]
    labels[-1] += f" {unit}"
    return labels


def robust_maximum(values: Sequence[float]) -> float:
    """Where a scale of these values ends: the highest, unless it is above CLIP_FACTOR times the
    CLIP_PERCENTILE percentile (nearest rank), which is then where it ends (the bars above it are cut)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    cap = CLIP_FACTOR * ordered[math.ceil(CLIP_PERCENTILE * len(ordered)) - 1]
    return min(ordered[-1], cap) if cap > 0 else ordered[-1]


def time_unit(seconds: float) -> tuple[str, float]:
    """(unit, seconds in it) for a scale reaching `seconds`."""
    return ("h", 3600.0) if seconds >= 3 * 3600 else ("min", 60.0) if seconds >= 180 else ("s", 1.0)


@dataclass(frozen=True)
class Scale:
    """A y axis: its ticks in `unit`, which is `size` units of the values."""
    ticks: list[float]
    unit: str
    size: float = 1.0

    @property
    def top(self) -> float:
        """The value at the top of the chart, in the values' unit."""
        return self.ticks[-1] * self.size


def count_scale(values: Sequence[float], unit: str) -> Scale:
    return Scale(nice_ticks(max(values, default=0), whole=True), unit)


def time_scale(seconds: Sequence[float]) -> Scale:
    """A scale of seconds ending at their robust maximum, in seconds, minutes or hours."""
    top = robust_maximum(seconds)
    unit, size = time_unit(top)
    return Scale(nice_ticks(top / size), unit, size)


# --- the charts ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str


@dataclass(frozen=True)
class Column:
    """A slot of a chart: its bars (stacked), the area that shows its tip on hover, the mark of a cut bar."""
    x: float
    width: float
    tip: str
    bars: tuple[Bar, ...]
    cut: Bar | None = None  # a band across a bar cut at the top of the scale
    arrow: str = ""  # the points of the triangle above it
    partial: bool = False  # a bucket only part of which is in the period (drawn lighter)


@dataclass(frozen=True)
class Tick:
    """An axis label: the tick mark at `mark`, the text at `at`, anchored at its start, middle or end."""
    mark: float
    at: float
    label: str
    anchor: str = "middle"


@dataclass(frozen=True)
class Chart:
    title: str
    subtitle: str
    columns: list[Column]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    note: str = ""  # what was cut
    cut_labels: tuple[Tick, ...] = ()  # the values of the cut bars, next to their marks
    legend: tuple[tuple[str, str], ...] = ()  # (css class, name) of each series


Series = Sequence[tuple[str, Callable[[Slot], float]]]


def bar_width(slots: int) -> float:
    """A bar's width: at most MAX_BAR_WIDTH, a gap of at least a fifth of its slot (and 1 unit) between two."""
    slot = PLOT_WIDTH / max(slots, 1)
    return min(MAX_BAR_WIDTH, slot * 0.8, slot - 1)


def y_ticks(scale: Scale) -> list[Tick]:
    return [Tick(round(TOP + PLOT_HEIGHT * (1 - tick / scale.ticks[-1]), 2), 0.0, label)
            for tick, label in zip(scale.ticks, tick_labels(scale.ticks, scale.unit), strict=True)]


def x_tick_indices(count: int, room: int, grouping: str) -> list[int]:
    """Which of `count` bars the x axis names: the first, every step-th after it and the last, no more than
    `room` of them; the step the smallest of the grouping's round ones (a week of days, 6 hours...) that fits."""
    if count <= 1:
        return list(range(count))
    needed = math.ceil((count - 1) / (max(room, 2) - 1))
    step = next((step for step in TICK_STEPS[grouping] if step >= needed), needed)
    indices = list(range(0, count - 1, step))
    if len(indices) > 1 and (count - 1 - indices[-1]) * room < count - 1:  # the last would touch the one before
        indices.pop()
    return [*indices, count - 1]


def x_ticks(labels: Sequence[str], grouping: str = "run") -> list[Tick]:
    """The first and last labels and a few regularly spaced between, as many as fit without touching."""
    if not labels:
        return []
    slot = PLOT_WIDTH / len(labels)
    widest = max(map(len, labels)) * CHARACTER_WIDTH
    indices = x_tick_indices(len(labels), min(7, int(PLOT_WIDTH // (widest + 30))), grouping)
    ticks = []
    for index in indices:
        centre = LEFT + (index + 0.5) * slot
        width = len(labels[index]) * CHARACTER_WIDTH
        at, anchor = ((4.0, "start") if centre - width / 2 < 4 else
                      (WIDTH - 4.0, "end") if centre + width / 2 > WIDTH - 4 else (centre, "middle"))
        ticks.append(Tick(round(centre, 2), round(at, 2), labels[index], anchor))
    return ticks


def column(index: int, slots: int, slot: Slot, heights: Sequence[tuple[str, float]], top: float) -> Column:
    """The column of the index-th of `slots` slots: its bars of `heights` (css class, value) from the bottom
    up, on a scale ending at `top`; a total above it drawn to the top and cut."""
    slot_width = PLOT_WIDTH / slots
    width = bar_width(slots)
    x = round(LEFT + index * slot_width + (slot_width - width) / 2, 2)
    bars, bottom = [], float(PLOT_HEIGHT)
    for css, value in heights:
        height = min(value / top * PLOT_HEIGHT, bottom) if top > 0 else 0.0
        if height > 0:
            bars.append(Bar(x, round(TOP + bottom - height, 2), round(width, 2), round(height, 2), css))
            bottom -= height
    cut, arrow = None, ""
    if sum(value for _, value in heights) > top * (1 + 1e-9):
        cut = Bar(x, TOP + 5, round(width, 2), 3, "cut")
        centre = x + width / 2
        arrow = f"{centre - 5:.2f},{TOP - 2} {centre + 5:.2f},{TOP - 2} {centre:.2f},{TOP - 11}"
    return Column(round(LEFT + index * slot_width, 2), round(slot_width, 2), slot.tip, tuple(bars), cut, arrow,
                  slot.partial)


def bar_chart(title: str, subtitle: str, grouping: str, slots: Sequence[Slot], series: Series,
              scale: Scale) -> Chart:
    """Bars, one per slot, each stacking `series` (css class, value of a slot) from the bottom up."""
    columns = [column(index, len(slots), slot, [(css, value(slot)) for css, value in series], scale.top)
               for index, slot in enumerate(slots)]
    return Chart(title, subtitle, columns, y_ticks(scale), x_ticks([slot.label for slot in slots], grouping))


def working_chart(grouping: str, slots: Sequence[Slot]) -> Chart:
    """The working time of each run, or the median of each bucket, on a scale one outlier does not flatten."""
    values = [slot.working for slot in slots if slot.runs]
    scale = time_scale(values)
    title = "Working time of each run" if grouping == "run" else f"Median working time per {NOUNS[grouping]}"
    chart = bar_chart(title, "a run's duration less its wait for another process's lock", grouping, slots,
                      [("duration", lambda slot: slot.working)], scale)
    cut = [value for value in values if value > scale.top * (1 + 1e-9)]
    if not cut:
        return chart
    unit = scale.unit
    note = (f"{_plural(len(cut), 'bar')} above {scale.ticks[-1]:g} {unit} {'is' if len(cut) == 1 else 'are'} cut "
            f"at the top, marked ▲ (the highest: {max(cut) / scale.size:,.1f} {unit}); hover a bar for its figures")
    return replace(chart, note=note, cut_labels=cut_labels(chart.columns, slots, scale))


def cut_labels(columns: Sequence[Column], slots: Sequence[Slot], scale: Scale) -> tuple[Tick, ...]:
    """The value of each cut bar, beside its mark above the chart, as long as it does not touch the one before."""
    labels: list[Tick] = []
    right = 0.0
    for column, slot in zip(columns, slots, strict=True):
        if column.cut is None:
            continue
        label = f"{slot.working / scale.size:,.1f} {scale.unit}"
        centre, width = column.cut.x + column.cut.width / 2, len(label) * CHARACTER_WIDTH * 11 / 12
        at, anchor = (centre + 7, "start") if centre + 7 + width <= WIDTH else (centre - 7, "end")
        left = at if anchor == "start" else at - width
        if left >= right + 4:
            labels.append(Tick(round(centre, 2), round(at, 2), label, anchor))
            right = left + width
    return tuple(labels)


def total_of(name: str) -> Callable[[Slot], float]:
    """The sum of a count (a RunRecord field) over a slot's runs."""
    return lambda slot: slot.total(name)


def period_charts(grouping: str, slots: Sequence[Slot]) -> list[Chart]:
    """The three charts of the period: working time, cases moved, tasks by outcome."""
    if not slots:
        return []
    per = "each run" if grouping == "run" else f"per {NOUNS[grouping]}"
    moved = bar_chart("Cases moved by each run" if grouping == "run" else f"Cases moved {per}", "", grouping, slots,
                      [("moved", total_of("cases_moved"))],
                      count_scale([slot.total("cases_moved") for slot in slots], "cases"))
    outcomes = ("completed", "errored", "deferred")
    tasks = bar_chart("Tasks of each run, by outcome" if grouping == "run" else f"Tasks {per}, by outcome", "",
                      grouping, slots, [(name, total_of(name)) for name in outcomes],
                      count_scale([sum(slot.total(name) for name in outcomes) for slot in slots], "tasks"))
    return [working_chart(grouping, slots), moved, replace(tasks, legend=tuple((name, name) for name in outcomes))]


def bars_line(grouping: str, slots: Sequence[Slot]) -> str:
    """What a bar of the charts is, in a sentence or two."""
    if grouping == "run":
        return "Each bar is a run, oldest first. Hover a bar for its figures."
    runs = sum(len(slot.runs) for slot in slots)
    noun = NOUNS[grouping].split(" ")[0]
    partial = sum(slot.partial for slot in slots)
    lighter = f"; a lighter bar is a {noun} only partly in the period" if partial else ""
    return (f"{runs:,} runs are too many to draw one by one: each bar is a {NOUNS[grouping]}, UTC, "
            f"{len(slots):,} in all{lighter}. Hover a bar for its figures.")


# --- the health cards ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Health:
    """What check judges, as report_context receives it."""
    window: History
    success: RunRecord | None
    stuck: int
    backlog: Backlog
    now: datetime
    thresholds: Thresholds


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _last_success(health: Health) -> tuple[str, str]:
    if health.success is None:
        return "none recorded", "no run in the history ended without an error"
    hours = max((health.now - health.success.ended).total_seconds() / 3600, 0.0)
    return f"{hours:.1f} h ago", f"ended {timestamp(health.success.ended)} on {health.success.host}"


def _failure_rate(health: Health) -> tuple[str, str]:
    errors, ended = failure_rate(health.window.runs)
    if not ended:
        return "no task ended", f"in the last {health.thresholds.window_hours} h"
    return f"{errors / ended:.0%}", f"{errors} of {_plural(ended, 'task')} ended in error"


def _speed(health: Health) -> tuple[str, str]:
    _, _, per_thousand, ratio = slowdown(health.window.runs, health.thresholds)
    if ratio is None or per_thousand is None:
        comparable = [run for run in health.window.runs if run.batch_cases >= health.thresholds.comparable_cases]
        return "not judged", (f"{max(len(comparable) - 1, 0)} of the {health.thresholds.comparable_runs} earlier "
                              f"comparable runs it needs")
    return f"{ratio:.1f}x the median", f"last comparable run: {per_thousand:.3f} s per 1,000 cases"


def _stuck(health: Health) -> tuple[str, str]:
    return (f"{health.stuck:,}" if health.stuck else "none",
            "in processing, their claim expired" if health.stuck else "every claimed task holds a live claim")


def _backlog(health: Health) -> tuple[str, str]:
    backlog = health.backlog
    hours = backlog.oldest_open_hours(health.now)
    if not backlog.open_tasks:
        return "no open task", "nothing waits for a run"
    waited = ("no creation date to say how long they waited" if hours is None or backlog.oldest_open is None else
              f"the oldest waiting {hours:.1f} h (since {timestamp(backlog.oldest_open)})")
    undated = f"; {backlog.undated} without a created_dtm date" if backlog.undated and hours is not None else ""
    return _plural(backlog.open_tasks, "open task"), waited + undated


def _set_apart(health: Health) -> tuple[str, str]:
    count = health.window.set_apart
    if not count:
        return "none", "every record of the window was read"
    return f"{count:,}", health.window.anomalies().removeprefix(f"{count} run record(s) set apart: ")


CARD_TEXTS: tuple[tuple[str, Callable[[Health], tuple[str, str]]], ...] = (
    ("Last successful run", _last_success), ("Failure rate", _failure_rate), ("Speed", _speed),
    ("Stuck tasks", _stuck), ("Backlog", _backlog), ("Run records set apart", _set_apart))


def card(figure: HealthFigure, health: Health) -> dict[str, Any]:
    """A health figure as a card: its name, its value in a few words (not the name again), a detail, its
    state and thresholds. A figure this page does not know shows check's text."""
    texts = next((texts for prefix, texts in CARD_TEXTS if figure.name.startswith(prefix)), None)
    value, detail = texts(health) if texts else (figure.text, "")
    return {"name": figure.name, "state": _state(figure.state), "state_name": STATE_NAMES[figure.state],
            "value": value, "detail": detail, "limits": figure.limits}


# --- the page --------------------------------------------------------------------------------------

def _moment(value: Any) -> Any:
    return timestamp(value) if isinstance(value, datetime) else value


def _state(code: State) -> str:
    return STATE_NAMES[code].lower()


def _totals(runs: Sequence[RunRecord]) -> dict[str, Any]:
    errors, ended = failure_rate(runs)
    return {"runs": len(runs), "completed": sum(run.completed for run in runs),
            "errored": sum(run.errored for run in runs), "deferred": sum(run.deferred for run in runs),
            "moved": sum(run.cases_moved for run in runs),
            "failure_rate": f"{errors / ended:.0%}" if ended else "no task ended"}


def _latest(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    newest = sorted(runs, key=lambda run: run.started, reverse=True)
    return [{"started": timestamp(run.started), "run_id": run.run_id[:12], "host": run.host,
             "duration": run.duration_seconds, "lock_wait": run.lock_wait_seconds, "exit_code": run.exit_code,
             "moved": run.cases_moved, "per_thousand": seconds_per_thousand_cases(run),
             "stop_reason": run.stop_reason, "tasks": run.tasks} for run in newest[:LATEST_RUNS]]


def report_context(period: History, window: History, success: RunRecord | None,
                   stuck: Sequence[Document], backlog: Backlog, now: datetime, since: datetime, until: datetime,
                   thresholds: Thresholds, actions: Sequence[Document] = ()) -> dict[str, Any]:
    """Every figure of the page: `period` is the history of [since, until), `window` that of check's
    window before `now`, `success` the last successful run, `stuck` the stuck tasks, `backlog` the open ones,
    `actions` the latest operator actions (database_checks.fetch_recent_operator_actions)."""
    runs = period.runs
    figures, _ = health_figures(window, success, len(stuck), backlog, now, thresholds)
    state, check_line = overall(figures)
    health = Health(window, success, len(stuck), backlog, now, thresholds)
    cards = [card(figure, health) for figure in figures]
    grouping, slots = period_slots(runs, since, until)
    return {
        "now": timestamp(now), "since": timestamp(since), "until": timestamp(until),
        "state": _state(state), "verdict": STATE_NAMES[state],
        "not_ok": [f"{item['name']}: {item['value']}" for item, figure in zip(cards, figures, strict=True)
                   if figure.state != OK],
        "check_line": check_line,
        "health": cards,
        "set_apart": period.anomalies(),
        "totals": _totals(runs),
        "grouping": grouping,
        "charts": period_charts(grouping, slots),
        "bars_line": bars_line(grouping, slots),
        "geometry": {"width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "plot_width": PLOT_WIDTH,
                     "plot_height": PLOT_HEIGHT, "bottom": TOP + PLOT_HEIGHT, "right": LEFT + PLOT_WIDTH},
        "patterns": reason_groups(log_rows(runs, status=Outcome.ERROR))[:PERIOD_PATTERNS],
        "stuck": [{"task_id": task.get("Task_Id"), "object_id": str(task.get("_id")), "batch": batch_of(task),
                   "since": _moment(task.get("status_changed_dtm")), "claimed_by": claim_host(task)}
                  for task in stuck],
        "latest": _latest(runs),
        "actions": [{"time": _moment(entry.get("action_dtm")), "action": entry.get("action"),
                     "task_id": row.get("Task_Id"), "was": entry.get("previous_status"),
                     "by": f"{entry.get('user')}@{entry.get('host')}", "reason": entry.get("reason")}
                    for row in actions for entry in (row["action"],)],
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
