"""The dashboard read at a glance (issue 17): what a bar is (a run, or an hour, day, week, month, quarter or
year of runs, from the number of runs and the length of the period), the axes' ticks, the working-time scale
that one slow run does not flatten, bars that keep apart, the health cards; the page at 0, 1, 300 and 50,000
runs, and in headless Chromium (the screenshots kept in tests/artefacts/, shown in docs/monitoring.md)."""

import html
import random
import re
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise

import html5lib
import pytest

from fixture_generator import generate_history
from history.records import History, RunRecord, parse_run
from ops.backlog import Backlog
from ops.dashboard import (
    CHARACTER_WIDTH,
    CLIP_FACTOR,
    GROUPINGS,
    LEFT,
    MAX_BAR_WIDTH,
    MAX_BARS,
    PLOT_HEIGHT,
    PLOT_WIDTH,
    TOP,
    WIDTH,
    Health,
    bucket_start,
    card,
    choose_grouping,
    next_bucket,
    nice_ticks,
    period_slots,
    render,
    report_context,
    robust_maximum,
    tick_labels,
    time_scale,
    working_chart,
    x_ticks,
)
from ops.monitoring import OK, HealthFigure
from tests.support import NO_BACKLOG
from tests.test_dashboard import ARTEFACTS, NOW, chart_columns, needs_a_browser, open_in_browser
from utils.config import Thresholds

HOUR = timedelta(hours=1)
PERIOD = timedelta(days=28)  # the report's default
EACH_RUN = ["Working time of each run", "Cases moved by each run", "Tasks of each run, by outcome"]
PER_DAY = ["Median working time per day", "Cases moved per day", "Tasks per day, by outcome"]
PER_WEEK = [title.replace("day", "week (Monday to Sunday)") for title in PER_DAY]
WAITING = Backlog(open_tasks=4, oldest_open=NOW - timedelta(minutes=40))


def record(started: datetime, working: float = 2.0, lock_wait: float = 0.0) -> RunRecord:
    duration = working + lock_wait
    return RunRecord(f"{started:%d%H%M%S%f}".ljust(32, "0"), "cron-1", started,
                     started + timedelta(seconds=duration), duration, 0, lock_wait_seconds=lock_wait)


def runs_every(count: int, every: timedelta, end: datetime = NOW) -> list[RunRecord]:
    return [record(end - every * (count - index)) for index in range(count)]


def generated(count: int, every: timedelta = 2 * HOUR) -> list[RunRecord]:
    """A generated history (fixture_generator: two slow days in the middle, recurring failures) in which every
    ninth run also waited for another process's lock, 40% of its duration."""
    documents = generate_history(count, NOW - HOUR, every=every)
    for document in documents[4::9]:
        document["lock_wait_seconds"] = round(document["duration_seconds"] * 0.4, 3)
    return [parse_run(document) for document in documents]


def page_of_records(runs, since=NOW - PERIOD, backlog=NO_BACKLOG):
    thresholds = Thresholds()
    newest = sorted(runs, key=lambda run: run.started, reverse=True)
    window = [run for run in newest if run.started >= NOW - timedelta(hours=thresholds.window_hours)]
    success = next((run for run in newest if run.succeeded), None)
    return render(report_context(History(runs=newest), History(runs=window), success, [], backlog, NOW, since, NOW,
                                 thresholds))


def axes(page):
    """[(the y axis' labels, the x axis' labels)] of each chart of a page."""
    return [(re.findall(rf'<text x="{LEFT - 8}" y="[\d.]+" text-anchor="end">([^<]*)</text>', chart),
             re.findall(rf'<text x="[\d.]+" y="{TOP + PLOT_HEIGHT + 19}" text-anchor="\w+">([^<]*)</text>', chart))
            for chart in re.findall(r"<svg.*?</svg>", page, re.DOTALL)]


def assert_reads_at_a_glance(page, titles, bars):
    """Valid HTML; the charts `titles`, each of `bars` columns; 3 to 5 labelled values on each y axis, the top
    one with the unit; the first and the last bar named on each x axis."""
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)
    columns = chart_columns(page)
    assert list(columns) == titles and [len(chart) for chart in columns.values()] == [bars] * 3
    assert "(highest" not in page and ("each run" in page) == (titles == EACH_RUN)
    for (y_labels, x_labels), unit, chart in zip(axes(page), (r"s|min|h", "cases", "tasks"), columns.values(),
                                                 strict=True):
        assert 3 <= len(y_labels) <= 5 and float(y_labels[0]) == 0
        assert re.fullmatch(rf"[\d.,]+[kM]? ({unit})", y_labels[-1])
        assert not any(" " in label for label in y_labels[:-1])
        assert x_labels[0] in chart[0][0] and x_labels[-1] in chart[-1][0]  # the first bar's, the last bar's
        assert len(set(x_labels)) == len(x_labels) >= min(bars, 2)


# --- what a bar is -------------------------------------------------------------------------------

@pytest.mark.parametrize(("runs", "days", "grouping"), [
    (0, 28, "run"), (1, 28, "run"), (MAX_BARS, 3650, "run"), (MAX_BARS + 1, 5, "hour"), (MAX_BARS + 1, 6, "day"),
    (300, 28, "day"), (5_000, 120, "day"), (5_000, 121, "week"), (50_000, 2 * 365, "week"),
    (50_000, 3 * 365, "month"), (50_000, 11 * 365, "quarter"), (50_000, 40 * 365, "year")])
def test_a_bar_is_a_run_up_to_max_bars_runs_beyond_the_finest_bucket_giving_at_most_max_bars(runs, days, grouping):
    since = datetime(2026, 1, 1)  # midnight, a Thursday
    assert choose_grouping(runs, since, since + timedelta(days=days) - timedelta(microseconds=1)) == grouping


def test_every_run_is_in_exactly_one_bar_and_there_are_never_more_than_max_bars():
    rng = random.Random(17)
    for _ in range(40):
        days = rng.choice([1, 3, 7, 28, 90, 400, 1_500, 5_000, 20_000])
        count = rng.choice([0, 1, 50, MAX_BARS, MAX_BARS + 1, 1_000, 5_000])
        since = NOW - timedelta(days=days)
        runs = [record(since + timedelta(seconds=rng.uniform(0, days * 86_400))) for _ in range(count)]
        grouping, slots = period_slots(runs, since, NOW)
        assert (grouping == "run") == (count <= MAX_BARS)
        assert len(slots) <= MAX_BARS or grouping == "year"
        assert sorted(run.run_id for slot in slots for run in slot.runs) == sorted(run.run_id for run in runs)
        if grouping != "run":  # each bucket holds its own runs, every bucket of the period drawn, in order
            starts = [bucket_start(grouping, slot.runs[0].started) for slot in slots if slot.runs]
            assert starts == sorted(set(starts))
            assert all(bucket_start(grouping, run.started) == bucket_start(grouping, slot.runs[0].started)
                       for slot in slots for run in slot.runs)


def test_buckets_start_on_the_hour_at_midnight_on_a_monday_on_the_first_of_a_month_quarter_or_year():
    moment = datetime(2026, 11, 26, 17, 42, 5)  # a Thursday
    assert [bucket_start(grouping, moment) for grouping in GROUPINGS] == [
        datetime(2026, 11, 26, 17), datetime(2026, 11, 26), datetime(2026, 11, 23), datetime(2026, 11, 1),
        datetime(2026, 10, 1), datetime(2026, 1, 1)]
    new_year = datetime(2026, 12, 31, 23, 59)
    assert [next_bucket(grouping, bucket_start(grouping, new_year)) for grouping in GROUPINGS] == [
        datetime(2027, 1, 1), datetime(2027, 1, 1), datetime(2027, 1, 4), datetime(2027, 1, 1), datetime(2027, 1, 1),
        datetime(2027, 1, 1)]


@pytest.mark.parametrize(("count", "every", "period", "title", "bars"), [
    (3, HOUR, PERIOD, "Working time of each run", 3),
    (MAX_BARS + 1, 30 * timedelta(minutes=1), timedelta(days=3), "Median working time per hour", 72),
    (300, 2 * HOUR, PERIOD, "Median working time per day", 29),
    (1_000, 6 * HOUR, timedelta(days=250), "Median working time per week (Monday to Sunday)", 37),
    (1_000, 24 * HOUR, timedelta(days=1_000), "Median working time per month", 33),
    (2_000, 3 * 24 * HOUR, timedelta(days=6_000), "Median working time per quarter", 67)])
def test_each_chart_title_says_what_a_bar_is(count, every, period, title, bars):
    columns = chart_columns(page_of_records(runs_every(count, every), since=NOW - period))
    assert list(columns)[0] == title and len(columns[title]) == bars
    if count > MAX_BARS:
        assert sum(int(re.search(r": (?:(\d+) run\(s\)|no run)", tip)[1] or 0) for tip, _ in columns[title]) == count


# --- the axes --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("maximum", "whole", "ticks"), [
    (0.87, False, [0, 0.25, 0.5, 0.75, 1]), (3.5, False, [0, 1, 2, 3, 4]), (22.43, False, [0, 10, 20, 30]),
    (0, False, [0, 0.25, 0.5, 0.75, 1]), (1_056, True, [0, 500, 1_000, 1_500]), (3, True, [0, 1, 2, 3]),
    (1, True, [0, 1, 2]), (0, True, [0, 1, 2]), (7, True, [0, 2, 4, 6, 8]), (12_684_667, True, [0, 5e6, 1e7, 1.5e7])])
def test_the_y_axis_has_3_to_5_round_ticks_from_0_covering_the_highest_value(maximum, whole, ticks):
    assert nice_ticks(maximum, whole) == ticks


def test_the_y_ticks_of_any_maximum():
    rng = random.Random(5)
    for _ in range(2_000):
        maximum, whole = 10 ** rng.uniform(-3, 8), rng.random() < 0.5
        ticks = nice_ticks(maximum, whole)
        step = ticks[1]
        assert 3 <= len(ticks) <= 5 and ticks[0] == 0 and ticks[-1] >= maximum
        assert all(abs(ticks[index] - index * step) <= step * 1e-9 for index in range(len(ticks)))
        assert ticks[-1] <= 2.5 * maximum or (whole and ticks[-1] <= 2)
        assert re.fullmatch(r"(1|2|2\.5|5)(0*)", f"{step / 10 ** int(f'{step:e}'.split('e')[1]):g}")
        assert not whole or step == int(step)


def test_tick_labels_carry_the_unit_on_the_top_one_and_no_more_decimals_than_needed():
    assert tick_labels([0, 2.5, 5, 7.5, 10], "s") == ["0.0", "2.5", "5.0", "7.5", "10.0 s"]
    assert tick_labels([0, 1, 2, 3], "tasks") == ["0", "1", "2", "3 tasks"]
    assert tick_labels([0, 500, 1_000, 1_500], "cases") == ["0", "500", "1,000", "1,500 cases"]
    assert tick_labels([0, 100_000, 200_000, 300_000], "cases") == ["0", "100k", "200k", "300k cases"]
    assert tick_labels([0, 5e6, 1e7, 1.5e7], "cases") == ["0", "5M", "10M", "15M cases"]
    assert tick_labels([0, 0.0025, 0.005], "s") == ["0.0000", "0.0025", "0.0050 s"]


def test_long_working_times_are_scaled_in_minutes_or_hours():
    assert (time_scale([30.0]).unit, time_scale([30.0]).ticks) == ("s", [0, 10, 20, 30])
    assert (time_scale([600.0]).unit, time_scale([600.0]).ticks) == ("min", [0, 2.5, 5, 7.5, 10])
    assert (time_scale([5 * 3600.0]).unit, time_scale([5 * 3600.0]).ticks) == ("h", [0, 2, 4, 6])


def test_the_x_axis_names_the_first_and_the_last_bar_and_a_few_between_without_touching():
    for labels in ([f"2026-11-{day:02d}" for day in range(1, 29)],
                   [f"2026-11-{day // 24 + 1:02d} {day % 24:02d}:00" for day in range(MAX_BARS)],
                   [f"2026-11-{day:02d} 10:00" for day in (1, 2)], ["2026", "2027", "2028"]):
        ticks = x_ticks(labels)
        assert ticks[0].label == labels[0] and ticks[-1].label == labels[-1] and 2 <= len(ticks) <= 7
        extents = []
        for tick in ticks:
            width = len(tick.label) * CHARACTER_WIDTH
            left = {"start": tick.at, "middle": tick.at - width / 2, "end": tick.at - width}[tick.anchor]
            extents.append((left, left + width))
        assert all(0 <= left and right <= WIDTH for left, right in extents)
        assert all(before[1] + 10 <= after[0] for before, after in pairwise(extents))
    [lone] = x_ticks(["2026-11-26 09:00"])
    assert (lone.mark, lone.at, lone.anchor) == (LEFT + PLOT_WIDTH / 2, LEFT + PLOT_WIDTH / 2, "middle")
    assert x_ticks([]) == []


# --- the working time and its scale ---------------------------------------------------------------

def test_the_working_time_is_the_duration_less_the_wait_for_the_lock():
    run = record(NOW - 3 * HOUR, working=2.0, lock_wait=30.0)
    assert run.working_seconds == 2.0
    page = page_of_records([run])
    [(tip, bars)] = chart_columns(page)["Working time of each run"]
    assert bars == ["duration"] and "working 2.00 s of its 32.00 s (30.00 s waiting for the lock)" in tip
    assert axes(page)[0][0] == ["0.0", "0.5", "1.0", "1.5", "2.0 s"]  # the scale of 2 s, not of 32 s
    assert re.search(r"<td class=\"number\">32.00</td>\s*<td class=\"number\">30.00</td>", page)  # latest runs


def test_one_slow_run_does_not_flatten_the_working_time_scale():
    values = [1.0 + index / 100 for index in range(99)] + [100.0]
    assert robust_maximum(values) == pytest.approx(CLIP_FACTOR * 1.94)  # 1.5 x the 95th of 100 values
    assert time_scale(values).ticks == [0, 1, 2, 3]
    assert robust_maximum(values[:-1]) == max(values[:-1])  # nothing above 1.5 x the 95th percentile: all shown
    assert robust_maximum([2.0, 2.0, 50.0]) == 50.0  # too few values to call one an outlier
    assert robust_maximum([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]) == 5  # 95th at 0: all
    assert robust_maximum([]) == 0


def test_a_bar_above_the_scale_is_cut_marked_and_named():
    rng = random.Random(3)
    runs = [record(NOW - 2 * HOUR * (60 - index), working=rng.uniform(1.5, 2.5)) for index in range(60)]
    runs[40] = replace(runs[40], duration_seconds=95.0, ended=runs[40].started + timedelta(seconds=95))
    page = page_of_records(runs)
    assert re.search(r"1 bar above [34] s is cut at the top, marked ▲ \(the highest: 95.0 s\); hover a bar for its "
                     r"figures", page)
    assert page.count('<polygon class="arrow"') == 1 and page.count('<rect class="cut"') == 1
    [cut] = re.findall(r'<g class="column" data-tip="([^"]*)">(?:(?!</g>).)*<rect class="cut"', page, re.DOTALL)
    assert "working 95.00 s" in cut and html.unescape(cut).startswith(f"{runs[40].started:%Y-%m-%d %H:%M}")
    chart = working_chart(*period_slots(runs, NOW - PERIOD, NOW))
    heights = [column.bars[0].height for column in chart.columns]
    assert heights[40] == PLOT_HEIGHT and max(heights[:40] + heights[41:]) < PLOT_HEIGHT  # the rest shown whole
    assert [label.label for label in chart.cut_labels] == ["95.0 s"] and chart.columns[40].arrow
    assert "cut at the top" not in page_of_records(runs[:40] + runs[41:])


def test_bars_keep_apart_and_a_lone_bar_is_a_bar():
    for count in (1, 2, 7, MAX_BARS):
        runs = runs_every(count - 1, HOUR, end=NOW - HOUR) + [record(NOW - timedelta(minutes=1))]
        chart = working_chart(*period_slots(runs, NOW - PERIOD, NOW))
        bars = [column.bars[0] for column in chart.columns]
        assert len(bars) == count and all(bar.width <= MAX_BAR_WIDTH for bar in bars)
        assert all(after.x - (before.x + before.width) >= 1 for before, after in pairwise(bars))
        assert LEFT <= bars[0].x and bars[-1].x + bars[-1].width <= LEFT + PLOT_WIDTH
    [lone] = working_chart(*period_slots([record(NOW - HOUR)], NOW - PERIOD, NOW)).columns
    assert lone.bars[0].width == MAX_BAR_WIDTH and lone.bars[0].x + MAX_BAR_WIDTH / 2 == LEFT + PLOT_WIDTH / 2


def test_the_newest_runs_seconds_apart_are_bars_apart_each_with_its_tip():
    newest = [record(NOW - timedelta(seconds=seconds)) for seconds in (30, 20, 10)]
    runs = runs_every(100, HOUR, end=NOW - HOUR) + newest
    page = page_of_records(runs)
    columns = chart_columns(page)["Working time of each run"]
    assert len(columns) == 103 and len({tip for tip, _ in columns}) == 103
    areas = [(float(x), float(width)) for x, width in re.findall(
        r'<g class="column" data-tip="[^"]*"><title>[^<]*</title>\s*<rect class="hit" x="([\d.]+)" y="[\d.]+" '
        r'width="([\d.]+)"', page)[100:103]]  # where hovering shows each of the newest three
    assert all(after[0] >= before[0] + before[1] - 0.02 for before, after in pairwise(areas))
    assert all(html.unescape(tip).startswith(f"{run.started:%Y-%m-%d %H:%M}, run {run.run_id[:12]}")
               for (tip, _), run in zip(columns[100:], newest, strict=True))


# --- the health cards ------------------------------------------------------------------------------

def cards(backlog, stuck=0, history=()):
    thresholds = Thresholds()
    window = History(runs=sorted(history, key=lambda run: run.started, reverse=True))
    context = report_context(window, window, None, [{"_id": index} for index in range(stuck)], backlog, NOW,
                             NOW - PERIOD, NOW, thresholds)
    return {item["name"]: item for item in context["health"]}, context


def test_no_health_card_repeats_its_title_in_its_value():
    for backlog, stuck in ((NO_BACKLOG, 0), (WAITING, 2), (Backlog(3, None, undated=3), 5)):
        found, _ = cards(backlog, stuck, [record(NOW - HOUR * index) for index in range(1, 30)])
        assert len(found) == 6
        for name, item in found.items():
            words = {word for word in re.findall(r"[a-z]{4,}", name.lower())}
            assert not words & set(re.findall(r"[a-z]+", item["value"].lower())), (name, item["value"])
            assert item["value"] and len(item["value"]) <= 24 and item["limits"]


def test_the_backlog_card_says_how_many_tasks_wait_and_how_long_the_oldest_has():
    assert {key: cards(Backlog(2, NOW - 2 * HOUR))[0]["Backlog"][key] for key in ("value", "detail", "state")} == {
        "value": "2 open tasks", "detail": "the oldest waiting 2.0 h (since 2026-11-26T10:00:00+00:00)",
        "state": "warning"}
    assert cards(Backlog(1, NOW - HOUR / 2, undated=1))[0]["Backlog"]["value"] == "1 open task"
    assert cards(Backlog(2, NOW - HOUR / 2, undated=1))[0]["Backlog"]["detail"] == (
        "the oldest waiting 0.5 h (since 2026-11-26T11:30:00+00:00); 1 without a created_dtm date")
    assert cards(Backlog(3, None, undated=3))[0]["Backlog"]["detail"] == "no creation date to say how long they waited"
    none = cards(NO_BACKLOG)[0]["Backlog"]
    assert (none["value"], none["state"]) == ("no open task", "ok")
    _, context = cards(Backlog(2, NOW - 2 * HOUR))
    page = render(context)
    assert "Backlog: 2 open tasks" in page  # the header names what is not OK
    assert "2 open task(s), the oldest waiting 2.0 h" in page  # check's own line, under the cards
    health = Health(History(), None, 0, NO_BACKLOG, NOW, Thresholds())
    assert card(HealthFigure("A figure yet to come", OK, "its text", "its limits"), health)["value"] == "its text"


# --- the page at 0, 1, 300 and 50,000 runs ---------------------------------------------------------

@pytest.fixture(scope="module")
def fifty_thousand():
    """50,000 generated runs, one every 10 minutes: 347 days."""
    return generated(50_000, every=timedelta(minutes=10))


def test_the_page_without_a_run_says_so_in_one_sentence():
    page = page_of_records([])
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)
    assert page.count("No run in the period.") == 1
    assert "<svg" not in page and "<figure" not in page and "0.00 s" not in page and "Latest runs" not in page


def test_the_page_at_one_run():
    page = page_of_records(generated(1), backlog=WAITING)
    assert_reads_at_a_glance(page, EACH_RUN, 1)
    widths = re.findall(r'<rect class="(?:duration|moved|completed)" x="[\d.]+" y="[\d.]+" width="([\d.]+)"', page)
    assert widths and {float(width) for width in widths} == {MAX_BAR_WIDTH}


def test_the_page_at_300_runs():
    page = page_of_records(generated(300), backlog=WAITING)
    assert_reads_at_a_glance(page, PER_DAY, 29)
    assert [x_labels[0] for _, x_labels in axes(page)] == ["2026-10-29"] * 3
    assert [x_labels[-1] for _, x_labels in axes(page)] == ["2026-11-26"] * 3


@pytest.mark.slow  # 50,000 runs generated, then drawn
def test_the_page_at_50000_runs_draws_a_bar_a_week(fifty_thousand):
    # How long it takes is a figure for a benchmark, not a test: this machine is shared (it took 0.5 s to 8.6 s).
    page = page_of_records(fifty_thousand, since=NOW - timedelta(days=350), backlog=WAITING)
    assert_reads_at_a_glance(page, PER_WEEK, 51)  # the weeks of 2025-12-08 to 2026-11-23
    tips = [tip for tip, _ in chart_columns(page)[PER_WEEK[0]]]
    assert sum(int(re.search(r": (\d+) run\(s\)", tip)[1]) for tip in tips) == 50_000
    assert tips[0].startswith("week of 2025-12-08 (only part of it in the period): ")
    assert len(page) < 400_000


# --- in a real browser -----------------------------------------------------------------------------

def screenshot_pages(fifty_thousand):
    """{name: page} of the screenshots: 1, 300 and 50,000 generated runs, and 60 with one slow run."""
    slow = generated(60)
    slow[40] = replace(slow[40], duration_seconds=95.0, ended=slow[40].started + timedelta(seconds=95))
    return {"dashboard-1": page_of_records(generated(1), backlog=WAITING),
            "dashboard-60": page_of_records(slow, backlog=WAITING),
            "dashboard-300": page_of_records(generated(300), backlog=WAITING),
            "dashboard-50000": page_of_records(fifty_thousand, since=NOW - timedelta(days=350), backlog=WAITING)}


@pytest.mark.browser
@pytest.mark.slow
@needs_a_browser
def test_the_dashboard_at_1_60_300_and_50000_runs_in_a_real_browser(tmp_path, fifty_thousand):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for name, page in screenshot_pages(fifty_thousand).items():
        path = tmp_path / f"{name}.html"
        path.write_text(page)
        screenshot = ARTEFACTS / f"{name}.png"
        dom, errors = open_in_browser(path, tmp_path / f"profile-{name}", screenshot, height=1560)
        assert errors == [] and 'data-ready="yes"' in dom, name
        assert int(re.search(r'data-bars="(\d+)"', dom)[1]) == page.count("data-tip=") > 0
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000
